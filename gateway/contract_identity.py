"""The contract of organizations, invitations, API keys, usage and the audit log (auth service):
response bodies and routes, rendered with the rest by ``gateway.contract`` (``make contract``)."""

from __future__ import annotations

from typing import Any

import msgspec

from auth.schemas import (
    ApiKeyRequest,
    InvitationRequest,
    OrganizationRequest,
    OrganizationUpdate,
    RoleRequest,
    ServiceAccountRequest,
)
from gateway import contract_models as m
from gateway.contract_routes import Operation, Reply, _path_param

__all__ = ["IDENTITY_OPERATIONS", "IDENTITY_TAGS"]

IDENTITY_TAGS = (
    {"name": "organizations", "description": "Organizations, members and invitations (auth service)."},
    {"name": "api-keys", "description": "API keys: `Authorization: Bearer ekey_...` at the gateway."},
    {"name": "usage", "description": "Token usage from the ledger, scoped by role (auth service)."},
)


class Organization(msgspec.Struct):
    organization_id: str
    name: str
    allowed_domains: list[str]
    monthly_token_quota: int | None
    personal: bool
    created_at: float


class OrganizationList(msgspec.Struct):
    organizations: list[Organization]


class Invitation(msgspec.Struct):
    invitation_id: str
    organization_id: str
    email: str | None
    role: str
    created_by: str | None
    created_at: float
    expires_at: float
    used_at: float | None
    used_by: str | None


class InvitationCreated(msgspec.Struct):
    """The invitation, with its token: shown once; send it to the person (``invitation_token``)."""

    invitation_id: str
    organization_id: str
    role: str
    expires_at: float
    invitation_token: str


class InvitationList(msgspec.Struct):
    invitations: list[Invitation]


class ApiKeyView(msgspec.Struct):
    """A key's metadata (never the key or its hash)."""

    key_id: str
    prefix: str
    name: str
    user_id: str
    organization_id: str
    scopes: list[str]
    created_by: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None


class ApiKeyCreated(msgspec.Struct):
    """The new key in ``api_key``: shown once, stored only as a hash."""

    key_id: str
    prefix: str
    name: str
    scopes: list[str]
    expires_at: float | None
    api_key: str


class ApiKeyList(msgspec.Struct):
    api_keys: list[ApiKeyView]


class VerifiedKey(msgspec.Struct):
    key_id: str
    user_id: str
    organization_id: str
    username: str
    role: str
    scopes: list[str]
    expires_at: float | None


class VerifyKeyRequest(msgspec.Struct):
    api_key: str


class UsageGroup(msgspec.Struct):
    """One group: its key under the ``group_by`` name (``day``, ``model``, ``user`` or ``key``)."""

    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class UsageTotals(msgspec.Struct):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class UsageReport(msgspec.Struct):
    group_by: str
    scope: str
    groups: list[UsageGroup]
    totals: UsageTotals


class AuditEntry(msgspec.Struct):
    id: int
    at: str
    action: str
    actor_id: str | None
    organization_id: str | None
    target_id: str | None
    client_ip: str | None
    details: dict[str, Any]


class AuditPage(msgspec.Struct):
    entries: list[AuditEntry]
    next: int | None


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "string", **schema},
        "description": description,
    }


ORG_ID = _path_param("organization_id", None, "as returned by /admin/organizations")
MEMBER_ID = _path_param("user_id", None, "a user of the caller's organization")
KEY_ID = _path_param("key_id", None, "as returned when the key was created or listed")
ORG_ADMIN = {403: ("forbidden",)}
MEMBER_ERRORS = {403: ("forbidden",), 404: ("user_not_found",), 409: ("cannot_modify_self",)}

