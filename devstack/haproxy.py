"""HAProxy's environment for the local stack: ``haproxy/haproxy.cfg`` reads every port from it."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from devstack.config import HAPROXY_AUTH_SOURCE, StackConfig, free_port

__all__ = ["GATEWAY_SLOTS", "gateway_slots", "haproxy_env", "server_status"]

GATEWAY_SLOTS = 3  # server lines in haproxy.cfg's `gateways` backend


def gateway_slots(gateway_urls: Sequence[str]) -> dict[str, str]:
    """``GATEWAY1..3`` for haproxy.cfg; unused slots point at a closed port (the server is DOWN)."""
    if len(gateway_urls) > GATEWAY_SLOTS:
        raise ValueError(f"haproxy.cfg has {GATEWAY_SLOTS} gateway slots, not {len(gateway_urls)}")
    slots = {}
    for i in range(GATEWAY_SLOTS):
        if i < len(gateway_urls):
            slots[f"GATEWAY{i + 1}"] = gateway_urls[i].split("://", 1)[-1].rstrip("/")
        else:
            slots[f"GATEWAY{i + 1}"] = f"127.0.0.1:{free_port()}"
    return slots


def server_status(stats_csv: str, backend: str = "gateways") -> dict[str, str]:
    """``server name -> status`` of one backend, from HAProxy's stats CSV."""
    rows = csv.DictReader(io.StringIO(stats_csv.lstrip("# ")))
    return {
        row["svname"]: row["status"]
        for row in rows
        if row.get("pxname") == backend and row.get("svname") not in {"FRONTEND", "BACKEND"}
    }


def haproxy_env(config: StackConfig, *, ssl_dir: str | None, maxconn: int, stats_port: int) -> dict[str, str]:
    """The variables haproxy.cfg reads, for one HAProxy process of the stack."""
    env = {
        "HTTP_PORT": str(config.haproxy_port),
        "HTTPS_PORT": str(config.haproxy_tls_port),
        "TLS_ENABLED": "1" if ssl_dir else "0",
        "STATS_PORT": str(stats_port),
        "AUTH_ADDR": f"127.0.0.1:{config.auth_port}",
        "AUTH_SOURCE_ADDR": HAPROXY_AUTH_SOURCE,
        "CHECK_INTER": config.check_inter,
        "MAXCONN": str(maxconn),
        **gateway_slots([f"127.0.0.1:{port}" for port in config.gateway_ports]),
    }
    if ssl_dir:
        env["SSL_DIR"] = ssl_dir
    return env
