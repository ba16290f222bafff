"""What every benchmark needs: a real hive, keeper commands, readings from
``/proc``, timed subprocesses, and the statistics that turn samples into figures.

Everything here drives real processes over real sockets; nothing is mocked.
"""

from __future__ import annotations

import math
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from hive.jobsandbox import job_environment
from hive.procfs import ProcStat, read_stat, snapshot
from keeper.client import HiveClient

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "bench" / "recipes"
BUNDLED_RECIPES = ROOT / "hive" / "recipes"
MAKEPKG = ROOT / "hive" / "makepkg.sh"
PYTHON = sys.executable
READY = re.compile(r"ready on (https?://\S+)")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: Bounds that only keep a broken run from hanging; waits end on events.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0

MB = 1_000_000


# ---------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linearly interpolated between ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Figure:
    """One measured quantity: its samples, and how it compares with a baseline
    measured in the same run and with the aim we set ourselves."""

    benchmark: str
    name: str
    unit: str
    samples: list[float]
    #: Name of the figure (same benchmark) this one is divided by.
    baseline: str | None = None
    ratio: float | None = None
    ratio_p99: float | None = None
    aim: str | None = None
    met: bool | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)

    def compare(self, baseline: Figure) -> Figure:
        """Set the ratios of the medians and of the p99s, this over ``baseline``."""
        self.baseline = baseline.name
        self.ratio = self.median / baseline.median if baseline.median else math.nan
        self.ratio_p99 = self.p99 / baseline.p99 if baseline.p99 else math.nan
        return self

    def judge(self, aim: str, met: bool) -> Figure:
        self.aim, self.met = aim, met
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "name": self.name,
            "unit": self.unit,
            "n": len(self.samples),
            "median": _finite(self.median),
            "p99": _finite(self.p99),
            "min": min(self.samples, default=None),
            "max": max(self.samples, default=None),
            "baseline": self.baseline,
            "ratio": _finite(self.ratio),
            "ratio_p99": _finite(self.ratio_p99),
            "aim": self.aim,
            "met": self.met,
            "note": self.note,
            "samples": self.samples,
        }


def _finite(value: float | None) -> float | None:
    """JSON has no NaN: an undefined figure (a ratio to zero) becomes null."""
    return None if value is None or math.isnan(value) else value


@dataclass
class Context:
    """Settings of one ``python -m bench`` run, and its scratch space."""

    quick: bool
    tmp: Path
    log: Callable[[str], None]

    def repeats(self, full: int, quick: int = 1) -> int:
        return quick if self.quick else full

    def scratch(self, prefix: str) -> Path:
        """A fresh empty directory (removed with the whole run's tmp)."""
        return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=self.tmp))

    @property
    def catalog(self) -> Path:
        """A catalog for recipes a benchmark writes itself."""
        path = self.tmp / "catalog"
        path.mkdir(exist_ok=True)
        return path


async def in_turn(round_: int, *steps: Callable[[], Awaitable[None]]) -> None:
    """Run ``steps`` one after another, starting with a different one each
    round, so that a drift in the machine's load favours none of them."""
    first = round_ % len(steps)
    for step in steps[first:] + steps[:first]:
        await step()


# ---------------------------------------------------------------- /proc


def _stat_seconds(pid: int, first: int) -> float:
    """Fields ``first`` and ``first + 1`` of /proc/PID/stat (numbered as in
    proc(5)), clock ticks summed and turned into seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()  # fields[0] is field 3
    return (int(fields[first - 3]) + int(fields[first - 2])) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far (utime + stime)."""
    return _stat_seconds(pid, 14)


def reaped_children_cpu(pid: int) -> float:
    """CPU time of the children ``pid`` has waited for (cutime + cstime): for
    the hive, its jobs' processes, each including what it waited for in turn."""
    return _stat_seconds(pid, 16)


def own_children_cpu() -> float:
    """CPU time of the children this process has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a live process, in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MB
    raise LookupError(f"no VmHWM for pid {pid}")


#: A process named without ambiguity: (pid, start time in clock ticks since
#: boot). pid_max is 32768 here, so a bare pid can be recycled within a run.
Proc = tuple[int, int]


def tree(root: int, procs: dict[int, ProcStat] | None = None) -> set[Proc]:
    """Live processes of ``root`` and its descendants (by parent links), and
    anything else in ``root``'s session (orphans reparented to PID 1)."""
    procs = snapshot() if procs is None else procs
    children: dict[int, list[int]] = {}
    for stat in procs.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: set[int] = set()
    stack = [root, *(stat.pid for stat in procs.values() if stat.sid == root)]
    while stack:
        pid = stack.pop()
        if pid not in found and pid in procs:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return {(pid, procs[pid].start_time) for pid in found if not procs[pid].dead}


def command_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


async def wait_for_tree(
    root: int, size: int, *, running: str, count: int, timeout: float = 20.0
) -> set[Proc]:
    """Wait until ``root``'s tree has ``size`` live processes, ``count`` of
    which run ``running``; return them.

    Counting processes is not enough: a child that will call ``setsid`` and
    exec ``sleep`` is already in the tree, and still in its parent's process
    group, the moment it is forked. A fork or an exec makes no event we could
    wait on, so this polls /proc, briefly.
    """
    with trio.fail_after(timeout):
        while True:
            procs = tree(root)
            done = sum(command_name(pid) == running for pid, _start in procs)
            if len(procs) >= size and done >= count:
                return procs
            await trio.sleep(0.005)


