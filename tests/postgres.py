"""A PostgreSQL database of the test run's own: created (and migrated) once, dropped at the end.

The server comes from ``POSTGRES_URL`` (default: the machine's local PostgreSQL, trust auth as
``postgres``). Setup runs in a thread with its own event loop, away from the tests' loops.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from auth.database import migrate

T = TypeVar("T")
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def run_in_thread(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a fresh loop in another thread."""
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(make()))  # type: ignore[arg-type]
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="postgres-setup")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def database_url(server_url: str, name: str) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


async def _create(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    await migrate(database_url(server_url, name))


async def copy_database(server_url: str, template: str) -> str:
    """A new database copied from ``template`` (nobody may be connected to the template)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(server_url, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return name


async def drop_database(server_url: str, name: str) -> None:
    await _drop(server_url, name)


async def _drop(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def create_test_database(server_url: str) -> str:
    """A new, migrated database; returns its name."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    run_in_thread(lambda: _create(server_url, name))
    return name


def drop_test_database(server_url: str, name: str) -> None:
    run_in_thread(lambda: _drop(server_url, name))
