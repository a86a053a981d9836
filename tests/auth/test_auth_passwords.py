"""The password hasher and policy, and that hashing never blocks the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from auth.appkeys import HASHER, METRICS
from auth.passwords import HasherBusy, PasswordHasher, WeakPassword, check_password_policy


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.001)


@pytest.fixture
async def hasher() -> AsyncIterator[PasswordHasher]:
    executor = ThreadPoolExecutor(max_workers=2)
    yield PasswordHasher(rounds=4, executor=executor, slots=2, queue_timeout=5)
    executor.shutdown(wait=True)


async def test_passwords_sharing_72_bytes_hash_differently(hasher: PasswordHasher) -> None:
    first, second = "a" * 72 + "one", "a" * 72 + "two"
    stored = await hasher.hash(first)
    assert stored.startswith("hmac-sha256+bcrypt$$2b$04$")
    assert await hasher.verify(first, stored)
    assert not await hasher.verify(second, stored)


async def test_multibyte_passwords_past_72_bytes(hasher: PasswordHasher) -> None:
    emoji = "🙂" * 18  # exactly 72 UTF-8 bytes
    stored = await hasher.hash(emoji + "🚀")
    assert await hasher.verify(emoji + "🚀", stored)
    assert not await hasher.verify(emoji + "🔥", stored)


async def test_nfkc_normalisation(hasher: PasswordHasher) -> None:
    stored = await hasher.hash("ﬁne password")  # the 'ﬁ' ligature
    assert await hasher.verify("fine password", stored)


async def test_malformed_stored_hash_is_a_mismatch(hasher: PasswordHasher) -> None:
    assert not await hasher.verify("whatever pw", "plaintext")
    assert not await hasher.verify("whatever pw", "hmac-sha256+bcrypt$not-bcrypt")


async def test_needs_rehash_on_cost_change(hasher: PasswordHasher) -> None:
    stored = await hasher.hash("correct horse")
    assert not hasher.needs_rehash(stored)
    executor = ThreadPoolExecutor(max_workers=1)
    try:
        stronger = PasswordHasher(rounds=5, executor=executor, slots=1, queue_timeout=5)
        assert stronger.needs_rehash(stored)
    finally:
        executor.shutdown(wait=True)


async def test_saturated_hasher_answers_busy() -> None:
    executor = ThreadPoolExecutor(max_workers=1)
    try:
        slow = PasswordHasher(rounds=12, executor=executor, slots=1, queue_timeout=0.05)
        first = asyncio.create_task(slow.hash("first password"))
        await _until(lambda: slow.in_flight > 0)
        with pytest.raises(HasherBusy):
            await slow.hash("second password")
        await first
    finally:
        executor.shutdown(wait=True)


@pytest.mark.parametrize(
    ("password", "ok"),
    [
        ("testpass123", True),
        ("short", False),
        ("1234567890", False),
        ("zzzzzzzzzz", False),
        ("       a", False),
    ],
)
def test_policy(password: str, ok: bool) -> None:
    if ok:
        check_password_policy(password)
    else:
        with pytest.raises(WeakPassword):
            check_password_policy(password)


async def test_health_answers_while_logins_hash(make_client: Any, register: Register, login: Login) -> None:
    client = await make_client(AUTH_BCRYPT_ROUNDS="10", AUTH_HASH_WORKERS="2")
    user = await register(on=client)
    app = client.server.app
    hasher, registry = app[HASHER], app[METRICS].registry

    def hashes_done() -> float:
        return registry.get_sample_value("auth_password_hash_seconds_count") or 0.0

    baseline = hashes_done()
    logins = [asyncio.create_task(login(user["username"], user["password"], on=client)) for _ in range(20)]
    await _until(lambda: hasher.in_flight > 0)  # the logins are really hashing now
    resp = await client.get("/health")
    assert resp.status == 200
    assert (await resp.json()) == {"status": "ok"}
    # Had bcrypt run on the event loop, /health would have waited behind (nearly) all 20 hashes.
    assert hashes_done() - baseline < 10
    assert hasher.in_flight > 0
    await asyncio.gather(*logins)
    assert hashes_done() - baseline == 20


Register = Any
Login = Any
