"""The session archive in S3/MinIO: object layout, settings, and a verified-write client.

One object per session, ``<org>/<user>/<yyyy>/<mm>/<dd>/<session_id>.json.gz`` (date of the
session's creation, UTC), holding every turn with timestamps, model and usage. Writes merge with an
existing object, so archiving a session again (the user came back) only ever adds turns.

The bucket indexes itself: beside each object, ``@index/<user>/<session_id>.json`` holds the
session's pointer (its object key, title, counts and times; a deterministic key, since the date in
the object key is not). Redis keeps the same pointers for the everyday reads; when Redis has lost
them (restored from an older backup, or empty after a restore of the bucket alone), a session is
found by its id and a user's sessions by listing the index. ``@`` is escaped in every org and user
segment of an object key, so no object can land under the index prefix.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, unquote

import aioboto3
import msgspec
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from common.sessions import ArchivePointer, Turn
from common.settings import Env

ARCHIVE_SCHEMA_VERSION = 1


class ArchivedSession(msgspec.Struct, kw_only=True):
    schema_version: int = ARCHIVE_SCHEMA_VERSION
    session_id: str
    user_id: str
    org_id: str
    title: str
    created_at: float
    last_activity: float
    archived_at: float
    version: int
    turns: list[Turn]


class ArchiveUnavailable(Exception):
    """S3 could not be reached or refused the operation; the caller retries later."""


class ArchiveCorrupt(Exception):
    """A written object did not read back as written."""


@dataclass(frozen=True, slots=True)
class S3Settings:
    endpoint_url: str | None
    region: str
    access_key_id: str | None
    secret_access_key: str | None
    bucket: str
    connect_timeout: float
    read_timeout: float

    @classmethod
    def from_env(cls, env: Env) -> S3Settings:
        return cls(
            endpoint_url=env.optional("S3_ENDPOINT_URL"),
            region=env.str("S3_REGION", "us-east-1"),
            access_key_id=env.optional("S3_ACCESS_KEY_ID"),
            secret_access_key=env.optional("S3_SECRET_ACCESS_KEY"),
            bucket=env.str("S3_BUCKET", "enterprise-chat-archive"),
            connect_timeout=env.float("S3_CONNECT_TIMEOUT", 3.0, minimum=0.1),
            read_timeout=env.float("S3_READ_TIMEOUT", 20.0, minimum=0.1),
        )


def object_key(org_id: str, user_id: str, session_id: str, created_at: float) -> str:
    day = datetime.fromtimestamp(created_at, UTC)
    org = quote(org_id or "_", safe="")
    return f"{org}/{quote(user_id, safe='')}/{day:%Y/%m/%d}/{session_id}.json.gz"


INDEX_PREFIX = "@index/"
_OBJECT_SUFFIX = ".json.gz"


def index_key(user_id: str, session_id: str) -> str:
    """Where the pointer to a session's object lives: derived from the ids alone."""
    return f"{_index_prefix(user_id)}{quote(session_id, safe='')}.json"


def _index_prefix(user_id: str) -> str:
    return f"{INDEX_PREFIX}{quote(user_id, safe='')}/"


def _session_of(key: str) -> tuple[str, str] | None:
    """(user id, session id) of the object at ``key`` (None for a key not made by :func:`object_key`)."""
    parts = key.split("/", 5)
    if len(parts) != 6 or not parts[5].endswith(_OBJECT_SUFFIX):
        return None
    return unquote(parts[1]), parts[5].removesuffix(_OBJECT_SUFFIX)


def pointer_of(key: str, document: ArchivedSession) -> ArchivePointer:
    """The pointer to ``document`` stored at ``key`` (as Redis and the index keep it)."""
    return ArchivePointer(
        key=key,
        org_id=document.org_id,
        title=document.title,
        turns=len(document.turns),
        created_at=document.created_at,
        last_activity=document.last_activity,
        archived_at=document.archived_at,
        version=document.version,
    )


def merge_turns(existing: list[Turn], new: list[Turn]) -> list[Turn]:
    """Union of two turn lists, each turn once, in time order."""

    def identity(turn: Turn) -> tuple[float, str, str | None, str]:
        return (turn.created_at, turn.role, turn.request_id, turn.content)

    merged = {identity(t): t for t in existing}
    for turn in new:
        merged.setdefault(identity(turn), turn)
    # The caller's turns (user, tool results) before the answer of the same moment.
    return sorted(merged.values(), key=lambda t: (t.created_at, 1 if t.role == "assistant" else 0))


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ArchivedSession)
_pointer_decoder = msgspec.json.Decoder(ArchivePointer)
_ERRORS = (BotoCoreError, ClientError, OSError, TimeoutError)


def _status(exc: ClientError) -> str:
    error: Mapping[str, Any] = exc.response.get("Error", {})
    return str(error.get("Code", ""))


