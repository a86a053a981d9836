"""merge_turns: archiving again (a replay, a resumed session, a spill) only ever adds turns."""

from __future__ import annotations

import copy

from common.archive import merge_turns
from common.sessions import Turn


def user(at: float, content: str, request_id: str | None = None) -> Turn:
    return Turn(role="user", content=content, created_at=at, request_id=request_id)


def answer(
    at: float,
    content: str,
    request_id: str | None = None,
    *,
    model: str | None = None,
    usage: dict[str, int] | None = None,
) -> Turn:
    return Turn(
        role="assistant", content=content, created_at=at, request_id=request_id, model=model, usage=usage
    )


def contents(turns: list[Turn]) -> list[str]:
    return [t.content for t in turns]


def test_a_replayed_archive_adds_nothing() -> None:
    turns = [user(1.0, "q1", "r1"), answer(2.0, "a1", "r1"), user(3.0, "q2", "r2"), answer(4.0, "a2", "r2")]
    assert merge_turns(turns, list(turns)) == turns
    assert merge_turns(turns, []) == turns
    assert merge_turns([], turns) == turns
    assert merge_turns([], []) == []


def test_new_turns_are_appended_once() -> None:
    archived = [user(1.0, "q1", "r1"), answer(2.0, "a1", "r1")]
    live = [user(1.0, "q1", "r1"), answer(2.0, "a1", "r1"), user(5.0, "q2", "r2"), answer(6.0, "a2", "r2")]
    assert contents(merge_turns(archived, live)) == ["q1", "a1", "q2", "a2"]


def test_the_result_is_in_time_order_whatever_the_input_order() -> None:
    spilled = [user(1.0, "q1"), answer(2.0, "a1")]
    kept = [user(3.0, "q2"), answer(4.0, "a2")]
    archived = [user(5.0, "q3"), answer(6.0, "a3")]
    assert contents(merge_turns(archived, [*spilled, *kept])) == ["q1", "a1", "q2", "a2", "q3", "a3"]
    assert contents(merge_turns(kept[::-1], spilled[::-1])) == ["q1", "a1", "q2", "a2"]


def test_a_question_comes_before_its_answer_stamped_the_same_time() -> None:
    merged = merge_turns([answer(7.0, "a", "r")], [user(7.0, "q", "r")])
    assert [t.role for t in merged] == ["user", "assistant"]


def test_turns_that_differ_in_anything_identifying_are_all_kept() -> None:
    base = user(1.0, "same", "r1")
    others = [
        user(1.5, "same", "r1"),  # another time
        answer(1.0, "same", "r1"),  # another role
        user(1.0, "same", "r2"),  # another request
        user(1.0, "other", "r1"),  # another text
    ]
    merged = merge_turns([base], others)
    assert len(merged) == 5
    assert all(any(m is t for m in merged) for t in [base, *others])


def test_the_archived_copy_of_a_turn_wins() -> None:
    archived = answer(2.0, "a1", "r1", model="llama3.2", usage={"completion_tokens": 3})
    replayed = answer(2.0, "a1", "r1")  # the same turn without its details
    (merged,) = merge_turns([archived], [replayed])
    assert merged is archived


def test_inputs_are_not_changed() -> None:
    existing = [answer(4.0, "a2"), user(1.0, "q1")]
    new = [user(1.0, "q1"), user(3.0, "q2")]
    before = (copy.deepcopy(existing), copy.deepcopy(new))
    merge_turns(existing, new)
    assert (existing, new) == before


def test_tool_results_come_before_the_answer_of_the_same_moment() -> None:
    result = Turn(role="tool", content="21 degrees", created_at=5.0, request_id="r2", tool_name="get_weather")
    reply = answer(5.0, "warm", "r2")
    assert merge_turns([reply], [result]) == [result, reply]
