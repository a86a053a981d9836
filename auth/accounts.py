"""Creating accounts: the rules shared by ``POST /register``, the start-up bootstrap and the CLI."""

from __future__ import annotations

import structlog

from auth.passwords import PasswordHasher, WeakPassword, check_password_policy
from auth.schemas import normalize_email, validate_organization, validate_username
from auth.settings import BootstrapAdmin
from auth.users import EmailTaken, OrganizationTaken, User, UsernameTaken, UserStore
from common.http import ApiError

__all__ = ["create_account", "ensure_bootstrap_admin"]

log = structlog.get_logger(__name__)


async def create_account(
    users: UserStore,
    hasher: PasswordHasher,
    *,
    username: str,
    email: str,
    organization: str,
    password: str,
    role: str = "user",
    join_organization: bool = False,
) -> User:
    """Validate, hash and store a new account; raise :class:`ApiError` (400/409) otherwise.

    A self-service registration creates its organization: an existing name is 409
    ``organization_taken`` (until invitations exist, nobody joins an organization by naming it).
    The admin paths (bootstrap admin, ``create-admin``) pass ``join_organization=True``.
    """
    username = validate_username(username)
    email = normalize_email(email)
    organization = validate_organization(organization)
    try:
        check_password_policy(password, username=username)
    except WeakPassword as exc:
        raise ApiError(400, "weak_password", str(exc)) from None
    taken = ApiError(409, "username_taken", "this username is already registered")
    # Cheap early answer for the common case; the store's claims are what make it atomic.
    if await users.find_by_username(username) is not None:
        raise taken
    org_taken = ApiError(
        409,
        "organization_taken",
        "an organization with this name already exists; ask its administrator for an account",
    )
    if not join_organization and await users.organization_exists(organization):
        # A concurrent registration of the same name may hold both: answer as the claims would.
        raise taken if await users.username_claimed(username) else org_taken
    password_hash = await hasher.hash(password)
    try:
        return await users.create(
            username=username,
            email=email,
            organization=organization,
            password_hash=password_hash,
            role=role,
            new_organization=not join_organization,
        )
    except UsernameTaken:
        raise taken from None
    except EmailTaken:
        raise ApiError(409, "email_taken", "this email address is already registered") from None
    except OrganizationTaken:
        raise org_taken from None


async def ensure_bootstrap_admin(
    users: UserStore, hasher: PasswordHasher, admin: BootstrapAdmin
) -> User | None:
    """Create the configured first admin unless the username exists; returns the new user.

    An existing account is never modified: promoting it could hand admin rights to whoever
    registered that name first, and its password may have been changed on purpose.
    """
    existing = await users.find_by_username(admin.username)
    if existing is not None:
        if existing.role != "admin":
            log.error("bootstrap_admin_name_taken_by_non_admin", username=admin.username)
        return None
    try:
        user = await create_account(
            users,
            hasher,
            username=admin.username,
            email=admin.email,
            organization=admin.organization,
            password=admin.password,
            role="admin",
            join_organization=True,
        )
    except ApiError as exc:
        if exc.code == "username_taken":  # another instance created it concurrently
            return None
        raise
    log.info("bootstrap_admin_created", username=user.username, user_id=user.user_id)
    return user
