"""`make scale WORKERS=n GATEWAYS=n` on the compose deployment: compose/manage.sh run for real,
through the Makefile, with a stand-in ``docker`` on PATH that records what it is asked (no Docker
engine here)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_support import ROOT

FAKE_DOCKER = """#!/usr/bin/env bash
printf '%s\\n' "$*" >>"$DOCKER_LOG"
"""


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    """A copy of manage.sh beside an env.enterprise (it refuses to run without one)."""
    (tmp_path / "compose").mkdir()
    shutil.copy(ROOT / "compose" / "manage.sh", tmp_path / "compose" / "manage.sh")
    (tmp_path / "compose" / "env.enterprise").write_text("LOG_LEVEL=info\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    return tmp_path


def scale(deployment: Path, **counts: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    log = deployment / "docker.log"
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(ROOT),
            "scale",
            f"MANAGE=bash {deployment / 'compose' / 'manage.sh'}",
            *(f"{name}={value}" for name, value in counts.items()),
        ],
        env={
            **os.environ,
            "PATH": f"{deployment / 'bin'}:{os.environ['PATH']}",
            "DOCKER_LOG": str(log),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return result, [call for call in calls if call != "compose version"]


def test_five_gateways_are_accepted(deployment: Path) -> None:
    result, calls = scale(deployment, GATEWAYS="5")
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = (
        f"compose -f {deployment}/compose/docker-compose.production.yml "
        f"--env-file {deployment}/compose/env.enterprise"
    )
    assert calls == [f"{prefix} up -d --no-deps --no-recreate --scale gateway=5 gateway", f"{prefix} ps"]


def test_workers_and_gateways_together(deployment: Path) -> None:
    result, calls = scale(deployment, WORKERS="8", GATEWAYS="12")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [call.split(" up ", 1)[-1] for call in calls[:2]] == [
        "-d --no-deps --no-recreate --scale inference-worker=8 inference-worker",
        "-d --no-deps --no-recreate --scale gateway=12 gateway",
    ]


def test_more_gateways_than_haproxy_slots_are_refused(deployment: Path) -> None:
    result, calls = scale(deployment, GATEWAYS="33")
    assert result.returncode != 0
    assert "GATEWAYS must be 1-32" in result.stderr and "HAPROXY_GATEWAY_SLOTS" in result.stderr
    assert calls == []
    # The operator's own slot count is the bound.
    (deployment / "compose" / "env.enterprise").write_text("HAPROXY_GATEWAY_SLOTS=64\n")
    result, calls = scale(deployment, GATEWAYS="33")
    assert result.returncode == 0, result.stderr
    assert "--scale gateway=33 gateway" in calls[0]


@pytest.mark.parametrize("value", ["0", "five", "-1"])
def test_a_bad_gateway_count_is_refused(deployment: Path, value: str) -> None:
    result, calls = scale(deployment, GATEWAYS=value)
    assert result.returncode != 0
    assert "GATEWAYS must be" in result.stderr
    assert calls == []
