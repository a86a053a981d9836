"""The inference worker: consumes ChatRequests, streams them through Ollama, publishes replies.

Delivery rules: prefetch = concurrency, so RabbitMQ never hands a worker more requests than it can
run at once; a request is acked only when its done/error reply is published, so a worker that dies
mid-generation has its request redelivered (the gateway decides whether that is transparent).
Invalid messages are rejected to the dead-letter queue, never requeued.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

import aio_pika
import aiohttp
import msgspec
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from redis.exceptions import RedisError

from broker.events import publish_session_event
from broker.messages import (
    HEADER_REQUEST_ID,
    ChatDone,
    ChatError,
    ChatRequest,
    SessionEvent,
    TokenChunk,
    Usage,
    cancel_decoder,
    encoder,
    request_decoder,
)
from common.amqp import connect, topology_for
from common.archive import ArchiveCorrupt, ArchiveStore, ArchiveUnavailable
from common.health import broker_and_redis_ready
from common.jobs import JobStore
from common.keyspace import Keyspace
from common.redis import RedisClient, open_redis
from common.runtime import within
from common.sessions import SessionStore, Turn
from inference_worker.chunks import ChunkCoalescer
from inference_worker.metrics import WorkerMetrics
from inference_worker.ollama import (
    NodePool,
    NoHealthyNode,
    OllamaClient,
    OllamaError,
    OllamaLine,
    OllamaNode,
)
from inference_worker.settings import WorkerSettings

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Generation:
    """What a finished generation produced."""

    text: str
    usage: Usage
    done_reason: str
    node: str
    chunks: int


@dataclass(slots=True)
class Progress:
    """What a generation produced so far (for partial usage when it is stopped early)."""

    parts: list[str] = field(default_factory=list)
    tokens: int = 0

    def text(self) -> str:
        return "".join(self.parts)


class InferenceWorker:
    """One worker process's consume loop; use as an async context manager."""

    def __init__(self, settings: WorkerSettings, metrics: WorkerMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self.keys = Keyspace(settings.common.key_prefix)
        self.topology = topology_for(settings.common)
        self.pool = NodePool.from_urls(
            settings.ollama_urls,
            cooldown=settings.ollama_node_cooldown,
            max_parallel=settings.ollama_node_max_parallel,
        )
        self._redis: RedisClient | None = None
        self._sessions: SessionStore | None = None
        self._jobs: JobStore | None = None
        self._connection: AbstractRobustConnection | None = None
        self._consume_channel: AbstractChannel | None = None
        self._reply_channel: AbstractChannel | None = None
        self._events: AbstractExchange | None = None
        self._archive: ArchiveStore | None = None
        self._stack = AsyncExitStack()
        self._ollama: OllamaClient | None = None
        self._consumer_tag: str | None = None
        self._request_queue: AbstractQueue | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel_reasons: dict[str, str] = {}
        self._probe_task: asyncio.Task[None] | None = None
        self.metrics.slots.set(settings.concurrency)

    # -- lifecycle -------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        s = self.settings
        self._redis = await open_redis(
            s.common.redis_url, cluster=s.common.redis_cluster, max_connections=s.common.redis_max_connections
        )
        self._sessions = SessionStore(
            self._redis, self.keys, max_turns=s.session_max_turns, max_bytes=s.session_max_bytes
        )
        self._jobs = JobStore(self._redis, self.keys, ttl=s.common.job_ttl)
        http = await self._stack.enter_async_context(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60, enable_cleanup_closed=True),
                timeout=aiohttp.ClientTimeout(total=None, connect=s.ollama_connect_timeout),
            )
        )
        self._ollama = OllamaClient(http, read_timeout=s.ollama_read_timeout)
        self._archive = await self._stack.enter_async_context(ArchiveStore(s.s3))
        self._connection = await connect(s.common.rabbitmq_url, client_name=f"{s.common.service_name}")
        self._reply_channel = await self._connection.channel(publisher_confirms=False)
        self._consume_channel = await self._connection.channel()
        await self._consume_channel.set_qos(prefetch_count=s.concurrency)
        declared = await self.topology.declare(self._consume_channel)
        self._events = await self._reply_channel.get_exchange(self.topology.events_exchange, ensure=False)
        cancel_queue = await self._consume_channel.declare_queue(exclusive=True, auto_delete=True)
        await cancel_queue.bind(declared.cancel)
        await cancel_queue.consume(self._on_cancel, no_ack=True)
        await self.probe_nodes()  # know which node has which model before the first request
        self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop())
        self._request_queue = declared.request_queue
        self._consumer_tag = await self._request_queue.consume(self._on_request)
        log.info("worker_started", concurrency=s.concurrency, nodes=list(s.ollama_urls))

    async def close(self) -> None:
        """Stop taking requests, let running generations finish within the grace period, then stop.

        Generations still running after the grace period are abandoned unacked, so RabbitMQ hands
        their requests to another worker.
        """
        if self._probe_task is not None:
            self._probe_task.cancel()
            await within(5, "probe", asyncio.gather(self._probe_task, return_exceptions=True))
        if self._request_queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):
                await within(5, "cancel_consumer", self._request_queue.cancel(self._consumer_tag))
            self._consumer_tag = None
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks.values()), timeout=self.settings.shutdown_grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._connection is not None:
            await within(10, "amqp_close", self._connection.close())
            self._connection = None
        await within(10, "http_and_s3_close", self._stack.aclose())  # the Ollama HTTP client and S3
        self._archive = None
        if self._redis is not None:
            await within(5, "redis_close", self._redis.aclose())
            self._redis = None
        log.info("worker_stopped")

    async def ready(self) -> bool:
        """True when the broker connection is open and Redis answers."""
        return await broker_and_redis_ready(self._connection, self._redis)

    # -- model nodes -----------------------------------------------------------------------------
    async def probe_nodes(self) -> None:
        """Read every node's models (``/api/tags``); a node that answers is healthy again."""
        assert self._ollama is not None
        ollama = self._ollama

        async def probe(node: OllamaNode) -> None:
            try:
                node.models = await ollama.tags(node, timeout=self.settings.ollama_connect_timeout)
            except OllamaError as exc:
                if not node.cooling(time.monotonic()):
                    log.warning("model_node_down", node=node.url, error=str(exc))
                self.pool.mark_failed(node)
                self.metrics.node_up.labels(node.url).set(0)
                return
            if node.consecutive_failures:
                log.info("model_node_back", node=node.url)
            self.pool.mark_ok(node)
            self.metrics.node_up.labels(node.url).set(1)

        await asyncio.gather(*(probe(node) for node in self.pool.nodes))
        models = self.pool.models()
        if models and self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                now = time.time()
                await self._redis.zadd(self.keys.models_available(), dict.fromkeys(models, now))

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ollama_probe_interval)
            try:
                await self.probe_nodes()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("probe_failed")

    @property
    def busy(self) -> int:
        return len(self._tasks)

    # -- consuming -------------------------------------------------------------------------------
    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        try:
            request = request_decoder.decode(message.body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self.metrics.rejected.inc()
            log.warning("request_rejected_invalid", error=str(exc), message_id=message.message_id)
            await message.reject(requeue=False)
            return
        if not message.reply_to and not request.job_id:
            self.metrics.rejected.inc()
            log.warning("request_rejected_no_reply_to", request_id=request.request_id)
            await message.reject(requeue=False)
            return
        task = asyncio.get_running_loop().create_task(self._handle(message, request))
        self._tasks[request.request_id] = task
        self.metrics.busy_slots.set(len(self._tasks))
        task.add_done_callback(functools.partial(self._forget, request.request_id))

    def _forget(self, request_id: str, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(request_id, None)
        self._cancel_reasons.pop(request_id, None)
        self.metrics.busy_slots.set(len(self._tasks))

    async def _on_cancel(self, message: AbstractIncomingMessage) -> None:
        try:
            cancel = cancel_decoder.decode(message.body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            log.warning("cancel_ignored_invalid")
            return
        task = self._tasks.get(cancel.request_id)
        if task is not None and not task.done():
            self._cancel_reasons[cancel.request_id] = cancel.reason
            task.cancel(msg="cancelled")

    async def _handle(self, message: AbstractIncomingMessage, request: ChatRequest) -> None:
        structlog.contextvars.bind_contextvars(request_id=request.request_id, user_id=request.user_id)
        generation = uuid.uuid4().hex[:12]
        reply_to = message.reply_to or ""
        started = time.time()
        progress = Progress()
        if message.redelivered:
            self.metrics.redeliveries.inc()
        self.metrics.queue_wait.observe(max(0.0, started - request.created_at))
        try:
            if started > request.deadline:
                self.metrics.generations.labels("expired", request.model).inc()
                await self._fail(request, generation, reply_to, "deadline_exceeded", "deadline passed")
                await message.ack()
                return
            cancelled, history = await self._prefetch(request)
            if not cancelled and request.job_id:
                cancelled = await self._start_job(request)
            if cancelled:
                self.metrics.generations.labels("cancelled", request.model).inc()
                await message.ack()
                return
            try:
                async with asyncio.timeout(request.deadline - started):
                    result = await self._generate(request, generation, reply_to, history, progress)
            except OllamaError as exc:
                self.metrics.generations.labels("error", request.model).inc()
                self.metrics.errors.labels(exc.code).inc()
                log.warning("generation_failed", error=exc.code, detail=str(exc))
                await self._fail(request, generation, reply_to, exc.code, str(exc))
                await message.ack()
                return
            except TimeoutError:
                self.metrics.generations.labels("expired", request.model).inc()
                self._record_partial(progress, request)
                await self._fail(
                    request,
                    generation,
                    reply_to,
                    "deadline_exceeded",
                    "the answer did not finish in time",
                    progress,
                )
                await message.ack()
                return
            await self._finish(request, generation, reply_to, result)
            self.metrics.generations.labels("ok", request.model).inc()
            log.info(
                "generation_finished",
                model=request.model,
                node=result.node,
                session_id=request.session_id,
                completion_tokens=result.usage.completion_tokens,
                duration_ms=round((time.time() - started) * 1000, 1),
            )
            await message.ack()
        except asyncio.CancelledError:
            reason = self._cancel_reasons.get(request.request_id)
            if reason is None:
                # Shutdown past the grace period: leave the message unacked for redelivery.
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            self.metrics.generations.labels("cancelled", request.model).inc()
            self._record_partial(progress, request)
            log.info("generation_cancelled", reason=reason, partial_tokens=progress.tokens)
            with contextlib.suppress(Exception):
                if request.job_id and self._jobs is not None:
                    await self._jobs.finish(
                        request.user_id,
                        request.job_id,
                        "cancelled",
                        response=progress.text(),
                        usage={"completion_tokens": progress.tokens},
                    )
                await message.ack()
        except Exception as exc:
            self.metrics.errors.labels(type(exc).__name__).inc()
            log.exception("generation_crashed", error_type=type(exc).__name__)
            with contextlib.suppress(Exception):
                await self._fail(request, generation, reply_to, "internal_error", "the worker failed")
                await message.ack()
        finally:
            structlog.contextvars.unbind_contextvars("request_id", "user_id")

    async def _start_job(self, request: ChatRequest) -> bool:
        """Mark the job running; True when it was cancelled before it started."""
        assert self._jobs is not None and request.job_id is not None
        status = await self._jobs.start(
            request.user_id, request.job_id, model=request.model, session_id=request.session_id
        )
        return status == "cancelled"

    def _record_partial(self, progress: Progress, request: ChatRequest) -> None:
        """Usage of a generation stopped early still counts (tokens are what the model produced)."""
        if progress.tokens:
            self.metrics.tokens.labels(request.model).inc(progress.tokens)
            self.metrics.partial_tokens.labels(request.model).inc(progress.tokens)

    async def _fail(
        self,
        request: ChatRequest,
        generation: str,
        reply_to: str,
        code: str,
        text: str,
        progress: Progress | None = None,
    ) -> None:
        """Tell the waiting client (if any) and record the failure on the job (if any)."""
        await self._publish_error(request, generation, reply_to, code, text)
        if request.job_id and self._jobs is not None:
            await self._jobs.finish(
                request.user_id,
                request.job_id,
                "failed",
                response=progress.text() if progress else None,
                usage={"completion_tokens": progress.tokens} if progress else None,
                error=code,
                message=text,
            )

    # -- generation ------------------------------------------------------------------------------
    async def _prefetch(self, request: ChatRequest) -> tuple[bool, list[Turn]]:
        """The cancel marker and the recent history, in one Redis round trip."""
        assert self._redis is not None
        wants_history = bool(request.session_id and request.use_history and self.settings.history_window > 0)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(self.keys.cancelled(request.request_id))
            if wants_history:
                assert request.session_id is not None
                turns_key = self.keys.session_turns(request.user_id, request.session_id)
                pipe.lrange(turns_key, -self.settings.history_window, -1)
            results = await pipe.execute()
        history = SessionStore.decode_turns(results[1]) if wants_history else []
        if wants_history and not history and not results[0]:
            assert request.session_id is not None
            history = await self._archived_history(request.user_id, request.session_id)
        return bool(results[0]), history

    @staticmethod
    def _conversation(request: ChatRequest, history: list[Turn]) -> list[dict[str, str]]:
        messages = [{"role": t.role, "content": t.content} for t in history]
        if request.messages:
            messages.extend({"role": m.role, "content": m.content} for m in request.messages)
        else:
            messages.append({"role": "user", "content": request.prompt})
        return messages

    async def _archived_history(self, user_id: str, session_id: str) -> list[Turn]:
        """A session resumed after it was archived continues from the archived turns."""
        assert self._sessions is not None
        pointer = await self._sessions.pointer(user_id, session_id)
        if pointer is None or self._archive is None:
            return []
        try:
            document = await self._archive.get(pointer.key)
        except (ArchiveUnavailable, ArchiveCorrupt) as exc:
            log.warning("archived_history_unavailable", error=str(exc))
            return []
        return [] if document is None else document.turns[-self.settings.history_window :]

    async def _generate(
        self, request: ChatRequest, generation: str, reply_to: str, history: list[Turn], progress: Progress
    ) -> Generation:
        assert self._ollama is not None
        messages = self._conversation(request, history)
        seq = 0
        parts = progress.parts

        async def emit(text: str) -> None:
            nonlocal seq
            chunk = TokenChunk(
                request_id=request.request_id,
                user_id=request.user_id,
                org_id=request.org_id,
                generation=generation,
                seq=seq,
                content=text,
            )
            seq += 1
            parts.append(text)
            await self._publish_reply(request, reply_to, encoder.encode(chunk), "token")
            self.metrics.chunks.inc()

        coalescer = ChunkCoalescer(
            emit, flush_interval=self.settings.chunk_flush_ms / 1000, max_chars=self.settings.chunk_max_chars
        )
        tried: set[str] = set()
        last_error: OllamaError | None = None
        options = dict(request.options) if request.options else None
        try:
            while True:
                try:
                    node = await self.pool.acquire(
                        request.model, tried, timeout=max(0.1, request.deadline - time.time())
                    )
                except NoHealthyNode:
                    raise last_error or NoHealthyNode("no healthy model node is available") from None
                tried.add(node.url)
                t0 = time.monotonic()
                first = True
                final: OllamaLine | None = None
                try:
                    async with self._ollama.chat(node, request.model, messages, options) as lines:
                        async for line in lines:
                            if line.message is not None and line.message.content:
                                if first:
                                    elapsed = time.monotonic() - t0
                                    self.metrics.node_latency.labels(node.url).observe(elapsed)
                                    self.metrics.ttft.labels(request.model).observe(elapsed)
                                    first = False
                                progress.tokens += 1
                                await coalescer.add(line.message.content)
                            if line.done:
                                final = line
                except OllamaError as exc:
                    self.metrics.node_failures.labels(node.url, exc.code).inc()
                    if exc.code in ("model_unavailable", "model_stream_failed"):
                        self.pool.mark_failed(node)
                        self.metrics.node_up.labels(node.url).set(0)
                    if exc.retry_elsewhere and coalescer.emitted_chunks == 0:
                        coalescer.discard()
                        progress.tokens = 0
                        last_error = exc
                        log.warning("node_failed_retrying", node=node.url, error=exc.code)
                        continue
                    raise
                finally:
                    await self.pool.release(node)
                self.pool.mark_ok(node)
                self.metrics.node_up.labels(node.url).set(1)
                await coalescer.aclose()
                assert final is not None
                usage = Usage(
                    prompt_tokens=final.prompt_eval_count,
                    completion_tokens=final.eval_count,
                    total_duration_ns=final.total_duration,
                    load_duration_ns=final.load_duration,
                    prompt_eval_duration_ns=final.prompt_eval_duration,
                    eval_duration_ns=final.eval_duration,
                )
                self.metrics.tokens.labels(request.model).inc(final.eval_count)
                if final.eval_duration > 0:
                    self.metrics.tokens_per_second.labels(request.model).observe(
                        final.eval_count / (final.eval_duration / 1e9)
                    )
                return Generation(
                    text="".join(parts),
                    usage=usage,
                    done_reason=final.done_reason or "stop",
                    node=node.url,
                    chunks=seq,
                )
        finally:
            coalescer.cancel()

    async def _finish(self, request: ChatRequest, generation: str, reply_to: str, result: Generation) -> None:
        """Record the turns first, so a follow-up request sent after ``done`` sees this answer."""
        assert self._sessions is not None
        usage = {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
        }
        if request.session_id and request.record:
            now = time.time()
            user_turn = Turn(
                role="user",
                content=request.prompt,
                created_at=request.created_at,
                request_id=request.request_id,
            )
            if request.messages:
                last_user = next((m for m in reversed(request.messages) if m.role == "user"), None)
                user_turn.content = last_user.content if last_user else request.prompt
            assistant = Turn(
                role="assistant",
                content=result.text,
                created_at=now,
                model=request.model,
                usage=usage,
                request_id=request.request_id,
                finish_reason=result.done_reason,
            )
            appended = await self._sessions.append(
                request.user_id, request.org_id, request.session_id, [user_turn, assistant]
            )
            await self._publish_event(request, appended.version, "session.updated")
            if appended.spilled >= self.settings.spill_archive_turns:
                # Turns over the Redis cap wait in the spill list; have the archiver store them now.
                await self._publish_event(request, appended.version, "session.spilled")
        done = ChatDone(
            request_id=request.request_id,
            user_id=request.user_id,
            org_id=request.org_id,
            generation=generation,
            session_id=request.session_id,
            model=request.model,
            chunks=result.chunks,
            done_reason=result.done_reason,
            usage=result.usage,
            node=result.node,
        )
        if request.job_id and self._jobs is not None:
            await self._jobs.finish(
                request.user_id,
                request.job_id,
                "done",
                response=result.text,
                usage=usage,
            )
        await self._publish_reply(request, reply_to, encoder.encode(done), "done")

    # -- publishing ------------------------------------------------------------------------------
    async def _publish_reply(self, request: ChatRequest, reply_to: str, body: bytes, kind: str) -> None:
        if not reply_to:
            return  # an async job: nobody streams it; the outcome goes to the job record
        assert self._reply_channel is not None
        await self._reply_channel.default_exchange.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                correlation_id=request.request_id,
                type=kind,
                headers={HEADER_REQUEST_ID: request.request_id},
                delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            ),
            routing_key=reply_to,
            mandatory=False,
        )

    async def _publish_error(
        self, request: ChatRequest, generation: str, reply_to: str, code: str, text: str
    ) -> None:
        error = ChatError(
            request_id=request.request_id,
            user_id=request.user_id,
            org_id=request.org_id,
            generation=generation,
            error=code,
            message=text,
        )
        await self._publish_reply(request, reply_to, encoder.encode(error), "error")

    async def _publish_event(
        self, request: ChatRequest, version: int, kind: Literal["session.updated", "session.spilled"]
    ) -> None:
        assert self._events is not None and request.session_id
        event = SessionEvent(
            event=kind,
            request_id=request.request_id,
            user_id=request.user_id,
            org_id=request.org_id,
            session_id=request.session_id,
            version=version,
            at=time.time(),
        )
        await publish_session_event(self._events, event)


__all__ = ["InferenceWorker"]
