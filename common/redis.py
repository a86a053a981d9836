"""One Redis client factory for a single node or a Redis Cluster, chosen by configuration.

Reconnects. A pooled connection can be dead without the pool knowing (Redis restarted, a
failover, an idle connection cut by a firewall, ``CLIENT KILL``). Every client made here:

- retries a command that failed with a *connection* error (``ConnectionError``, which includes
  ``BusyLoadingError`` while a restarted Redis loads its data) up to ``RETRIES`` times, on a new
  connection, after a short jittered exponential back-off; the dead connection is dropped;
- PINGs a connection that sat idle for ``HEALTH_CHECK_SECONDS`` before using it again (the PING,
  not the command, meets a dead socket, and is retried like any connection error);
- keeps TCP keepalive on, so a peer that vanished without a FIN is noticed;
- gives up connecting after ``CONNECT_TIMEOUT_SECONDS`` and waiting for a reply after
  ``READ_TIMEOUT_SECONDS`` (callers answer 503 while Redis is really down).

Why a retry does not apply a command twice: a connection error almost always means the command
never reached a live server (it was written to a socket the server had already closed, the case
after a restart). It can also mean the connection broke after Redis ran the command and before
its reply arrived; for that rare case the scripts whose repetition would change their effect are
safe to repeat: the session scripts (``common/sessions.py``) carry a per-call token, the admission
script (``gateway/admission.py``) a per-call member, refresh rotation (``auth/refresh.py``)
recognises its own new token. Plain writes are idempotent (SET, HSET, ZADD, DEL ...) but for
counters (token generation, login throttles), where a repeat at worst counts once more. A read
*timeout* is different: Redis may still be running the command, so timeouts are never retried, on
one node or in a cluster (where redis-py would by default).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
)

from common.settings import CommonSettings

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "HEALTH_CHECK_SECONDS",
    "READ_TIMEOUT_SECONDS",
    "REDIS_UNAVAILABLE",
    "RETRIES",
    "RedisClient",
    "create_redis",
    "open_redis",
    "open_service_redis",
]

RedisClient: TypeAlias = Redis | RedisCluster

# What a Redis outage raises: the cluster client's start-up failure is no RedisError, and socket
# errors (TimeoutError included) can surface unwrapped. HTTP services answer these with 503.
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)

RETRIES = 3
CLUSTER_ATTEMPTS = 10
BACKOFF_BASE_SECONDS = 0.05  # jittered: up to 0.05, 0.1, 0.2 s before the three retries
BACKOFF_CAP_SECONDS = 1.0
HEALTH_CHECK_SECONDS = 10
CONNECT_TIMEOUT_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 5.0


class _Cluster(RedisCluster):
    """redis-py's cluster client, except that a read timeout is not retried (see the module
    docstring); connection errors still reload the slot map and retry, as do a cluster that is
    down or a slot not covered during a failover."""

    # redis-py types this as its own default tuple (which lists TimeoutError too).
    ERRORS_ALLOW_RETRY = (ConnectionError, ClusterDownError, SlotNotCoveredError)  # type: ignore[assignment]


def _retry(retries: int) -> Retry:
    return Retry(
        ExponentialWithJitterBackoff(base=BACKOFF_BASE_SECONDS, cap=BACKOFF_CAP_SECONDS),
        retries,
        supported_errors=(ConnectionError,),
    )


def _connection_options(client_name: str | None, *, cluster: bool) -> dict[str, Any]:
    return {
        # What CLIENT SETINFO reports, resolved once: redis-py would otherwise look its own version
        # up (importlib.metadata, ~0.4 ms) for every connection a single-node pool opens.
        "driver_info": DriverInfo(),
        # A cluster client counts its own attempts (each reloads the slot map; a cluster that is
        # down waits 0.25 s before the next): redis-py's default there, ours on one node.
        "retry": _retry(CLUSTER_ATTEMPTS if cluster else RETRIES),
        "health_check_interval": HEALTH_CHECK_SECONDS,
        "socket_keepalive": True,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "socket_timeout": READ_TIMEOUT_SECONDS,
        # CLIENT LIST shows which service holds a connection (a name may not contain spaces).
        "client_name": None if client_name is None else re.sub(r"[^A-Za-z0-9_.:-]", "_", client_name),
    }


def create_redis(
    url: str, *, cluster: bool, max_connections: int = 256, client_name: str | None = None
) -> RedisClient:
    """Build a client; the same code runs against both because every multi-key script uses hash tags.

    The single-node pool blocks when exhausted instead of failing; the cluster client raises
    ``MaxConnectionsError`` when more commands are in flight than ``max_connections``, so callers
    bound their concurrency below it.
    """
    options = _connection_options(client_name, cluster=cluster)
    if cluster:
        return _Cluster.from_url(url, max_connections=max_connections, decode_responses=False, **options)
    # The retry policy lives on the pool's connections (a client built on a pool ignores its own).
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=10, **options)
    return Redis.from_pool(pool)  # the client owns the pool: aclose() disconnects it


async def open_redis(
    url: str, *, cluster: bool, max_connections: int = 256, client_name: str | None = None
) -> RedisClient:
    """``create_redis`` plus, for a cluster, loading the slot map before any traffic.

    redis-py's first topology refresh recycles connections; a burst of concurrent first commands
    racing it can fail on a half-open connection. If the cluster is unreachable now, the client
    still returns and initialises on first use (readiness probes report the outage).
    """
    client = create_redis(url, cluster=cluster, max_connections=max_connections, client_name=client_name)
    if isinstance(client, RedisCluster):
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            await client.initialize()
    return client


async def open_service_redis(common: CommonSettings, *, client_name: str | None = None) -> RedisClient:
    """:func:`open_redis` as a service's settings say (URL, cluster or not, pool size); the client
    is named for the service in ``CLIENT LIST`` unless ``client_name`` says otherwise."""
    return await open_redis(
        common.redis_url,
        cluster=common.redis_cluster,
        max_connections=common.redis_max_connections,
        client_name=client_name or common.service_name,
    )
