"""Compose's gateway scaling, for real: HAProxy from haproxy/haproxy.cfg with the compose settings
(GATEWAY_SERVICE + DNS_RESOLVER) finds the replicas of one service name through DNS, as it does
with Docker's resolver, and balances over all of them; scaling from 3 to 5 and back needs no reload.

A small DNS server (dnspython) stands in for Docker's 127.0.0.11: it answers the service name with
one address per "replica"; the replicas are stand-in upstreams on 127.0.0.2.. with one port, as
replicas of a compose service share theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import aiohttp
import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from aiohttp import web
from deploy_support import HAProxy, HAProxyFactory, free_port

SERVICE = "gateway"
SLOTS = 8
pytestmark = pytest.mark.haproxy


@dataclass
class Replicas:
    """What the stand-in DNS answers for SERVICE: the current replicas' addresses."""

    addresses: list[str] = field(default_factory=list)


class DockerDns(asyncio.DatagramProtocol):
    def __init__(self, replicas: Replicas) -> None:
        self.replicas = replicas
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        if question.name.to_text().rstrip(".") == SERVICE and question.rdtype == dns.rdatatype.A:
            response.answer.append(
                dns.rrset.from_text_list(
                    question.name, 1, dns.rdataclass.IN, dns.rdatatype.A, self.replicas.addresses
                )
            )
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def dns_server() -> AsyncIterator[tuple[Replicas, str]]:
    replicas = Replicas()
    port = free_port()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: DockerDns(replicas), local_addr=("127.0.0.1", port)
    )
    yield replicas, f"127.0.0.1:{port}"
    transport.close()


@pytest.fixture
async def gateway_replicas() -> AsyncIterator[tuple[dict[str, web.TCPSite], int]]:
    """Five stand-in gateways on 127.0.0.2-6, one port: /ready is 200, anything else names the
    address that answered."""

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    async def whoami(request: web.Request) -> web.Response:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        return web.json_response({"replica": sockname[0] if sockname else None})

    app = web.Application()
    app.router.add_get("/ready", ready)
    app.router.add_get("/{tail:.*}", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    sites = {f"127.0.0.{n}": web.TCPSite(runner, f"127.0.0.{n}", port) for n in range(2, 7)}
    for site in sites.values():
        await site.start()
    yield sites, port
    await runner.cleanup()


async def served_by(proxy: HAProxy, count: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.get(f"{proxy.http_url}/v1/models") as response:
                assert response.status == 200, await response.text()
                seen[(await response.json())["replica"]] += 1
    return seen


async def wait_up(proxy: HAProxy, count: int, timeout: float = 20.0) -> dict[str, str]:
    """Wait until exactly ``count`` gateway slots are UP (the rest in maintenance)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    status: dict[str, str] = {}
    async with aiohttp.ClientSession() as session:
        while loop.time() < end:
            with contextlib.suppress(aiohttp.ClientError):
                status = {
                    k: v for k, v in (await proxy.server_status(session)).items() if k.startswith("gateways/")
                }
            if sum(value.startswith("UP") for value in status.values()) == count and len(status) == SLOTS:
                return status
            await asyncio.sleep(0.1)
    raise AssertionError(f"not {count} gateways UP within {timeout}s: {status}\n{proxy.log()[-3000:]}")


async def test_haproxy_balances_over_every_replica_and_follows_scaling(
    haproxy_factory: HAProxyFactory,
    dns_server: tuple[Replicas, str],
    gateway_replicas: tuple[dict[str, web.TCPSite], int],
) -> None:
    replicas, resolver = dns_server
    sites, port = gateway_replicas
    addresses = list(sites)
    replicas.addresses = addresses[:3]
    proxy = await haproxy_factory(
        GATEWAY_SERVICE=f"{SERVICE}:{port}", DNS_RESOLVER=resolver, GATEWAY_SLOTS=str(SLOTS), TLS_ENABLED="0"
    )
    await wait_up(proxy, 3)
    assert set(await served_by(proxy, 12)) == set(addresses[:3])

    # make scale GATEWAYS=5: two more replicas answer for the name; no reload.
    replicas.addresses = addresses
    await wait_up(proxy, 5)
    assert set(await served_by(proxy, 20)) == set(addresses)

    # ... and back to 2: compose stops three containers and Docker's DNS stops naming them; the
    # health checks take them out of the rotation at once (their slots are freed once the
    # resolver's `hold obsolete` has passed).
    replicas.addresses = addresses[:2]
    for address in addresses[2:]:
        await sites[address].stop()
    await wait_up(proxy, 2)
    assert set(await served_by(proxy, 10)) == set(addresses[:2])
