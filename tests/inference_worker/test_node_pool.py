"""NodePool: which node a generation gets, parallel limits, waiting, cooldown; no HTTP involved."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from inference_worker.ollama import ModelNotFound, NodeBusy, NodePool, NoHealthyNode, OllamaNode

LONG = 30.0  # an acquire timeout no test reaches: waiting ends by release() or not at all


def pool(*models: frozenset[str] | None, cooldown: float = 10.0, max_parallel: int = 0) -> NodePool:
    """Nodes ``n0``, ``n1`` ... with the given model sets (None: not probed yet)."""
    nodes = [OllamaNode(f"n{i}", models=m) for i, m in enumerate(models)]
    return NodePool(nodes, cooldown=cooldown, max_parallel=max_parallel)


def node(p: NodePool, url: str) -> OllamaNode:
    return next(n for n in p.nodes if n.url == url)


async def settle(task: asyncio.Task[OllamaNode], *, rounds: int = 20) -> None:
    """Give ``task`` a few event-loop turns (no wall-clock time) to progress as far as it can."""
    for _ in range(rounds):
        if task.done():
            return
        await asyncio.sleep(0)


LLAMA = frozenset({"llama3.2", "llama3.2:latest"})
QWEN = frozenset({"qwen2.5"})


# -- picking -------------------------------------------------------------------------------------
def test_pick_takes_the_least_busy_node() -> None:
    p = pool(None, None, None)
    node(p, "n0").in_flight, node(p, "n1").in_flight, node(p, "n2").in_flight = 3, 1, 2
    for _ in range(5):  # rotation among equals never overrides "least busy"
        picked = p.pick("llama3.2", set())
        assert picked is not None and picked.url == "n1"


async def test_idle_nodes_share_the_load() -> None:
    p = pool(None, None, None)
    for _ in range(9):
        await p.release(await p.acquire("llama3.2", set(), timeout=LONG))
    assert Counter(n.served for n in p.nodes) == {3: 3}


async def test_concurrent_generations_spread_over_the_nodes() -> None:
    p = pool(None, None)
    held = [await p.acquire("llama3.2", set(), timeout=LONG) for _ in range(6)]
    assert Counter(n.url for n in held) == {"n0": 3, "n1": 3}
    assert [n.in_flight for n in p.nodes] == [3, 3]
    for n in held:
        await p.release(n)
    assert [n.in_flight for n in p.nodes] == [0, 0]


def test_pick_skips_excluded_cooling_and_modelless_nodes() -> None:
    p = pool(LLAMA, LLAMA, QWEN, LLAMA)
    p.mark_failed(node(p, "n1"))
    for _ in range(4):
        picked = p.pick("llama3.2", exclude={"n0"})
        assert picked is not None and picked.url == "n3"
    assert p.pick("llama3.2", exclude={"n0", "n3"}) is None


def test_a_model_matches_with_and_without_the_latest_tag() -> None:
    tagged = OllamaNode("a", models=frozenset({"mistral:latest"}))
    assert tagged.has("mistral")
    assert tagged.has("mistral:latest")
    assert not tagged.has("mistral:7b")
    assert OllamaNode("b").has("anything"), "a node not probed yet is assumed to have every model"


# -- parallel limit and waiting ------------------------------------------------------------------
async def test_parallel_limit_is_per_node() -> None:
    p = pool(None, None, max_parallel=2)
    held = [await p.acquire("llama3.2", set(), timeout=LONG) for _ in range(4)]
    assert [n.in_flight for n in p.nodes] == [2, 2]
    assert p.pick("llama3.2", set()) is None, "both nodes are full"
    assert p.could_serve("llama3.2", set()), "full is not unhealthy: worth waiting"
    for n in held:
        await p.release(n)


async def test_a_waiting_acquire_gets_the_slot_release_frees() -> None:
    p = pool(None, None, max_parallel=1)
    first = await p.acquire("llama3.2", set(), timeout=LONG)
    second = await p.acquire("llama3.2", set(), timeout=LONG)
    waiting = asyncio.create_task(p.acquire("llama3.2", set(), timeout=LONG))
    await settle(waiting)
    assert not waiting.done(), "every node is at its limit: the acquire waits"

    await p.release(second)
    await settle(waiting)  # woken by release(), long before the acquire's own 1 s re-check
    assert waiting.done()
    assert waiting.result() is second
    assert second.in_flight == 1
    await p.release(first)
    await p.release(second)


async def test_release_wakes_the_waiter_that_can_use_the_freed_node() -> None:
    """Waiters for different models: freeing the qwen node must wake the qwen waiter promptly."""
    p = pool(LLAMA, QWEN, max_parallel=1)
    llama = await p.acquire("llama3.2", set(), timeout=LONG)
    qwen = await p.acquire("qwen2.5", set(), timeout=LONG)
    wants_llama = asyncio.create_task(p.acquire("llama3.2", set(), timeout=LONG))
    await settle(wants_llama)
    wants_qwen = asyncio.create_task(p.acquire("qwen2.5", set(), timeout=LONG))
    await settle(wants_qwen)
    assert not wants_llama.done() and not wants_qwen.done()

    await p.release(qwen)
    await settle(wants_qwen)
    assert wants_qwen.done(), "the freed qwen slot went unused while its waiter slept"
    assert wants_qwen.result() is qwen
    assert not wants_llama.done()

    await p.release(llama)
    await settle(wants_llama)
    assert wants_llama.result() is llama


async def test_release_wakes_a_waiter_even_when_an_earlier_one_excludes_the_node() -> None:
    p = pool(None, None, max_parallel=1)
    n0 = await p.acquire("llama3.2", set(), timeout=LONG)
    n1 = await p.acquire("llama3.2", set(), timeout=LONG)
    retrying = asyncio.create_task(p.acquire("llama3.2", {n1.url}, timeout=LONG))  # n1 failed it
    await settle(retrying)
    fresh = asyncio.create_task(p.acquire("llama3.2", set(), timeout=LONG))
    await settle(fresh)

    await p.release(n1)
    await settle(fresh)
    assert fresh.done() and fresh.result() is n1
    assert not retrying.done()
    await p.release(n0)
    await settle(retrying)
    assert retrying.result() is n0


async def test_acquire_gives_up_with_node_busy_when_the_wait_times_out() -> None:
    p = pool(None, max_parallel=1)
    held = await p.acquire("llama3.2", set(), timeout=LONG)
    with pytest.raises(NodeBusy):
        await p.acquire("llama3.2", set(), timeout=0)
    assert held.in_flight == 1, "a refused acquire reserves nothing"
    await p.release(held)
    assert (await p.acquire("llama3.2", set(), timeout=0)) is held


async def test_waiting_is_cancellable_and_leaves_nothing_reserved() -> None:
    p = pool(None, max_parallel=1)
    held = await p.acquire("llama3.2", set(), timeout=LONG)
    waiting = asyncio.create_task(p.acquire("llama3.2", set(), timeout=LONG))
    await settle(waiting)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await p.release(held)
    assert held.in_flight == 0
    assert (await p.acquire("llama3.2", set(), timeout=0)) is held


# -- which error -----------------------------------------------------------------------------------
async def test_a_model_no_node_has_is_model_not_found() -> None:
    p = pool(LLAMA, QWEN)
    with pytest.raises(ModelNotFound):
        await p.acquire("mistral", set(), timeout=LONG)


async def test_a_model_unknown_while_some_node_is_not_probed_is_tried() -> None:
    p = pool(LLAMA, None)
    picked = await p.acquire("mistral", set(), timeout=0)
    assert picked.url == "n1", "the node whose models are unknown may have it"


async def test_every_node_with_the_model_cooling_is_no_healthy_node() -> None:
    p = pool(LLAMA, QWEN)
    p.mark_failed(node(p, "n0"))
    with pytest.raises(NoHealthyNode) as raised:
        await p.acquire("llama3.2", set(), timeout=LONG)
    assert not isinstance(raised.value, ModelNotFound)
    assert (await p.acquire("qwen2.5", set(), timeout=0)).url == "n1"


async def test_every_node_with_the_model_already_tried_is_no_healthy_node() -> None:
    p = pool(LLAMA, LLAMA)
    with pytest.raises(NoHealthyNode):
        await p.acquire("llama3.2", {"n0", "n1"}, timeout=LONG)


async def test_no_nodes_cooling_and_full_is_busy_not_unhealthy() -> None:
    p = pool(LLAMA, max_parallel=1)
    held = await p.acquire("llama3.2", set(), timeout=0)
    with pytest.raises(NodeBusy) as raised:
        await p.acquire("llama3.2", set(), timeout=0)
    assert raised.value.retry_elsewhere
    await p.release(held)


# -- cooldown ----------------------------------------------------------------------------------------
def cooldown_after_failure(p: NodePool, n: OllamaNode) -> tuple[float, float]:
    """Bounds of the cooldown ``mark_failed`` sets, from the monotonic clock around the call."""
    before = time.monotonic()
    p.mark_failed(n)
    after = time.monotonic()
    return n.cooldown_until - after, n.cooldown_until - before


def test_cooldown_doubles_with_each_failure_up_to_eight_times() -> None:
    p = pool(None, cooldown=100.0)
    n = p.nodes[0]
    for expected in (100.0, 200.0, 400.0, 800.0, 800.0, 800.0):
        low, high = cooldown_after_failure(p, n)
        assert low <= expected <= high
    assert n.consecutive_failures == 6


def test_mark_ok_ends_the_cooldown_and_restarts_the_back_off() -> None:
    p = pool(None, None, cooldown=100.0)
    n = p.nodes[0]
    for _ in range(3):
        p.mark_failed(n)
    assert p.healthy_count() == 1
    assert p.pick("llama3.2", set()) is p.nodes[1]

    p.mark_ok(n)
    assert (n.consecutive_failures, n.cooldown_until) == (0, 0.0)
    assert p.healthy_count() == 2
    low, high = cooldown_after_failure(p, n)
    assert low <= 100.0 <= high, "the back-off starts again from the base cooldown"


def test_a_cooling_node_is_not_counted_nor_its_models_offered() -> None:
    p = pool(LLAMA, QWEN)
    assert p.models() == LLAMA | QWEN
    p.mark_failed(node(p, "n1"))
    assert p.models() == LLAMA
    assert p.healthy_count() == 1
    assert not p.could_serve("qwen2.5", set())


async def test_a_zero_cooldown_keeps_a_failed_node_in_rotation() -> None:
    p = pool(None, cooldown=0.0)
    n = p.nodes[0]
    p.mark_failed(n)
    assert n.consecutive_failures == 1
    assert (await p.acquire("llama3.2", set(), timeout=0)) is n
