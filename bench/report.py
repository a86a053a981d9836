"""Figures of a bench run: percentiles, per-phase summaries, the pipeline/direct comparison, output."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import msgspec

from bench.cpu import CpuUsage
from bench.loadgen import PhaseResult


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), linear between closest ranks (numpy's default); None if empty."""
    if not 0 <= q <= 100:
        raise ValueError("q must be between 0 and 100")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


@dataclass(frozen=True, slots=True)
class PhaseSummary:
    name: str
    concurrency: int
    duration_s: float
    ok: int
    errors: int
    error_kinds: dict[str, int]
    chats_per_s: float
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    ttft_p99_ms: float | None
    full_p50_ms: float | None
    full_p95_ms: float | None
    full_p99_ms: float | None
    warmup_chats: int
    events_per_chat: float | None
    cpu: CpuUsage | None = None

    @classmethod
    def of(cls, result: PhaseResult, cpu: CpuUsage | None = None) -> PhaseSummary:
        ttft = sorted(result.ttft)
        full = sorted(result.full)
        return cls(
            name=result.name,
            concurrency=result.concurrency,
            duration_s=result.duration,
            ok=result.ok,
            errors=sum(result.errors.values()),
            error_kinds=dict(result.errors.most_common()),
            chats_per_s=round(result.ok / result.duration, 1) if result.duration > 0 else 0.0,
            ttft_p50_ms=_ms(percentile(ttft, 50)),
            ttft_p95_ms=_ms(percentile(ttft, 95)),
            ttft_p99_ms=_ms(percentile(ttft, 99)),
            full_p50_ms=_ms(percentile(full, 50)),
            full_p95_ms=_ms(percentile(full, 95)),
            full_p99_ms=_ms(percentile(full, 99)),
            warmup_chats=result.warmup_chats,
            events_per_chat=round(result.token_events / result.ok, 2) if result.ok else None,
            cpu=cpu,
        )


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 2)


def _added(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 2)


def compare(pipeline: PhaseSummary, direct: PhaseSummary) -> dict[str, float | None]:
    """Pipeline over direct: ratios, and milliseconds the pipeline adds."""
    return {
        "chats_per_s_ratio": _ratio(pipeline.chats_per_s, direct.chats_per_s),
        "ttft_p50_ratio": _ratio(pipeline.ttft_p50_ms, direct.ttft_p50_ms),
        "ttft_p95_ratio": _ratio(pipeline.ttft_p95_ms, direct.ttft_p95_ms),
        "ttft_p50_added_ms": _added(pipeline.ttft_p50_ms, direct.ttft_p50_ms),
        "ttft_p95_added_ms": _added(pipeline.ttft_p95_ms, direct.ttft_p95_ms),
        "full_p95_ratio": _ratio(pipeline.full_p95_ms, direct.full_p95_ms),
        "full_p95_added_ms": _added(pipeline.full_p95_ms, direct.full_p95_ms),
    }


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_text(
    header: str, phases: Sequence[PhaseSummary], comparison: Mapping[str, float | None] | None
) -> str:
    """The human-readable table."""
    columns = (
        "phase",
        "chats/s",
        "ttft p50",
        "ttft p95",
        "ttft p99",
        "full p95",
        "ok",
        "errors",
        "events/chat",
    )
    rows = [columns]
    for p in phases:
        rows.append((
            p.name, _fmt(p.chats_per_s), _fmt(p.ttft_p50_ms), _fmt(p.ttft_p95_ms), _fmt(p.ttft_p99_ms),
            _fmt(p.full_p95_ms), str(p.ok), str(p.errors), _fmt(p.events_per_chat),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = [header, "(latencies in ms; events/chat: token events the client got per chat)", ""]
    for row in rows:
        cells = [
            row[0].ljust(widths[0]),
            *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells))
    for p in phases:
        if p.error_kinds:
            kinds = ", ".join(f"{kind} x{count}" for kind, count in p.error_kinds.items())
            lines.append(f"{p.name} errors: {kinds}")
    if comparison is not None:
        c = comparison
        lines += [
            "",
            f"pipeline vs direct: chats/s x{_fmt(c['chats_per_s_ratio'], 2)}; "
            f"ttft p50 x{_fmt(c['ttft_p50_ratio'], 2)} (+{_fmt(c['ttft_p50_added_ms'])} ms), "
            f"p95 x{_fmt(c['ttft_p95_ratio'], 2)} (+{_fmt(c['ttft_p95_added_ms'])} ms); "
            f"full p95 x{_fmt(c['full_p95_ratio'], 2)} (+{_fmt(c['full_p95_added_ms'])} ms)",
        ]
    for p in phases:
        if p.cpu is not None:
            roles = ", ".join(f"{role} {share:.0f}%" for role, share in p.cpu.roles.items())
            lines.append(
                f"cpu during {p.name}: machine {_fmt(p.cpu.machine_busy_percent, 0)}% busy "
                f"of {p.cpu.cores} cores; per process role (% of one core): {roles}"
            )
    return "\n".join(lines)


def render_json(
    config: Mapping[str, Any], phases: Sequence[PhaseSummary], comparison: Mapping[str, float | None] | None
) -> str:
    document = {
        "config": dict(config),
        "phases": {p.name: asdict(p) for p in phases},
        "comparison": comparison,
    }
    return msgspec.json.format(msgspec.json.encode(document)).decode()
