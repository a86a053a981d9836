"""Refused requests (inference_worker/admission.py): a body that is not a request, or an identity
its publisher may not claim, is answered with an error reply on its reply_to (with its
correlation_id) and kept in the dead-letter queue; who published it is RabbitMQ's validated
``user_id`` property, checked with a real second RabbitMQ user holding an integrator's permissions."""

from __future__ import annotations

import time
from typing import Any

import aio_pika
import msgspec
import pytest
from aiormq.exceptions import ChannelPreconditionFailed
from helpers import SingleRedis, wait_for
from integrator_support import Integrator
from reply_support import ReplyClient, chat_request

from broker.messages import ChatDone, ChatError, ReplyBatch, encoder, reply_decoder
from broker.topology import QueueLimits, Topology
from common.settings import SettingsError
from inference_worker.settings import WorkerSettings
from inference_worker.worker import InferenceWorker


@pytest.fixture
def redis_target(single_redis_url: str) -> SingleRedis:
    """What is tested here does not depend on the Redis topology."""
    return SingleRedis(single_redis_url)


@pytest.fixture
async def integrator_amqp(integrator: Integrator) -> Any:
    connection = await aio_pika.connect_robust(integrator.url)
    yield connection
    await connection.close()


def _request_body(
    request_id: str, user_id: str = "u1", org_id: str = "org", **changes: Any
) -> dict[str, Any]:
    body = msgspec.to_builtins(chat_request(request_id, user_id, "hello"))
    body["org_id"] = org_id
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


async def _publish(client: ReplyClient, body: bytes, **properties: Any) -> None:
    properties = {"reply_to": client.queue.name, "user_id": client.publisher, **properties}
    await client.requests.publish(aio_pika.Message(body, **properties), routing_key="chat")


async def _one_reply(client: ReplyClient) -> aio_pika.abc.AbstractIncomingMessage:
    message = await client.queue.get(timeout=10, fail=False)
    if message is None:
        message = await wait_for(lambda: client.queue.get(fail=False), what="a reply")
    await message.ack()
    return message


async def _dead_lettered(amqp: Any, namespace: str, body: bytes) -> aio_pika.abc.AbstractIncomingMessage:
    channel = await amqp.channel()
    dead = await channel.declare_queue(Topology(namespace, QueueLimits()).dead_letter_queue, passive=True)
    message = await wait_for(lambda: dead.get(fail=False, no_ack=True), what="the message dead-lettered")
    assert message.body == body
    await channel.close()
    return message


def _settled(worker: InferenceWorker, outcome: str) -> float:
    return (
        worker.metrics.registry.get_sample_value("worker_requests_settled_total", {"outcome": outcome}) or 0
    )


async def test_a_request_without_a_prompt_gets_invalid_request_and_is_dead_lettered(
    worker: InferenceWorker, amqp: Any, namespace: str
) -> None:
    client = await ReplyClient.open(amqp, namespace)
    body = _request_body("no-prompt-0001")
    del body["prompt"]
    raw = msgspec.json.encode(body)
    await _publish(client, raw, correlation_id="integrator-corr-7")

    reply = await _one_reply(client)
    assert (reply.type, reply.correlation_id) == ("error", "integrator-corr-7")
    error = reply_decoder.decode(reply.body)
    assert isinstance(error, ChatError)
    assert (error.error, error.request_id, error.user_id, error.org_id) == (
        "invalid_request",
        "no-prompt-0001",
        "u1",
        "org",
    )
    assert "missing required field `prompt`" in error.message
    dead = await _dead_lettered(amqp, namespace, raw)
    assert dead.headers["x-first-death-reason"] == "rejected"
    await worker.run_until_idle(timeout=10)
    assert (_settled(worker, "dead_letter"), _settled(worker, "ack"), _settled(worker, "requeue")) == (
        1,
        0,
        0,
    )


async def test_a_body_that_is_no_json_object_is_answered_from_the_message_properties(
    worker: InferenceWorker, amqp: Any, namespace: str
) -> None:
    client = await ReplyClient.open(amqp, namespace)
    await _publish(client, b"not json", correlation_id="corr-no-json")

    reply = await _one_reply(client)
    error = reply_decoder.decode(reply.body)
    assert isinstance(error, ChatError) and error.error == "invalid_request"
    assert reply.correlation_id == error.request_id == "corr-no-json"
    assert error.user_id == client.publisher
    assert "malformed" in error.message
    await _dead_lettered(amqp, namespace, b"not json")


async def test_a_batch_requester_gets_its_refusal_in_a_batch(
    worker: InferenceWorker, amqp: Any, namespace: str
) -> None:
    client = await ReplyClient.open(amqp, namespace)
    raw = msgspec.json.encode(_request_body("bad-model-0001", reply_mode="batch", model=7))
    await _publish(client, raw, correlation_id="bad-model-0001")

    reply = await _one_reply(client)
    batch = reply_decoder.decode(reply.body)
    assert reply.type == "batch" and isinstance(batch, ReplyBatch)
    [error] = batch.frames
    assert isinstance(error, ChatError) and error.error == "invalid_request"
    assert error.request_id == "bad-model-0001" and "`$.model`" in error.message
    await _dead_lettered(amqp, namespace, raw)


