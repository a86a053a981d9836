"""``python -m bench``: drive N concurrent streamed chats through the pipeline and straight to the simulator.

Without ``--gateway-url`` it starts its own simulator, workers and gateways in a namespace of its
own (broker prefix and Redis key prefix ``bench<random>``), runs the direct baseline and then the
pipeline at the same concurrency, prints the figures, stops every process and deletes the
namespace. Exit status 1 when any chat failed or none succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.cluster import Cluster, ClusterConfig, ClusterError, cleanup_namespace
from bench.cpu import CpuMeter, find_services
from bench.loadgen import GatewayTarget, SimulatorTarget, Target, client_session, run_phase
from bench.report import PhaseSummary, compare, render_json, render_text
from bench.tokens import BenchKeys

WARMUP_SECONDS = 2.0
_CLUSTER_OPTIONS = (
    "gateways", "workers", "worker_concurrency", "ttft_ms", "tokens_per_second", "answer_tokens",
    "rabbitmq_url", "redis_url", "log_level", "keep_logs",
)  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    add = parser.add_argument
    add("--concurrency", type=int, default=200, help="concurrent chat loops (default 200)")
    add("--duration", type=float, default=20.0, help="measured seconds per phase, after a 2 s warm-up")
    add(
        "--direct-duration",
        type=float,
        default=None,
        help="direct phase seconds (default: --duration; 0 skips it)",
    )
    add("--gateways", type=int, default=2, help="gateway processes (default 2)")
    add("--workers", type=int, default=2, help="worker processes (default 2)")
    add("--worker-concurrency", type=int, default=256, help="WORKER_CONCURRENCY (default 256)")
    add("--ttft-ms", type=float, default=20.0, help="simulator time to first token (default 20)")
    add("--tokens-per-second", type=float, default=0.0, help="simulator pace; 0 = as fast as possible")
    add("--answer-tokens", type=int, default=24, help="tokens per answer (default 24)")
    add("--users", type=int, default=1000, help="distinct users (default 1000)")
    add("--turns-per-session", type=int, default=4, help="chats per session before a new one (default 4)")
    add("--request-timeout", type=float, default=30.0, help="client timeout per chat, seconds")
    add("--gateway-url", default=None, help="gateway URL(s), comma-separated: use a running system")
    add("--simulator-url", default=None, help="with --gateway-url: simulator for the direct baseline")
    add("--jwt-private-key", type=Path, default=None, help="Ed25519 PEM its gateways trust")
    add("--jwt-kid", default="bench", help="kid header of minted tokens")
    add("--rabbitmq-url", default=os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    add("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    add("--log-level", default="warning", help="LOG_LEVEL of the started processes")
    add("--keep-logs", action="store_true", help="keep the processes' log directory even on success")
    add("--json", action="store_true", help="print machine-readable results instead of the table")
    args = parser.parse_args(argv)
    for name in ("concurrency", "gateways", "workers", "worker_concurrency", "users", "turns_per_session"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.duration <= 0:
        parser.error("--duration must be > 0")
    if args.gateway_url and args.jwt_private_key is None:
        parser.error("--gateway-url needs --jwt-private-key (the key its gateways trust)")
    return args


def header_line(args: argparse.Namespace) -> str:
    cores = os.cpu_count() or 1
    pace = "as fast as possible" if args.tokens_per_second <= 0 else f"{args.tokens_per_second:g} tokens/s"
    if args.gateway_url:
        system = f"running system at {args.gateway_url}"
    else:
        system = (
            f"{args.gateways} gateway(s), {args.workers} worker(s) x {args.worker_concurrency}, "
            f"simulator ttft {args.ttft_ms:g} ms, {args.answer_tokens} tokens {pace}"
        )
    return (
        f"bench: {system}; {args.concurrency} concurrent streams, {args.duration:g} s measured "
        f"(+{WARMUP_SECONDS:g} s warm-up), {args.users} users.\n"
        f"note: everything, this load generator included, shares the machine's {cores} cores; "
        "the client's own CPU cost is in these figures (cpu lines: 'other' = work outside this bench)."
    )


async def _phase(
    target: Target, roles: dict[str, list[int]], args: argparse.Namespace, duration: float
) -> PhaseSummary:
    meter = CpuMeter(roles)
    async with client_session() as session:
        meter.start()
        result = await run_phase(
            session,
            target,
            concurrency=args.concurrency,
            duration=duration,
            warmup=WARMUP_SECONDS,
            request_timeout=args.request_timeout,
        )
        cpu = meter.stop()
    return PhaseSummary.of(result, cpu)


async def _measure(
    args: argparse.Namespace, gateways: list[str], simulator: str | None, keys: BenchKeys,
    roles: dict[str, list[int]],
) -> list[PhaseSummary]:  # fmt: skip
    phases: list[PhaseSummary] = []
    direct_duration = args.duration if args.direct_duration is None else args.direct_duration
    if simulator and direct_duration > 0:
        phases.append(await _phase(SimulatorTarget(simulator), roles, args, direct_duration))
    ttl = 2 * (args.duration + WARMUP_SECONDS) + 600
    tokens = keys.mint_users(args.users, ttl=ttl)
    run_id = f"bench{secrets.token_hex(3)}"
    target = GatewayTarget(
        gateways, tokens, concurrency=args.concurrency, turns=args.turns_per_session, run_id=run_id
    )
    phases.insert(0, await _phase(target, roles, args, args.duration))
    return phases


async def run(args: argparse.Namespace) -> int:
    if args.gateway_url:
        keys = BenchKeys.from_pem_file(args.jwt_private_key, args.jwt_kid)
        gateways = [url.strip() for url in args.gateway_url.split(",") if url.strip()]
        phases = await _measure(args, gateways, args.simulator_url, keys, find_services())
        return _print(args, phases)

    keys = BenchKeys.generate()
    config = ClusterConfig(
        namespace=f"bench{secrets.token_hex(4)}",
        rabbitmq_url=args.rabbitmq_url,
        redis_url=args.redis_url,
        jwt_public_pem=keys.public_pem,
        gateways=args.gateways,
        workers=args.workers,
        worker_concurrency=args.worker_concurrency,
        ttft_ms=args.ttft_ms,
        tokens_per_second=args.tokens_per_second,
        answer_tokens=args.answer_tokens,
        simulator_max_queue=max(4096, 2 * args.concurrency, args.workers * args.worker_concurrency),
        log_level=args.log_level,
    )
    log_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    cluster = Cluster(config, log_dir)
    status = 1
    try:
        await cluster.start()
        roles = {**cluster.pids(), **find_services()}
        phases = await _measure(args, cluster.gateway_urls, cluster.simulator_url, keys, roles)
        status = _print(args, phases)
    except ClusterError as exc:
        print(f"bench: {exc}", file=sys.stderr)
    finally:
        # A task of its own: after a signal cancelled this one, the teardown's timeouts still work.
        await asyncio.create_task(_teardown(cluster, log_dir, keep_logs=args.keep_logs or status != 0))
    return status


async def _teardown(cluster: Cluster, log_dir: Path, *, keep_logs: bool) -> None:
    await cluster.stop()
    for problem in await cleanup_namespace(cluster.config):
        print(f"bench: clean-up of {cluster.config.namespace} incomplete: {problem}", file=sys.stderr)
    if keep_logs:
        print(f"bench: process logs in {log_dir}", file=sys.stderr)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)


def _print(args: argparse.Namespace, phases: list[PhaseSummary]) -> int:
    by_name = {p.name: p for p in phases}
    comparison = compare(by_name["pipeline"], by_name["direct"]) if "direct" in by_name else None
    if args.json:
        config: dict[str, Any] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        config["cores"] = os.cpu_count()
        if args.gateway_url:  # nothing was started: the process-shaping options did not apply
            for key in _CLUSTER_OPTIONS:
                config.pop(key, None)
        print(render_json(config, phases, comparison))
    else:
        print(render_text(header_line(args), phases, comparison))
    failed = any(p.errors or not p.ok for p in phases)
    return 1 if failed else 0


async def _until_signalled(args: argparse.Namespace) -> int:
    """``run``, cancelled by the first SIGTERM/SIGINT so its clean-up still stops every process."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signalled: list[int] = []

    def stop(signum: int) -> None:
        if not signalled:  # a second signal must not interrupt the clean-up
            signalled.append(signum)
            task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    try:
        return await run(args)
    except asyncio.CancelledError:
        if not signalled:
            raise
        print(f"bench: stopped by {signal.Signals(signalled[0]).name}", file=sys.stderr)
        return 128 + signalled[0]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:
        sys.exit(asyncio.run(_until_signalled(args)))
    sys.exit(uvloop.run(_until_signalled(args)))


if __name__ == "__main__":
    main()
