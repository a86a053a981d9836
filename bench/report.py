"""Figures of a bench run: percentiles, per-phase summaries, pipeline/direct comparisons, the
issue's targets, output (a text table or JSON).

Per-chat figures (CPU milliseconds per role, reply-path broker messages) divide what a phase used
by every chat it ran, warm-up included, since the meters run over the whole phase.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec

from bench.cpu import CpuUsage
from bench.loadgen import PhaseResult
from bench.memory import RssFigures, RssSample

# Display order of the process roles; any other role follows in its own order.
ROLES = ("loadgen", "haproxy", "gateway", "worker", "simulator", "rabbitmq", "redis", "other")
Comparison = dict[str, float | None]
OTHER_WARNING = 25.0  # % of a core used outside the bench's processes during a phase


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


def per_chat(total: float | None, chats: int, digits: int = 3) -> float | None:
    return None if total is None or chats <= 0 else round(total / chats, digits)


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
    chats_total: int = 0  # every chat of the phase, warm-up included: the per-chat denominator
    offered_rate: float | None = None  # open loop: chats started per second
    peak_open_streams: int | None = None  # hold
    cpu_ms_per_chat: dict[str, float | None] = field(default_factory=dict)
    rss: dict[str, RssFigures] = field(default_factory=dict)
    reply_messages: int | None = None  # published to the namespace's reply queues during the phase
    reply_messages_per_chat: float | None = None
    rss_timeline: list[RssSample] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        result: PhaseResult,
        cpu: CpuUsage | None = None,
        *,
        rss: Mapping[str, RssFigures] | None = None,
        reply_messages: int | None = None,
        timeline: Sequence[RssSample] = (),
    ) -> PhaseSummary:
        ttft = sorted(result.ttft)
        full = sorted(result.full)
        chats = result.chats_total
        cpu_per_chat = {}
        if cpu is not None:
            cpu_per_chat = {role: per_chat(ms, chats) for role, ms in cpu.cpu_ms.items()}
        return cls(
            name=result.name,
            concurrency=result.concurrency,
            duration_s=round(result.duration, 2),
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
            chats_total=chats,
            offered_rate=result.offered_rate,
            peak_open_streams=result.peak_open_streams,
            cpu_ms_per_chat=cpu_per_chat,
            rss=dict(rss or {}),
            reply_messages=reply_messages,
            reply_messages_per_chat=per_chat(reply_messages, chats, 2),
            rss_timeline=list(timeline),
        )

    def rss_growth_mb(self, roles: Sequence[str]) -> float | None:
        """How far the named roles' resident memory rose above the start, summed (peak - start)."""
        figures = [self.rss[role].growth_mb for role in roles if role in self.rss]
        return round(sum(figures), 1) if figures else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 2)


def _added(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 2)


def compare(pipeline: PhaseSummary, direct: PhaseSummary) -> Comparison:
    """Pipeline over direct: ratios, and milliseconds the pipeline adds."""
    return {
        "chats_per_s_ratio": _ratio(pipeline.chats_per_s, direct.chats_per_s),
        "ttft_p50_ratio": _ratio(pipeline.ttft_p50_ms, direct.ttft_p50_ms),
        "ttft_p95_ratio": _ratio(pipeline.ttft_p95_ms, direct.ttft_p95_ms),
        "ttft_p99_ratio": _ratio(pipeline.ttft_p99_ms, direct.ttft_p99_ms),
        "ttft_p50_added_ms": _added(pipeline.ttft_p50_ms, direct.ttft_p50_ms),
        "ttft_p95_added_ms": _added(pipeline.ttft_p95_ms, direct.ttft_p95_ms),
        "ttft_p99_added_ms": _added(pipeline.ttft_p99_ms, direct.ttft_p99_ms),
        "full_p95_ratio": _ratio(pipeline.full_p95_ms, direct.full_p95_ms),
        "full_p95_added_ms": _added(pipeline.full_p95_ms, direct.full_p95_ms),
    }