def present(procs: set[Proc], *, zombies: bool = True) -> set[Proc]:
    """Those of ``procs`` still in the process table (not a recycled pid)."""
    now = snapshot()
    return {
        (pid, start)
        for pid, start in procs
        if pid in now and now[pid].start_time == start and (zombies or not now[pid].dead)
    }


def alive(procs: set[Proc]) -> set[Proc]:
    """Those of ``procs`` that still run (not zombies, not a recycled pid)."""
    return present(procs, zombies=False)


def kill_all(procs: set[Proc]) -> None:
    """SIGKILL what a peer left behind, so that the run leaves nothing."""
    for pid, start in alive(procs):
        with suppress(ProcessLookupError):
            pidfd = os.pidfd_open(pid)
            try:
                stat = read_stat(pid)
                if stat is not None and stat.start_time == start:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            finally:
                os.close(pidfd)


# ---------------------------------------------------------------- processes


async def run_timed(
    argv: Sequence[str],
    *,
    stdout: int = subprocess.DEVNULL,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
) -> float:
    """Run ``argv`` to completion; return its wall time. A failure is an error."""
    started = time.perf_counter()
    with trio.fail_after(timeout):
        done = await trio.run_process(
            list(argv), stdout=stdout, capture_stderr=True, check=False, cwd=cwd, env=env
        )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{argv[0]} … exited {done.returncode}: {' | '.join(tail)}")
    return elapsed


def makepkg_argv(recipe: Path, build_dir: Path) -> list[str]:
    """The exact command a hive job runs for ``recipe`` (run it with :data:`JOB_ENV`)."""
    return ["bash", str(MAKEPKG), str(recipe), str(build_dir)]


#: The environment a hive job gets, so that a direct run builds the same way.
JOB_ENV = {**job_environment(), "HIVE_JOB_ID": "direct"}


def shell_pipe_to_null(argv: Sequence[str]) -> list[str]:
    """``argv | cat > /dev/null``: the command's output through a pipe, as fast
    as a pipe goes."""
    return ["sh", "-c", '"$@" | cat > /dev/null', "sh", *argv]


@dataclass
class Hive:
    """A running ``hive serve`` subprocess, and its access token."""

    process: trio.Process
    url: str
    token: str
    ready_seconds: float
    log_lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self, timeout: float = 60.0) -> HiveClient:
        return HiveClient(self.url, token=self.token, timeout=timeout)

    def keeper(self, *args: str) -> list[str]:
        return [PYTHON, "-m", "keeper", "--hive", self.url, "--token", self.token, *args]


async def _pump_log(
    stream: trio.abc.ReceiveStream, lines: list[str], ready: Callable[[str], None]
) -> None:
    buffer = b""
    async with stream:
        while chunk := await stream.receive_some(65536):
            *complete, buffer = (buffer + chunk).split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace")
                lines.append(line)
                if match := READY.search(line):
                    ready(match.group(1))


@asynccontextmanager
async def running_hive(
    state_dir: Path,
    *,
    catalog: Path = RECIPES,
    grace: float = 5.0,
    max_parallel: int | None = None,
    extra: Sequence[str] = (),
) -> AsyncIterator[Hive]:
    """``hive serve`` on a free port, from this checkout; stopped (SIGTERM) after."""
    argv = [
        PYTHON,
        "-m",
        "hive",
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--state-dir",
        str(state_dir),
        "--catalog",
        str(catalog),
        "--grace",
        str(grace),
    ]
    if max_parallel is not None:
        argv += ["--max-parallel", str(max_parallel)]
    argv += extra
    started = time.perf_counter()
    process = await trio.lowlevel.open_process(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT
    )
    lines: list[str] = []
    urls: list[str] = []
    ready = trio.Event()
    ready_at: list[float] = []

    def on_ready(url: str) -> None:
        ready_at.append(time.perf_counter())
        urls.append(url)
        ready.set()

    try:
        async with trio.open_nursery() as nursery:
            assert process.stderr is not None
            nursery.start_soon(_pump_log, process.stderr, lines, on_ready)
            with trio.fail_after(START_TIMEOUT):
                async with trio.open_nursery() as waiter:
                    waiter.start_soon(_cancel_when_exited, process, waiter.cancel_scope)
                    await ready.wait()
                    waiter.cancel_scope.cancel()
            if not urls:
                raise RuntimeError("hive exited before it was ready:\n" + "\n".join(lines[-20:]))
            token = (state_dir / "token").read_text().strip()
            yield Hive(process, urls[0], token, ready_at[0] - started, lines)
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(STOP_TIMEOUT):
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def _cancel_when_exited(process: trio.Process, scope: trio.CancelScope) -> None:
    await process.wait()
    scope.cancel()


async def wait_job_ended(hive: Hive, job_id: str) -> dict[str, Any]:
    """Block until the job's ``end`` event; return it. Uses the keeper's client."""
    async with hive.client() as client, client.stream(job_id) as events:
        async for event in events:
            if getattr(event, "type", None) == "end":
                return dict(event.body)  # type: ignore[union-attr]
    raise RuntimeError(f"job {job_id}: stream ended without an end event")
