"""``python -m chaos`` (``make chaos``): the fault suite of issue 13.

Starts a private stack (devstack on free ports, its own RabbitMQ node and Redis, S3 behind a
proxy), drives streamed chats through HAProxy from real users, injects each fault in turn (worker
SIGKILL, RabbitMQ stop_app/start_app, Redis restart, S3 down, model node down, a gateway SIGKILL,
auth down, archiver down), then reads every session back. Prints the table (or ``--json``) and
exits 1 on any lost chat, any recovery over 10 s, any session that disagrees with what its client
saw, or any ended session not archived. ``--short`` is the form ``make test`` runs (shorter
faults, about 1.5 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace

from chaos.report import failures, render_json, render_text
from chaos.run import RunSettings, run


def parse_args(argv: Sequence[str] | None = None) -> RunSettings:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    add = parser.add_argument
    add("--short", action="store_true", help="CI's short form (shorter faults and watch windows)")
    add("--clients", type=int, default=24, help="concurrent streaming users (default 24)")
    add("--only", action="append", default=[], metavar="NAME", help="only faults whose name has NAME")
    add("--keep-logs", action="store_true", help="keep the stack's logs (they are kept on a failure)")
    add("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.clients < 1:
        parser.error("--clients must be >= 1")
    settings = RunSettings.short_form() if args.short else RunSettings()
    return replace(settings, clients=args.clients, only=tuple(args.only), keep_logs=args.keep_logs)


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    as_json = "--json" in (sys.argv[1:] if argv is None else argv)
    # aio-pika logs every refused reconnect while the suite's own broker is down on purpose.
    logging.basicConfig(level=logging.CRITICAL)
    report = asyncio.run(run(settings))
    print(render_json(report) if as_json else render_text(report), flush=True)
    return 1 if failures(report) else 0


if __name__ == "__main__":
    sys.exit(main())
