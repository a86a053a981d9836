"""Organizations and roles: created by a platform admin; joined only by an invitation or an
allowed email domain; naming an existing organization never joins it; org admins manage their own
organization and see nothing of another (404/403)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]
Register = Callable[..., Awaitable[dict[str, Any]]]
Login = Callable[..., Awaitable[dict[str, Any]]]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _name(prefix: str = "u") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


async def _org(client: Client, admin_token: str, **body: Any) -> dict[str, Any]:
    resp = await client.post(
        "/admin/organizations",
        json={"name": f"Org {uuid.uuid4().hex[:8]}", **body},
        headers=_auth(admin_token),
    )
    assert resp.status == 201, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def _invite(client: Client, token: str, path: str, **body: Any) -> str:
    resp = await client.post(path, json=body, headers=_auth(token))
    assert resp.status == 201, await resp.text()
    data = await resp.json()
    assert data["invitation_token"].startswith("inv_")
    return str(data["invitation_token"])


async def _join(client: Client, invitation: str, **fields: str) -> dict[str, Any]:
    name = fields.pop("username", _name())
    body = {"username": name, "password": "correct horse battery", "email": f"{name}@example.net", **fields}
    resp = await client.post("/register", json={**body, "invitation_token": invitation})
    assert resp.status == 201, await resp.text()
    data: dict[str, Any] = await resp.json()
    return {**data, "password": body["password"]}


async def _org_admin(client: Client, admin_token: str, login: Login) -> tuple[dict[str, Any], str]:
    """A new organization and the access token of its first org admin (invited by the platform admin)."""
    org = await _org(client, admin_token)
    invitation = await _invite(
        client, admin_token, f"/admin/organizations/{org['organization_id']}/invitations", role="org_admin"
    )
    user = await _join(client, invitation)
    assert user["organization_id"] == org["organization_id"] and user["role"] == "org_admin"
    tokens = await login(user["username"], user["password"])
    return org, str(tokens["access_token"])


async def test_registering_an_existing_organizations_name_never_joins_it(
    client: Client, register: Register, admin_token: str
) -> None:
    org = await _org(client, admin_token, name="TestOrg")
    name = _name()
    body = {
        "username": name,
        "password": "correct horse battery",
        "email": f"{name}@x.com",
        "organization": "testorg",
    }
    resp = await client.post("/register", json=body)
    assert resp.status == 409
    assert (await resp.json())["error"] == "organization_taken"
    # Open sign-up (the test default) gives a new name a personal organization of its own.
    other = await register(organization="Another Org")
    assert other["organization_id"] != org["organization_id"] and other["joined_by"] == "personal"


async def test_without_open_signup_registration_needs_an_invitation_or_domain(
    client: Client, make_client: Any, admin_token: str
) -> None:
    closed = await make_client(AUTH_OPEN_SIGNUP="false")
    name = _name()
    body = {"username": name, "password": "correct horse battery", "email": f"{name}@nowhere.org"}
    resp = await closed.post("/register", json=body)
    assert resp.status == 403
    assert (await resp.json())["error"] == "registration_closed"
    org = await _org(client, admin_token, allowed_domains=["acme-corp.example"])
    resp = await closed.post("/register", json={**body, "email": f"{name}@ACME-corp.example"})
    assert resp.status == 201, await resp.text()
    joined = await resp.json()
    assert (joined["organization_id"], joined["joined_by"], joined["role"]) == (
        org["organization_id"],
        "domain",
        "user",
    )


async def test_an_invitation_joins_once_and_expires(
    client: Client, auth_db: Any, admin_token: str, login: Login
) -> None:
    org, org_admin = await _org_admin(client, admin_token, login)
    invitation = await _invite(client, org_admin, "/org/invitations")
    member = await _join(client, invitation, organization="ignored: the invitation decides")
    assert (member["organization_id"], member["joined_by"], member["role"]) == (
        org["organization_id"],
        "invitation",
        "user",
    )
    name = _name()
    again = {"username": name, "password": "correct horse battery", "email": f"{name}@x.com"}
    resp = await client.post("/register", json={**again, "invitation_token": invitation})
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_invitation"
    # Concurrent redemptions of one invitation: exactly one account.
    fresh = await _invite(client, org_admin, "/org/invitations")
    bodies = [
        {"username": n, "password": "correct horse battery", "email": f"{n}@x.com", "invitation_token": fresh}
        for n in (_name() for _ in range(5))
    ]
    statuses = sorted(
        [r.status for r in await asyncio.gather(*(client.post("/register", json=b) for b in bodies))]
    )
    assert statuses == [201, 400, 400, 400, 400]
    # A refused registration (taken username) leaves the invitation unused.
    spare = await _invite(client, org_admin, "/org/invitations")
    taken = {"username": member["username"], "password": "correct horse battery", "email": "z@x.com"}
    resp = await client.post("/register", json={**taken, "invitation_token": spare})
    assert resp.status == 409
    await _join(client, spare)
    # Expired: an invitation lives AUTH_INVITATION_TTL seconds.
    expiring = await _invite(client, org_admin, "/org/invitations")
    await auth_db.execute(
        "UPDATE invitations SET expires_at = now() - interval '1 second' WHERE used_at IS NULL"
    )
    resp = await client.post("/register", json={**again, "invitation_token": expiring})
    assert (await resp.json())["error"] == "invalid_invitation"


async def test_an_invitation_for_an_email_is_for_that_email_only(
    client: Client, admin_token: str, login: Login
) -> None:
    _, org_admin = await _org_admin(client, admin_token, login)
    invitation = await _invite(client, org_admin, "/org/invitations", email="Dana@Example.net")
    name = _name()
    body = {"username": name, "password": "correct horse battery", "email": "mallory@example.net"}
    resp = await client.post("/register", json={**body, "invitation_token": invitation})
    assert resp.status == 403
    await _join(client, invitation, email="dana@example.net")


async def test_org_admins_manage_their_members_and_never_see_another_org(
    client: Client, admin_token: str, login: Login, register: Register
) -> None:
    org_a, admin_a = await _org_admin(client, admin_token, login)
    org_b, admin_b = await _org_admin(client, admin_token, login)
    member_a = await _join(client, await _invite(client, admin_a, "/org/invitations"))
    member_b = await _join(client, await _invite(client, admin_b, "/org/invitations"))

    listed = await (await client.get("/org/members", headers=_auth(admin_a))).json()
    ids = {u["user_id"] for u in listed["users"]}
    assert member_a["user_id"] in ids and member_b["user_id"] not in ids
    assert {u["organization_id"] for u in listed["users"]} == {org_a["organization_id"]}

    # Another organization's member is not found, whatever the action.
    for method, path in [
        ("POST", f"/org/members/{member_b['user_id']}/disable"),
        ("POST", f"/org/members/{member_b['user_id']}/enable"),
        ("DELETE", f"/org/members/{member_b['user_id']}"),
    ]:
        resp = await client.request(method, path, headers=_auth(admin_a))
        assert resp.status == 404, (method, path)
    resp = await client.post(
        f"/org/members/{member_b['user_id']}/role", json={"role": "org_admin"}, headers=_auth(admin_a)
    )
    assert resp.status == 404
    # Platform-admin endpoints are not theirs.
    for path in ("/admin/users", "/admin/audit", "/admin/organizations"):
        assert (await client.get(path, headers=_auth(admin_a))).status == 403
    resp = await client.get(
        "/usage", params={"organization_id": org_b["organization_id"]}, headers=_auth(admin_a)
    )
    assert resp.status == 404
    # Members are not org admins.
    member_token = (await login(member_a["username"], member_a["password"]))["access_token"]
    assert (await client.get("/org/members", headers=_auth(member_token))).status == 403
    assert (await client.post("/org/invitations", json={}, headers=_auth(member_token))).status == 403

    # Their own members: disable (login refused), enable, promote, remove.
    resp = await client.post(f"/org/members/{member_a['user_id']}/disable", headers=_auth(admin_a))
    assert resp.status == 200 and (await resp.json())["disabled"] is True
    refused = await client.post(
        "/login", json={"username": member_a["username"], "password": member_a["password"]}
    )
    assert refused.status == 403
    assert (
        await client.post(f"/org/members/{member_a['user_id']}/enable", headers=_auth(admin_a))
    ).status == 200
    resp = await client.post(
        f"/org/members/{member_a['user_id']}/role", json={"role": "org_admin"}, headers=_auth(admin_a)
    )
    assert (await resp.json())["role"] == "org_admin"
    resp = await client.post(
        f"/org/members/{member_a['user_id']}/role", json={"role": "admin"}, headers=_auth(admin_a)
    )
    assert resp.status == 400  # an org admin cannot make platform admins
    assert (await client.delete(f"/org/members/{member_a['user_id']}", headers=_auth(admin_a))).status == 204
    gone = await client.post(
        "/login", json={"username": member_a["username"], "password": member_a["password"]}
    )
    assert gone.status == 401


async def test_only_platform_admins_create_organizations(
    client: Client, register: Register, login: Login, admin_token: str
) -> None:
    user = await register()
    token = (await login(user["username"], user["password"]))["access_token"]
    resp = await client.post("/admin/organizations", json={"name": "Mine"}, headers=_auth(token))
    assert resp.status == 403
    org = await _org(client, admin_token, monthly_token_quota=1000)
    assert org["monthly_token_quota"] == 1000
    resp = await client.post(
        "/admin/organizations", json={"name": org["name"].upper()}, headers=_auth(admin_token)
    )
    assert resp.status == 409
    resp = await client.patch(
        f"/admin/organizations/{org['organization_id']}",
        json={"allowed_domains": ["corp.example"]},
        headers=_auth(admin_token),
    )
    assert (await resp.json())["allowed_domains"] == ["corp.example"]
    listed = await (await client.get("/admin/organizations", headers=_auth(admin_token))).json()
    assert org["organization_id"] in {o["organization_id"] for o in listed["organizations"]}
