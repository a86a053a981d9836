"""What one ``make bench`` run measures, phase by phase, with every meter around each phase.

- saturation (default): closed loops at ``--concurrency`` straight to the simulator (direct), then
  through the pipeline; ``--quarter-load`` then runs both open-loop at a quarter of the pipeline's
  saturated chats/s, for the TTFT the pipeline adds at that load.
- ``--rate R``: both open-loop at R chats/s instead.
- ``--hold N``: N streams through the pipeline, opened over ``--ramp-seconds`` and held.

Around every phase: CPU per role (``cpu.py``), resident memory per role (``memory.py``) and, for
phases through the pipeline, the reply queues' publish counters (``management.py``).
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from bench.cpu import CpuMeter
from bench.loadgen import (
    GatewayTarget,
    PhaseResult,
    SimulatorTarget,
    StreamGauge,
    client_session,
    run_hold,
    run_open_phase,
    run_phase,
)
from bench.management import ReplyTraffic
from bench.memory import RssSampler
from bench.profile import Profiler
from bench.report import Comparison, PhaseSummary, compare
from bench.tokens import BenchKeys

WARMUP_SECONDS = 2.0
QUARTER = 0.25

Run = Callable[[aiohttp.ClientSession], Awaitable[PhaseResult]]


@dataclass(slots=True)
class Outcome:
    phases: list[PhaseSummary] = field(default_factory=list)
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)
    hotspots: dict[str, list[tuple[str, float]]] = field(default_factory=dict)

    def add_pair(self, key: str, label: str, pipeline: PhaseSummary, direct: PhaseSummary | None) -> None:
        self.phases += [pipeline] if direct is None else [pipeline, direct]
        if direct is not None:
            self.comparisons[key] = compare(pipeline, direct)
            self.labels[key] = label


@dataclass(slots=True)
class Meters:
    """Role -> pids for CPU and memory; the reply-traffic reader (None: not measured)."""

    roles: dict[str, list[int]]
    traffic: ReplyTraffic | None = None
    profiler: Profiler | None = None  # runs during the first phase through the broker

    async def measured(
        self, run: Run, *, through_broker: bool, gauge: StreamGauge | None = None, timeline: bool = False
    ) -> PhaseSummary:
        traffic = self.traffic if through_broker else None
        before = await traffic.settled() if traffic is not None else None
        profiler = self.profiler if through_broker and self.profiler and not self.profiler.done else None
        cpu = CpuMeter(self.roles)
        rss = RssSampler(self.roles, gauge=(lambda: gauge.open) if gauge is not None else None)
        async with client_session() as session:
            if profiler is not None:
                await profiler.start()
            cpu.start()
            rss.start()
            result = await run(session)
            usage = cpu.stop()
            memory = await rss.stop()
            if profiler is not None:
                await profiler.stop()
        after = await traffic.settled() if traffic is not None and before is not None else None
        replies = after - before if after is not None and before is not None else None
        return PhaseSummary.of(
            result, usage, rss=memory, reply_messages=replies, timeline=rss.timeline if timeline else ()
        )


@dataclass(slots=True)
class Plan:
    """The phases ``args`` ask for, against ``gateways`` (or one HAProxy URL) and ``simulator``."""

    args: argparse.Namespace
    gateways: Sequence[str]
    simulator: str | None
    keys: BenchKeys
    meters: Meters
    _tokens: list[str] = field(default_factory=list)

    def _pipeline(self, sessions: int) -> GatewayTarget:
        if not self._tokens:
            a = self.args
            ttl = 4 * (a.duration + WARMUP_SECONDS) + (a.hold_seconds + a.ramp_seconds if a.hold else 0) + 600
            self._tokens = self.keys.mint_users(a.users, ttl=ttl)
        run_id = f"bench{secrets.token_hex(3)}"  # fresh session ids for every phase
        return GatewayTarget(
            self.gateways,
            self._tokens,
            concurrency=sessions,
            turns=self.args.turns_per_session,
            run_id=run_id,
        )

    async def run(self) -> Outcome:
        a = self.args
        outcome = Outcome()
        if a.hold:
            outcome.phases.append(await self._hold())
            return outcome
        if a.rate:
            await self._open_pair(outcome, "open_loop", a.rate, f"open loop at {a.rate:g} chats/s")
            return outcome
        pipeline = await self._closed(self._pipeline(a.concurrency), through_broker=True)
        direct = None
        if self.simulator and self.direct_duration > 0:
            direct = await self._closed(SimulatorTarget(self.simulator), through_broker=False)
        outcome.add_pair("saturation", f"saturation ({a.concurrency} closed loops)", pipeline, direct)
        if a.quarter_load and pipeline.chats_per_s > 0:
            rate = round(pipeline.chats_per_s * QUARTER, 1)
            await self._open_pair(outcome, "quarter", rate, f"a quarter of saturation ({rate:g} chats/s)")
        return outcome

    @property
    def direct_duration(self) -> float:
        a = self.args
        return float(a.duration if a.direct_duration is None else a.direct_duration)

    async def _closed(self, target: GatewayTarget | SimulatorTarget, *, through_broker: bool) -> PhaseSummary:
        a = self.args
        duration = a.duration if through_broker else self.direct_duration

        async def run(session: aiohttp.ClientSession) -> PhaseResult:
            return await run_phase(
                session, target, concurrency=a.concurrency, duration=duration, warmup=WARMUP_SECONDS,
                request_timeout=a.request_timeout,
            )  # fmt: skip

        return await self.meters.measured(run, through_broker=through_broker)

    async def _open_pair(self, outcome: Outcome, key: str, rate: float, label: str) -> None:
        a = self.args
        pipeline_target = self._pipeline(a.concurrency)

        def runner(target: GatewayTarget | SimulatorTarget, name: str, duration: float) -> Run:
            async def run(session: aiohttp.ClientSession) -> PhaseResult:
                return await run_open_phase(
                    session, target, rate=rate, duration=duration, warmup=WARMUP_SECONDS,
                    request_timeout=a.request_timeout, sessions=a.concurrency, name=name,
                )  # fmt: skip

            return run

        pipeline = await self.meters.measured(
            runner(pipeline_target, f"pipeline@{rate:g}/s", a.duration), through_broker=True
        )
        direct = None
        if self.simulator and self.direct_duration > 0:
            sim = SimulatorTarget(self.simulator)
            direct = await self.meters.measured(
                runner(sim, f"direct@{rate:g}/s", self.direct_duration), through_broker=False
            )
        outcome.add_pair(key, label, pipeline, direct)

    async def _hold(self) -> PhaseSummary:
        a = self.args
        target = self._pipeline(a.hold)
        gauge = StreamGauge()

        async def run(session: aiohttp.ClientSession) -> PhaseResult:
            return await run_hold(
                session, target, streams=a.hold, ramp=a.ramp_seconds, request_timeout=a.request_timeout,
                gauge=gauge,
            )  # fmt: skip

        return await self.meters.measured(run, through_broker=True, gauge=gauge, timeline=True)
