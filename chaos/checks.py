"""Judging the run: each chat's outcome, which fault it belongs to, the recovery time, and
whether each session records what its client saw.

Pure functions of what the clients recorded (``chaos.load``) and what the services answered
(``GET /sessions/{id}``), so that they are tested on their own (tests/chaos).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chaos.load import Chat

__all__ = [
    "EXPOSURE_SLACK",
    "Disagreement",
    "Outcome",
    "Phase",
    "attribute",
    "classify",
    "recovery",
    "session_disagreements",
    "wiped",
]

# A chat counts as exposed to a fault injected while it was active: from its start until this
# long after the last byte it received (a stream that went silent earlier was hit by something else).
EXPOSURE_SLACK = 1.0
# Seconds the archiver may take to store an ended session (and remove it from Redis).
ARCHIVE_MARGIN = 5.0


class Outcome(enum.Enum):
    DONE = "done"
    ERROR = "clean error"  # accepted, ended with an error event
    REFUSED = "refused"  # not accepted: a non-200 answer (or none) at the door
    LOST = "lost"  # accepted, but no done/error before the client's timeout (or a cut stream)


def classify(chat: Chat) -> Outcome:
    if chat.status is None:
        return Outcome.LOST if chat.timed_out else Outcome.REFUSED
    if chat.status != 200:
        return Outcome.REFUSED
    if chat.done:
        return Outcome.DONE
    if chat.error is not None:
        return Outcome.ERROR
    return Outcome.LOST


@dataclass(slots=True)
class Phase:
    """One fault: injected at ``injected``, lifted (the part is back, or was just killed) at
    ``lifted``; the next phase's injection ends it. Times are ``time.monotonic()``."""

    name: str
    injected: float
    lifted: float
    ended: float | None = None
    wipes: bool = False  # the fault loses what Redis held (a restart of a Redis that keeps nothing)


def wiped(started: float, ended_at: float | None, phases: Sequence[Phase]) -> bool:
    """Whether a session was still in Redis when a fault wiped it: started before the fault was
    lifted, and not ended (so archived, within ``ARCHIVE_MARGIN``) before it was injected. Such a
    session lost its turns by design of the fault; it is not compared."""
    return any(
        phase.wipes
        and started < phase.lifted
        and (ended_at is None or ended_at > phase.injected - ARCHIVE_MARGIN)
        for phase in phases
    )


def attribute(chat: Chat, phases: Sequence[Phase]) -> int:
    """The index of the phase a chat belongs to: the first fault injected while it was active,
    else the phase in which it started."""
    exposed_until = max(chat.last_activity, chat.started) + EXPOSURE_SLACK
    index = 0
    for i, phase in enumerate(phases):
        if phase.injected <= chat.started:
            index = i
        elif phase.injected <= min(exposed_until, chat.ended or exposed_until):
            return i
    return index


def recovery(events: Iterable[tuple[float, bool]], lifted: float) -> float | None:
    """Seconds from ``lifted`` until operations succeed again: the start of the first operation
    (started after ``lifted``) from which on every one succeeded. 0.0 when all did; None when the
    last one failed (not recovered while it was watched)."""
    after = sorted((start, ok) for start, ok in events if start >= lifted)
    first_of_good_run: float | None = lifted
    for start, ok in after:
        if not ok:
            first_of_good_run = None
        elif first_of_good_run is None:
            first_of_good_run = start
    if first_of_good_run is None:
        return None
    return max(0.0, first_of_good_run - lifted)


def _exchanges(turns: Sequence[Mapping[str, Any]]) -> list[tuple[str, str | None]]:
    """(user prompt, assistant text or None) in order; an assistant turn belongs to the user turn
    before it."""
    pairs: list[tuple[str, str | None]] = []
    for turn in turns:
        role, content = turn.get("role"), str(turn.get("content", ""))
        if role == "user":
            pairs.append((content, None))
        elif role == "assistant" and pairs and pairs[-1][1] is None:
            pairs[-1] = (pairs[-1][0], content)
        else:
            pairs.append(("", content))  # an answer without its question
    return pairs


@dataclass(frozen=True, slots=True)
class Disagreement:
    chat: Chat | None  # None: an exchange no chat of the client matches
    message: str


def session_disagreements(chats: Sequence[Chat], turns: Sequence[Mapping[str, Any]]) -> list[Disagreement]:
    """Where the session disagrees with what its client saw, one each (empty: it agrees).

    - a chat that ended ``done``: recorded once, the answer exactly the text streamed;
    - a chat that ended with an error after some text: recorded once with that text (interrupted);
    - an error before any text: at most once, with no answer text;
    - refused at the door: no trace; lost: not compared (already a failure of its own);
    - nothing the client never asked, nothing twice.
    """
    problems: list[Disagreement] = []
    recorded: dict[str, list[str | None]] = {}
    for prompt, answer in _exchanges(turns):
        recorded.setdefault(prompt, []).append(answer)
    asked = {chat.prompt for chat in chats}
    for prompt in recorded:
        if prompt not in asked:
            problems.append(Disagreement(None, f"an exchange the client never sent: {prompt[:60]!r}"))
    for chat in chats:
        outcome = classify(chat)
        answers = recorded.get(chat.prompt, [])
        label = f"{chat.prompt[:40]!r} ({outcome.value}{f' {chat.error}' if chat.error else ''})"
        if chat.anomalies:
            problems.append(Disagreement(chat, f"{label}: stream {'; '.join(chat.anomalies)}"))
        if outcome is Outcome.LOST:
            continue
        if outcome is Outcome.REFUSED:
            if answers:
                problems.append(
                    Disagreement(chat, f"{label}: refused with {chat.refusal or chat.status}, yet recorded")
                )
            continue
        if len(answers) > 1:
            problems.append(Disagreement(chat, f"{label}: recorded {len(answers)} times"))
            continue
        if outcome is Outcome.ERROR and not chat.text:
            if answers and answers[0]:
                problems.append(
                    Disagreement(
                        chat, f"{label}: the client got no text, the session has {len(answers[0])} chars"
                    )
                )
            continue
        if not answers:
            problems.append(Disagreement(chat, f"{label}: not recorded"))
        elif (answers[0] or "") != chat.text:
            got, has = len(chat.text), len(answers[0] or "")
            problems.append(Disagreement(chat, f"{label}: the client got {got} chars, the session has {has}"))
    return problems
