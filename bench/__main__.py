"""``python -m bench``: streamed chats through the pipeline and straight to the simulator.

Without ``--gateway-url`` it starts its own simulator, workers and gateways (and with
``--via-haproxy`` a private HAProxy in front of them) in a namespace of its own (broker prefix and
Redis key prefix ``bench<random>``), runs the phases (``bench/phases.py``), prints the figures,
stops every process and deletes the namespace. Exit status 1 when any chat failed or none
succeeded; 3 with ``--check-targets`` when a target the run measured was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
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
from bench.cpu import find_services, machine_busy
from bench.management import ReplyTraffic
from bench.phases import WARMUP_SECONDS, Meters, Outcome, Plan
from bench.profile import Profiler, ProfilerError
from bench.proxy import HAProxyFleet
from bench.report import Report, render_json, render_text
from bench.tokens import BenchKeys
from devstack.limits import raise_open_files_limit

_CLUSTER_OPTIONS = (
    "gateways", "workers", "worker_concurrency", "ttft_ms", "tokens_per_second", "answer_tokens",
    "rabbitmq_url", "redis_url", "log_level", "keep_logs", "via_haproxy",
)  # fmt: skip
HOLD_TOKENS_PER_SECOND = 1.0
HOLD_OPEN_RATE = 250  # streams opened per second by default: below what the pipeline starts per second
DEFAULT_ANSWER_TOKENS = 24


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
    add("--rate", type=float, default=None, help="open loop: start this many chats/s (both phases)")
    add(
        "--quarter-load",
        action="store_true",
        help="after saturation, both phases open-loop at a quarter of the pipeline's chats/s",
    )
    add("--hold", type=int, default=0, metavar="N", help="hold N streams open through the pipeline")
    add("--hold-seconds", type=float, default=60.0, help="with --hold: how long each stream lasts")
    add("--ramp-seconds", type=float, default=None, help="with --hold: open the streams over this (N/250)")
    add("--via-haproxy", action="store_true", help="through a private HAProxy (haproxy/haproxy.cfg)")
    add("--gateways", type=int, default=2, help="gateway processes (default 2)")
    add("--workers", type=int, default=2, help="worker processes (default 2)")
    add(
        "--worker-concurrency",
        type=int,
        default=None,
        help="WORKER_CONCURRENCY (default: max(256, the streams per worker + 10%%))",
    )
    add("--ttft-ms", type=float, default=20.0, help="simulator time to first token (default 20)")
    add(
        "--tokens-per-second",
        type=float,
        default=None,
        help="simulator pace; 0 = as fast as possible (default 0; with --hold 1)",
    )
    add(
        "--answer-tokens",
        type=int,
        default=None,
        help=f"tokens per answer (default {DEFAULT_ANSWER_TOKENS}; with --hold: pace x hold seconds)",
    )
    add("--users", type=int, default=1000, help="distinct users (default 1000)")
    add("--turns-per-session", type=int, default=4, help="chats per session before a new one (default 4)")
    add("--request-timeout", type=float, default=30.0, help="client timeout per chat, seconds")
    add("--gateway-url", default=None, help="gateway URL(s), comma-separated: use a running system")
    add("--simulator-url", default=None, help="with --gateway-url: simulator for the direct baseline")
    add("--broker-prefix", default="chat", help="with --gateway-url: its BROKER_PREFIX (reply queues)")
    add("--jwt-private-key", type=Path, default=None, help="Ed25519 PEM its gateways trust")
    add("--jwt-kid", default="bench", help="kid header of minted tokens")
    add("--rabbitmq-url", default=os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    add(
        "--management-url",
        default=os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672"),
        help="RabbitMQ management API, for reply-path messages per chat",
    )
    add("--no-broker-stats", action="store_true", help="skip the reply-queue counters (saves ~12 s a phase)")
    add("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    add("--log-level", default="warning", help="LOG_LEVEL of the started processes")
    add("--keep-logs", action="store_true", help="keep the processes' log directory even on success")
    add("--json", action="store_true", help="print machine-readable results instead of the tables")
    add("--profile", type=Path, default=None, metavar="DIR", help="py-spy a gateway and a worker into DIR")
    add(
        "--profile-format",
        choices=("flamegraph", "raw", "speedscope"),
        default="flamegraph",
        help="py-spy output: SVG flame graph (default), collapsed stacks (+ hotspots listed), speedscope",
    )
    add("--check-targets", action="store_true", help="exit 3 when a target the run measured is missed")
    args = parser.parse_args(argv)
    for name in ("concurrency", "gateways", "workers", "users", "turns_per_session"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.duration <= 0:
        parser.error("--duration must be > 0")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be > 0")
    if args.hold < 0 or args.hold_seconds <= 0:
        parser.error("--hold must be >= 0 and --hold-seconds > 0")
    if sum(bool(x) for x in (args.rate, args.quarter_load, args.hold)) > 1:
        parser.error("--rate, --quarter-load and --hold are separate modes: pick one")
    if args.gateway_url and args.jwt_private_key is None:
        parser.error("--gateway-url needs --jwt-private-key (the key its gateways trust)")
    if args.gateway_url and args.via_haproxy:
        parser.error("--via-haproxy starts its own HAProxy: give --gateway-url your HAProxy's URL instead")
    resolve_defaults(args)
    return args


def resolve_defaults(args: argparse.Namespace) -> None:
    """Defaults that depend on the mode: a hold is slow and long; the rest as fast as possible."""
    if args.tokens_per_second is None:
        args.tokens_per_second = HOLD_TOKENS_PER_SECOND if args.hold else 0.0
    if args.answer_tokens is None:
        paced = args.hold and args.tokens_per_second > 0
        args.answer_tokens = (
            max(1, math.ceil(args.hold_seconds * args.tokens_per_second)) if paced else DEFAULT_ANSWER_TOKENS
        )
    if args.ramp_seconds is None:
        args.ramp_seconds = max(2.0, args.hold / HOLD_OPEN_RATE) if args.hold else 0.0
    streams = args.hold or args.concurrency
    if args.worker_concurrency is None:
        args.worker_concurrency = max(256, math.ceil(1.1 * streams / args.workers))
    if args.hold:  # a stream lasts its whole answer: the client and the gateway must wait for it
        answer_s = args.answer_tokens / args.tokens_per_second if args.tokens_per_second > 0 else 0.0
        args.request_timeout = max(args.request_timeout, answer_s + args.ramp_seconds + 60)


def chat_seconds(args: argparse.Namespace) -> float:
    """Longest a chat may take: the gateways' CHAT_DEADLINE_SECONDS."""
    return max(60.0, float(args.request_timeout))


