"""Shared fixtures: real RabbitMQ and Redis, a per-test namespace, keys, simulator, worker, gateway.

Services are found through ``RABBITMQ_URL`` and ``REDIS_URL`` (defaults: the local services of
our machines). Where neither answers and Docker is available, testcontainers starts them.
Every test gets its own broker prefix and Redis key prefix, removed afterwards, so tests are
isolated from each other and from earlier runs on the shared services.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import aio_pika
import pytest
from aiohttp import web
from aiohttp.helpers import encode_basic_auth
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from helpers import KeyPair, RabbitManagement, simulator_url, start_client, start_server
from postgres import (
    DEFAULT_SERVER_URL,
    copy_database,
    create_test_database,
    database_url,
    drop_database,
    drop_test_database,
)
from rediscluster import LocalRedisCluster
from s3server import MotoServer
from tcp_proxy import TcpProxy, target_of

from archiver.settings import ArchiverSettings
from archiver.worker import Archiver
from broker.topology import QueueLimits, Topology
from common.redis import RedisClient, open_redis
from gateway.app import create_app
from gateway.settings import GatewaySettings
from inference_worker.settings import WorkerSettings
from inference_worker.simulator import SimulatorConfig, create_simulator_app
from inference_worker.worker import InferenceWorker

# Fixture -> marker of the service it needs; ``redis_target`` is marked by its parameter below.
# Marks follow the fixture closure, so a test using ``gateway`` is marked rabbitmq, redis and s3.
SERVICE_MARKERS = {
    "rabbitmq_url": ("rabbitmq",),
    "single_redis_url": ("redis",),
    "cluster_redis_url": ("redis", "cluster"),
    "s3_url": ("s3",),
    "haproxy_bin": ("haproxy",),
    "postgres_template": ("postgres",),
}


# The modules whose subject is state kept in Redis (scripts, multi-key writes under one hash tag,
# pipelines, reconnects): their tests run against the single Redis and against the Redis Cluster.
# Every other Redis-touching test (HTTP shapes, client compatibility, the browser, deployment)
# runs against the single Redis only, unless ``REDIS_CLUSTER_EVERYWHERE=1``: the same code under
# both would double the suite's time without testing anything cluster-specific.
CLUSTER_MODULES = (
    "tests/common/",
    "tests/archiver/",
    "tests/inference_worker/",
    "tests/gateway/test_admission.py",
    "tests/gateway/test_ratelimit.py",
    "tests/gateway/test_resume.py",
    "tests/gateway/test_revocation.py",
    "tests/gateway/test_jobs.py",
    "tests/gateway/test_redis_reconnect.py",
    "tests/gateway/test_exchange_outcomes.py",
    "tests/gateway/test_chat_stop.py",
    "tests/gateway/test_watchdog.py",
    "tests/gateway/test_chat_concurrency.py",
    "tests/gateway/test_session_tool_calls.py",
    "tests/auth/test_auth_revocation.py",
    "tests/auth/test_auth_bruteforce.py",
    "tests/auth/test_auth_token_flow.py",
    "tests/e2e/test_worker_crash.py",
    "tests/e2e/test_revocation_e2e.py",
    "tests/e2e/test_usage_e2e.py",
    "tests/e2e/test_usage_batches.py",
    "tests/e2e/test_identity_outage_e2e.py",
)


def _cluster_variant(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("redis_target") == "cluster"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop the cluster variant outside CLUSTER_MODULES; mark every test with the services it
    needs: ``pytest -m "not cluster"`` is the quick loop."""
    if os.environ.get("REDIS_CLUSTER_EVERYWHERE", "") not in {"1", "true"}:
        root = Path(str(config.rootpath))
        dropped = [
            item
            for item in items
            if _cluster_variant(item)
            and not Path(str(item.path)).relative_to(root).as_posix().startswith(CLUSTER_MODULES)
        ]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            kept = set(map(id, dropped))
            items[:] = [item for item in items if id(item) not in kept]
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        marks = {mark for name, names in SERVICE_MARKERS.items() if name in fixtures for mark in names}
        if "redis_target" in fixtures:
            marks.add("redis")
            if _cluster_variant(item):
                marks.add("cluster")
        for mark in sorted(marks):
            item.add_marker(mark)


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=1
        ):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    url = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
    if _reachable(url, 5672) or "RABBITMQ_URL" in os.environ:
        yield url
        return
    from testcontainers.rabbitmq import RabbitMqContainer  # laptop fallback (needs Docker)

    with RabbitMqContainer("rabbitmq:3.13-management") as container:
        host, port = container.get_container_host_ip(), container.get_exposed_port(5672)
        yield f"amqp://guest:guest@{host}:{port}/"


