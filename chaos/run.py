"""One run of the suite: the stack, the load, each fault in turn, then the checks and the report."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.loadgen import client_session
from chaos.checks import Outcome, Phase, attribute, classify, recovery, session_disagreements, wiped
from chaos.faults import Fault, faults
from chaos.load import Chat, Client, LoadSettings, Recorder, run_load
from chaos.report import PhaseRow, RunReport
from chaos.stack import ChaosStack, chaos_stack

__all__ = ["RunSettings", "run"]


@dataclass(frozen=True, slots=True)
class RunSettings:
    short: bool = False
    clients: int = 24
    baseline: float = 3.0
    # After a fault is lifted: watch at least ``min_watch`` seconds and until operations have
    # succeeded for ``settle`` seconds in a row, at most ``max_watch`` (then: not recovered).
    min_watch: float = 15.0
    settle: float = 15.0
    max_watch: float = 20.0
    chat_timeout: float = 30.0
    archive_wait: float = 30.0
    only: tuple[str, ...] = ()  # fault names (substrings) to run; empty: all
    keep_logs: bool = False

    @classmethod
    def short_form(cls, **overrides: object) -> RunSettings:
        base = {"short": True, "min_watch": 3.0, "settle": 2.0, "max_watch": 12.0, "chat_timeout": 20.0}
        return cls(**{**base, **overrides})  # type: ignore[arg-type]


async def _watch(phase: Phase, recorder: Recorder, settings: RunSettings) -> None:
    """Sleep until the phase recovered and stayed so (``settle``), within the watch bounds."""
    while True:
        await asyncio.sleep(0.5)
        watched = time.monotonic() - phase.lifted
        if watched >= settings.max_watch:
            return
        if watched < settings.min_watch:
            continue
        events = [
            (c.started, classify(c) is Outcome.DONE) for c in recorder.chats if c.started >= phase.lifted
        ]
        events += [(op.started, op.ok) for op in recorder.logins if op.started >= phase.lifted]
        if not events:
            continue
        took = recovery(events, phase.lifted)
        if took is not None and watched - took >= settings.settle:
            return


async def _inject(stack: ChaosStack, fault: Fault, recorder: Recorder, settings: RunSettings) -> Phase:
    phase = Phase(fault.name, time.monotonic(), 0.0, wipes=fault.wipes)
    print(f"chaos: {fault.name} ...", file=sys.stderr, flush=True)
    await fault.inject(stack)
    await asyncio.sleep(fault.hold)
    await fault.lift(stack)
    phase.lifted = time.monotonic()
    await _watch(phase, recorder, settings)
    return phase


def _checked(recorder: Recorder, phases: Sequence[Phase]) -> tuple[set[str], set[str]]:
    """The sessions to compare (an accepted chat) and those to find ended and archived (a chat
    that ended ``done``: a session of failed chats may rightly not exist), both without those a
    fault wiped (``checks.wiped``)."""
    accepted = {c.session_id for c in recorder.chats if c.status == 200}
    answered = {c.session_id for c in recorder.chats if classify(c) is Outcome.DONE}
    kept = {sid for sid, r in recorder.sessions.items() if not wiped(r.started, r.ended_at, phases)}
    return accepted & kept, answered & kept


async def _read_sessions(
    clients: Sequence[Client],
    recorder: Recorder,
    settings: RunSettings,
    checked: set[str],
    archivable: set[str],
) -> tuple[dict[str, dict[str, object] | None], list[str], int]:
    """End what could not be ended, wait for the archive; returns each session's final body
    (None: 404), the ended sessions not archived, and how many could not be ended."""
    by_client = {client.index: client for client in clients}
    not_ended = 0
    for sid in archivable:
        record = recorder.sessions[sid]
        if not record.ended:
            await by_client[record.client].end_session(record)
            not_ended += not record.ended
    bodies: dict[str, dict[str, object] | None] = {}
    pending = {sid for sid in archivable if recorder.sessions[sid].ended}
    limit = asyncio.Semaphore(settings.clients)

    async def read(session_id: str) -> None:
        async with limit:
            record = recorder.sessions[session_id]
            status, body = await by_client[record.client].session(record)
        bodies[session_id] = body if status == 200 else None
        if status == 200 and body is not None and body.get("state") == "archived":
            pending.discard(session_id)

    deadline = time.monotonic() + settings.archive_wait
    await asyncio.gather(*(read(sid) for sid in checked))
    while pending and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        await asyncio.gather(*(read(sid) for sid in list(pending)))
    return bodies, sorted(pending), not_ended


def _rows(
    phases: Sequence[Phase],
    recorder: Recorder,
    bodies: dict[str, dict[str, object] | None],
    checked: set[str],
) -> list[PhaseRow]:
    rows = [PhaseRow(phase.name) for phase in phases]
    where: dict[int, int] = {}
    for chat in recorder.chats:
        index = where[id(chat)] = attribute(chat, phases)
        row, outcome = rows[index], classify(chat)
        row.accepted += chat.status == 200
        row.resumed += chat.resumes > 0
        if outcome is Outcome.DONE:
            row.done += 1
        elif outcome is Outcome.ERROR:
            row.errors[chat.error or "unknown"] += 1
        elif outcome is Outcome.REFUSED:
            row.refused[chat.refusal or "no_answer"] += 1
        else:
            row.lost += 1
    for i, (phase, row) in enumerate(zip(phases, rows, strict=True)):
        end = phases[i + 1].injected if i + 1 < len(phases) else float("inf")
        events = [(c.started, classify(c) is Outcome.DONE) for c in recorder.chats if where[id(c)] == i]
        logins = [op for op in recorder.logins if phase.injected <= op.started < end]
        events += [(op.started, op.ok) for op in logins]
        row.logins_failed = sum(not op.ok for op in logins)
        row.recovery = recovery(events, phase.lifted)
        late = [c for c in recorder.chats if where[id(c)] == i and c.started >= phase.lifted]
        row.failed_after_lift = [
            f"+{c.started - phase.lifted:.1f}s {classify(c).value} {c.error or c.refusal or ''}".rstrip()
            for c in sorted(late, key=lambda c: c.started)
            if classify(c) is not Outcome.DONE
        ][:20]
        row.watched = (phase.ended or phase.lifted) - phase.lifted
    chats_of: dict[str, list[Chat]] = {}
    for chat in recorder.chats:
        chats_of.setdefault(chat.session_id, []).append(chat)
    for session_id, chats in chats_of.items():
        if session_id not in checked:
            continue
        body = bodies.get(session_id)
        turns = body.get("turns", []) if body else []
        for problem in session_disagreements(chats, turns if isinstance(turns, list) else []):
            index = where[id(problem.chat)] if problem.chat is not None else where[id(chats[-1])]
            rows[index].disagreements.append(f"{session_id}: {problem.message}")
    return rows


def _phase_at(moment: float | None, phases: Sequence[Phase]) -> str:
    names = [p.name for p in phases if moment is not None and p.injected <= moment]
    return names[-1] if names else "?"


async def run(settings: RunSettings) -> RunReport:
    async with chaos_stack(keep=settings.keep_logs) as stack:
        workers = tuple(f"worker-{i + 1}" for i in range(len(stack.running.config.worker_ports)))
        chosen = [
            f
            for f in faults(short=settings.short, workers=workers, gateway="gateway-1")
            if not settings.only or any(part in f.name for part in settings.only)
        ]
        load = LoadSettings(stack.url, clients=settings.clients, chat_timeout=settings.chat_timeout)
        recorder, stop = Recorder(), asyncio.Event()
        async with client_session() as http:
            load_task = asyncio.create_task(run_load(http, load, stop, recorder))
            first = asyncio.create_task(recorder.first_chat.wait())
            await asyncio.wait([load_task, first], return_when=asyncio.FIRST_COMPLETED)
            first.cancel()
            if load_task.done():
                await load_task  # it failed before the first chat: its error says why
            start = time.monotonic()
            phases = [Phase("none (baseline)", start, start)]
            print("chaos: baseline ...", file=sys.stderr, flush=True)
            await asyncio.sleep(settings.baseline)
            for fault in chosen:
                phases[-1].ended = time.monotonic()
                phases.append(await _inject(stack, fault, recorder, settings))
            phases[-1].ended = time.monotonic()
            stop.set()
            clients = await load_task
            checked, archivable = _checked(recorder, phases)
            bodies, unarchived, not_ended = await _read_sessions(
                clients, recorder, settings, checked, archivable
            )
        rows = _rows(phases, recorder, bodies, checked)
        unarchived = [
            f"{sid} (ended during {_phase_at(recorder.sessions[sid].ended_at, phases)})" for sid in unarchived
        ]
        accepted = {c.session_id for c in recorder.chats if c.status == 200}
        notes = []
        if wiped_count := len(accepted - checked):
            notes.append(f"{wiped_count} session(s) in Redis when it restarted empty: not compared")
        if settings.keep_logs:
            notes.append(f"logs: {stack.logs}")
        return RunReport(
            rows,
            sessions=len(archivable),
            ended=sum(recorder.sessions[sid].ended for sid in archivable),
            not_ended=not_ended,
            unarchived=unarchived,
            notes=notes,
        )
