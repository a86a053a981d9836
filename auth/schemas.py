"""Request bodies (strict msgspec Structs) and the field rules of the auth API."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

import msgspec

from common.http import ApiError

__all__ = [
    "ORG_ROLES",
    "ROLES",
    "ApiKeyRequest",
    "InvitationRequest",
    "LoginRequest",
    "OrganizationRequest",
    "OrganizationUpdate",
    "PasswordChangeRequest",
    "RefreshRequest",
    "RegisterRequest",
    "RoleRequest",
    "ServiceAccountRequest",
    "fold_organization",
    "normalize_email",
    "validate_organization",
    "validate_username",
]

ROLES = ("user", "org_admin", "admin")
ORG_ROLES = ("user", "org_admin")  # what an org admin may grant
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{3,64}")
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
MAX_EMAIL_LENGTH = 254
MAX_ORGANIZATION_LENGTH = 128
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

# Login fields are bounded but not pattern-checked: a malformed username answers like any unknown one.
LoginUsername = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
LoginPassword = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class RegisterRequest(msgspec.Struct, forbid_unknown_fields=True):
    username: str
    password: str
    email: str
    # The organization to create (open sign-up only); naming an existing one never joins it.
    organization: str | None = None
    invitation_token: Token | None = None


Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Domain = Annotated[str, msgspec.Meta(min_length=3, max_length=253, pattern=r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")]
Quota = Annotated[int, msgspec.Meta(ge=0, le=2**62)]


class OrganizationRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    allowed_domains: list[Domain] = []
    monthly_token_quota: Quota | None = None


class OrganizationUpdate(msgspec.Struct, forbid_unknown_fields=True):
    allowed_domains: list[Domain] | None = None
    monthly_token_quota: Quota | None = None
    clear_quota: bool = False


class InvitationRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: str | None = None
    role: str = "user"


class ServiceAccountRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: str


class ApiKeyRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    scopes: list[str] = msgspec.field(default_factory=lambda: ["chat", "models"])
    # Seconds from now; absent = no expiry.
    expires_in: Annotated[int, msgspec.Meta(ge=60, le=10 * 366 * 86400)] | None = None


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    username: LoginUsername
    password: LoginPassword


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Token


class PasswordChangeRequest(msgspec.Struct, forbid_unknown_fields=True):
    current_password: LoginPassword
    new_password: LoginPassword


class RoleRequest(msgspec.Struct, forbid_unknown_fields=True):
    role: str


def validate_username(username: str) -> str:
    if not USERNAME_PATTERN.fullmatch(username):
        raise ApiError(
            400, "invalid_username", "username must be 3-64 characters of letters, digits, '_', '.' or '-'"
        )
    return username


def normalize_email(email: str) -> str:
    """A sanity check, not RFC 5322: ``local@domain.tld`` with an ASCII local part.

    Internationalised domains are accepted and stored in their ASCII (IDNA) form; the domain is
    lower-cased. Uniqueness is checked on the fully lower-cased address.
    """
    invalid = ApiError(400, "invalid_email", "email must look like name@example.com")
    if len(email) > MAX_EMAIL_LENGTH or email.count("@") != 1:
        raise invalid
    local, domain = email.split("@")
    if not _EMAIL_LOCAL.fullmatch(local) or local.startswith(".") or local.endswith(".") or ".." in local:
        raise invalid
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise invalid from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise invalid
    if labels[-1].isdigit():
        raise invalid
    normalized = f"{local}@{ascii_domain}"
    if len(normalized) > MAX_EMAIL_LENGTH:
        raise invalid
    return normalized


def _forbidden_char(ch: str) -> bool:
    # Control, surrogate, private-use and unassigned code points, and bidi overrides (spoofing);
    # other format characters (ZWJ in emoji, RLM in Hebrew text) are fine.
    return unicodedata.category(ch) in {"Cc", "Cs", "Co", "Cn"} or ch in _BIDI_CONTROLS


def validate_organization(organization: str) -> str:
    value = organization.strip()
    if not 1 <= len(value) <= MAX_ORGANIZATION_LENGTH:
        raise ApiError(
            400, "invalid_organization", f"organization must be 1-{MAX_ORGANIZATION_LENGTH} characters"
        )
    if any(_forbidden_char(ch) for ch in value):
        raise ApiError(400, "invalid_organization", "organization must not contain control characters")
    return value


def fold_organization(organization: str) -> str:
    """The uniqueness form of an organization name: NFKC-normalised and case-folded, so "ACME",
    "acme" and a full-width "ＡＣＭＥ" are one organization (the stored name keeps its spelling)."""
    return unicodedata.normalize("NFKC", organization.strip()).casefold()
