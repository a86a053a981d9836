"""deploy_enterprise.sh and the operations scripts: syntax, lint, and the preparation step
(secrets, signing key, certificate) run for real in a temporary directory."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from deploy_support import DEPLOY_SCRIPT, ENV_EXAMPLE, HAPROXY_CFG, ROOT

SCRIPTS = [DEPLOY_SCRIPT, ROOT / "compose" / "manage.sh", ROOT / "scripts" / "ensure-services.sh"]
PLACEHOLDER = "change-me"


def prepare(target: Path, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(DEPLOY_SCRIPT), "--prepare-only"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DEPLOY_ROOT": str(target), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def read_env(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_syntax(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_deploy_script_is_strict_and_executable() -> None:
    text = DEPLOY_SCRIPT.read_text()
    assert "set -euo pipefail" in text
    assert os.access(DEPLOY_SCRIPT, os.X_OK)


def test_prepare_generates_private_secrets_without_placeholders(tmp_path: Path) -> None:
    prepare(tmp_path)
    env_file = tmp_path / "compose" / "env.enterprise"
    values = read_env(env_file)
    example = read_env(ENV_EXAMPLE)

    assert mode(env_file) == 0o600
    assert set(example) <= set(values)
    assert PLACEHOLDER not in env_file.read_text()
    secrets = [values[key] for key, value in example.items() if value == PLACEHOLDER]
    assert len(secrets) >= 6
    assert all(re.fullmatch(r"[0-9a-f]{32}", s) for s in secrets), secrets
    assert len(set(secrets)) == len(secrets)  # every secret is its own
    assert values["APP_UID"] and values["APP_GID"]

    private = tmp_path / "compose" / "secrets" / "auth_signing_key.pem"
    public = tmp_path / "compose" / "secrets" / "auth_signing_key.pub.pem"
    assert mode(private) == 0o600 and mode(public) == 0o600
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert (
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == public.read_bytes()
    )

    bundles = list((tmp_path / "haproxy" / "ssl").glob("*.pem"))
    assert [b.name for b in bundles] == ["localhost.pem"]
    assert mode(bundles[0]) == 0o600
    pem = bundles[0].read_text()
    assert "BEGIN CERTIFICATE" in pem and "PRIVATE KEY" in pem
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(bundles[0])  # a usable certificate + key pair


def test_prepare_is_idempotent_and_adds_new_settings_only(tmp_path: Path) -> None:
    prepare(tmp_path)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}

    prepare(tmp_path)
    assert {p: p.read_bytes() for p in sorted(p for p in tmp_path.rglob("*") if p.is_file())} == before

    # A setting the example gained since the last run is appended; existing secrets stay.
    env_file = tmp_path / "compose" / "env.enterprise"
    kept = read_env(env_file)
    env_file.write_text(
        "".join(f"{k}={v}\n" for k, v in kept.items() if k not in {"REDIS_PASSWORD", "LOG_LEVEL"})
    )
    prepare(tmp_path)
    again = read_env(env_file)
    assert again["LOG_LEVEL"] == read_env(ENV_EXAMPLE)["LOG_LEVEL"]
    assert re.fullmatch(r"[0-9a-f]{32}", again["REDIS_PASSWORD"])
    assert again["REDIS_PASSWORD"] != kept["REDIS_PASSWORD"]
    assert {k: v for k, v in again.items() if k not in {"REDIS_PASSWORD", "LOG_LEVEL"}} == {
        k: v for k, v in kept.items() if k not in {"REDIS_PASSWORD", "LOG_LEVEL"}
    }


def test_an_existing_certificate_is_kept(tmp_path: Path) -> None:
    ssl_dir = tmp_path / "haproxy" / "ssl"
    ssl_dir.mkdir(parents=True)
    (ssl_dir / "company.pem").write_text("operator's own certificate")
    prepare(tmp_path, PUBLIC_HOSTNAME="chat.company.test")
    assert sorted(p.name for p in ssl_dir.iterdir()) == ["company.pem"]
    assert (ssl_dir / "company.pem").read_text() == "operator's own certificate"


def test_certificate_names_the_public_hostname(tmp_path: Path) -> None:
    prepare(tmp_path, PUBLIC_HOSTNAME="chat.company.test")
    bundle = tmp_path / "haproxy" / "ssl" / "chat.company.test.pem"
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(bundle.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "chat.company.test" in names.get_values_for_type(x509.DNSName)


def test_haproxy_accepts_the_generated_certificate(tmp_path: Path) -> None:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        pytest.skip("haproxy is not installed")
    prepare(tmp_path)
    env = {"PATH": os.environ.get("PATH", ""), "SSL_DIR": str(tmp_path / "haproxy" / "ssl")}
    result = subprocess.run(
        [binary, "-c", "-f", str(HAPROXY_CFG)], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_fixed_passwords_in_the_deployment_files() -> None:
    files = [
        DEPLOY_SCRIPT,
        ENV_EXAMPLE,
        HAPROXY_CFG,
        ROOT / "compose" / "docker-compose.production.yml",
        ROOT / "compose" / "manage.sh",
        ROOT / "Dockerfile",
    ]
    # NAME=value (env files, shell) or NAME: value (YAML) for a password-like NAME; references such
    # as ${NAME:?...} or $$NAME are not assignments.
    assignment = re.compile(
        r"(?<![{$\w])([A-Z][A-Z0-9_]*(?:PASSWORD|_PASS|SECRET)[A-Z0-9_]*)[ \t]*[=:][ \t]*(\S*)"
    )
    for path in files:
        for match in assignment.finditer(path.read_text()):
            value = match.group(2).strip("'\"")
            assert value in {"", PLACEHOLDER} or value.startswith(("${", "/run/secrets/")), (
                f"{path.name}: {match.group(0)!r}"
            )
