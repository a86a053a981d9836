"""Property-based API test: schemathesis drives the real services from ``gateway/openapi.json``.

The auth service, a gateway, an inference worker and the Ollama simulator run in process on real
RabbitMQ, Redis and S3, reached over TCP. Schemathesis (its CLI, in a child process) loads the
document from the gateway's ``GET /openapi.json`` and sends generated requests, valid and invalid,
with real access tokens (``fuzz_hooks.py``). Every response must hold:

- no 5xx, ever;
- every error is JSON ``{"error", "message"}`` (OpenAI's shape under ``/v1/``);
- status code, Content-Type, required headers (``Retry-After`` on 429) and body as documented;
- invalid input is rejected with a 4xx; authenticated operations refuse requests without a valid
  token; unsupported methods answer 405.

The run is bounded (``FUZZ_MAX_EXAMPLES`` cases per operation, ``FUZZ_SECONDS`` per service);
``make fuzz`` runs it longer. ``FUZZ_SEED`` replays a run (the seed is printed).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from helpers import KeyPair, start_server

from auth.app import create_app as create_auth_app
from auth.settings import AuthSettings
from gateway.contract import OPERATIONS

HOOKS = Path(__file__).with_name("fuzz_hooks.py")
CONFIG = Path(__file__).with_name("fuzz.toml")
ROOT = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "20"))
SECONDS = int(os.environ.get("FUZZ_SECONDS", "45"))
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "missing_required_header",
        "unsupported_method",
        "ignored_auth",
        "error_shape",
        "HandlersReached",
    )
)
PASSWORD = "fuzzing is fun 123"

pytestmark = pytest.mark.timeout(2 * SECONDS + 90)


@dataclass(frozen=True)
class _Redis:
    url: str
    cluster: bool


@pytest.fixture(scope="session")
def redis_target(single_redis_url: str) -> _Redis:
    """One Redis (not also the cluster, as conftest's does): these tests are about HTTP input
    handling, and the fuzz run is the slowest test of the suite."""
    return _Redis(single_redis_url, cluster=False)


def _workdirs(tmp_path: Path, names: list[str]) -> dict[str, Path]:
    """The CLI's working directories: Hypothesis and Schemathesis write their files there."""
    dirs = {name: tmp_path / name for name in names}
    for path in dirs.values():
        path.mkdir()
    return dirs


def _signing_pem(keys: KeyPair) -> str:
    return keys.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


async def _schemathesis(
    name: str, schema_url: str, base_url: str, tags: set[str], env: dict[str, str], workdir: Path, seed: int
) -> tuple[int, str]:
    args = [
        "--config-file",
        str(CONFIG),
        "run",
        schema_url,
        "--url",
        base_url,
        *(arg for tag in sorted(tags) for arg in ("--include-tag", tag)),
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--max-time",
        str(SECONDS),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--no-color",
        "--output-truncate",
        "false",
    ]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        *args,
        cwd=workdir,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    return process.returncode or 0, f"===== schemathesis: {name} =====\n{text}"


async def test_fuzzed_requests_get_documented_answers_and_never_a_5xx(
    worker: Any,
    gateway_factory: Any,
    auth_base_env: dict[str, str],
    keys: KeyPair,
    tmp_path: Path,
    redis: Any,
) -> None:
    gateway = await gateway_factory(RATE_LIMIT_PER_MINUTE="100000")
    suffix = uuid.uuid4().hex[:8]
    admin = f"fuzz_admin_{suffix}"
    auth_settings = AuthSettings.from_env(
        {
            **auth_base_env,
            "AUTH_BCRYPT_ROUNDS": "4",
            "AUTH_HASH_WORKERS": "2",
            "AUTH_SIGNING_KEY": _signing_pem(keys),
            "AUTH_TRUSTED_PROXIES": "127.0.0.1",
            "AUTH_BOOTSTRAP_ADMIN_USERNAME": admin,
            "AUTH_BOOTSTRAP_ADMIN_PASSWORD": PASSWORD,
            "AUTH_BOOTSTRAP_ADMIN_EMAIL": f"{admin}@fuzz.example.com",
        }
    )
    auth = await start_server(create_auth_app(auth_settings))
    auth_url = str(auth.make_url("")).rstrip("/")
    gateway_url = str(gateway.make_url("")).rstrip("/")
    seed = int(os.environ.get("FUZZ_SEED") or random.randrange(2**32))
    print(f"schemathesis seed: {seed} (FUZZ_SEED={seed} replays it)")
    common_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FUZZ_", "SCHEMATHESIS_"))},
        "SCHEMATHESIS_HOOKS": str(HOOKS),
        "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path / "hypothesis"),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
    }
    runs = {
        "auth": (
            auth_url,
            {"FUZZ_AUTH_URL": auth_url, "FUZZ_USERNAME": admin, "FUZZ_PASSWORD": PASSWORD},
        ),
        "gateway": (
            gateway_url,
            {
                "FUZZ_SIGNING_KEY": _signing_pem(keys),
                "FUZZ_USER_ID": f"fuzz-{suffix}",
                "FUZZ_ORG_ID": "fuzz-org",
            },
        ),
    }
    tags = {service: {op.tag for op in OPERATIONS if op.service == service} for service in runs}
    assert not tags["auth"] & tags["gateway"], "a tag must belong to one service"
    workdirs = _workdirs(tmp_path, list(runs))
    started = time.monotonic()
    try:
        results = await asyncio.gather(
            *(
                _schemathesis(
                    service,
                    f"{gateway_url}/openapi.json",
                    base_url,
                    tags[service],
                    {**common_env, **env},
                    workdirs[service],
                    seed,
                )
                for service, (base_url, env) in runs.items()
            )
        )
    finally:
        await auth.close()
    print(f"fuzzing took {time.monotonic() - started:.1f} s")
    failed = [output for code, output in results if code != 0]
    for _, output in results:
        print(output[-3000:])
    assert not failed, "\n\n".join(failed)


# Inputs fuzzing found that once answered 5xx or were accepted though invalid: kept as fixed cases.
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status"),
    [
        pytest.param("GET", "/sessions?limit=%C2%B2", None, {}, 400, id="superscript-digit-query"),
        pytest.param("GET", "/sessions?cursor=%EF%BC%91", None, {}, 400, id="fullwidth-digit-query"),
        pytest.param(
            "POST",
            "/chat",
            b'{"session_id": "s1", "prompt": "hi"}',
            {**JSON, "Content-Encoding": "gzip"},
            400,
            id="body-not-in-its-content-encoding",
        ),
        pytest.param("FOO", "/chat", None, {}, 405, id="unknown-method"),
    ],
)
async def test_inputs_fuzzing_found_are_refused_in_the_error_shape(
    gateway: Any,
    keys: KeyPair,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    status: int,
) -> None:
    token = keys.mint(f"regression-{uuid.uuid4().hex[:8]}")
    response = await gateway.request(
        method, path, data=body, headers={"Authorization": f"Bearer {token}", **headers}
    )
    assert response.content_type == "application/json", await response.text()
    payload = await response.json()
    assert (response.status, sorted(payload)) == (status, ["error", "message"]), payload