async def test_a_request_without_a_user_id_property_is_forbidden(
    worker: InferenceWorker, amqp: Any, namespace: str
) -> None:
    client = await ReplyClient.open(amqp, namespace)
    request = chat_request("anonymous-0001", "u1", "hello")
    raw = encoder.encode(request)
    await client.requests.publish(
        aio_pika.Message(raw, reply_to=client.queue.name, correlation_id=request.request_id),
        routing_key="chat",
    )
    error = reply_decoder.decode((await _one_reply(client)).body)
    assert isinstance(error, ChatError)
    assert (error.error, error.request_id) == ("forbidden_identity", "anonymous-0001")
    assert "no user_id property" in error.message
    await _dead_lettered(amqp, namespace, raw)


async def test_the_broker_refuses_a_user_id_property_naming_another_user(
    worker: InferenceWorker, integrator: Integrator, integrator_amqp: Any, namespace: str
) -> None:
    """What the workers rely on: nobody can pass as a gateway's user."""
    channel = await integrator_amqp.channel(publisher_confirms=True)
    requests = await channel.get_exchange(Topology(namespace, QueueLimits()).requests_exchange, ensure=False)
    with pytest.raises(ChannelPreconditionFailed, match="user_id"):
        await requests.publish(
            aio_pika.Message(encoder.encode(chat_request("forged-0001", "u1", "hi")), user_id="guest"),
            routing_key="chat",
        )


async def test_a_rabbitmq_user_that_is_no_integrator_is_forbidden(
    worker: InferenceWorker, amqp: Any, integrator: Integrator, integrator_amqp: Any, namespace: str
) -> None:
    """The user exists and may publish (its permissions), but the workers do not know it."""
    client = await ReplyClient.open(integrator_amqp, namespace, queue_name=integrator.reply_queue())
    assert client.publisher == integrator.user
    request = chat_request("unknown-0001", f"svc:{integrator.user}", "hello")
    raw = encoder.encode(request)
    await _publish(client, raw, correlation_id=request.request_id)
    reply = await _one_reply(client)
    error = reply_decoder.decode(reply.body)
    assert isinstance(error, ChatError) and error.error == "forbidden_identity"
    assert reply.correlation_id == "unknown-0001" and integrator.user in error.message
    await _dead_lettered(amqp, namespace, raw)


@pytest.mark.parametrize(
    ("user_id", "org_id", "refused"),
    [
        ("svc:{user}", "org-acme", None),
        ("svc:{user}:alice", "org-acme", None),
        ("alice", "org-acme", "may claim user_id"),
        ("svc:{user}x", "org-acme", "may claim user_id"),
        ("svc:{user}", "org-other", "may claim org_id 'org-acme' only"),
    ],
)
async def test_an_integrator_claims_only_its_own_org_and_service_users(
    worker_factory: Any,
    amqp: Any,
    integrator: Integrator,
    integrator_amqp: Any,
    namespace: str,
    user_id: str,
    org_id: str,
    refused: str | None,
) -> None:
    worker = await worker_factory(WORKER_INTEGRATORS=f"{integrator.user}=org-acme")
    client = await ReplyClient.open(integrator_amqp, namespace, queue_name=integrator.reply_queue())
    now = time.time()
    body = _request_body(
        "claims-0001", user_id.format(user=integrator.user), org_id, deadline=now + 30, created_at=now
    )
    raw = msgspec.json.encode(body)
    await _publish(client, raw, correlation_id="claims-0001")
    received = await client.collect({"claims-0001"})
    final = received.replies["claims-0001"][-1]
    if refused is None:
        assert isinstance(final, ChatDone)
        assert final.user_id == body["user_id"] and final.org_id == "org-acme"
        await worker.run_until_idle(timeout=10)
        assert _settled(worker, "ack") == 1
    else:
        assert isinstance(final, ChatError) and final.error == "forbidden_identity"
        assert refused.format(user=integrator.user) in final.message
        await _dead_lettered(amqp, namespace, raw)


def test_publisher_settings_default_to_the_workers_own_broker_user() -> None:
    settings = WorkerSettings.from_env({"RABBITMQ_URL": "amqp://chat:pw@rabbitmq:5672/"})
    assert (settings.trusted_publishers, settings.integrators) == (frozenset({"chat"}), {})
    assert WorkerSettings.from_env({}).trusted_publishers == {"guest"}
    settings = WorkerSettings.from_env(
        {"WORKER_TRUSTED_PUBLISHERS": "gw-a, gw-b", "WORKER_INTEGRATORS": "crm=org-acme, billing=org-fin"}
    )
    assert settings.trusted_publishers == {"gw-a", "gw-b"}
    assert settings.integrators == {"crm": "org-acme", "billing": "org-fin"}


@pytest.mark.parametrize(
    ("integrators", "complaint"),
    [("crm", "key=value"), ("crm=org-a,crm=org-b", "twice"), ("guest=org-a", "trusted publishers")],
)
def test_publisher_settings_refuse_what_would_be_ambiguous(integrators: str, complaint: str) -> None:
    with pytest.raises(SettingsError, match=complaint):
        WorkerSettings.from_env({"WORKER_INTEGRATORS": integrators})
