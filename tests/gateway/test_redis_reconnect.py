"""Pooled Redis connections that died (as after a Redis restart) cost nothing: the server closes
every connection this test process holds (gateway and worker alike; on every node of a cluster)
with ``CLIENT KILL``, and the requests that follow, which meet those dead connections first, all
succeed: no 500, no 503.

Only this process's connections are killed (found through /proc), so tests running against the
same Redis elsewhere are not disturbed."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from helpers import KeyPair, auth_header
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from common.redis import RedisClient

ROUNDS = 3


def _own_local_ports(server_port: int) -> set[int]:
    """Local ports of this process's established TCP connections to ``server_port`` (Linux)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                if state == "01" and inode in inodes and int(remote.rsplit(":", 1)[1], 16) == server_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


async def _kill_own_connections(host: str, port: int) -> int:
    """What a Redis restart does to this process: the server closes every connection it holds."""
    mine = _own_local_ports(port)
    async with Redis(host=host, port=port) as admin:
        me = await admin.client_id()
        killed = 0
        for client in await admin.client_list():
            local = int(str(client["addr"]).rsplit(":", 1)[1])
            if local in mine and int(client["id"]) != me:
                killed += int(await admin.execute_command("CLIENT", "KILL", "ID", client["id"]))
    return killed


def _nodes(redis: RedisClient) -> list[tuple[str, int]]:
    if isinstance(redis, RedisCluster):
        return [(node.host, int(node.port)) for node in redis.get_nodes()]
    kwargs = redis.connection_pool.connection_kwargs
    return [(str(kwargs.get("host", "127.0.0.1")), int(kwargs.get("port", 6379)))]


async def test_requests_after_redis_dropped_every_connection_all_succeed(
    gateway: Any, worker: Any, redis: RedisClient, keys: KeyPair
) -> None:
    nodes = _nodes(redis)
    headers = auth_header(keys.mint("u"))

    async def chat(session_id: str) -> int:
        response = await gateway.post(
            "/chat", json={"session_id": session_id, "prompt": "hi", "stream": False}, headers=headers
        )
        await response.read()
        return int(response.status)

    async def read(path: str) -> int:
        response = await gateway.get(path, headers=headers)
        await response.read()
        return int(response.status)

    # Fill the pools: many connections, so every one of the next requests meets a dead one.
    assert await asyncio.gather(*(chat(f"s{i}") for i in range(8))) == [200] * 8
    for _ in range(ROUNDS):
        killed = [await _kill_own_connections(host, port) for host, port in nodes]
        assert sum(killed) >= 2
        statuses = await asyncio.gather(
            *(read("/sessions/s0") for _ in range(8)),
            *(read("/sessions") for _ in range(4)),
            *(chat(f"s{i}") for i in range(4)),
        )
        assert statuses == [200] * len(statuses)
    response = await gateway.get("/sessions/s0", headers=headers)
    assert len((await response.json())["turns"]) == 2 * (1 + ROUNDS)