@dataclass(frozen=True, slots=True)
class Check:
    """One of the issue's targets, as this run measured it (``met`` None: not measured)."""

    name: str
    value: float | None
    limit: float
    at_most: bool  # True: value <= limit; False: value >= limit

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    def line(self) -> str:
        mark = {True: "met ", False: "MISS", None: "n/a "}[self.met]
        value = "-" if self.value is None else f"{self.value:g}"
        return f"[{mark}] {self.name}: {value} {'<=' if self.at_most else '>='} {self.limit:g}"


HOLD_RSS_ROLES = ("gateway", "worker")


def checks(phases: Sequence[PhaseSummary], comparisons: Mapping[str, Comparison]) -> list[Check]:
    """The issue's targets that this run's phases measure.

    The targets name their conditions (zero pace at 200 streams; 50 tokens/s x 200 tokens at 500
    streams; a quarter of saturation; 10,000 streams held at 1 token/s for 60 s through HAProxy);
    a check is only as meaningful as the run's options are close to those.
    """
    found: list[Check] = []
    if (saturation := comparisons.get("saturation")) is not None:
        found.append(Check("pipeline/direct chats/s", saturation["chats_per_s_ratio"], 0.35, False))
    pipeline = next((p for p in phases if p.name.startswith("pipeline") or p.name == "hold"), None)
    if pipeline is not None:
        cpu = pipeline.cpu_ms_per_chat
        found += [
            Check(
                "worker / simulator CPU per chat", _ratio(cpu.get("worker"), cpu.get("simulator")), 1.5, True
            ),
            Check(
                "gateway / loadgen CPU per chat", _ratio(cpu.get("gateway"), cpu.get("loadgen")), 1.5, True
            ),
            Check("reply-path broker messages per chat", pipeline.reply_messages_per_chat, 5, True),
        ]
    for label in ("open_loop", "quarter"):
        if (open_loop := comparisons.get(label)) is not None:
            found += [
                Check(f"added TTFT p50 ms ({label})", open_loop["ttft_p50_added_ms"], 5, True),
                Check(f"added TTFT p99 ms ({label})", open_loop["ttft_p99_added_ms"], 20, True),
            ]
    for hold in (p for p in phases if p.name == "hold"):
        found += [
            Check("hold: errors", float(hold.errors), 0, True),
            Check("hold: gateway + worker RSS growth MB", hold.rss_growth_mb(HOLD_RSS_ROLES), 1024, True),
        ]
    return found


@dataclass(frozen=True, slots=True)
class Report:
    header: str
    config: dict[str, Any]
    phases: list[PhaseSummary]
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    comparison_labels: dict[str, str] = field(default_factory=dict)  # key -> what was compared
    profiles: dict[str, str] = field(default_factory=dict)  # role -> py-spy output file
    hotspots: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # role -> (frame, % self)

    @property
    def checks(self) -> list[Check]:
        return checks(self.phases, self.comparisons)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])
        for row in rows
    ]


def _roles(phases: Sequence[PhaseSummary]) -> list[str]:
    seen: list[str] = []
    for p in phases:
        for role in [*(p.cpu.roles if p.cpu else {}), *p.rss]:
            if role not in seen:
                seen.append(role)
    known = [r for r in ROLES if r in seen]
    return known + [r for r in seen if r not in known]


def _role_lines(phases: Sequence[PhaseSummary]) -> list[str]:
    roles = _roles(phases)
    if not roles:
        return []
    cpu_rows = [("CPU ms/chat (% of a core)", *(p.name for p in phases))]
    rss_rows = [("resident MB start -> end (peak)", *(p.name for p in phases))]
    for role in roles:
        cpu_cells, rss_cells = [], []
        for p in phases:
            share = p.cpu.roles.get(role) if p.cpu else None
            per = p.cpu_ms_per_chat.get(role)
            cpu_cells.append("-" if share is None else f"{_fmt(per, 3)} ({share:.0f}%)")
            rss = p.rss.get(role)
            rss_cells.append(
                "-" if rss is None else f"{rss.start_mb:.0f} -> {rss.end_mb:.0f} ({rss.peak_mb:.0f})"
            )
        cpu_rows.append((role, *cpu_cells))
        if role != "other":
            rss_rows.append((role, *rss_cells))
    lines = ["", *_table(cpu_rows)]
    if len(rss_rows) > 1:
        lines += ["", *_table(rss_rows)]
    for p in phases:
        if p.cpu is not None:
            line = (
                f"machine during {p.name}: {_fmt(p.cpu.machine_busy_percent, 0)}% busy of {p.cpu.cores} cores"
            )
            other = p.cpu.roles.get("other", 0.0)
            if other >= OTHER_WARNING:
                line += f"; {other:.0f}% of a core outside this bench (other processes, kernel): disturbed"
            lines.append(line)
    return lines