class ArchiveStore:
    """One aioboto3 S3 client for the life of the process (``async with``)."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def __aenter__(self) -> Self:
        session = aioboto3.Session()
        config = Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=self.settings.connect_timeout,
            read_timeout=self.settings.read_timeout,
        )
        self._client = await self._stack.enter_async_context(
            session.client(
                "s3",
                endpoint_url=self.settings.endpoint_url,
                region_name=self.settings.region,
                aws_access_key_id=self.settings.access_key_id,
                aws_secret_access_key=self.settings.secret_access_key,
                config=config,
            )
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    @property
    def bucket(self) -> str:
        return self.settings.bucket

    async def ensure_bucket(self) -> None:
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _status(exc) not in {"404", "NoSuchBucket", "NotFound"}:
                raise ArchiveUnavailable(f"bucket check failed: {exc}") from exc
            try:
                await self._client.create_bucket(Bucket=self.bucket)
            except ClientError as create_exc:
                if _status(create_exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise ArchiveUnavailable(f"cannot create bucket: {create_exc}") from create_exc
        except _ERRORS as exc:
            raise ArchiveUnavailable(f"S3 unreachable: {exc}") from exc

    async def _read(self, key: str) -> bytes | None:
        """An object's bytes; None when it (or the bucket) does not exist."""
        try:
            response = await self._client.get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as stream:
                return bytes(await stream.read())
        except ClientError as exc:
            if _status(exc) in {"NoSuchKey", "404", "NoSuchBucket"}:
                return None
            raise ArchiveUnavailable(f"cannot read {key}: {exc}") from exc
        except _ERRORS as exc:
            raise ArchiveUnavailable(f"S3 unreachable: {exc}") from exc

    async def get(self, key: str) -> ArchivedSession | None:
        body = await self._read(key)
        if body is None:
            return None
        try:
            return _decoder.decode(gzip.decompress(body))
        except (OSError, EOFError, msgspec.DecodeError) as exc:
            raise ArchiveCorrupt(f"{key} is not a readable archive: {exc}") from exc

    async def put_verified(self, key: str, document: ArchivedSession) -> int:
        """Write, then read the object's metadata back and compare size and checksum, then index
        it (so the index never names an object that is not there); returns the object's size in
        bytes."""
        body = gzip.compress(_encoder.encode(document), mtime=0)
        digest = hashlib.sha256(body).hexdigest()
        try:
            await self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
                ContentEncoding="gzip",
                Metadata={
                    "sha256": digest,
                    "turns": str(len(document.turns)),
                    "session-id": document.session_id,
                },
            )
            head = await self._client.head_object(Bucket=self.bucket, Key=key)
        except _ERRORS as exc:
            raise ArchiveUnavailable(f"cannot write {key}: {exc}") from exc
        if head.get("ContentLength") != len(body) or head.get("Metadata", {}).get("sha256") != digest:
            raise ArchiveCorrupt(f"{key} did not read back as written")
        entry = index_key(document.user_id, document.session_id)
        try:
            await self._client.put_object(
                Bucket=self.bucket,
                Key=entry,
                Body=_encoder.encode(pointer_of(key, document)),
                ContentType="application/json",
            )
        except _ERRORS as exc:
            raise ArchiveUnavailable(f"cannot write {entry}: {exc}") from exc
        return len(body)

    async def find(self, user_id: str, session_id: str) -> ArchivePointer | None:
        """The session's pointer from the bucket's own index (None when it was never archived)."""
        entry = index_key(user_id, session_id)
        body = await self._read(entry)
        if body is None:
            return None
        try:
            return _pointer_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise ArchiveCorrupt(f"{entry} is not a readable index entry: {exc}") from exc

    async def indexed(self, user_id: str, limit: int = 1000) -> list[str]:
        """Ids of the user's archived sessions, from the index (at most ``limit``: one listing)."""
        prefix = _index_prefix(user_id)
        try:
            listing = await self._client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=limit)
        except ClientError as exc:
            if _status(exc) == "NoSuchBucket":
                return []
            raise ArchiveUnavailable(f"cannot list {prefix}: {exc}") from exc
        except _ERRORS as exc:
            raise ArchiveUnavailable(f"S3 unreachable: {exc}") from exc
        names = (str(entry["Key"])[len(prefix) :] for entry in listing.get("Contents", []))
        return [unquote(name.removesuffix(".json")) for name in names if name.endswith(".json")]

    async def delete(self, key: str) -> None:
        """Remove a session's object, then its index entry when that names this object (S3
        deletes are idempotent: a missing key is fine)."""
        await self._delete(key)
        session = _session_of(key)
        if session is None:
            return
        try:
            pointer = await self.find(*session)
        except ArchiveCorrupt:
            pointer = None
        else:
            if pointer is None or pointer.key != key:
                return  # no entry, or it names another object (written before the index existed)
        await self._delete(index_key(*session))

    async def _delete(self, key: str) -> None:
        try:
            await self._client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _status(exc) != "NoSuchBucket":
                raise ArchiveUnavailable(f"cannot delete {key}: {exc}") from exc
        except _ERRORS as exc:
            raise ArchiveUnavailable(f"cannot delete {key}: {exc}") from exc