def header_line(args: argparse.Namespace) -> str:
    cores = os.cpu_count() or 1
    pace = "as fast as possible" if args.tokens_per_second <= 0 else f"{args.tokens_per_second:g} tokens/s"
    if args.gateway_url:
        system = f"running system at {args.gateway_url}"
    else:
        system = (
            f"{args.gateways} gateway(s){' behind HAProxy' if args.via_haproxy else ''}, "
            f"{args.workers} worker(s) x {args.worker_concurrency}, "
            f"simulator ttft {args.ttft_ms:g} ms, {args.answer_tokens} tokens {pace}"
        )
    if args.hold:
        load = f"hold of {args.hold} streams opened over {args.ramp_seconds:g} s"
    elif args.rate:
        load = f"open loop at {args.rate:g} chats/s, {args.duration:g} s measured (+{WARMUP_SECONDS:g} s)"
    else:
        load = (
            f"{args.concurrency} concurrent streams, {args.duration:g} s measured (+{WARMUP_SECONDS:g} s "
            f"warm-up){'; then open loop at a quarter of saturation' if args.quarter_load else ''}"
        )
    return (
        f"bench: {system}; {load}, {args.users} users.\n"
        f"note: everything, this load generator included, shares the machine's {cores} cores; "
        "the client's own CPU cost is in these figures ('other' = work outside this bench)."
    )


def streams_of(args: argparse.Namespace) -> int:
    return int(args.hold or args.concurrency)


BUSY_BEFORE_WARNING = 15.0  # % of all cores busy before the run: someone else is using the machine


