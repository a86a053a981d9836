"""Organizations: registering an existing organization's name is refused (409 organization_taken,
case-insensitively); a new name creates the organization, atomically and only on success; admins
created by the operator may join an existing organization; older users' organizations are claimed."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from auth.cli import create_admin
from auth.users import ORGANIZATION_CLAIMS_MIGRATION
from common.keyspace import Keyspace

Client = TestClient[Any, Any]
Register = Any


def _body(organization: str, **overrides: str) -> dict[str, str]:
    name = f"user_{uuid.uuid4().hex[:10]}"
    body = {
        "username": name,
        "password": "testpass123",
        "email": f"{name}@company.com",
        "organization": organization,
    }
    return {**body, **overrides}


async def _taken(resp: Any, code: str = "organization_taken") -> None:
    assert resp.status == 409, await resp.text()
    body = await resp.json()
    assert body["error"] == code and body["message"]


@pytest.mark.parametrize("same_name", ["TestOrg", "testorg", "TESTORG", "  TestOrg ", "ＴｅｓｔＯｒｇ"])
async def test_registering_an_existing_organization_is_409(client: Client, same_name: str) -> None:
    first = await client.post("/register", json=_body("TestOrg"))
    assert first.status == 201
    assert (await first.json())["organization"] == "TestOrg"
    await _taken(await client.post("/register", json=_body(same_name)))
    assert (await client.post("/register", json=_body("TestOrg 2"))).status == 201


async def test_a_refused_registration_leaves_the_organization_free(
    client: Client, register: Register, auth_redis: Any, auth_prefix: str
) -> None:
    existing = await register()
    org_key = Keyspace(auth_prefix).auth_organization("fresh org")
    # The username is taken: nothing of this registration is kept, the organization included.
    await _taken(
        await client.post("/register", json=_body("Fresh Org", username=existing["username"])),
        "username_taken",
    )
    assert not await auth_redis.exists(org_key)
    # The email is taken (claimed after the username): both claims are rolled back.
    clash = _body("Fresh Org", email=existing["email"])
    await _taken(await client.post("/register", json=clash), "email_taken")
    assert not await auth_redis.exists(org_key)
    retry = await client.post("/register", json=_body("Fresh Org", username=clash["username"]))
    assert retry.status == 201, await retry.text()
    assert await auth_redis.get(org_key) == (await retry.json())["user_id"].encode()
    assert await auth_redis.ttl(org_key) == -1  # made permanent with the registration


async def test_concurrent_registrations_create_an_organization_once(client: Client) -> None:
    bodies = [_body("Race Inc") for _ in range(10)]
    responses = await asyncio.gather(*(client.post("/register", json=body) for body in bodies))
    assert sorted(r.status for r in responses) == [201] + [409] * 9
    for resp in responses:
        if resp.status == 409:
            assert (await resp.json())["error"] == "organization_taken"


async def test_operator_created_admins_may_join_an_existing_organization(
    client: Client, make_settings: Any, login: Any
) -> None:
    founder = await client.post("/register", json=_body("Globex"))
    assert founder.status == 201
    admin = await create_admin(
        make_settings(),
        username=f"admin_{uuid.uuid4().hex[:8]}",
        email=f"admin_{uuid.uuid4().hex[:8]}@company.com",
        organization="globex",
        password="Admin pass phrase 1",
    )
    assert admin.organization == "Globex"  # the organization's own spelling
    # An admin may also found one, which then counts as taken.
    await create_admin(
        make_settings(),
        username=f"admin_{uuid.uuid4().hex[:8]}",
        email=f"admin_{uuid.uuid4().hex[:8]}@company.com",
        organization="Initech",
        password="Admin pass phrase 1",
    )
    await _taken(await client.post("/register", json=_body("initech")))


async def test_bootstrap_admin_joins_its_organization_even_if_registered_first(
    make_client: Any, login: Any
) -> None:
    first = await make_client()
    assert (await first.post("/register", json=_body("Default"))).status == 201
    env = {
        "AUTH_BOOTSTRAP_ADMIN_USERNAME": "boot_admin",
        "AUTH_BOOTSTRAP_ADMIN_PASSWORD": "Admin pass phrase 1",
        "AUTH_BOOTSTRAP_ADMIN_EMAIL": "boot@company.com",
        "AUTH_BOOTSTRAP_ADMIN_ORGANIZATION": "default",
    }
    client = await make_client(**env)  # starts: the bootstrap admin is created
    token = (await login("boot_admin", "Admin pass phrase 1", on=client))["access_token"]
    me = await (await client.get("/me", headers={"Authorization": f"Bearer {token}"})).json()
    assert me["organization"] == "Default" and me["role"] == "admin"


async def test_organizations_of_users_stored_before_claims_existed_are_claimed(
    make_client: Any, register: Register, auth_redis: Any, auth_prefix: str
) -> None:
    keys = Keyspace(auth_prefix)
    await register(organization="Legacy Org")
    # As a deployment from before organization claims: users, but no claims and no marker.
    await auth_redis.delete(
        keys.auth_organization("legacy org"), keys.auth_migration(ORGANIZATION_CLAIMS_MIGRATION)
    )
    upgraded = await make_client()
    await _taken(await upgraded.post("/register", json=_body("LEGACY ORG")))
    assert await auth_redis.exists(keys.auth_migration(ORGANIZATION_CLAIMS_MIGRATION))
    assert (await upgraded.post("/register", json=_body("Brand New Org"))).status == 201
