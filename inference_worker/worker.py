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
import itertools
import time
import uuid
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self

import aiohttp
import msgspec
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from redis.exceptions import RedisError

from broker.messages import ChatDone, ChatRequest, cancel_decoder, request_decoder
from common.amqp import connect, topology_for
from common.archive import ArchiveStore
from common.cancels import CancelMarkers
from common.health import broker_and_redis_ready
from common.jobs import JobStore
from common.keyspace import Keyspace
from common.models import ModelRegistry
from common.redis import RedisClient, open_redis
from common.runtime import within
from common.session_reader import SessionReader
from common.sessions import SessionStore, Turn
from inference_worker.generation import Generation, Generator, Progress
from inference_worker.history import HistoryReader
from inference_worker.metrics import WorkerMetrics
from inference_worker.ollama import NodePool, OllamaClient, OllamaError, OllamaNode
from inference_worker.replies import ReplyPublisher
from inference_worker.settings import WorkerSettings

log = structlog.get_logger(__name__)


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
        self._stack = AsyncExitStack()
        self._ollama: OllamaClient | None = None
        self._history: HistoryReader | None = None
        self._models: ModelRegistry | None = None
        self._generator: Generator | None = None
        self._replies: ReplyPublisher | None = None
        self._consumer_tag: str | None = None
        self._request_queue: AbstractQueue | None = None
        # Running generations by (owner, request id): a cancel stops only its own user's request.
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._cancel_reasons: dict[tuple[str, str], str] = {}
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
        self._generator = Generator(
            self.pool,
            self._ollama,
            self.metrics,
            flush_interval=s.chunk_flush_ms / 1000,
            max_chars=s.chunk_max_chars,
        )
        archive = await self._stack.enter_async_context(ArchiveStore(s.s3))
        self._models = ModelRegistry(self._redis, self.keys)
        self._history = HistoryReader(
            self._redis,
            CancelMarkers(self._redis, self.keys),
            SessionReader(self._sessions, archive),
            window=s.history_window,
        )
        self._connection = await connect(s.common.rabbitmq_url, client_name=f"{s.common.service_name}")
        reply_channel = await self._connection.channel(publisher_confirms=False)
        self._consume_channel = await self._connection.channel()
        await self._consume_channel.set_qos(prefetch_count=s.concurrency)
        declared = await self.topology.declare(self._consume_channel)
        events = await reply_channel.get_exchange(self.topology.events_exchange, ensure=False)
        self._replies = ReplyPublisher(reply_channel, events)
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
        if models and self._models is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._models.announce(models)

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
        key = (request.user_id, request.request_id)
        task = asyncio.get_running_loop().create_task(self._handle(message, request))
        self._tasks[key] = task
        self.metrics.busy_slots.set(len(self._tasks))
        task.add_done_callback(functools.partial(self._forget, key))

    def _forget(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:  # a redelivered copy may have taken the slot meanwhile
            del self._tasks[key]
            self._cancel_reasons.pop(key, None)
        self.metrics.busy_slots.set(len(self._tasks))

    async def _on_cancel(self, message: AbstractIncomingMessage) -> None:
        try:
            cancel = cancel_decoder.decode(message.body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            log.warning("cancel_ignored_invalid")
            return
        key = (cancel.user_id, cancel.request_id)
        task = self._tasks.get(key)
        if task is not None and not task.done():
            self._cancel_reasons[key] = cancel.reason
            task.cancel(msg="cancelled")

    async def _handle(self, message: AbstractIncomingMessage, request: ChatRequest) -> None:
        structlog.contextvars.bind_contextvars(
            request_id=request.request_id, trace_id=request.trace_id, user_id=request.user_id
        )
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
            assert self._history is not None
            cancelled, history = await self._history.prefetch(request)
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
            reason = self._cancel_reasons.get((request.user_id, request.request_id))
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
            structlog.contextvars.unbind_contextvars("request_id", "trace_id", "user_id")

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
        assert self._replies is not None
        await self._replies.error(request, reply_to, generation, code, text)
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

    async def _generate(
        self, request: ChatRequest, generation: str, reply_to: str, history: list[Turn], progress: Progress
    ) -> Generation:
        assert self._generator is not None and self._replies is not None
        replies = self._replies
        seq = itertools.count()

        async def emit(text: str) -> None:
            await replies.chunk(request, reply_to, generation, next(seq), text)
            self.metrics.chunks.inc()

        messages = HistoryReader.conversation(request, history)
        return await self._generator.run(request, messages, emit, progress)

    async def _finish(self, request: ChatRequest, generation: str, reply_to: str, result: Generation) -> None:
        """Record the turns first, so a follow-up request sent after ``done`` sees this answer."""
        assert self._sessions is not None and self._replies is not None
        usage = {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
        }
        if request.session_id and request.record:
            appended = await self._sessions.append(
                request.user_id, request.org_id, request.session_id, _turns(request, result, usage)
            )
            await self._replies.session_event(request, appended.version, "session.updated")
            if appended.spilled >= self.settings.spill_archive_turns:
                # Turns over the Redis cap wait in the spill list; have the archiver store them now.
                await self._replies.session_event(request, appended.version, "session.spilled")
        if request.job_id and self._jobs is not None:
            job = request.job_id
            await self._jobs.finish(request.user_id, job, "done", response=result.text, usage=usage)
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
        await self._replies.done(request, reply_to, done)


def _turns(request: ChatRequest, result: Generation, usage: dict[str, int]) -> list[Turn]:
    """The user turn (for OpenAI-style requests, their last user message) and the answer."""
    prompt = request.prompt
    if request.messages:
        last_user = next((m for m in reversed(request.messages) if m.role == "user"), None)
        prompt = last_user.content if last_user else request.prompt
    return [
        Turn(
            role="user",
            content=prompt,
            created_at=request.created_at,
            request_id=request.request_id,
            trace_id=request.trace_id or None,
        ),
        Turn(
            role="assistant",
            content=result.text,
            created_at=time.time(),
            model=request.model,
            usage=usage,
            request_id=request.request_id,
            trace_id=request.trace_id or None,
            finish_reason=result.done_reason,
        ),
    ]


__all__ = ["InferenceWorker"]