def _comparison_line(label: str, c: Comparison) -> str:
    return (
        f"pipeline vs direct, {label}: chats/s x{_fmt(c['chats_per_s_ratio'], 2)}; "
        f"ttft p50 +{_fmt(c['ttft_p50_added_ms'])} ms (x{_fmt(c['ttft_p50_ratio'], 2)}), "
        f"p95 +{_fmt(c['ttft_p95_added_ms'])} ms, p99 +{_fmt(c['ttft_p99_added_ms'])} ms "
        f"(x{_fmt(c['ttft_p99_ratio'], 2)}); full p95 +{_fmt(c['full_p95_added_ms'])} ms"
    )


def render_text(report: Report) -> str:
    """The human-readable tables."""
    columns = (
        "phase", "streams", "chats/s", "ttft p50", "ttft p95", "ttft p99", "full p95", "ok", "errors",
        "events/chat", "msgs/chat",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = [columns]
    for p in report.phases:
        rows.append((
            p.name, str(p.concurrency), _fmt(p.chats_per_s), _fmt(p.ttft_p50_ms), _fmt(p.ttft_p95_ms),
            _fmt(p.ttft_p99_ms), _fmt(p.full_p95_ms), str(p.ok), str(p.errors), _fmt(p.events_per_chat),
            _fmt(p.reply_messages_per_chat, 2),
        ))  # fmt: skip
    lines = [
        report.header,
        "(latencies in ms; events/chat: token events the client got per chat; msgs/chat: messages "
        "published to the reply queues per chat, warm-up included)",
        "",
        *_table(rows),
    ]
    for p in report.phases:
        if p.error_kinds:
            kinds = ", ".join(f"{kind} x{count}" for kind, count in p.error_kinds.items())
            lines.append(f"{p.name} errors: {kinds}")
        if p.peak_open_streams is not None:
            growth = p.rss_growth_mb(HOLD_RSS_ROLES)
            lines.append(
                f"{p.name}: {p.peak_open_streams} streams open at the peak, {p.chats_total} opened over "
                f"{p.duration_s:g} s; gateway + worker resident memory grew {_fmt(growth)} MB"
            )
    if report.comparisons:
        lines.append("")
        for key, c in report.comparisons.items():
            lines.append(_comparison_line(report.comparison_labels.get(key, key), c))
    lines += _role_lines(report.phases)
    if report.profiles:
        lines += [
            "",
            "profiles (py-spy, first pipeline phase): "
            + ", ".join(f"{role} {path}" for role, path in report.profiles.items()),
        ]
    for role, frames in report.hotspots.items():
        lines.append(f"{role} hotspots (% of its on-CPU samples):")
        lines += [f"  {share:5.1f}%  {frame}" for frame, share in frames]
    if found := report.checks:
        lines += ["", "targets (issue; conditions in README, Benchmarks):"]
        lines += [f"  {check.line()}" for check in found]
    return "\n".join(lines)


def render_json(report: Report) -> str:
    document = {
        "config": dict(report.config),
        "phases": {p.name: asdict(p) for p in report.phases},
        "comparisons": report.comparisons,
        "comparison_labels": report.comparison_labels,
        "targets": [{**asdict(c), "met": c.met} for c in report.checks],
        "profiles": report.profiles,
        "hotspots": {role: [list(f) for f in frames] for role, frames in report.hotspots.items()},
    }
    return msgspec.json.format(msgspec.json.encode(document)).decode()
