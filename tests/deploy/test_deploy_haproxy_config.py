"""``haproxy -c`` accepts haproxy/haproxy.cfg under the local defaults, the compose environment and
every optional switch; and it refuses to start TLS without a certificate instead of serving none."""

from __future__ import annotations

import pwd
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_support import COMPOSE_FILE, HAPROXY_CFG, Tls, haproxy_env


def check(binary: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "-c", "-f", str(HAPROXY_CFG)], env=env, capture_output=True, text=True, timeout=30
    )


def test_config_is_valid_with_the_test_environment(haproxy_bin: str, tls: Tls) -> None:
    result = check(haproxy_bin, haproxy_env(tls.ssl_dir))
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_is_valid_with_only_the_local_defaults(haproxy_bin: str, tls: Tls) -> None:
    # Nothing but a certificate directory set: every other value comes from the presetenv defaults.
    result = check(haproxy_bin, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SSL_DIR": str(tls.ssl_dir)})
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_is_valid_with_the_compose_environment(haproxy_bin: str, tls: Tls) -> None:
    """The haproxy service's environment from the compose file, as compose would interpolate it
    (defaults taken, required secrets filled in); upstream names resolve only inside Docker."""
    service = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["haproxy"]

    def interpolate(value: str) -> str:
        return re.sub(r"\$\{[A-Z0-9_]+(?::-([^}]*)|:\?[^}]*)?\}", lambda m: m.group(1) or "x1y2z3", value)

    env = {key: interpolate(str(value)) for key, value in service["environment"].items()}
    try:
        pwd.getpwnam(env.get("HAPROXY_USER", "root"))
    except KeyError:
        env.pop("HAPROXY_USER")  # no such user outside the image
    env.update(PATH="/usr/sbin:/usr/bin:/sbin:/bin", SSL_DIR=str(tls.ssl_dir))
    assert env["DNS_RESOLVER"] and env["GATEWAY_SERVICE"] == "gateway:8101"
    result = check(haproxy_bin, env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_can_drop_privileges(haproxy_bin: str, tls: Tls) -> None:
    try:
        pwd.getpwnam("haproxy")
    except KeyError:
        pytest.skip("no 'haproxy' user on this machine (the Debian package creates it)")
    result = check(haproxy_bin, haproxy_env(tls.ssl_dir, HAPROXY_USER="haproxy"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_tls_can_be_switched_off_without_a_certificate(haproxy_bin: str, tmp_path: Path) -> None:
    result = check(haproxy_bin, haproxy_env(tmp_path / "absent", TLS_ENABLED="0"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_tls_without_a_certificate_is_refused(haproxy_bin: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty-ssl"
    empty.mkdir()
    (empty / ".gitignore").write_text("*\n")
    result = check(haproxy_bin, haproxy_env(empty))
    assert result.returncode != 0
    assert "certificate" in (result.stdout + result.stderr).lower()


def test_a_gateway_service_without_a_resolver_is_refused(haproxy_bin: str, tls: Tls) -> None:
    """Replicas are found only through DNS: without a resolver HAProxy would pin one address."""
    result = check(haproxy_bin, haproxy_env(tls.ssl_dir, GATEWAY_SERVICE="gateway:8101"))
    assert result.returncode != 0
    assert "GATEWAY_SERVICE needs DNS_RESOLVER" in result.stdout + result.stderr
