"""PostgreSQL: the durable store of users, organizations, API keys, the usage ledger and the audit log.

One asyncpg pool per process (``open_pool``); the schema is versioned with Alembic
(auth/migrations/) and brought to the newest revision by :func:`migrate`, which the auth service
and the ledger consumer run at start-up and operators run with ``python -m auth migrate``.
Migrations hold a PostgreSQL advisory lock, so several instances starting at once apply each
revision once.

Redis stays short-term memory (sessions, rate limits, revocations, caches): nothing here is
needed on the per-request chat path.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TypeAlias

import asyncpg
import structlog

__all__ = [
    "DATABASE_INVALID_INPUT",
    "DATABASE_UNAVAILABLE",
    "Connection",
    "Pool",
    "migrate",
    "open_pool",
    "sqlalchemy_url",
]

log = structlog.get_logger(__name__)

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
# A connection taken from the pool (a transaction spanning several stores runs on one).
Connection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
MIGRATIONS = Path(__file__).with_name("migrations")
CONNECT_TIMEOUT = 3.0
COMMAND_TIMEOUT = 10.0

# What PostgreSQL raises for a value the client sent that it cannot take (SQLSTATE class 22: a
# NUL character in text, a string or number out of range): answered 400, never 500.
DATABASE_INVALID_INPUT: tuple[type[Exception], ...] = (asyncpg.DataError,)

# What a PostgreSQL outage raises: answered 503 + Retry-After by the auth service.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
)


async def open_pool(url: str, *, max_size: int = 10) -> Pool:
    """A pool that connects lazily (``min_size=0``): the service starts and answers 503 while
    PostgreSQL is down, and recovers by itself when it is back."""
    pool: Pool = await asyncpg.create_pool(
        url,
        min_size=0,
        max_size=max_size,
        timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
        max_inactive_connection_lifetime=60.0,
    )
    return pool


def sqlalchemy_url(url: str) -> str:
    """The same database as SQLAlchemy (Alembic) names it, with the asyncpg driver."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
        raise ValueError("DATABASE_URL must be postgresql://user[:password]@host[:port]/database")
    return f"postgresql+asyncpg://{rest}"


def _upgrade(url: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = sqlalchemy_url(url)
    command.upgrade(config, revision)


async def migrate(url: str, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` (Alembic runs its own event loop: in a thread)."""
    await asyncio.to_thread(_upgrade, url, revision)
    log.info("database_migrated", revision=revision)


async def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` when it does not exist (``make run``, tests);
    returns whether it was created. Connects to the server's ``postgres`` database for that."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name:
        raise ValueError("DATABASE_URL names no database")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin_url, timeout=CONNECT_TIMEOUT)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        try:
            await conn.execute(f'CREATE DATABASE "{name.replace(chr(34), "")}"')
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await conn.close()
