"""The table of issue 13 (fault | accepted | done | clean error | lost | recovery), the verdict,
and the same as JSON (``--json``)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_RECOVERY", "PhaseRow", "RunReport", "failures", "render_json", "render_text"]

MAX_RECOVERY = 10.0  # seconds (issue 13's acceptance)


@dataclass(slots=True)
class PhaseRow:
    fault: str
    accepted: int = 0
    done: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    resumed: int = 0  # chats that reconnected at least once
    recovery: float | None = 0.0  # None: not recovered while watched
    watched: float = 0.0  # seconds the phase was observed after the fault was lifted
    logins_failed: int = 0
    failed_after_lift: list[str] = field(default_factory=list)  # the first 20, for the reader
    disagreements: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RunReport:
    rows: list[PhaseRow]
    sessions: int = 0
    ended: int = 0
    not_ended: int = 0  # the client could not end them (retried at the end)
    unarchived: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def failures(report: RunReport) -> list[str]:
    """Why the run fails (empty: it passes)."""
    out: list[str] = []
    for row in report.rows:
        if row.lost:
            out.append(f"{row.fault}: {row.lost} lost chat(s)")
        if row.recovery is None:
            out.append(f"{row.fault}: not recovered within {row.watched:.1f}s of the fault's end")
        elif row.recovery > MAX_RECOVERY:
            out.append(f"{row.fault}: recovery {row.recovery:.1f}s > {MAX_RECOVERY:.0f}s")
        if row.disagreements:
            out.append(f"{row.fault}: {len(row.disagreements)} session(s) disagree with their client")
    if report.not_ended:
        out.append(f"{report.not_ended} session(s) could not be ended")
    if report.unarchived:
        out.append(f"{len(report.unarchived)} ended session(s) not archived")
    return out


def _counts(counter: Counter[str]) -> str:
    total = sum(counter.values())
    if not total:
        return "0"
    return f"{total} " + ", ".join(f"`{code}` {n}" for code, n in counter.most_common())


def _recovery(row: PhaseRow) -> str:
    return f"> {row.watched:.1f} s" if row.recovery is None else f"{row.recovery:.1f} s"


def render_text(report: RunReport) -> str:
    head = "| fault | accepted | done | clean error | lost | recovery | refused | resumed | disagree |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for row in report.rows:
        lines.append(
            f"| {row.fault} | {row.accepted} | {row.done} | {_counts(row.errors)} | "
            f"{f'**{row.lost}**' if row.lost else 0} | {_recovery(row)} | {_counts(row.refused)} | "
            f"{row.resumed} | {len(row.disagreements)} |"
        )
    lines.append("")
    lines.append(
        f"sessions: {report.sessions}, ended {report.ended}, archived {report.ended - len(report.unarchived)}"
        f"{f', could not be ended {report.not_ended}' if report.not_ended else ''}"
    )
    for row in report.rows:
        for line in row.disagreements[:5]:
            lines.append(f"  disagree [{row.fault}]: {line}")
        if len(row.disagreements) > 5:
            lines.append(f"  ... and {len(row.disagreements) - 5} more [{row.fault}]")
    for session_id in report.unarchived[:5]:
        lines.append(f"  not archived: {session_id}")
    lines.extend(f"  note: {note}" for note in report.notes)
    problems = failures(report)
    lines.append("")
    lines.append(
        "FAIL: " + "; ".join(problems)
        if problems
        else "PASS: nothing lost, every session as its client saw it"
    )
    return "\n".join(lines)


def render_json(report: RunReport) -> str:
    def row(r: PhaseRow) -> dict[str, Any]:
        return {
            "fault": r.fault,
            "accepted": r.accepted,
            "done": r.done,
            "clean_error": dict(r.errors),
            "lost": r.lost,
            "recovery_seconds": None if r.recovery is None else round(r.recovery, 2),
            "watched_seconds": round(r.watched, 2),
            "refused": dict(r.refused),
            "resumed": r.resumed,
            "logins_failed": r.logins_failed,
            "failed_after_lift": r.failed_after_lift,
            "disagreements": r.disagreements,
        }

    body: dict[str, Any] = {
        "faults": [row(r) for r in report.rows],
        "sessions": report.sessions,
        "ended": report.ended,
        "not_ended": report.not_ended,
        "unarchived": report.unarchived,
        "notes": report.notes,
        "failures": failures(report),
        "passed": not failures(report),
    }
    return json.dumps(body, indent=2)
