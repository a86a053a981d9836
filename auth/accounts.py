"""Creating accounts: the rules shared by ``POST /register``, the start-up bootstrap and the CLI.

Self-registration joins an organization only by

1. an invitation (``invitation_token``: single-use, expiring, from the org's admin), or
2. an email whose domain an organization allows (``allowed_domains``);

otherwise it is refused (403 ``registration_closed``), unless the operator enabled open sign-up
(``AUTH_OPEN_SIGNUP``), which gives the person an organization of their own named by
``organization`` (a taken name is 409 ``organization_taken``: naming an organization never joins
it). The account and its organization (or the invitation's redemption) are one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import structlog

from auth.database import Connection
from auth.invitations import InvitationStore
from auth.organizations import Organization, OrganizationStore, OrganizationTaken
from auth.passwords import PasswordHasher, WeakPassword, check_password_policy
from auth.schemas import normalize_email, validate_organization, validate_username
from auth.settings import BootstrapAdmin
from auth.users import EmailTaken, User, UsernameTaken, UserStore
from common.http import ApiError

__all__ = ["Directory", "create_account", "ensure_bootstrap_admin", "register_account"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Directory:
    """The identity stores over one pool (what account creation needs)."""

    pool: asyncpg.Pool
    users: UserStore
    organizations: OrganizationStore
    invitations: InvitationStore


_TAKEN = ApiError(409, "username_taken", "this username is already registered")
_EMAIL_TAKEN = ApiError(409, "email_taken", "this email address is already registered")
_ORG_TAKEN = ApiError(
    409,
    "organization_taken",
    "an organization with this name already exists; ask its administrator for an invitation",
)


def _check_password(password: str, username: str) -> None:
    try:
        check_password_policy(password, username=username)
    except WeakPassword as exc:
        raise ApiError(400, "weak_password", str(exc)) from None


async def register_account(
    directory: Directory,
    hasher: PasswordHasher,
    *,
    username: str,
    email: str,
    organization: str | None,
    password: str,
    invitation_token: str | None,
    open_signup: bool,
) -> tuple[User, str]:
    """A self-registration; returns the user and how it joined (``invitation``, ``domain``,
    ``personal``). Raises :class:`ApiError` (400/403/409)."""
    username = validate_username(username)
    email = normalize_email(email)
    _check_password(password, username)
    users = directory.users
    if await users.find_by_username(username) is not None:  # cheap early answer; the index decides
        raise _TAKEN
    if invitation_token is not None:
        password_hash = await hasher.hash(password)
        return await _redeem(directory, invitation_token, username, email, password_hash), "invitation"
    domain_org = await directory.organizations.for_email_domain(email.rsplit("@", 1)[1])
    if domain_org is not None:
        password_hash = await hasher.hash(password)
        return await _create(users, username, email, domain_org.organization_id, password_hash), "domain"
    if not open_signup:
        raise ApiError(
            403,
            "registration_closed",
            "registration needs an invitation from an organization's admin, "
            "or an email address of a domain an organization allows",
        )
    name = f"{username} (personal)" if organization is None else validate_organization(organization)
    if await directory.organizations.find_by_name(name) is not None:
        raise await _org_taken(users, username)
    password_hash = await hasher.hash(password)
    async with directory.pool.acquire() as conn, conn.transaction():
        try:
            org = await directory.organizations.create(name, personal=True, connection=conn)
        except OrganizationTaken:
            raise await _org_taken(users, username) from None
        user = await _create(users, username, email, org.organization_id, password_hash, connection=conn)
    return user, "personal"


async def _org_taken(users: UserStore, username: str) -> ApiError:
    # A concurrent registration of the same body took both names: answer for the username.
    return _TAKEN if await users.find_by_username(username) is not None else _ORG_TAKEN


async def _redeem(directory: Directory, token: str, username: str, email: str, password_hash: str) -> User:
    invalid = ApiError(400, "invalid_invitation", "the invitation is unknown, used or expired")
    async with directory.pool.acquire() as conn, conn.transaction():
        invitation = await directory.invitations.claim(conn, token)
        if invitation is None:
            raise invalid
        if invitation.email is not None and invitation.email.lower() != email.lower():
            raise ApiError(403, "invitation_email_mismatch", "this invitation is for another email address")
        user = await _create(
            directory.users,
            username,
            email,
            invitation.organization_id,
            password_hash,
            role=invitation.role,
            connection=conn,
        )
        await directory.invitations.bind(conn, invitation.invitation_id, user.user_id)
    return user


async def _create(
    users: UserStore,
    username: str,
    email: str | None,
    organization_id: str,
    password_hash: str | None,
    *,
    role: str = "user",
    kind: str = "person",
    connection: Connection | None = None,
) -> User:
    try:
        return await users.create(
            username=username,
            email=email,
            organization_id=organization_id,
            password_hash=password_hash,
            role=role,
            kind=kind,
            connection=connection,
        )
    except UsernameTaken:
        raise _TAKEN from None
    except EmailTaken:
        raise _EMAIL_TAKEN from None


async def organization_named(organizations: OrganizationStore, name: str) -> Organization:
    """The organization called ``name``, created when missing (the operator's paths)."""
    name = validate_organization(name)
    existing = await organizations.find_by_name(name)
    if existing is not None:
        return existing
    try:
        return await organizations.create(name)
    except OrganizationTaken:  # created concurrently
        found = await organizations.find_by_name(name)
        assert found is not None
        return found


async def create_account(
    directory: Directory,
    hasher: PasswordHasher,
    *,
    username: str,
    email: str,
    organization: str,
    password: str,
    role: str = "user",
) -> User:
    """An account created by an operator (bootstrap admin, ``create-admin``): joins the named
    organization, creating it when missing."""
    username = validate_username(username)
    email = normalize_email(email)
    _check_password(password, username)
    if await directory.users.find_by_username(username) is not None:
        raise _TAKEN
    org = await organization_named(directory.organizations, organization)
    password_hash = await hasher.hash(password)
    return await _create(directory.users, username, email, org.organization_id, password_hash, role=role)


async def create_service_account(directory: Directory, *, name: str, organization_id: str) -> User:
    """A service account: no password, no email; it acts through API keys."""
    return await _create(
        directory.users, validate_username(name), None, organization_id, None, kind="service"
    )


async def ensure_bootstrap_admin(
    directory: Directory, hasher: PasswordHasher, admin: BootstrapAdmin
) -> User | None:
    """Create the configured first admin unless the username exists; returns the new user.

    An existing account is never modified: promoting it could hand admin rights to whoever
    registered that name first, and its password may have been changed on purpose.
    """
    existing = await directory.users.find_by_username(admin.username)
    if existing is not None:
        if existing.role != "admin":
            log.error("bootstrap_admin_name_taken_by_non_admin", username=admin.username)
        return None
    try:
        user = await create_account(
            directory,
            hasher,
            username=admin.username,
            email=admin.email,
            organization=admin.organization,
            password=admin.password,
            role="admin",
        )
    except ApiError as exc:
        if exc.code == "username_taken":  # another instance created it concurrently
            return None
        raise
    log.info("bootstrap_admin_created", username=user.username, user_id=user.user_id)
    return user
