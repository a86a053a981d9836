"""Alembic environment: migrations run through SQLAlchemy's asyncpg driver under an advisory lock.

The URL comes from ``config.attributes["database_url"]`` (auth/database.py ``migrate``); there is
no alembic.ini, so no credentials in a file.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

# Any constant: every instance migrating the same database takes the same lock.
MIGRATION_LOCK = 7_301_400_014


def _run(connection: Connection) -> None:
    # Session-level lock: held across the per-migration transactions; a failed run releases it
    # by closing its connection.
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
    connection.commit()
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
    connection.commit()


async def _online() -> None:
    engine = create_async_engine(context.config.attributes["database_url"])
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `python -m auth migrate`")
asyncio.run(_online())