IDENTITY_OPERATIONS: tuple[Operation, ...] = (
    # -- platform admin: organizations and the audit log ---------------------------------------------
    Operation(
        "POST",
        "/admin/organizations",
        "auth",
        "createOrganization",
        "organizations",
        "Create an organization (platform admin)",
        {201: Reply("The organization.", Organization)},
        access="admin",
        body=OrganizationRequest,
        body_example={"name": "Acme", "allowed_domains": ["acme.example"], "monthly_token_quota": 1000000},
        errors={400: ("invalid_organization",), 409: ("organization_taken",)},
    ),
    Operation(
        "GET",
        "/admin/organizations",
        "auth",
        "listOrganizations",
        "organizations",
        "Every organization (platform admin)",
        {200: Reply("The organizations.", OrganizationList)},
        access="admin",
    ),
    Operation(
        "PATCH",
        "/admin/organizations/{organization_id}",
        "auth",
        "updateOrganization",
        "organizations",
        "Set an organization's allowed email domains or monthly token quota (platform admin)",
        {200: Reply("The organization.", Organization)},
        access="admin",
        body=OrganizationUpdate,
        body_example={"monthly_token_quota": 500000},
        parameters=(ORG_ID,),
        errors={404: ("organization_not_found",)},
    ),
    Operation(
        "POST",
        "/admin/organizations/{organization_id}/invitations",
        "auth",
        "inviteToOrganization",
        "organizations",
        "Invite into any organization, e.g. its first org admin (platform admin)",
        {201: Reply("The invitation and its single-use token.", InvitationCreated)},
        access="admin",
        body=InvitationRequest,
        body_example={"role": "org_admin", "email": "lead@acme.example"},
        parameters=(ORG_ID,),
        errors={400: ("invalid_role", "invalid_email"), 404: ("organization_not_found",)},
    ),
    Operation(
        "GET",
        "/admin/audit",
        "auth",
        "listAuditLog",
        "admin",
        "The audit log, oldest first (platform admin); append-only",
        {200: Reply("One page; `next` is the `after` of the next page.", AuditPage)},
        access="admin",
        parameters=(
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
            },
            {
                "name": "after",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 0, "maximum": 2**62},
            },
            _query("organization_id", "only this organization's entries"),
            _query("action", "only this action, e.g. `login_failed`, `api_key_revoked`"),
            _query("actor_id", "only this actor's entries"),
        ),
        errors={400: ("invalid_parameter",)},
    ),
    # -- org admin: the caller's organization ----------------------------------------------------------
    Operation(
        "GET",
        "/org",
        "auth",
        "getOwnOrganization",
        "organizations",
        "The caller's organization",
        {200: Reply("The organization.", Organization)},
    ),
    Operation(
        "GET",
        "/org/members",
        "auth",
        "listMembers",
        "organizations",
        "The members of the caller's organization (org admin)",
        {200: Reply("One page of users.", m.UserPage)},
        errors={**ORG_ADMIN, 400: ("invalid_parameter", "invalid_cursor")},
    ),
    Operation(
        "POST",
        "/org/invitations",
        "auth",
        "createInvitation",
        "organizations",
        "Invite a person into the caller's organization (org admin)",
        {201: Reply("The invitation and its single-use token.", InvitationCreated)},
        body=InvitationRequest,
        body_example={"email": "dana@acme.example", "role": "user"},
        errors={**ORG_ADMIN, 400: ("invalid_role", "invalid_email")},
    ),
    Operation(
        "GET",
        "/org/invitations",
        "auth",
        "listInvitations",
        "organizations",
        "The invitations of the caller's organization (org admin)",
        {200: Reply("The invitations (never their tokens).", InvitationList)},
        errors=ORG_ADMIN,
    ),
    Operation(
        "POST",
        "/org/members/{user_id}/disable",
        "auth",
        "disableMember",
        "organizations",
        "Disable a member (org admin): their tokens stop at once",
        {200: Reply("The user, now disabled.", m.UserView)},
        parameters=(MEMBER_ID,),
        errors=MEMBER_ERRORS,
    ),
    Operation(
        "POST",
        "/org/members/{user_id}/enable",
        "auth",
        "enableMember",
        "organizations",
        "Enable a member (org admin)",
        {200: Reply("The user, now enabled.", m.UserView)},
        parameters=(MEMBER_ID,),
        errors=MEMBER_ERRORS,
    ),
    Operation(
        "POST",
        "/org/members/{user_id}/role",
        "auth",
        "setMemberRole",
        "organizations",
        "Make a member an org admin or a plain member (org admin)",
        {200: Reply("The user with the new role.", m.UserView)},
        body=RoleRequest,
        body_example={"role": "org_admin"},
        parameters=(MEMBER_ID,),
        errors={**MEMBER_ERRORS, 400: ("invalid_role",)},
    ),
    Operation(
        "DELETE",
        "/org/members/{user_id}",
        "auth",
        "removeMember",
        "organizations",
        "Remove a member and their API keys (org admin)",
        {204: Reply("Removed.")},
        parameters=(MEMBER_ID,),
        errors=MEMBER_ERRORS,
    ),
    Operation(
        "POST",
        "/org/service-accounts",
        "auth",
        "createServiceAccount",
        "organizations",
        "Create a service account (no password; give it API keys) (org admin)",
        {201: Reply("The service account.", m.UserView)},
        body=ServiceAccountRequest,
        body_example={"name": "ci-bot"},
        errors={**ORG_ADMIN, 400: ("invalid_username",), 409: ("username_taken",)},
    ),
    # -- API keys ------------------------------------------------------------------------------------
    Operation(
        "POST",
        "/me/api-keys",
        "auth",
        "createApiKey",
        "api-keys",
        "Create a personal API key (shown once)",
        {201: Reply("The key, in `api_key`; only its hash is kept.", ApiKeyCreated)},
        body=ApiKeyRequest,
        body_example={"name": "Open WebUI", "scopes": ["chat", "models"], "expires_in": 7776000},
        errors={400: ("invalid_scope",)},
    ),
    Operation(
        "GET",
        "/me/api-keys",
        "auth",
        "listApiKeys",
        "api-keys",
        "The caller's API keys (metadata and prefix only)",
        {200: Reply("The keys.", ApiKeyList)},
    ),
    Operation(
        "DELETE",
        "/me/api-keys/{key_id}",
        "auth",
        "revokeApiKey",
        "api-keys",
        "Revoke one of the caller's keys: refused at once on every gateway",
        {204: Reply("Revoked.")},
        parameters=(KEY_ID,),
        errors={404: ("api_key_not_found",)},
    ),
    Operation(
        "POST",
        "/org/service-accounts/{user_id}/api-keys",
        "auth",
        "createServiceApiKey",
        "api-keys",
        "Create a key for a service account of the caller's organization (org admin)",
        {201: Reply("The key, in `api_key`; only its hash is kept.", ApiKeyCreated)},
        body=ApiKeyRequest,
        body_example={"name": "ci", "scopes": ["chat"]},
        parameters=(MEMBER_ID,),
        errors={**ORG_ADMIN, 400: ("invalid_scope",), 404: ("user_not_found",)},
    ),
    Operation(
        "GET",
        "/org/api-keys",
        "auth",
        "listOrganizationApiKeys",
        "api-keys",
        "Every API key of the caller's organization (org admin)",
        {200: Reply("The keys.", ApiKeyList)},
        errors=ORG_ADMIN,
    ),
    Operation(
        "DELETE",
        "/org/api-keys/{key_id}",
        "auth",
        "revokeOrganizationApiKey",
        "api-keys",
        "Revoke any key of the caller's organization (org admin)",
        {204: Reply("Revoked.")},
        parameters=(KEY_ID,),
        errors={**ORG_ADMIN, 404: ("api_key_not_found",)},
    ),
    Operation(
        "POST",
        "/internal/api-keys/verify",
        "auth",
        "verifyApiKey",
        "api-keys",
        "For gateways: who a key acts as (not routed by HAProxy)",
        {200: Reply("The key's identity.", VerifiedKey)},
        access="public",
        body=VerifyKeyRequest,
        body_example={"api_key": "ekey_..."},
        errors={401: ("invalid_api_key",), 403: ("forbidden",)},
        description="With `INTERNAL_API_TOKEN` set, send it in `X-Internal-Token`.",
    ),
    # -- usage ---------------------------------------------------------------------------------------
    Operation(
        "GET",
        "/usage",
        "auth",
        "getUsage",
        "usage",
        "Token usage: a member's own, an org admin's organization, a platform admin's everything",
        {200: Reply("Totals per group and overall.", UsageReport)},
        parameters=(
            _query("from", "ISO 8601, inclusive (default: 30 days before `to`)"),
            _query("to", "ISO 8601, exclusive (default: now)"),
            _query("group_by", "how to group", enum=["day", "model", "user", "key", "organization"]),
            _query("organization_id", "narrow to one organization (platform admin)"),
            _query("user_id", "narrow to one user (org admin, platform admin)"),
        ),
        errors={400: ("invalid_parameter",), 403: ("forbidden",), 404: ("organization_not_found",)},
        description="Recorded from the broker within a second or two of each generation's end.",
    ),
)