@pytest.fixture(scope="session")
def rabbitmq_management(rabbitmq_url: str) -> RabbitManagement:
    """``RABBITMQ_MANAGEMENT_URL`` (default: port 15672 on the broker's host), as RABBITMQ_URL's user."""
    parsed = urlparse(rabbitmq_url)
    base = os.environ.get("RABBITMQ_MANAGEMENT_URL", f"http://{parsed.hostname or '127.0.0.1'}:15672")
    login = encode_basic_auth(unquote(parsed.username or "guest"), unquote(parsed.password or "guest"))
    vhost = unquote(parsed.path[1:]) or "/"
    return RabbitManagement(f"{base.rstrip('/')}/api", {"Authorization": login}, vhost)


@pytest.fixture(scope="session")
def single_redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if _reachable(url, 6379) or "REDIS_URL" in os.environ:
        yield url
        return
    from testcontainers.redis import RedisContainer  # laptop fallback (needs Docker)

    with RedisContainer("redis:7") as container:
        host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
        yield f"redis://{host}:{port}/0"


@pytest.fixture(scope="session")
def cluster_redis_url() -> Iterator[str]:
    """``REDIS_CLUSTER_URL`` when set, else a 6-node cluster on 7000-7005 started for the session."""
    if url := os.environ.get("REDIS_CLUSTER_URL"):
        yield url
        return
    if not LocalRedisCluster.available():
        pytest.skip("redis-server is not installed: cannot start a Redis Cluster")
    cluster = LocalRedisCluster()
    cluster.start()
    yield cluster.url
    cluster.stop()


@dataclass(frozen=True)
class RedisTarget:
    url: str
    cluster: bool


@pytest.fixture(scope="session", params=["single", "cluster"])
def redis_target(request: pytest.FixtureRequest) -> RedisTarget:
    """Every Redis-touching integration test runs against one Redis and against a Redis Cluster."""
    if request.param == "cluster":
        return RedisTarget(request.getfixturevalue("cluster_redis_url"), cluster=True)
    return RedisTarget(request.getfixturevalue("single_redis_url"), cluster=False)


@pytest.fixture
def redis_url(redis_target: RedisTarget) -> str:
    return redis_target.url


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[tuple[str, str]]:
    """A migrated database of this run's own on ``POSTGRES_URL``'s server (default the local
    PostgreSQL), dropped at the end: the template each test's database is copied from."""
    server = os.environ.get("POSTGRES_URL", DEFAULT_SERVER_URL)
    if not _reachable(server, 5432) and "POSTGRES_URL" not in os.environ:
        pytest.skip(f"PostgreSQL is not reachable at {server}")
    name = create_test_database(server)
    yield server, name
    drop_test_database(server, name)


@pytest.fixture
async def postgres_url(postgres_template: tuple[str, str]) -> AsyncIterator[str]:
    """A database of this test's own (a copy of the migrated template, ~0.1 s), dropped after."""
    server, template = postgres_template
    name = await copy_database(server, template)
    yield database_url(server, name)
    await drop_database(server, name)


@pytest.fixture(scope="session")
def s3_url() -> Iterator[str]:
    """``S3_ENDPOINT_URL`` when set (MinIO, a real S3), else a moto server for the session."""
    if url := os.environ.get("S3_ENDPOINT_URL"):
        yield url
        return
    server = MotoServer()
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def namespace() -> str:
    """Unique per test: broker prefix and Redis key prefix."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def base_env(namespace: str, rabbitmq_url: str, redis_target: RedisTarget, s3_url: str) -> dict[str, str]:
    return {
        "ENVIRONMENT": "test",
        "REDIS_CLUSTER": "true" if redis_target.cluster else "false",
        "S3_ENDPOINT_URL": s3_url,
        "S3_BUCKET": f"{namespace}-archive",
        "S3_ACCESS_KEY_ID": os.environ.get("S3_ACCESS_KEY_ID", "test"),
        "S3_SECRET_ACCESS_KEY": os.environ.get("S3_SECRET_ACCESS_KEY", "test"),
        "RABBITMQ_URL": rabbitmq_url,
        "REDIS_URL": redis_target.url,
        "BROKER_PREFIX": namespace,
        "REDIS_KEY_PREFIX": f"{namespace}:",
        "LOG_LEVEL": "warning",
    }


@pytest.fixture
def auth_base_env(base_env: dict[str, str], postgres_url: str) -> dict[str, str]:
    """``base_env`` with this test's own database: for tests that run the auth service."""
    return {**base_env, "DATABASE_URL": postgres_url}


