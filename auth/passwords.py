"""Password policy and hashing: NFKC -> HMAC-SHA256 -> base64 -> bcrypt, off the event loop.

Why the pre-hash: bcrypt only reads the first 72 bytes of its input (bcrypt >= 5 refuses longer
input outright), so two long passwords sharing a 72-byte prefix would collide, and 72 *bytes* can
be as few as 18 emoji. Each password is therefore

1. NFKC-normalised, so the same password typed on different systems (composed vs. decomposed
   accents, full-width forms) matches; Hebrew, emoji and other scripts pass through unchanged
   in meaning;
2. encoded as UTF-8 and run through HMAC-SHA256 with a fixed, public key. The key is a domain
   separator, not a secret pepper: the bcrypt input is never the plain SHA-256 of a password, so
   hashes from other leaked unsalted SHA-256 databases cannot be "shucked" against ours;
3. base64-encoded (44 ASCII bytes: under bcrypt's limit, and without NUL bytes that some bcrypt
   implementations stop at), then bcrypt-hashed with the configured cost.

Stored hashes are ``hmac-sha256+bcrypt$<bcrypt hash>`` so the scheme can change later.

bcrypt is deliberately slow (cost 12 is ~240 ms here), so hashing runs in a bounded thread pool
(bcrypt releases the GIL); a semaphore of the pool's size keeps the queue in the event loop where a
wait can time out (:class:`HasherBusy`) instead of piling up behind the pool.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import secrets
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import bcrypt

from common.http import ApiError

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "HasherBusy",
    "PasswordHasher",
    "WeakPassword",
    "check_password_policy",
]

T = TypeVar("T")

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
SCHEME = "hmac-sha256+bcrypt$"
_PREHASH_KEY = b"enterprise-chat/auth/password-prehash/v1"

# A short deny-list of the most common passwords that satisfy the length rule.
_COMMON_PASSWORDS = frozenset(
    {
        "password", "password1", "password123", "12345678", "123456789", "1234567890",
        "qwertyuiop", "qwerty123", "11111111", "00000000", "iloveyou", "sunshine",
        "princess", "football", "baseball", "welcome1", "abcdefgh", "abc12345",
        "letmein1", "passw0rd", "admin123", "administrator", "changeme", "trustno1",
    }
)  # fmt: skip


class WeakPassword(ValueError):
    """The password does not meet the policy; the message says why (safe to show the user)."""


class HasherBusy(ApiError):
    """Every hashing slot stayed busy for longer than the queue timeout (answers 503)."""

    def __init__(self) -> None:
        super().__init__(503, "busy", "the service is busy; retry shortly", headers={"Retry-After": "1"})


def check_password_policy(password: str, *, username: str | None = None) -> None:
    """Raise :class:`WeakPassword` unless ``password`` is acceptable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    if not password.strip():
        raise WeakPassword("password must not be only whitespace")
    folded = unicodedata.normalize("NFKC", password).casefold()
    if len(set(folded)) < 3:
        raise WeakPassword("password must use at least 3 different characters")
    if folded in _COMMON_PASSWORDS:
        raise WeakPassword("password is too common")
    if username is not None and folded == username.casefold():
        raise WeakPassword("password must differ from the username")


def _prehash(password: str) -> bytes:
    normalized = unicodedata.normalize("NFKC", password).encode("utf-8")
    digest = hmac.new(_PREHASH_KEY, normalized, hashlib.sha256).digest()
    return base64.b64encode(digest)


def _bcrypt_part(stored: str) -> bytes | None:
    if not stored.startswith(SCHEME):
        return None
    return stored[len(SCHEME) :].encode("ascii", errors="replace")


class PasswordHasher:
    """Hash and verify passwords in a bounded pool; one instance per app."""

    def __init__(
        self,
        *,
        rounds: int,
        executor: ThreadPoolExecutor,
        slots: int,
        queue_timeout: float,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self._rounds = rounds
        self._executor = executor
        self._slots = asyncio.Semaphore(slots)
        self._queue_timeout = queue_timeout
        self._observe = observe
        self._in_flight = 0
        self._dummy: str | None = None

    @property
    def in_flight(self) -> int:
        """Hashes queued or running right now (for tests and metrics)."""
        return self._in_flight

    async def prepare(self) -> None:
        """Compute the dummy hash used to answer unknown usernames in the same time."""
        if self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(24))

    async def hash(self, password: str) -> str:
        prehashed = _prehash(password)
        hashed = await self._run(lambda: bcrypt.hashpw(prehashed, bcrypt.gensalt(self._rounds)))
        return SCHEME + hashed.decode("ascii")

    async def verify(self, password: str, stored: str) -> bool:
        """Check ``password`` against ``stored``; a malformed stored hash is a mismatch."""
        expected = _bcrypt_part(stored)
        if expected is None:
            await self.verify_dummy(password)
            return False
        prehashed = _prehash(password)

        def check() -> bool:
            try:
                return bcrypt.checkpw(prehashed, expected)
            except ValueError:  # malformed salt in the stored value
                return False

        return await self._run(check)

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of one verification, for a username that does not exist."""
        if self._dummy is None:
            await self.prepare()
        assert self._dummy is not None
        await self.verify(password, self._dummy)

    def needs_rehash(self, stored: str) -> bool:
        """True when ``stored`` uses another scheme or cost than the configured one."""
        part = _bcrypt_part(stored)
        if part is None:
            return True
        fields = part.split(b"$")
        return len(fields) < 4 or fields[2] != b"%02d" % self._rounds

    async def _run(self, work: Callable[[], T]) -> T:
        try:
            async with asyncio.timeout(self._queue_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise HasherBusy from None
        loop = asyncio.get_running_loop()
        self._in_flight += 1

        def timed() -> T:
            started = time.perf_counter()
            try:
                return work()
            finally:
                if self._observe is not None:
                    self._observe(time.perf_counter() - started)

        def release(_: Future[T]) -> None:
            # Runs when the thread is really done (or the queued job was cancelled), so a cancelled
            # request never frees its slot while bcrypt still occupies a pool thread.
            with contextlib.suppress(RuntimeError):  # the loop is already closed at shutdown
                loop.call_soon_threadsafe(self._release)

        try:
            future = self._executor.submit(timed)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(release)
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        self._in_flight -= 1
        self._slots.release()
