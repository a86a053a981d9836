"""The inference worker: consumes ChatRequests, streams them through Ollama, publishes replies.

Delivery rules: prefetch = concurrency, so RabbitMQ never hands a worker more requests than it can
run at once. Each message is handled inside :func:`~inference_worker.delivery.settled`, the one
place it is acked or rejected: acked only when its done/error reply is published (or nobody waits
any more), requeued when even the error reply could not be published or the worker stops past its
grace period, dead-lettered when it is invalid. A worker that dies mid-generation has its request
redelivered (the gateway decides whether that is transparent). Replies leave through the worker's
one :class:`~inference_worker.replies.ReplyBatcher`; cancels and resumes reach the running requests
through :class:`~inference_worker.control.Controls`; each request's outcome is committed once, with
its session's turns (:mod:`common.exchanges`), and a request answered before is answered again
from its record, never generated twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid

import aiohttp
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from redis.exceptions import RedisClusterException, RedisError

from broker.messages import (
    ChatError,
    ChatRequest,
    EmbedRequest,
)
from common.amqp import connect, ready_messages, topology_for
from common.archive import ArchiveStore
from common.cancels import CancelMarkers
from common.exchanges import FINAL_STATES, ChatRecords
from common.health import broker_and_redis_ready
from common.jobs import JobStore
from common.keyspace import Keyspace
from common.models import ModelRegistry
from common.redis import RedisClient, open_service_redis
from common.service import Service
from common.session_reader import SessionReader
from common.sessions import SessionStore, Turn
from inference_worker.admission import Claimed, Publishers, Refusal
from inference_worker.control import Controls
from inference_worker.delivery import DeadLetter, Outcome, settled
from inference_worker.embedding import Embedder
from inference_worker.generation import Completion, ModelCaller, Progress
from inference_worker.history import HistoryReader
from inference_worker.metrics import WorkerMetrics
from inference_worker.ollama import NodePool, OllamaClient, OllamaError
from inference_worker.outcomes import Outcomes
from inference_worker.probe import NodeProber
from inference_worker.replies import RepliesLost, ReplyBatcher, ReplyStream
from inference_worker.settings import WorkerSettings

log = structlog.get_logger(__name__)
STORE_UNAVAILABLE = "store_unavailable"  # the chat could not be read or recorded: Redis is away


class InferenceWorker(Service):
    """One worker process's consume loop: ``start()``/``close()``, or ``async with``."""

    def __init__(self, settings: WorkerSettings, metrics: WorkerMetrics | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self.keys = Keyspace(settings.common.key_prefix)
        self.topology = topology_for(settings.common)
        self.publishers = Publishers(settings.trusted_publishers, settings.integrators)
        self.pool = NodePool.from_urls(
            settings.ollama_urls,
            cooldown=settings.ollama_node_cooldown,
            max_parallel=settings.ollama_node_max_parallel,
        )
        self._redis: RedisClient | None = None
        self._sessions: SessionStore | None = None
        self._records: ChatRecords | None = None
        self._jobs: JobStore | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channels: tuple[AbstractChannel, ...] = ()
        self._history: HistoryReader | None = None
        self._model_caller: ModelCaller | None = None
        self._embedder: Embedder | None = None
        self._replies: ReplyBatcher | None = None
        self._outcomes_writer: Outcomes | None = None
        # Every message being handled (the slots in use), and the running requests by (owner,
        # request id): a cancel stops only its own user's request.
        self._running: set[asyncio.Task[None]] = set()
        self._controls = Controls()
        self.metrics.slots.set(settings.concurrency)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open Redis, the Ollama HTTP client, S3 and the broker, learn the nodes' models, then
        consume. Each resource registers its shutdown step as it opens (see :meth:`close`)."""
        s, teardown = self.settings, self.teardown
        self._redis = redis = await open_service_redis(s.common)
        teardown.push("redis_close", 5, redis.aclose)
        self._sessions = SessionStore(
            redis, self.keys, max_turns=s.session_max_turns, max_bytes=s.session_max_bytes
        )
        self._jobs = JobStore(redis, self.keys, ttl=s.common.job_ttl)
        self._records = ChatRecords(redis, self.keys, self._sessions)
        http = await teardown.enter(
            "http_close",
            10,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60, enable_cleanup_closed=True),
                timeout=aiohttp.ClientTimeout(total=None, connect=s.ollama_connect_timeout),
            ),
        )
        ollama = OllamaClient(http, read_timeout=s.ollama_read_timeout)
        self._model_caller = ModelCaller(self.pool, ollama, self.metrics)
        self._embedder = Embedder(self.pool, ollama, self.metrics)
        archive = await teardown.enter("s3_close", 10, ArchiveStore(s.s3))
        self._history = HistoryReader(
            redis,
            CancelMarkers(redis, self.keys),
            SessionReader(self._sessions, archive),
            self._records,
            window=s.history_window,
        )
        self._connection = connection = await connect(
            s.common.rabbitmq_url, client_name=s.common.service_name
        )
        teardown.push("amqp_close", 10, connection.close)
        reply_channel = await connection.channel(publisher_confirms=False)
        consume_channel = await connection.channel()
        # Usage events are confirmed before their requests are acked: a channel with confirms.
        usage_channel = await connection.channel()
        self._channels = (reply_channel, consume_channel, usage_channel)
        await consume_channel.set_qos(prefetch_count=s.concurrency)
        declared = await self.topology.declare(consume_channel)
        self._outcomes_writer = Outcomes(
            s,
            self.metrics,
            records=self._records,
            sessions=self._sessions,
            jobs=self._jobs,
            events=await reply_channel.get_exchange(self.topology.events_exchange, ensure=False),
            usage_events=await usage_channel.get_exchange(self.topology.events_exchange, ensure=False),
        )
        self._replies = ReplyBatcher(
            reply_channel.default_exchange,
            interval=s.chunk_flush_ms / 1000,
            max_chars=s.chunk_max_chars,
            metrics=self.metrics,
            alive_interval=s.alive_seconds,
        )
        self._replies.start()
        # Runs after the drain (steps run last-registered first): what the last answers left goes out.
        teardown.push("replies_close", 5, self._replies.close)
        teardown.push("outcomes_close", 5, self._outcomes_writer.aclose)
        cancel_queue = await consume_channel.declare_queue(exclusive=True, auto_delete=True)
        await cancel_queue.bind(declared.cancel)
        await cancel_queue.consume(self._controls.on_message, no_ack=True)
        prober = NodeProber(
            self.pool,
            ollama,
            ModelRegistry(redis, self.keys),
            self.metrics,
            timeout=s.ollama_connect_timeout,
            interval=s.ollama_probe_interval,
        )
        await prober.probe()  # know which node has which model before the first request
        teardown.drain("drain", self._running, s.shutdown_grace)
        requests = declared.request_queue
        consumer_tag = await requests.consume(self._on_request)
        teardown.push("cancel_consumer", 5, functools.partial(requests.cancel, consumer_tag))
        teardown.cancel("probe", 5, asyncio.get_running_loop().create_task(prober.run()))
        log.info("worker_started", concurrency=s.concurrency, nodes=list(s.ollama_urls))

    async def close(self) -> None:
        """Stop taking requests, let running ones finish within the grace period, then close the
        broker connection, S3, the Ollama HTTP client and Redis, each step bounded.

        Requests still running after the grace period are abandoned unacked, so RabbitMQ hands
        them to another worker.
        """
        await super().close()
        self._connection, self._redis = None, None
        log.info("worker_stopped")

    async def ready(self) -> bool:
        """True when the broker connection is open and Redis answers."""
        return await broker_and_redis_ready(self._connection, self._redis, self._channels)

    @property
    def _outcomes(self) -> Outcomes:
        assert self._outcomes_writer is not None, "start() the worker first"
        return self._outcomes_writer

    @property
    def busy(self) -> int:
        """Requests being handled (each holds one of the ``concurrency`` slots)."""
        return len(self._running)

    async def backlog(self) -> int:
        """Requests waiting in the request queue (shared by every worker)."""
        assert self._connection is not None, "start() the worker first"
        return await ready_messages(self._connection, [self.topology.requests_queue])

    # -- consuming -------------------------------------------------------------------------------
    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.get_running_loop().create_task(self._process(message))
        self._running.add(task)
        self.metrics.busy_slots.set(len(self._running))
        task.add_done_callback(self._finished_task)

    def _finished_task(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self.metrics.busy_slots.set(len(self._running))

    async def _process(self, message: AbstractIncomingMessage) -> None:
        """Handle one message inside :func:`settled`, the one owner of its ack or reject."""
        try:
            async with settled(message, self._count_settled):
                request = await self._admit(message)
                key = (request.user_id, request.request_id)
                task = asyncio.current_task()
                assert task is not None
                self._controls.running(key, task)
                try:
                    await self._handle(message, request)
                finally:
                    self._controls.finished(key, task)
        except Exception as exc:  # settled() requeued the message; nobody awaits this task
            log.error("request_requeued", error=repr(exc), message_id=message.message_id)

    def _count_settled(self, outcome: Outcome) -> None:
        self.metrics.settled.labels(outcome).inc()

    async def _admit(self, message: AbstractIncomingMessage) -> ChatRequest | EmbedRequest:
        """The request, or :class:`DeadLetter` when it can never be answered: a refused one
        (inference_worker/admission.py) is told why first, if it has a ``reply_to``."""
        try:
            request = self.publishers.admit(message)
        except Refusal as refusal:
            self.metrics.rejected.inc()
            log.warning(
                "request_refused",
                error=refusal.code,
                detail=refusal.message,
                publisher=message.user_id,
                message_id=message.message_id,
            )
            await self._refuse(message, refusal)
            raise DeadLetter(refusal.code) from refusal
        if not message.reply_to and not request.job_id:
            self.metrics.rejected.inc()
            log.warning("request_rejected_no_reply_to", request_id=request.request_id)
            raise DeadLetter("no reply_to and no job")
        return request

    async def _refuse(self, message: AbstractIncomingMessage, refusal: Refusal) -> None:
        """The error reply of a refused message; best effort (it is dead-lettered either way)."""
        if not message.reply_to:
            return
        assert self._replies is not None
        claimed = Claimed.read(message)
        error = ChatError(
            request_id=claimed.request_id,
            user_id=claimed.user_id,
            org_id=claimed.org_id,
            generation=uuid.uuid4().hex[:12],
            error=refusal.code,
            message=refusal.message,
        )
        try:
            await self._replies.refuse(
                message.reply_to,
                claimed.reply_mode,
                error,
                correlation_id=claimed.correlation_id,
                trace_id=claimed.trace_id,
            )
        except RepliesLost as exc:
            log.warning("refusal_not_published", reply_to=message.reply_to, error=repr(exc))

    async def _handle(self, message: AbstractIncomingMessage, request: ChatRequest | EmbedRequest) -> None:
        """Answer ``request``. Returns once its outcome reached the client (done or error
        published) or nobody waits for it any more; raises only when the client could not be told
        (then :func:`settled` requeues the request) or on shutdown past the grace period."""
        structlog.contextvars.bind_contextvars(
            request_id=request.request_id, trace_id=request.trace_id, user_id=request.user_id
        )
        assert self._replies is not None and self._history is not None
        if isinstance(request, EmbedRequest):
            try:
                await self._embed(message, request)
            finally:
                structlog.contextvars.unbind_contextvars("request_id", "trace_id", "user_id")
            return
        # This attempt's id (the ``generation`` field of every reply): a redelivered request gets
        # a new one, so the gateway can tell a restarted answer from the one it was relaying.
        replies = self._replies.stream(
            request, message.reply_to or "", uuid.uuid4().hex[:12], redelivered=bool(message.redelivered)
        )
        key = (request.user_id, request.request_id)
        self._controls.streaming(key, replies)
        started = time.time()
        progress = Progress()
        if message.redelivered:
            self.metrics.redeliveries.inc()
        self.metrics.queue_wait.observe(max(0.0, started - request.created_at))
        try:
            if started > request.deadline:
                self.metrics.generations.labels("expired", request.model).inc()
                await self._outcomes.fail(request, replies, "deadline_exceeded", "deadline passed")
                return
            cancelled, history, record_state, cancel_at = await self._history.prefetch(request)
            if cancel_at is not None:  # its client went away while it waited, and may resume
                self._controls.cancel_at(key, cancel_at)
            if not cancelled and record_state in FINAL_STATES:
                # Answered before (a redelivery after the outcome was committed): never a second
                # generation; the client still waiting gets the recorded answer.
                await self._outcomes.answer_from_record(request, replies)
                return
            if not cancelled and request.job_id:
                cancelled = await self._outcomes.start_job(request)
            if cancelled:
                self.metrics.generations.labels("cancelled", request.model).inc()
                return
            try:
                async with asyncio.timeout(request.deadline - started):
                    result = await self._call_model(request, replies, history, progress)
            except OllamaError as exc:
                self.metrics.generations.labels("error", request.model).inc()
                self.metrics.errors.labels(exc.code).inc()
                log.warning("generation_failed", error=exc.code, detail=str(exc))
                await self._outcomes.report(request, "failed", progress.tokens)
                await self._outcomes.fail(request, replies, exc.code, str(exc), progress)
                return
            except TimeoutError:
                self.metrics.generations.labels("expired", request.model).inc()
                self._outcomes.record_partial(progress, request)
                await self._outcomes.report(request, "expired", progress.tokens)
                await self._outcomes.fail(
                    request, replies, "deadline_exceeded", "the answer did not finish in time", progress
                )
                return
            await self._outcomes.finish(request, replies, result)
            self.metrics.generations.labels("ok", request.model).inc()
            log.info(
                "generation_finished",
                model=request.model,
                node=result.node,
                session_id=request.session_id,
                completion_tokens=result.usage.completion_tokens,
                duration_ms=round((time.time() - started) * 1000, 1),
            )
        except asyncio.CancelledError:
            reason = self._controls.reason(key)
            if reason is None:
                raise  # shutdown past the grace period: settled() requeues the request
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            self.metrics.generations.labels("cancelled", request.model).inc()
            self._outcomes.record_partial(progress, request)
            await self._outcomes.report(request, "cancelled", progress.tokens)
            log.info("generation_cancelled", reason=reason, partial_tokens=progress.tokens)
            with contextlib.suppress(RedisError):  # nobody waits: a lost record only loses history
                await self._outcomes.commit(request, replies, "cancelled", progress.text(), None)
            if request.job_id and self._jobs is not None:
                await self._jobs.finish(
                    request.user_id,
                    request.job_id,
                    "cancelled",
                    response=progress.text(),
                    usage={"completion_tokens": progress.tokens},
                )
        except (RedisError, RedisClusterException) as exc:
            # Redis away (restarting, failing over) after redis-py's own retries: a retryable
            # error the client can act on, not an internal one.
            self.metrics.errors.labels(STORE_UNAVAILABLE).inc()
            log.error("session_store_unavailable", error=repr(exc))
            await self._outcomes.report(request, "failed", progress.tokens)
            await self._outcomes.fail(
                request,
                replies,
                STORE_UNAVAILABLE,
                "the session store is unavailable; please retry",
                progress,
            )
        except Exception as exc:
            self.metrics.errors.labels(type(exc).__name__).inc()
            log.exception("generation_crashed", error_type=type(exc).__name__)
            # If this raises too, the client cannot be told: settled() requeues the request.
            await self._outcomes.report(request, "failed", progress.tokens)
            await self._outcomes.fail(request, replies, "internal_error", "the worker failed", progress)
        finally:
            replies.release()
            self._controls.ended(key, replies)
            structlog.contextvars.unbind_contextvars("request_id", "trace_id", "user_id")

    async def _embed(self, message: AbstractIncomingMessage, request: EmbedRequest) -> None:
        assert self._replies is not None and self._embedder is not None
        replies = self._replies.stream(request, message.reply_to or "", uuid.uuid4().hex[:12])
        key = (request.user_id, request.request_id)
        try:
            await self._embedder.answer(request, replies)
        except asyncio.CancelledError:
            if self._controls.reason(key) is None:
                raise  # shutdown past the grace period: settled() requeues the request
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            self.metrics.generations.labels("cancelled", request.model).inc()
        finally:
            replies.release()

    async def _call_model(
        self, request: ChatRequest, replies: ReplyStream, history: list[Turn], progress: Progress
    ) -> Completion:
        assert self._model_caller is not None
        messages = HistoryReader.conversation(request, history)
        return await self._model_caller.run(request, messages, replies.token, progress)


__all__ = ["InferenceWorker"]