@pytest.fixture
async def redis(redis_target: RedisTarget, namespace: str) -> AsyncIterator[RedisClient]:
    """A client for assertions; deletes every key of this test's namespace afterwards."""
    client = await open_redis(redis_target.url, cluster=redis_target.cluster, max_connections=64)
    yield client
    async for key in client.scan_iter(match=f"{namespace}:*", count=500):
        await client.delete(key)
    await client.aclose()


@pytest.fixture
async def amqp(rabbitmq_url: str, namespace: str) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(rabbitmq_url, client_properties={"connection_name": namespace})
    yield connection
    channel = await connection.channel()
    await Topology(namespace, QueueLimits()).delete(channel)
    await connection.close()


# -- tokens ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def keys() -> KeyPair:
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(private, pem.decode())


# -- simulator, worker, gateway ----------------------------------------------------------------------
@pytest.fixture
def sim_config() -> SimulatorConfig:
    return SimulatorConfig(ttft_ms=5, tokens_per_second=0, answer_tokens=24)


@pytest.fixture
async def simulator(sim_config: SimulatorConfig) -> AsyncIterator[TestServer]:
    server = await start_server(create_simulator_app(sim_config))  # TestServer: handler_cancellation
    yield server
    await server.close()


@pytest.fixture
def worker_env(base_env: dict[str, str], simulator: TestServer) -> dict[str, str]:
    return {
        **base_env,
        "OLLAMA_URLS": simulator_url(simulator),
        "WORKER_CONCURRENCY": "256",
        "WORKER_HTTP_PORT": "0",
        "SHUTDOWN_GRACE_SECONDS": "2",
        "CHUNK_FLUSH_MS": "5",
        "CHUNK_MAX_CHARS": "24",
    }


WorkerFactory = Callable[..., Awaitable[InferenceWorker]]


@pytest.fixture
async def worker_factory(
    worker_env: dict[str, str], amqp: Any, redis: RedisClient
) -> AsyncIterator[WorkerFactory]:
    started: list[InferenceWorker] = []

    async def start(**overrides: str) -> InferenceWorker:
        worker = InferenceWorker(WorkerSettings.from_env({**worker_env, **overrides}))
        await worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in reversed(started):
        await worker.close()


@pytest.fixture
async def worker(worker_factory: WorkerFactory) -> InferenceWorker:
    return await worker_factory()


@pytest.fixture
def gateway_env(base_env: dict[str, str], keys: KeyPair) -> dict[str, str]:
    return {
        **base_env,
        "JWT_PUBLIC_KEY": keys.public_pem,
        "GATEWAY_PORT": "0",
        "CHAT_DEADLINE_SECONDS": "30",
        "SSE_HEARTBEAT_SECONDS": "1",
    }


GatewayFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def gateway_factory(
    gateway_env: dict[str, str], amqp: Any, redis: RedisClient
) -> AsyncIterator[GatewayFactory]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(**overrides: str) -> TestClient[web.Request, web.Application]:
        app = create_app(GatewaySettings.from_env({**gateway_env, **overrides}))
        client = await start_client(app)
        clients.append(client)
        return client

    yield start
    for client in reversed(clients):
        await client.close()


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> TestClient[web.Request, web.Application]:
    return await gateway_factory()


# -- archiver -------------------------------------------------------------------------------------------
ArchiverFactory = Callable[..., Awaitable[Archiver]]


@pytest.fixture
async def archiver_factory(
    base_env: dict[str, str], amqp: Any, redis: RedisClient
) -> AsyncIterator[ArchiverFactory]:
    started: list[Archiver] = []

    async def start(*, sweep: bool = True, **overrides: str) -> Archiver:
        env = {**base_env, "ARCHIVER_HTTP_PORT": "0", "ARCHIVE_RETRY_DELAY_SECONDS": "0.3", **overrides}
        archiver = Archiver(ArchiverSettings.from_env(env))
        await archiver.start(sweep=sweep)
        started.append(archiver)
        return archiver

    yield start
    for archiver in reversed(started):
        await archiver.close()


@pytest.fixture
async def broker_proxy(rabbitmq_url: str) -> AsyncIterator[TcpProxy]:
    """A TCP forwarder to RabbitMQ that a test can cut and restore: a broker outage on demand."""
    proxy = TcpProxy(*target_of(rabbitmq_url, 5672))
    await proxy.start()
    yield proxy
    await proxy.close()
