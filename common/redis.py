"""One Redis client factory for a single node or a Redis Cluster, chosen by configuration."""

from __future__ import annotations

import contextlib
from typing import TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

RedisClient: TypeAlias = Redis | RedisCluster

# What a Redis outage raises: the cluster client's start-up failure is no RedisError, and socket
# errors (TimeoutError included) can surface unwrapped. HTTP services answer these with 503.
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)


def create_redis(url: str, *, cluster: bool, max_connections: int = 256) -> RedisClient:
    """Build a client; the same code runs against both because every multi-key script uses hash tags.

    The single-node pool blocks when exhausted instead of failing; the cluster client raises
    ``MaxConnectionsError`` when more commands are in flight than ``max_connections``, so callers
    bound their concurrency below it.
    """
    if cluster:
        return RedisCluster.from_url(url, max_connections=max_connections, decode_responses=False)
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=10)
    return Redis.from_pool(pool)  # the client owns the pool: aclose() disconnects it


async def open_redis(url: str, *, cluster: bool, max_connections: int = 256) -> RedisClient:
    """``create_redis`` plus, for a cluster, loading the slot map before any traffic.

    redis-py's first topology refresh recycles connections; a burst of concurrent first commands
    racing it can fail on a half-open connection. If the cluster is unreachable now, the client
    still returns and initialises on first use (readiness probes report the outage).
    """
    client = create_redis(url, cluster=cluster, max_connections=max_connections)
    if isinstance(client, RedisCluster):
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            await client.initialize()
    return client
