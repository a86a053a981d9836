"""Async jobs in Redis: one hash per job under the user's hash tag, expiring after a TTL.

Status moves queued -> running -> done | failed | cancelled; a cancelled job never becomes done
(the transition scripts check), and terminal states are final.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec

from common.keyspace import Keyspace
from common.redis import RedisClient

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
TERMINAL = ("done", "failed", "cancelled")


class Job(msgspec.Struct, kw_only=True, omit_defaults=True):
    job_id: str
    status: JobStatus
    model: str = ""
    session_id: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    response: str | None = None
    usage: dict[str, int] | None = None
    error: str | None = None
    message: str | None = None


# KEYS: job. ARGV: ttl, now, field/value pairs... Creates or moves a job to running unless terminal.
_START = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'done' or status == 'failed' or status == 'cancelled' then return status end
if not status then redis.call('HSET', KEYS[1], 'created_at', ARGV[2]) end
redis.call('HSET', KEYS[1], 'status', 'running', 'updated_at', ARGV[2])
for i = 3, #ARGV, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 'running'
"""

# KEYS: job. ARGV: ttl, now, new status, field/value pairs... Only from a non-terminal state, except
# that a cancelled job still takes its partial response/usage (the worker writes them after the cancel).
_FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'done' or status == 'failed' or status == 'cancelled' then
  if status == 'cancelled' and ARGV[3] == 'cancelled' then
    for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  end
  return status
end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'updated_at', ARGV[2])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return ARGV[3]
"""

_encoder = msgspec.json.Encoder()
_usage_decoder = msgspec.json.Decoder(dict[str, int])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class JobStore:
    def __init__(self, redis: RedisClient, keys: Keyspace, *, ttl: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        self._start = redis.register_script(_START)
        self._finish = redis.register_script(_FINISH)

    async def create(self, user_id: str, job_id: str, *, model: str, session_id: str | None) -> Job:
        now = time.time()
        key = self._keys.job(user_id, job_id)
        fields = ["status", "queued", "model", model, "created_at", repr(now), "updated_at", repr(now)]
        if session_id:
            fields += ["session_id", session_id]
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, items=fields)
            pipe.expire(key, self._ttl)
            await pipe.execute()
        return Job(
            job_id=job_id, status="queued", model=model, session_id=session_id, created_at=now, updated_at=now
        )

    async def get(self, user_id: str, job_id: str) -> Job | None:
        raw = await self._redis.hgetall(self._keys.job(user_id, job_id))
        if not raw:
            return None
        f = {_text(k): _text(v) for k, v in raw.items()}
        status = f.get("status", "queued")
        return Job(
            job_id=job_id,
            status=status if status in ("queued", "running", *TERMINAL) else "queued",  # type: ignore[arg-type]
            model=f.get("model", ""),
            session_id=f.get("session_id"),
            created_at=float(f.get("created_at", "0")),
            updated_at=float(f.get("updated_at", "0")),
            response=f.get("response"),
            usage=_usage_decoder.decode(f["usage"]) if "usage" in f else None,
            error=f.get("error"),
            message=f.get("message"),
        )

    async def start(self, user_id: str, job_id: str, *, model: str, session_id: str | None) -> str:
        """Mark running (creating the record for jobs submitted straight to the queue); returns the
        status after the call, which is terminal when the job was cancelled before it started."""
        args: list[str | int] = [self._ttl, repr(time.time()), "model", model]
        if session_id:
            args += ["session_id", session_id]
        return _text(await self._start(keys=[self._keys.job(user_id, job_id)], args=args))

    async def finish(
        self,
        user_id: str,
        job_id: str,
        status: Literal["done", "failed", "cancelled"],
        *,
        response: str | None = None,
        usage: dict[str, int] | None = None,
        error: str | None = None,
        message: str | None = None,
    ) -> str:
        """Record the outcome unless the job already ended; returns the resulting status."""
        args: list[str | int | bytes] = [self._ttl, repr(time.time()), status]
        if response is not None:
            args += ["response", response]
        if usage is not None:
            args += ["usage", _encoder.encode(usage)]
        if error is not None:
            args += ["error", error, "message", message or ""]
        return _text(await self._finish(keys=[self._keys.job(user_id, job_id)], args=args))
