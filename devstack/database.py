"""The stack's PostgreSQL database (auth's identities, the usage ledger): made ready before auth
starts, so that the banner can tell whether a first platform admin is being created.

``make run`` keeps one database (``enterprise_chat``) across runs; the fault suite names one per
run and drops it afterwards (:func:`drop_database`).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg

from auth.database import CONNECT_TIMEOUT, ensure_database, migrate

__all__ = ["database_named", "drop_database", "prepare_database"]


def database_named(url: str, name: str) -> str:
    """The same server as ``url``, another database."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def prepare_database(url: str) -> bool:
    """Create the database when missing and migrate it; True when it has no platform admin yet."""
    if await ensure_database(url):
        print(f"created database {urlsplit(url).path.lstrip('/')}", flush=True)
    await migrate(url)
    conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    try:
        return not await conn.fetchval("SELECT 1 FROM users WHERE role = 'admin' LIMIT 1")
    finally:
        await conn.close()


async def drop_database(url: str) -> None:
    """Drop the database named in ``url`` (sessions still connected are ended: ``FORCE``)."""
    name = urlsplit(url).path.lstrip("/")
    if not name or name == "postgres":
        raise ValueError(f"refusing to drop database {name!r}")
    conn = await asyncpg.connect(database_named(url, "postgres"), timeout=CONNECT_TIMEOUT)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name.replace(chr(34), "")}" WITH (FORCE)')
    finally:
        await conn.close()
