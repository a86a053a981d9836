"""``--profile DIR``: py-spy samples one gateway and one worker during the first pipeline phase.

py-spy (``pip install py-spy``) reads the interpreter's stacks from outside the process
(``--nonblocking``: without pausing it, so the figures stay what they were); a SIGINT at the end of
the phase makes it write the file. ``--profile-format flamegraph`` (default) writes
``<role>.svg``; ``raw`` writes collapsed stacks (``<role>.txt``, one ``frame;frame;... count``
line per stack, which speedscope and flamegraph.pl read) and the report then lists the functions
with the most samples of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PROFILED_ROLES = ("gateway", "worker")
SAMPLE_RATE = 100  # per second
TOP = 8
EVENT_LOOP_SHARE = 80.0  # % of samples: frames above it are the loop and the entry point
_SUFFIX = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}


class ProfilerError(RuntimeError):
    """py-spy is missing or could not start."""


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _frames(line: str) -> tuple[list[str], int] | None:
    """One collapsed line -> its frames (``name (short/path.py)``, line numbers dropped) and count."""
    stack, _, number = line.rstrip().rpartition(" ")
    if not stack or not number.isdigit():
        return None
    frames = []
    for frame in stack.split(";"):
        name, _, where = frame.partition(" (")
        path = where.rstrip(")").rsplit(":", 1)[0] if where else ""
        frames.append(f"{name} ({_short(path)})" if path else name)
    return frames, int(number)


def hotspots(collapsed: Iterable[str], top: int = TOP, *, inclusive: bool = False) -> list[tuple[str, float]]:
    """The ``top`` frames by samples, as % of all samples of the process.

    ``collapsed``: py-spy's raw lines, ``outer (file:line);...;inner (file:line) count``; line
    numbers are dropped so one function's lines add up. Self time (default) counts the innermost
    frame of each stack; ``inclusive`` counts every frame on the stack once, leaving out the frames
    nearly every sample passes through (the event loop and the service's entry point).
    """
    counts: Counter[str] = Counter()
    total = 0
    for line in collapsed:
        parsed = _frames(line)
        if parsed is None:
            continue
        frames, number = parsed
        total += number
        for frame in set(frames) if inclusive else frames[-1:]:
            counts[frame] += number
    if not total:
        return []
    ranked = [(frame, round(100 * n / total, 1)) for frame, n in counts.most_common()]
    if inclusive:
        ranked = [(frame, share) for frame, share in ranked if share < EVENT_LOOP_SHARE]
    return ranked[:top]


def _short(path: str) -> str:
    """py-spy already names files relative to ``sys.path``; absolute ones keep their last parts."""
    if not path.startswith("/"):
        return path
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    return "/".join(Path(path).parts[-2:])


@dataclass(slots=True)
class Profiler:
    """One py-spy per profiled role (its first process), started and stopped around a phase."""

    directory: Path
    roles: Mapping[str, Sequence[int]]
    output_format: str = "flamegraph"
    files: dict[str, Path] = field(default_factory=dict)
    _processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    done: bool = False

    async def start(self) -> None:
        binary = py_spy()
        if binary is None:
            raise ProfilerError("--profile needs py-spy: make bench ARGS=--profile installs it")
        self.directory.mkdir(parents=True, exist_ok=True)
        for role in PROFILED_ROLES:
            pids = self.roles.get(role) or []
            if not pids:
                continue
            path = self.directory / f"{role}.{_SUFFIX[self.output_format]}"
            log = (self.directory / f"{role}.py-spy.log").open("wb")
            try:
                process = await asyncio.create_subprocess_exec(
                    binary, "record", "--pid", str(pids[0]), "--rate", str(SAMPLE_RATE), "--nonblocking",
                    "--format", self.output_format, "--output", str(path),
                    stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
            finally:
                log.close()
            self._processes.append(process)
            self.files[role] = path

    async def stop(self) -> None:
        """SIGINT: py-spy writes its file and exits."""
        for process in self._processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGINT)
        for process in self._processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        self._processes.clear()
        self.done = True

    def summary(self) -> dict[str, list[tuple[str, float]]]:
        """``<role> self`` and ``<role> inclusive`` -> the top frames (raw format only)."""
        if self.output_format != "raw":
            return {}
        found = {}
        for role, path in self.files.items():
            with contextlib.suppress(OSError):
                lines = path.read_text().splitlines()
                found[f"{role} (own time)"] = hotspots(lines)
                found[f"{role} (time below)"] = hotspots(lines, 2 * TOP, inclusive=True)
        return found
