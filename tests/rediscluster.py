"""A 6-node Redis Cluster (3 masters, 3 replicas) on 7000-7005, started from redis-server for tests."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

PORTS = tuple(range(7000, 7006))


def _cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10, check=False
    ).stdout


def cluster_ok(port: int = PORTS[0]) -> bool:
    try:
        return "cluster_state:ok" in _cli(port, "cluster", "info")
    except (OSError, subprocess.SubprocessError):
        return False


class LocalRedisCluster:
    """Starts the nodes and forms the cluster; reuses one that is already healthy on the ports."""

    def __init__(self) -> None:
        self._processes: list[subprocess.Popen[bytes]] = []
        self._dir: Path | None = None
        self.url = f"redis://127.0.0.1:{PORTS[0]}/0"

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None

    def start(self) -> None:
        if cluster_ok():
            return
        self._dir = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        for port in PORTS:
            node_dir = self._dir / str(port)
            node_dir.mkdir()
            self._processes.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port", str(port),
                        "--bind", "127.0.0.1",
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "5000",
                        "--dir", str(node_dir),
                        "--save", "",
                        "--appendonly", "no",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        deadline = time.monotonic() + 20
        while not all("PONG" in _cli(p, "ping") for p in PORTS):
            if time.monotonic() > deadline:
                raise RuntimeError("redis cluster nodes did not start")
            time.sleep(0.1)
        nodes = [f"127.0.0.1:{p}" for p in PORTS]
        create = ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"]
        subprocess.run(create, capture_output=True, timeout=60, check=True)
        deadline = time.monotonic() + 30
        while not all(cluster_ok(p) for p in PORTS):
            if time.monotonic() > deadline:
                raise RuntimeError("redis cluster did not become ok")
            time.sleep(0.2)

    def stop(self) -> None:
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        self._processes.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