async def run(args: argparse.Namespace) -> int:
    open_files = raise_open_files_limit()
    args.machine_busy_before = await machine_busy()
    if args.gateway_url:
        keys = BenchKeys.from_pem_file(args.jwt_private_key, args.jwt_kid)
        gateways = [url.strip() for url in args.gateway_url.split(",") if url.strip()]
        traffic = None if args.no_broker_stats else _traffic(args, args.broker_prefix)
        plan = Plan(args, gateways, args.simulator_url, keys, Meters(find_services(), traffic))
        return _print(args, await plan.run(), open_files)

    keys = BenchKeys.generate()
    streams = streams_of(args)
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
        simulator_max_queue=max(4096, 2 * streams, args.workers * args.worker_concurrency),
        chat_deadline_seconds=chat_seconds(args),
        log_level=args.log_level,
    )
    log_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    cluster = Cluster(config, log_dir)
    proxy: HAProxyFleet | None = None
    status = 1
    try:
        await cluster.start()
        roles = {**cluster.pids(), **find_services()}
        gateways = cluster.gateway_urls
        if args.via_haproxy:
            proxy = HAProxyFleet(cluster.gateway_urls, streams, open_files, log_dir)
            await proxy.start()
            roles["haproxy"] = proxy.pids()
            gateways = [proxy.url]
        traffic = None if args.no_broker_stats else _traffic(args, config.namespace)
        profiler = Profiler(args.profile, roles, args.profile_format) if args.profile else None
        plan = Plan(args, gateways, cluster.simulator_url, keys, Meters(roles, traffic, profiler))
        outcome = await plan.run()
        if profiler is not None:
            outcome.profiles = {role: str(path) for role, path in profiler.files.items()}
            outcome.hotspots = profiler.summary()
        status = _print(args, outcome, open_files, proxy)
    except (ClusterError, ProfilerError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
    finally:
        # A task of its own: after a signal cancelled this one, the teardown's timeouts still work.
        teardown = _teardown(cluster, proxy, log_dir, keep_logs=args.keep_logs or status not in (0, 3))
        await asyncio.create_task(teardown)
    return status


def _traffic(args: argparse.Namespace, prefix: str) -> ReplyTraffic:
    return ReplyTraffic(args.management_url, args.rabbitmq_url, prefix)


async def _teardown(cluster: Cluster, proxy: HAProxyFleet | None, log_dir: Path, *, keep_logs: bool) -> None:
    if proxy is not None:
        await proxy.stop()
    await cluster.stop()
    for problem in await cleanup_namespace(cluster.config):
        print(f"bench: clean-up of {cluster.config.namespace} incomplete: {problem}", file=sys.stderr)
    if keep_logs:
        print(f"bench: process logs in {log_dir}", file=sys.stderr)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)


def _print(
    args: argparse.Namespace, outcome: Outcome, open_files: int, proxy: HAProxyFleet | None = None
) -> int:
    config: dict[str, Any] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    config["cores"] = os.cpu_count()
    config["open_files"] = open_files
    if proxy is not None:
        config["haproxy_processes"] = len(proxy.pids())
        config["haproxy_maxconn"] = proxy.maxconn
    if args.gateway_url:  # nothing was started: the process-shaping options did not apply
        for key in _CLUSTER_OPTIONS:
            config.pop(key, None)
    header = header_line(args)
    busy = args.machine_busy_before
    if busy is not None and busy > BUSY_BEFORE_WARNING:
        header += (
            f"\nWARNING: the machine was {busy:g}% busy before the bench started: other work shares "
            "these cores and disturbs every figure (see 'other' below)."
        )
    if proxy is not None and len(proxy.pids()) > 1:
        header += (
            f"\nnote: {len(proxy.pids())} HAProxy processes share the port (maxconn {proxy.maxconn} each): "
            f"{open_files} open files cannot hold {streams_of(args)} streams in one."
        )
    report = Report(
        header,
        config,
        outcome.phases,
        outcome.comparisons,
        outcome.labels,
        outcome.profiles,
        outcome.hotspots,
    )
    print(render_json(report) if args.json else render_text(report))
    if any(p.errors or not p.ok for p in outcome.phases):
        return 1
    if args.check_targets and any(check.met is False for check in report.checks):
        return 3
    return 0


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
