"""The hive as a child subreaper: orphans of jobs become the hive's children.

Without it, a process whose parent dies is re-parented to PID 1, which reaps
it whenever it gets to it (up to two seconds on these machines); with
``PR_SET_CHILD_SUBREAPER`` it is re-parented to the hive, which reaps it itself.

Reaping must not steal an exit status: trio's ``Process.wait`` reaps the
children the hive started (job leaders, recipe readers), and if anyone else
reaped one first, trio would see ``ECHILD`` and report exit status 0. So the
hive never calls ``waitpid(-1)``; on SIGCHLD it reaps, by pid, only zombies it
can prove it did not start (:func:`orphaned`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Collection, Iterator, Mapping

import trio

from .cgroups import HiveCgroups
from .procfs import HAS_CHILDREN_FILE, ProcStat, own_children, read_stat, snapshot

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process a child subreaper; whether the kernel agreed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def orphaned(
    zombie: ProcStat,
    *,
    own_sid: int,
    owned: Collection[int],
    in_job_cgroup: bool = False,
    job_sessions: Mapping[int, int] | None = None,
) -> bool:
    """Whether a zombie child of the hive is an orphan it inherited (safe to reap).

    A child the hive forked starts in the hive's session and can only leave it
    for a session of its own (``sid == pid``). A child in any *other* session
    was therefore forked by someone else and re-parented to us. Of the session
    leaders, those the hive started are the job leaders (``owned``) and helpers
    whose sessions hold no job process; so a session leader is a job's process
    if it is in a job's cgroup, or if a job's process was seen in its session
    (``job_sessions``: session id -> earliest start time of such a process; the
    leader must be older, or its pid was reused).
    """
    if zombie.pid in owned:
        return False
    if zombie.sid not in (zombie.pid, own_sid):
        return True
    if in_job_cgroup:
        return True
    first = (job_sessions or {}).get(zombie.pid)
    return zombie.sid == zombie.pid and first is not None and zombie.start_time <= first


class Reaper:
    """Reaps the orphans re-parented to the hive, on every SIGCHLD."""

    def __init__(self, cgroups: HiveCgroups | None) -> None:
        self._cgroups = cgroups
        self._pid = os.getpid()
        self._sid = os.getsid(0)
        #: Job leaders, which trio reaps.
        self._owned: set[int] = set()
        self._spawning = 0

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        """While a job leader is being started its pid is not yet known (not
        yet :meth:`own`-ed), so no zombie in a job cgroup may be reaped."""
        self._spawning += 1
        try:
            yield
        finally:
            self._spawning -= 1

    def own(self, pid: int) -> None:
        self._owned.add(pid)

    def disown(self, pid: int) -> None:
        self._owned.discard(pid)

    def reap_orphans(self, job_sessions: Mapping[int, int] | None = None) -> int:
        """Reap every zombie child that :func:`orphaned` allows; how many."""
        reaped = 0
        for stat in self._children():
            if stat.ppid != self._pid or not stat.dead:
                continue
            in_job_cgroup = (
                self._cgroups is not None and not self._spawning and self._cgroups.holds(stat.pid)
            )
            if not orphaned(
                stat,
                own_sid=self._sid,
                owned=self._owned,
                in_job_cgroup=in_job_cgroup,
                job_sessions=job_sessions,
            ):
                continue
            # A zombie's pid cannot be reused until it is reaped, and only we
            # reap it: waiting for this pid is safe.
            with contextlib.suppress(ChildProcessError):
                if os.waitid(os.P_PID, stat.pid, os.WEXITED | os.WNOHANG) is not None:
                    reaped += 1
        return reaped

    def _children(self) -> list[ProcStat]:
        """This process's children, zombies included.

        From our own ``task/*/children`` lists rather than a scan of all of
        ``/proc``: this runs on every SIGCHLD, dozens of times while a job's
        tree dies. Our lists are exact here: a child leaves them only when it
        is reaped, and only this thread reaps (trio for the job leaders, this
        class for orphans), never while we read. A child that moves between
        our threads (when a trio worker thread exits) lands on the main
        thread, which is read last.
        """
        if not HAS_CHILDREN_FILE:
            return list(snapshot().values())
        found = []
        for pid in own_children():
            stat = read_stat(pid)
            if stat is not None:
                found.append(stat)
        return found

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reap on every SIGCHLD until cancelled."""
        with trio.open_signal_receiver(signal.SIGCHLD) as signals:
            task_status.started()
            self.reap_orphans()
            async for _ in signals:
                self.reap_orphans()
