"""Identity and accounting: organizations, users, invitations, API keys, usage ledger, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


# One statement per execute: the asyncpg driver prepares each, and a prepared statement holds one.
_UPGRADE = [
    """
CREATE TABLE organizations (
    id                  text PRIMARY KEY,
    name                text NOT NULL,
    name_folded         text NOT NULL UNIQUE,
    allowed_domains     text[] NOT NULL DEFAULT '{}',
    monthly_token_quota bigint CHECK (monthly_token_quota IS NULL OR monthly_token_quota >= 0),
    personal            boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now()
)
""",
    """
CREATE INDEX organizations_allowed_domains ON organizations USING gin (allowed_domains)
""",
    """
CREATE TABLE users (
    id              text PRIMARY KEY,
    username        text NOT NULL,
    username_lower  text NOT NULL UNIQUE,
    email           text,
    email_lower     text UNIQUE,
    organization_id text NOT NULL REFERENCES organizations (id),
    role            text NOT NULL CHECK (role IN ('admin', 'org_admin', 'user')),
    kind            text NOT NULL DEFAULT 'person' CHECK (kind IN ('person', 'service')),
    password_hash   text,
    disabled        boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
)
""",
    """
CREATE INDEX users_organization ON users (organization_id, created_at, id)
""",
    """
CREATE INDEX users_created ON users (created_at, id)
""",
    """
CREATE TABLE invitations (
    id              text PRIMARY KEY,
    token_hash      text NOT NULL UNIQUE,
    organization_id text NOT NULL REFERENCES organizations (id),
    email           text,
    role            text NOT NULL CHECK (role IN ('org_admin', 'user')),
    created_by      text REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    used_by         text REFERENCES users (id) ON DELETE SET NULL
)
""",
    """
CREATE TABLE api_keys (
    id              text PRIMARY KEY,
    prefix          text NOT NULL UNIQUE,
    secret_hash     text NOT NULL,
    name            text NOT NULL,
    user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    organization_id text NOT NULL REFERENCES organizations (id),
    scopes          text[] NOT NULL,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    last_used_at    timestamptz
)
""",
    """
CREATE INDEX api_keys_user ON api_keys (user_id, created_at)
""",
    """
CREATE INDEX api_keys_organization ON api_keys (organization_id, created_at)
""",
    """
CREATE TABLE usage (
    request_id        text PRIMARY KEY,
    user_id           text NOT NULL,
    organization_id   text NOT NULL,
    key_id            text,
    model             text NOT NULL,
    kind              text NOT NULL,
    outcome           text NOT NULL,
    prompt_tokens     integer NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens integer NOT NULL CHECK (completion_tokens >= 0),
    duration_ms       double precision NOT NULL DEFAULT 0,
    finished_at       timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now()
)
""",
    """
CREATE INDEX usage_organization ON usage (organization_id, finished_at)
""",
    """
CREATE INDEX usage_user ON usage (user_id, finished_at)
""",
    """
CREATE TABLE audit_log (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    action          text NOT NULL,
    actor_id        text,
    organization_id text,
    target_id       text,
    client_ip       text,
    details         jsonb NOT NULL DEFAULT '{}'
)
""",
    """
CREATE INDEX audit_log_organization ON audit_log (organization_id, id)
""",
    """
-- Append-only: no API edits it, and the database refuses it too.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$
""",
    """
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()
""",
]
_DOWNGRADE = [
    "DROP TABLE audit_log",
    "DROP FUNCTION audit_log_append_only()",
    "DROP TABLE usage",
    "DROP TABLE api_keys",
    "DROP TABLE invitations",
    "DROP TABLE users",
    "DROP TABLE organizations",
]


def upgrade() -> None:
    for statement in _UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in _DOWNGRADE:
        op.execute(statement)
