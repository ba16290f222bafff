"""Spawn a job's process tree, and tear down every process of it.

Killing the direct child is not enough: ``bash`` dies and ``cargo`` keeps
compiling. A job's leader is started in a new session, so the job owns a
process group; teardown finds the job's members from ``/proc`` (same process
group, same session, or a descendant of a member by parent links), signals each
through a pidfd (so a recycled pid is never hit), and waits on those pidfds for
the exits instead of polling.

"Gone" is judged from the process state, never from ``killpg(pgid, 0)``: an
orphan that already exited stays a zombie until its new parent reaps it, which
here takes PID 1 up to two seconds.

The pure parts (parsing ``/proc/PID/stat``, choosing members) are plain
functions; :class:`TreeKiller` is the thin trio layer around them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

PROC = Path("/proc")

#: How long SIGKILLed processes get to disappear before we report them as left.
KILL_TIMEOUT = 5.0

#: While waiting for exits we also re-scan at this interval, because a fork
#: makes no event we could wait on: a member may start a new process while we
#: wait for it to die.
RESCAN_INTERVAL = 0.25


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` that teardown needs."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    start_time: int  # clock ticks since boot; with pid, names a process uniquely

    @property
    def dead(self) -> bool:
        """A zombie (or dying) process has exited: it only waits to be reaped."""
        return self.state in ("Z", "X", "x")


def parse_stat(text: str) -> ProcStat:
    """Parse the contents of ``/proc/PID/stat``.

    The command name is in parentheses and may itself contain spaces and
    parentheses, so the fields are counted from the *last* ``)``.
    """
    head, _, tail = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = tail.split()
    # fields[0] is field 3 of proc(5): state; ppid=4, pgrp=5, session=6, starttime=22
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        sid=int(fields[3]),
        state=fields[0],
        start_time=int(fields[19]),
    )


def read_stat(pid: int) -> ProcStat | None:
    # os.open/os.read rather than open(): a text-mode file object costs as much
    # again as the kernel's own work, and teardown reads every process on the
    # machine several times while the caller waits for the job's end event.
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        data = os.read(fd, 4096)
    except ProcessLookupError:
        return None
    finally:
        os.close(fd)
    # The command name is whatever the process chose: any bytes, not always UTF-8.
    return parse_stat(data.decode(errors="replace"))


def snapshot() -> dict[int, ProcStat]:
    """Every process on the machine, by pid."""
    procs: dict[int, ProcStat] = {}
    for entry in os.scandir(PROC):
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                procs[stat.pid] = stat
    return procs


@dataclass(frozen=True, slots=True)
class JobIdentity:
    """What marks a process as belonging to a job."""

    pgid: int  # == the session id: the leader starts a new session
    leader_start_time: int


def select_members(
    procs: Mapping[int, ProcStat], job: JobIdentity, known: Iterable[int] = ()
) -> set[int]:
    """Pids of the live processes that belong to ``job``.

    A process belongs to the job if it is in the job's process group or
    session, or descends (by parent links) from one that does or from a pid in
    ``known`` — which catches a child that called ``setsid`` while its parent
    is still alive. Processes older than the job's leader cannot be members:
    that keeps a recycled pgid number from pulling in strangers.
    """
    children: dict[int, list[int]] = {}
    for stat in procs.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    seeds = [
        stat.pid
        for stat in procs.values()
        if (stat.pgid == job.pgid or stat.sid == job.pgid)
        and stat.start_time >= job.leader_start_time
    ]
    seeds.extend(pid for pid in known if pid in procs)
    members: set[int] = set()
    stack = seeds
    while stack:
        pid = stack.pop()
        if pid in members:
            continue
        members.add(pid)
        stack.extend(children.get(pid, ()))
    return {pid for pid in members if not procs[pid].dead}


@dataclass
class TeardownReport:
    """Evidence of a teardown: what was found, signalled, and what is left."""

    found: int = 0
    sigterm: int = 0
    sigkill: int = 0
    left: int = 0
    left_pids: list[int] = field(default_factory=list)
    seconds: float = 0.0
    layers: list[str] = field(default_factory=lambda: ["process-group", "descendants"])

    @property
    def clean(self) -> bool:
        return self.left == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "found": self.found,
            "sigterm": self.sigterm,
            "sigkill": self.sigkill,
            "sigkill_needed": self.sigkill > 0,
            "left": self.left,
            "left_pids": self.left_pids,
            "seconds": round(self.seconds, 4),
            "layers": self.layers,
        }


async def spawn(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None
) -> trio.Process:
    """Start ``argv`` as the leader of a new session, with piped output.

    The hive owns the process (and reads its pipes in its own tasks) instead of
    using ``trio.run_process``, which would kill only the leader on cancel and
    wait for pipe EOF that a grandchild can hold off forever.
    """
    return await trio.lowlevel.open_process(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=dict(env),
        cwd=cwd,
    )


@dataclass(slots=True)
class _Tracked:
    pid: int
    pidfd: int
    exited: bool = False
    signals: set[int] = field(default_factory=set)


class TreeKiller:
    """Tears down every process of one job: SIGTERM, a grace period, SIGKILL.

    ``notify`` receives one human-readable line per step, for the job's log.
    """

    def __init__(
        self,
        leader: trio.Process,
        *,
        grace: float,
        notify: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self._leader = leader
        self._grace = grace
        self._notify = notify
        leader_stat = read_stat(leader.pid)
        self._job = JobIdentity(
            pgid=leader.pid,
            leader_start_time=leader_stat.start_time if leader_stat else 0,
        )
        self._tracked: dict[int, _Tracked] = {}
        self._seen: set[int] = set()

    @property
    def pgid(self) -> int:
        return self._job.pgid

    async def teardown(self) -> TeardownReport:
        """Kill everything that is left of the job and verify that nothing is.

        Safe to call when everything has already exited: it then only checks.
        Call it shielded: it must finish even while the job is being cancelled.
        """
        started = time.monotonic()
        report = TeardownReport()
        try:
            empty = await self._phase(signal.SIGTERM, trio.current_time() + self._grace, report)
            if not empty:
                empty = await self._phase(
                    signal.SIGKILL, trio.current_time() + KILL_TIMEOUT, report
                )
            # Reap the leader ourselves so that it is not a zombie in our table.
            with trio.move_on_after(KILL_TIMEOUT):
                await self._leader.wait()
            # A phase that proved the job empty needs no second look at /proc.
            left = (
                set()
                if empty
                else select_members(snapshot(), self._job, (t.pid for t in self._alive()))
            )
            report.left = len(left)
            report.left_pids = sorted(left)
        finally:
            for tracked in self._tracked.values():
                os.close(tracked.pidfd)
            self._tracked.clear()
        report.found = len(self._seen)
        report.seconds = time.monotonic() - started
        return report

    def _discover(self) -> list[_Tracked]:
        """Start tracking members not seen before; return them."""
        procs = snapshot()
        new: list[_Tracked] = []
        for pid in select_members(procs, self._job, (t.pid for t in self._alive())):
            if pid in self._tracked:
                continue
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            # The pid might have been recycled between the scan and the open.
            stat = read_stat(pid)
            if stat is None or stat.start_time != procs[pid].start_time or stat.dead:
                os.close(pidfd)
                continue
            tracked = _Tracked(pid, pidfd)
            self._tracked[pid] = tracked
            self._seen.add(pid)
            new.append(tracked)
        return new

    def _alive(self) -> list[_Tracked]:
        return [t for t in self._tracked.values() if not t.exited]

    async def _phase(self, sig: signal.Signals, deadline: float, report: TeardownReport) -> bool:
        """Send ``sig`` to every member, including any that appear, until all
        have exited (return True) or ``deadline`` passes (return False)."""
        while True:
            # A scan taken after every tracked member had exited, that finds no
            # new member, proves the job empty (a member's children exist before
            # it exits, so that scan sees them).
            settled = not self._alive()
            if not self._discover() and settled:
                return True
            targets = [t for t in self._alive() if sig not in t.signals]
            for tracked in targets:
                tracked.signals.add(sig)
                try:
                    signal.pidfd_send_signal(tracked.pidfd, sig)
                except ProcessLookupError:
                    tracked.exited = True
                    continue
                if sig == signal.SIGKILL:
                    report.sigkill += 1
                else:
                    report.sigterm += 1
            if targets:
                self._notify(
                    f"sent {sig.name} to {len(targets)} process(es) of process group {self.pgid}"
                )
            alive = self._alive()
            if not alive:
                continue  # the next scan decides whether we are done
            if trio.current_time() >= deadline:
                return False
            with trio.move_on_at(min(deadline, trio.current_time() + RESCAN_INTERVAL)):
                await _wait_all_exited(alive)


async def _wait_all_exited(processes: list[_Tracked]) -> None:
    async def wait_one(tracked: _Tracked) -> None:
        await trio.lowlevel.wait_readable(tracked.pidfd)
        tracked.exited = True

    async with trio.open_nursery() as nursery:
        for tracked in processes:
            nursery.start_soon(wait_one, tracked)
