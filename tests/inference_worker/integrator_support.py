"""A queue-level integrator's own RabbitMQ user, made for one test through the management API with
exactly the permissions the shipped definitions give one (Topology.integrator_permissions)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
from helpers import RabbitManagement
from yarl import URL

from broker.topology import Topology


@dataclass(frozen=True)
class Integrator:
    user: str
    url: str  # RABBITMQ_URL with the integrator's credentials
    reply_prefix: str  # the reply queues it may declare and consume

    def reply_queue(self) -> str:
        return f"{self.reply_prefix}{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def integrator_user(
    management: RabbitManagement, rabbitmq_url: str, topology: Topology
) -> AsyncIterator[Integrator]:
    """A fresh RabbitMQ user with an integrator's permissions on the test broker's vhost; deleted
    afterwards (which closes its connections)."""
    user = f"integrator-{uuid.uuid4().hex[:10]}"
    password = secrets.token_hex(16)
    vhost = quote(management.vhost, safe="")
    permissions = topology.integrator_permissions(user, management.vhost)
    async with aiohttp.ClientSession(headers=management.headers, raise_for_status=True) as http:
        await http.put(f"{management.api}/users/{user}", json={"password": password, "tags": ""})
        try:
            body = {k: permissions[k] for k in ("configure", "write", "read")}
            await http.put(f"{management.api}/permissions/{vhost}/{user}", json=body)
            url = str(URL(rabbitmq_url).with_user(user).with_password(password))
            yield Integrator(user, url, topology.integrator_reply_prefix(user))
        finally:
            await http.delete(f"{management.api}/users/{user}")
