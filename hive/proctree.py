"""Find every process of a job, and tear all of them down.

Killing the direct child is not enough: ``bash`` dies and ``cargo`` keeps
compiling. A job's processes are found from ``/proc`` by several independent
*layers*, each of which catches what another misses:

- ``process-group``: the job's leader starts a new session, so its process
  group and session hold every process that did not leave them;
- ``descendants``: children of a member, by parent links, whatever their group
  (a ``setsid`` child whose parent still runs);
- ``environment``: ``HIVE_JOB_ID=<id>`` in ``/proc/PID/environ`` marks a job's
  process even after it left the session and its parent died (a double-forked
  daemon, re-parented to the hive);
- ``cgroup``: the job's own cgroup (see :mod:`hive.cgroups`) holds even a
  process that cleared its environment;
- ``pid-namespace``: the job's own PID namespace (see :mod:`hive.jobinit`)
  holds every process forked inside it, whatever it does, root that left its
  cgroup included; SIGKILL of its init kills all of them, and an exited init
  is the kernel's word that none is left.

Every member is signalled through a pidfd (so a recycled pid is never hit), and
the exits are awaited on those pidfds instead of polling. A sweep re-scans until
a pass finds nothing new, so a process forked while the sweep runs is caught.

A job in a PID namespace of its own needs none of the scans of ``/proc`` for
its verdict: the exit of the namespace's init is the kernel's word that every
process of the namespace is gone (see :class:`TreeKiller`), and its members
are counted from its cgroup and the children lists, not from the process table.

"Gone" is judged from the process state, never from ``killpg(pgid, 0)``: an
exited process stays a zombie until its parent reaps it. Zombies that are the
hive's own (re-parented) children are reaped here, at once.

The readers of ``/proc`` are in :mod:`hive.procfs`; the policy (choosing
members, judging a strike) is plain functions here, and :class:`TreeKiller` is
the thin trio layer around them.
"""

from __future__ import annotations

import enum
import errno
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio

from .cgroups import JobCgroup
from .procfs import (
    HAS_CHILDREN_FILE,
    ProcStat,
    children_of,
    has_marker,
    job_marker,
    marked_pids,
    own_children,
    pid_namespace,
    read_stat,
    snapshot,
)

#: What running out of descriptors or memory looks like: teardown then falls
#: back to what needs none (the group strike, the namespace's init) instead of
#: failing.
EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOMEM)


def exhausted(exc: OSError) -> bool:
    return exc.errno in EXHAUSTED


#: How long SIGKILLed processes get to disappear before we report them as left.
KILL_TIMEOUT = 5.0

#: While waiting for exits we also re-scan at this interval, because a fork
#: makes no event we could wait on: a member may start a new process while we
#: wait for it to die.
RESCAN_INTERVAL = 0.25


class Layer(enum.StrEnum):
    """A way of finding a job's processes."""

    PROCESS_GROUP = "process-group"
    DESCENDANTS = "descendants"
    ENVIRONMENT = "environment"
    CGROUP = "cgroup"
    NAMESPACE = "pid-namespace"


@dataclass
class NamespaceInit:
    """The init of a job's PID namespace, held by a pidfd from the job's start
    on (so that a teardown needs no new descriptor to kill the whole job)."""

    pid: int
    pidfd: int
    start_time: int
    #: Inode of the namespace (``/proc/PID/ns/pid``); None if it could not be read.
    namespace: int | None

    @classmethod
    def open(cls, pid: int, *, not_before: int = 0) -> NamespaceInit | None:
        """Hold the init ``pid`` if it is a live process started at ``not_before``
        or later; None if it is gone (or the pid names another process)."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        stat = read_stat(pid)
        if stat is None or stat.dead or stat.start_time < not_before:
            os.close(pidfd)
            return None
        return cls(pid, pidfd, stat.start_time, pid_namespace(pid))

    def exited(self) -> bool:
        """Whether the init has exited, and with it every process of the namespace."""
        return self.pidfd < 0 or _exited(self.pidfd)

    def reap(self) -> bool:
        """Reap the exited init if it is this process's child (re-parented to
        the hive, a subreaper, once the job's leader exited); whether we did."""
        return self.pidfd >= 0 and reap(self.pidfd)

    def kill(self) -> bool:
        """SIGKILL the init: the kernel kills every process of the namespace."""
        if self.pidfd < 0:
            return False
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


class OrphanReaper(Protocol):
    """What the killer needs of :class:`hive.reaper.Reaper`: reap the zombies
    re-parented to the hive that belong to the given sessions (session id ->
    earliest member start time); return how many. A protocol, so that the
    killer does not import the reaper, which reads ``/proc`` as it does."""

    def reap_orphans(self, job_sessions: Mapping[int, int] | None = None) -> int: ...


@dataclass(frozen=True, slots=True)
class JobIdentity:
    """What marks a process as belonging to a job."""

    job_id: str
    #: The job's process group and session (the leader starts a new session);
    #: None where the group cannot be trusted to be the job's any more.
    pgid: int | None
    leader_pid: int | None
    #: Processes older than the leader cannot be members: that keeps a
    #: recycled pgid number from pulling in strangers. 0 when unknown.
    leader_start_time: int


def group_exists(procs: Mapping[int, ProcStat], pgid: int) -> bool:
    """Whether any process, zombies included, is in process group or session ``pgid``.

    While one is, the number cannot be handed to a new process; once none is,
    it can, and a group seen empty must never be signalled again.
    """
    return any(stat.pgid == pgid or stat.sid == pgid for stat in procs.values())


def may_be_member(stat: ProcStat, job: JobIdentity) -> bool:
    """Live and young enough to be a member (its environment is worth reading)."""
    return not stat.dead and stat.start_time >= job.leader_start_time


def in_job_group(stat: ProcStat, job: JobIdentity) -> bool:
    """In the job's process group or session, and not older than the leader."""
    return (
        job.pgid is not None
        and job.pgid in (stat.pgid, stat.sid)
        and stat.start_time >= job.leader_start_time
    )


def candidates(procs: Mapping[int, ProcStat], job: JobIdentity) -> list[int]:
    """Live processes young enough to be members (whose environment is worth reading)."""
    return [stat.pid for stat in procs.values() if may_be_member(stat, job)]


def select_members(
    procs: Mapping[int, ProcStat],
    job: JobIdentity,
    *,
    marked: Collection[int] = (),
    in_cgroup: Collection[int] = (),
    in_namespace: Collection[int] = (),
    known: Iterable[int] = (),
) -> dict[int, frozenset[Layer]]:
    """The live processes that belong to ``job``, each with the layers that found it.

    A process belongs to the job if it is in the job's process group or session
    (and not older than the leader), carries the job's marker (``marked``), is
    in the job's cgroup (``in_cgroup``) or PID namespace (``in_namespace``),
    or descends by parent links from one
    that does or from a pid in ``known``.
    """
    children: dict[int, list[int]] = {}
    for stat in procs.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    direct: dict[int, set[Layer]] = {}
    for stat in procs.values():
        layers: set[Layer] = set()
        if in_job_group(stat, job):
            layers.add(Layer.PROCESS_GROUP)
        if stat.pid in marked:
            layers.add(Layer.ENVIRONMENT)
        if stat.pid in in_cgroup:
            layers.add(Layer.CGROUP)
        if stat.pid in in_namespace:
            layers.add(Layer.NAMESPACE)
        if layers:
            direct[stat.pid] = layers
    members: dict[int, set[Layer]] = {pid: set(layers) for pid, layers in direct.items()}
    for pid in known:
        if pid in procs:
            members.setdefault(pid, set())
    visited: set[int] = set()
    stack = list(members)
    while stack:
        pid = stack.pop()
        if pid in visited:
            continue
        visited.add(pid)
        for child in children.get(pid, ()):
            members.setdefault(child, set()).add(Layer.DESCENDANTS)
            stack.append(child)
    return {pid: frozenset(layers) for pid, layers in members.items() if not procs[pid].dead}


@dataclass
class TeardownReport:
    """Evidence of a teardown: what was found, by which layer, signalled, and what is left."""

    found: int = 0
    sigterm: int = 0
    sigkill: int = 0
    left: int = 0
    left_pids: list[int] = field(default_factory=list)
    seconds: float = 0.0
    #: The layers this teardown looked with.
    layers: list[str] = field(default_factory=list)
    #: Per layer: processes it found, and those that no other layer found.
    by_layer: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Whether ``cgroup.kill`` swept the job's cgroup; whether the cgroup was
    #: empty at the end (None: the job had no cgroup).
    cgroup_kill: bool = False
    cgroup_empty: bool | None = None
    #: Whether the init of the job's PID namespace was sent SIGKILL; whether it
    #: had exited at the end, so that the kernel removed every process of the
    #: namespace (None: the job had no namespace).
    namespace_kill: bool = False
    namespace_empty: bool | None = None
    #: False when the hive could not look (no descriptor or memory left for
    #: ``/proc``) and no namespace vouched for the job: then ``left`` is only
    #: what it knew of, and the teardown does not count as clean.
    verified: bool = True
    #: The job's use of the machine, from its cgroups (see :mod:`hive.cgroups`):
    #: ``cpu_seconds``, ``memory_peak`` (bytes), ``tasks_peak``; null where unknown.
    usage: dict[str, Any] | None = None
    #: Exited processes that were the hive's (re-parented) children, reaped here.
    reaped: int = 0
    #: Why something could not be killed or cleaned up, one line each.
    errors: list[str] = field(default_factory=list)
    #: What this teardown could not have seen, given the layers it had.
    limits: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (
            self.left == 0
            and self.verified
            and self.cgroup_empty is not False
            and self.namespace_empty is not False
        )

    @property
    def problem(self) -> str | None:
        """One line for the job's error when the teardown is not verified clean."""
        if self.clean:
            return None
        if self.verified:
            text = f"teardown incomplete: {self.left} process(es) left"
        else:
            text = f"teardown unverified: {self.left} known process(es) left"
        if self.left_pids:
            text += f" (pids {', '.join(map(str, self.left_pids))})"
        if self.errors:
            text += ": " + "; ".join(self.errors)
        return text

    def count(self, found: Iterable[frozenset[Layer]]) -> None:
        """Fill :attr:`found` and :attr:`by_layer` from the layers of each process found."""
        tally = {layer: {"found": 0, "only": 0} for layer in Layer if layer in self.layers}
        total = 0
        for layers in found:
            total += 1
            for layer in layers:
                entry = tally.setdefault(layer, {"found": 0, "only": 0})
                entry["found"] += 1
                if len(layers) == 1:
                    entry["only"] += 1
        self.found = total
        self.by_layer = {str(layer): counts for layer, counts in tally.items()}

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
            "by_layer": self.by_layer,
            "cgroup_kill": self.cgroup_kill,
            "cgroup_empty": self.cgroup_empty,
            "namespace_kill": self.namespace_kill,
            "namespace_empty": self.namespace_empty,
            "verified": self.verified,
            "usage": self.usage,
            "reaped": self.reaped,
            "errors": self.errors,
            "limits": self.limits,
        }


async def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    pass_fds: Sequence[int] = (),
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
        pass_fds=tuple(pass_fds),
    )


def _exited(pidfd: int) -> bool:
    """Whether the process behind ``pidfd`` has exited (its pidfd is readable)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def reap(pidfd: int) -> bool:
    """Reap the exited process behind ``pidfd`` if it is our child; whether we did.

    Only for processes no one else waits for: reaping a child that trio's
    ``Process.wait`` owns would steal its exit status.
    """
    try:
        return os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG) is not None
    except ChildProcessError:
        return False


@dataclass(slots=True)
class _Tracked:
    pid: int
    pidfd: int
    layers: frozenset[Layer]
    exited: bool = False
    signals: set[int] = field(default_factory=set)
    error: str | None = None
    #: Its process group as the census before the strike saw it (None: found after).
    pgid_before: int | None = None
    #: ... and as the identity check after the strike saw it.
    pgid_after: int | None = None
    #: The signal that the strike surely delivered to it, if any.
    struck_by: int | None = None
    #: Whether it is in the report's ``found``. A member of a namespace census
    #: is counted once a signal reached it (or it outlived the teardown): one
    #: that exited on its own, and was reaped, before its first signal is no
    #: process the teardown had to end.
    counted: bool = True


def reached_by_strike(pgid: int, before: int | None, after: int | None) -> bool:
    """Whether ``killpg(pgid, ...)`` surely reached a member.

    ``before``: its group in the census taken just before the ``killpg``
    (None: it was not in the census); ``after``: its group when it was looked
    at after it. A member in the group at both moments was in it at the
    ``killpg`` (a process cannot leave a group and come back: ``setsid`` is for
    good, and moving back with ``setpgid`` is no thing a job does). Any other
    member gets a signal of its own: at worst a second SIGTERM for a process
    forked in the instant between census and ``killpg``, never none.
    """
    return before == pgid and after == pgid


class TreeKiller:
    """Tears down every process of one job: SIGTERM, a grace period, SIGKILL.

    ``leader`` is the job's process when this hive started it (trio reaps it;
    we never do). ``namespace`` is the init of the job's PID namespace, if it
    has one. ``notify`` receives one human-readable line per step, for the
    job's log.

    How it stays fast without skipping a check:

    - *A job in its own namespace* (the job's leader is this hive's) is
      counted without reading the process table: its members are the leader,
      the processes its cgroup lists (one read) and, when those are not all,
      the init's descendants from the children lists (see
      :meth:`_census_namespace`); each gets its signal through its pidfd, so
      the count of what was signalled is exact without a group strike. The
      verdict is the kernel's: the init has exited, which it does only once
      every process of the namespace is gone, no tracked member lives, the
      leader has exited and the cgroup holds nothing (see
      :meth:`_namespace_vouches`); no scan of ``/proc`` is needed. SIGKILL
      goes to the init first: the kernel kills every process in the
      namespace, whatever it did to hide. A job whose namespace does not
      vouch (blind, or something alive in its cgroup) gets the full scans
      below after all.
    - *The strike* (any other job). While the leader is not reaped (alive or
      a zombie) its pid, which is the job's pgid, cannot be reused, so
      ``killpg`` can only reach the job's own group: one system call signals
      the whole group. It comes right after a census of the members (so that
      every member is counted and attributed while it still exists), before
      pidfds are opened and before anything else is read.
      (``trio.Process.returncode`` would reap the leader; the check reads
      ``/proc`` instead.) A member of the census that the strike reached
      counts as signalled, even if it was gone before it could be looked at
      again.
    - *The walk.* The census and the rescans while members die look only at
      the job's part of the process tree: this process's children (as a
      child subreaper, every orphan of the job is re-parented to us), the
      namespace's init and the cgroup's members, then children of members,
      from ``/proc/PID/task/TID/children``. It costs what the job has, not
      what the machine has.
    - *The verdict* (without a namespace that vouches). A job is declared
      gone only after every tracked member's pidfd said it exited *and* a
      full scan of ``/proc`` by every layer (process group and session,
      environment marker, cgroup, namespace, descendants) finds no live
      member. The walk may miss a process (the children list is inexact
      while a parent reaps, and a marked process outside our tree is not
      under us); the full scan does not, and whatever it finds is signalled
      and waited for in another round.
    - Exits are awaited on pidfds through one epoll set, not one task each.
    - *Exhaustion.* Out of descriptors or memory, ``/proc`` cannot be read nor
      pidfds opened: the teardown then goes on blind with what needs no new
      descriptor (the strike, the init's pidfd held since the job started) and
      says so; without a namespace to vouch, the report is ``verified: false``.
    """

    def __init__(
        self,
        job: JobIdentity,
        *,
        grace: float,
        notify: Callable[[str], None] = lambda _line: None,
        leader: trio.Process | None = None,
        cgroup: JobCgroup | None = None,
        namespace: NamespaceInit | None = None,
        reaper: OrphanReaper | None = None,
        layers: Sequence[str] = (Layer.PROCESS_GROUP, Layer.DESCENDANTS, Layer.ENVIRONMENT),
        limits: Sequence[str] = (),
    ) -> None:
        self._job = job
        self._grace = grace
        self._notify = notify
        self._leader = leader
        self._cgroup = cgroup
        self._namespace = namespace
        self._reaper = reaper
        self._layers = [str(layer) for layer in layers]
        self._limits = list(limits)
        self._marker = job_marker(job.job_id)
        self._tracked: dict[int, _Tracked] = {}
        self._found: list[frozenset[Layer]] = []
        #: Sessions that held a member: session id -> earliest member start time.
        self._sessions: dict[int, int] = {}
        #: Walk the job's part of the tree (else: scan all of /proc every time).
        #: A job this hive did not start (recovery) is not under it.
        self._walk = leader is not None and HAS_CHILDREN_FILE
        #: Whether the verdict holds: the last full scan found nothing alive,
        #: or the job's namespace vouched for it (see :meth:`_namespace_vouches`).
        self._verified = False
        #: Whether the verdict is the namespace's, with no full scan.
        self._vouched = False
        #: Whether the process table was read (the process-group and
        #: environment layers judge from it); a job whose namespace vouched
        #: for it may never need to (see :meth:`_census_namespace`).
        self._scanned = False
        #: Whether the namespace census has run once (see :meth:`_census_namespace`).
        self._counted = False
        #: Why /proc could not be read or a pidfd opened (exhaustion), if so.
        self._blind: str | None = None
        #: Members of a census that the strike reached and that were gone
        #: before they could be tracked: signalled all the same.
        self._struck_gone = 0

    async def teardown(self) -> TeardownReport:
        """Kill everything that is left of the job and verify that nothing is.

        Safe to call when everything has already exited: it then only checks.
        Call it shielded: it must finish even while the job is being cancelled.
        """
        started = time.monotonic()
        report = TeardownReport(layers=list(self._layers), limits=list(self._limits))
        try:
            await self._phase(signal.SIGTERM, trio.current_time() + self._grace, report)
            if self._alive() or self._blind or self._populated() or self._init_running():
                await self._phase(signal.SIGKILL, trio.current_time() + KILL_TIMEOUT, report)
            if not self._verified:
                # The verifying pass: a fresh full scan by every layer, and the pidfds.
                self._poll_exits(report)
                self._discover(full=True)
                self._poll_exits(report)
            left = self._alive(including_failed=True)
            for tracked in left:
                self._count(tracked)
            report.left = len(left)
            report.left_pids = sorted(t.pid for t in left)
            report.errors.extend(t.error or f"pid {t.pid}: still alive after SIGKILL" for t in left)
            if self._cgroup is not None:
                report.cgroup_empty = not self._populated()
            if self._namespace is not None:
                report.namespace_empty = self._namespace.exited()
            if self._blind is not None:
                report.errors.append(self._blind)
                report.verified = bool(report.namespace_empty)
            if self._reaper is not None and not self._vouched:
                # Orphans that exited before we saw them, e.g. the setsid'd
                # middle process of a double fork, are zombies of ours. (In a
                # namespace they are its init's, which reaped them.)
                report.reaped += self._reaper.reap_orphans(self._sessions)
            leader = self._leader
            if leader is not None and leader.pid not in report.left_pids:
                # Reap the leader (through trio, which owns it) so that it is no zombie.
                with trio.move_on_after(KILL_TIMEOUT):
                    await leader.wait()
            if self._namespace is not None:
                # Once the leader is gone the init is ours: leave no zombie.
                self._namespace.reap()
            if not self._scanned:
                # Only the layers that looked are named.
                for layer in (Layer.PROCESS_GROUP, Layer.ENVIRONMENT):
                    if layer in report.layers:
                        report.layers.remove(layer)
        finally:
            for tracked in self._tracked.values():
                if tracked.pidfd >= 0:
                    os.close(tracked.pidfd)
            self._tracked.clear()
        report.count(self._found)
        report.seconds = time.monotonic() - started
        return report

    def _populated(self) -> bool:
        if self._cgroup is None:
            return False
        try:
            return self._cgroup.populated()
        except OSError as exc:
            if not exhausted(exc):
                raise
            return True  # cannot tell: assume the worst, cgroup.kill is cheap

    def _leader_unreaped(self) -> bool:
        """Whether the leader still holds its pid (alive or a zombie), so that
        the job's pgid names the job's group and no other.

        Only trio reaps the leader, in this thread: the answer holds until the
        next ``await``. Out of descriptors, ``waitid(WNOWAIT)`` answers
        without reading ``/proc``: a child of ours with that pid is unreaped.
        """
        leader = self._leader
        if leader is None or self._job.pgid != leader.pid or not self._job.leader_start_time:
            return False
        try:
            stat = read_stat(leader.pid)
        except OSError as exc:
            if not exhausted(exc):
                raise
            try:
                os.waitid(os.P_PID, leader.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return False
            return True
        return stat is not None and stat.start_time == self._job.leader_start_time

    def _strike(self, sig: signal.Signals) -> int | None:
        """``killpg`` the job's group if that is safe; the pgid it was sent to."""
        pgid = self._job.pgid
        if pgid is None or not self._leader_unreaped():
            return None
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return None
        return pgid

    def _init_running(self) -> bool:
        return self._namespace is not None and not self._namespace.exited()

    def _namespace_vouches(self) -> bool:
        """Whether the kernel's word is the verdict, with no scan of ``/proc``.

        The init of the job's namespace has exited, and the kernel lets an
        init exit only once every other process of its namespace is gone; a
        process cannot leave its PID namespace, so everything forked inside
        the job is gone. Outside it, the job has only its leader (which this
        hive started, and which made the namespace): it must have exited too;
        and the cgroup, if the job has one, must hold nothing alive (what else
        could be in it is no process the namespace knows of). Each tracked
        member's pidfd has said it exited before this is asked.
        """
        namespace = self._namespace
        if not self._walk or namespace is None or self._blind or not namespace.exited():
            return False
        leader = self._leader
        if leader is not None:
            try:
                stat = read_stat(leader.pid)
            except OSError as exc:
                if not exhausted(exc):
                    raise
                return False
            if (
                stat is not None
                and not stat.dead
                and stat.start_time == self._job.leader_start_time
            ):
                return False
        return not self._populated()

    def _in_namespace(self, pids: Iterable[int]) -> set[int]:
        namespace = self._namespace
        if namespace is None or namespace.namespace is None:
            return set()
        return {pid for pid in pids if pid_namespace(pid) == namespace.namespace}

    def _scan(
        self, *, full: bool
    ) -> tuple[dict[int, ProcStat], JobIdentity, set[int], set[int], set[int]]:
        """Look for members: the process table (all of it, or the job's part),
        the identity to judge it by, the marked pids, the cgroup's pids and
        those in the job's namespace."""
        self._scanned = True
        in_cgroup = self._cgroup.pids() if self._cgroup is not None else set()
        init = [self._namespace.pid] if self._namespace is not None else []
        if full:
            procs = snapshot()
            if self._job.pgid is not None and not group_exists(procs, self._job.pgid):
                # Empty once means the number may be reused: never look at it again.
                self._job = JobIdentity(
                    self._job.job_id, None, self._job.leader_pid, self._job.leader_start_time
                )
            fresh = [pid for pid in candidates(procs, self._job) if pid not in self._tracked]
            return (
                procs,
                self._job,
                marked_pids(fresh, self._marker),
                in_cgroup,
                self._in_namespace(fresh),
            )
        # The walk judges by process group only while the group is provably the
        # job's; the full scan has its own test (group_exists) for the rest.
        job = self._job
        if job.pgid is not None and not self._leader_unreaped():
            job = JobIdentity(job.job_id, None, job.leader_pid, job.leader_start_time)
        # Everything forked in the namespace descends from its init.
        procs, marked = walk(
            job,
            roots=[*own_children(), *init, *in_cgroup, *self._tracked],
            marker=self._marker,
            in_cgroup=in_cgroup,
            known=[*self._tracked, *init],
        )
        fresh = [pid for pid in procs if pid not in self._tracked]
        return procs, job, marked, in_cgroup, self._in_namespace(fresh)

    def _blinded(self, exc: OSError, strike: signal.Signals | None) -> list[_Tracked]:
        """Out of descriptors or memory while counting: strike blind (if asked
        to strike) and track nothing new. Any other error is raised."""
        if not exhausted(exc):
            raise exc
        self._blind = f"cannot read /proc: {exc.strerror or exc}"
        if strike is not None:
            self._strike(strike)
        return []

    def _discover(self, *, full: bool, strike: signal.Signals | None = None) -> list[_Tracked]:
        """Start tracking members not seen before; return them.

        With ``strike``, the members are counted first and then the group gets
        ``strike`` by ``killpg`` (see :meth:`_strike`) before they are tracked.
        Out of descriptors or memory, it strikes blind and tracks nothing new.

        A job in a namespace of its own is counted by :meth:`_census_namespace`
        instead, unless ``full``.
        """
        if not full and self._walk and self._namespace is not None:
            try:
                return self._census_namespace(self._namespace)
            except OSError as exc:
                return self._blinded(exc, strike)
        try:
            procs, job, marked, in_cgroup, in_namespace = self._scan(full=full)
        except OSError as exc:
            return self._blinded(exc, strike)
        init = [self._namespace.pid] if self._namespace is not None else []
        members = select_members(
            procs,
            job,
            marked=marked,
            in_cgroup=in_cgroup,
            in_namespace=in_namespace,
            known=[*self._tracked, *init],
        )
        # The namespace's init is the hive's, as the hive itself is: it is
        # awaited and killed through its own pidfd, not counted as the job's.
        ours = {os.getpid(), *init}
        fresh = {
            pid: layers
            for pid, layers in members.items()
            if pid not in self._tracked and pid not in ours
        }
        struck = self._strike(strike) if strike is not None else None
        new: list[_Tracked] = []
        for pid, layers in fresh.items():
            self._found.append(layers)
            reached = struck is not None and procs[pid].pgid == struck
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                # Exited and reaped since the scan: the strike may be why.
                self._struck_gone += reached
                continue
            except OSError as exc:
                if not exhausted(exc):
                    raise
                self._blind = f"cannot open a pidfd: {exc.strerror or exc}"
                continue
            # The pid might have been recycled between the scan and the open: if
            # the process is still the one scanned, the pidfd names it.
            try:
                stat = read_stat(pid)
            except OSError as exc:
                os.close(pidfd)
                if not exhausted(exc):
                    raise
                self._blind = f"cannot read /proc: {exc.strerror or exc}"
                continue
            if stat is None or stat.start_time != procs[pid].start_time:
                os.close(pidfd)
                self._struck_gone += reached
                continue
            tracked = _Tracked(pid, pidfd, layers, pgid_after=stat.pgid)
            if struck is not None:
                tracked.pgid_before = procs[pid].pgid
                if reached_by_strike(struck, tracked.pgid_before, tracked.pgid_after):
                    tracked.struck_by = strike
                elif reached and stat.dead:
                    # In the group at the strike, and a zombie right after it.
                    tracked.struck_by = strike
            self._tracked[pid] = tracked
            first = self._sessions.get(stat.sid, stat.start_time)
            self._sessions[stat.sid] = min(first, stat.start_time)
            new.append(tracked)
        return new

    def _census_namespace(self, namespace: NamespaceInit) -> list[_Tracked]:
        """Track the job's processes that are not tracked yet, without reading
        the process table; return them.

        Everything forked in the job's namespace descends from its init (an
        orphan is re-parented to the init or to a subreaper below it), and a
        process cannot leave its namespace; outside it the job has only its
        leader. So the members are: the leader; the processes of the job's
        cgroup, which one read lists (the first census, with a cgroup, stops
        there: a process that left the cgroup keeps the init running, and the
        next look finds it); and the init's descendants, found from the init
        down by the children lists, one read per process. No ``stat`` and no
        environment is read: the members are signalled by their pidfds, with
        no group strike to account for.

        Naming: a pid of the cgroup's list names a member if it is listed
        again once its pidfd is open (the cgroup's accounting for a pid only
        lists a process of the job, recycled or not); a pid of a children
        list, if once its pidfd is open it is in the job's namespace and
        alive (a live process keeps its pid). A list read while its parent
        reaps may miss a child: the caller looks again while the init runs,
        and the init's exit is the verdict (see :meth:`_namespace_vouches`).
        """
        new: list[_Tracked] = []

        def track(pid: int, pidfd: int, layers: frozenset[Layer]) -> None:
            if namespace.namespace is not None and pid_namespace(pid) == namespace.namespace:
                layers |= {Layer.NAMESPACE}
            tracked = _Tracked(pid, pidfd, layers, counted=False)  # see _signal
            self._tracked[pid] = tracked
            new.append(tracked)

        def open_pidfd(pid: int) -> int | None:
            try:
                return os.pidfd_open(pid)
            except ProcessLookupError:
                return None

        leader = self._leader
        if (
            leader is not None
            and leader.pid not in self._tracked
            and self._leader_unreaped()  # so its pid names it (not in the namespace it made)
            and (pidfd := open_pidfd(leader.pid)) is not None
        ):
            track(leader.pid, pidfd, frozenset())
        cgroup = self._cgroup
        if cgroup is not None:
            opened: dict[int, int] = {}
            try:
                # The init is the hive's, as the hive itself is: awaited and
                # killed through its own pidfd, not counted as the job's.
                for pid in cgroup.pids() - self._tracked.keys() - {namespace.pid}:
                    if (pidfd := open_pidfd(pid)) is not None:
                        opened[pid] = pidfd
                listed = cgroup.pids() if opened else set()
            except BaseException:  # out of descriptors, say: none of them is kept
                for pidfd in opened.values():
                    os.close(pidfd)
                raise
            for pid, pidfd in opened.items():
                if pid in listed:
                    track(pid, pidfd, frozenset({Layer.CGROUP}))
                else:
                    os.close(pidfd)
            if not self._counted:
                self._counted = True
                return new
        self._counted = True
        in_cgroup = cgroup.pids() if cgroup is not None else set()
        descendant = frozenset({Layer.DESCENDANTS})
        seen = {namespace.pid}
        stack = [namespace.pid]
        while stack:
            for pid in children_of(stack.pop()):
                if pid in seen:
                    continue
                seen.add(pid)
                stack.append(pid)
                if pid in self._tracked:
                    continue
                pidfd = open_pidfd(pid)
                if pidfd is None:
                    continue
                if pid_namespace(pid) != namespace.namespace or _exited(pidfd):
                    os.close(pidfd)
                    continue
                track(pid, pidfd, descendant | ({Layer.CGROUP} if pid in in_cgroup else set()))
        return new

    def _alive(self, *, including_failed: bool = False) -> list[_Tracked]:
        return [
            t
            for t in self._tracked.values()
            if not t.exited and (including_failed or t.error is None)
        ]

    def _signal(self, sig: signal.Signals, report: TeardownReport) -> int:
        """Send ``sig`` to every live member that has not had it; return how many
        got it (from the strike, the namespace's init or from us)."""
        sent, self._struck_gone = self._struck_gone, 0
        namespace = self._namespace
        kill_namespace = sig == signal.SIGKILL and not report.namespace_kill
        # The kernel's own teardown: every process of the namespace.
        if kill_namespace and namespace is not None and namespace.kill():
            report.namespace_kill = True
            self._notify(f"killed the PID namespace of job {self._job.job_id} (its init)")
            for tracked in self._alive():
                if Layer.NAMESPACE in tracked.layers:
                    tracked.struck_by = sig
        for tracked in self._alive():
            if sig in tracked.signals:
                continue
            tracked.signals.add(sig)
            if tracked.struck_by != sig:
                try:
                    signal.pidfd_send_signal(tracked.pidfd, sig)
                except ProcessLookupError:
                    tracked.exited = True
                    continue
                except PermissionError:
                    tracked.error = f"pid {tracked.pid}: {sig.name} not permitted"
                    self._count(tracked)
                    continue
            self._count(tracked)
            sent += 1
        if sig == signal.SIGKILL:
            report.sigkill += sent
        else:
            report.sigterm += sent
        if sig == signal.SIGKILL and self._cgroup is not None and self._populated():
            # Catches, in one step, whatever was forked since the last scan.
            try:
                self._cgroup.kill()
            except OSError as exc:
                if not exhausted(exc):
                    raise
                report.errors.append(f"cgroup.kill: {exc.strerror or exc}")
                return sent
            if not report.cgroup_kill:
                self._notify(f"killed what is left in cgroup {self._cgroup.path}")
            report.cgroup_kill = True
        return sent

    def _count(self, tracked: _Tracked) -> None:
        if not tracked.counted:
            tracked.counted = True
            self._found.append(tracked.layers)

    def _poll_exits(self, report: TeardownReport) -> None:
        """Mark the tracked processes whose pidfd says they exited; reap and forget them."""
        by_fd = {tracked.pidfd: tracked for tracked in self._tracked.values()}
        poller = select.poll()
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        for fd, _events in poller.poll(0):
            by_fd[fd].exited = True
        for pid, tracked in list(self._tracked.items()):
            if not tracked.exited:
                continue
            if self._leader is None or pid != self._leader.pid:
                report.reaped += reap(tracked.pidfd)
            os.close(tracked.pidfd)
            del self._tracked[pid]

    async def _phase(self, sig: signal.Signals, deadline: float, report: TeardownReport) -> None:
        """Send ``sig`` to every member, including any that appear, until all
        have exited or ``deadline`` passes.

        Ends early only on the verdict: every tracked member exited, and then a
        full scan found no live member that was not tracked (the orphans we
        inherited are reaped first, so that the scan has fewer zombies to
        read). While members live, rescans walk the job's tree. Blind (see
        :meth:`_discover`), it ends early only when the namespace's init has
        exited; otherwise it looks again every rescan interval until the
        deadline, in case descriptors come back.

        The job's log gets one line for the first round of signals and one for
        all the processes that appeared later (a loop that keeps forking would
        otherwise write a line every rescan).
        """
        self._verified = self._vouched = False
        self._blind = None
        self._discover(full=not self._walk, strike=sig)
        first = self._signal(sig, report)
        if first:
            self._notify(f"sent {sig.name} to {first} process(es) of job {self._job.job_id}")
        late = 0
        try:
            while True:
                if self._alive() or self._blind or self._init_running():
                    if trio.current_time() >= deadline:
                        return
                    with trio.move_on_at(min(deadline, trio.current_time() + RESCAN_INTERVAL)):
                        await self._wait_exits()
                self._poll_exits(report)
                if self._blind and self._namespace is not None and self._namespace.exited():
                    return
                if self._alive() or self._init_running():
                    # A member outlived the rescan interval, or the init has a
                    # child we do not know of: look for new ones. (The init
                    # exits once it has no child left: that is the verdict.)
                    self._discover(full=not self._walk)
                elif self._namespace_vouches():
                    self._verified = self._vouched = True
                    return
                else:
                    if self._reaper is not None:
                        report.reaped += self._reaper.reap_orphans(self._sessions)
                    self._blind = None
                    if not self._discover(full=True) and not self._blind:
                        self._verified = True
                        return
                late += self._signal(sig, report)
        finally:
            if late:
                self._notify(
                    f"sent {sig.name} to {late} more process(es) of job {self._job.job_id} "
                    "that appeared during the teardown"
                )

    async def _wait_exits(self) -> None:
        """Return once every live tracked member has exited (its pidfd is readable).

        One epoll set holds the pidfds and trio waits on that one descriptor:
        a task and an epoll registration per member cost more than the wait.
        Out of descriptors for the epoll set, ``poll`` (which needs none) is
        asked every few milliseconds instead.
        """
        pending = {tracked.pidfd for tracked in self._alive()}
        if self._init_running():
            assert self._namespace is not None
            pending.add(self._namespace.pidfd)
        try:
            ready = select.epoll()
        except OSError as exc:
            if not exhausted(exc):
                raise
            await self._poll_until_exited(pending)
            return
        with ready:
            for fd in pending:
                ready.register(fd, select.EPOLLIN)
            while pending:
                await trio.lowlevel.wait_readable(ready)
                for fd, _events in ready.poll(0):
                    ready.unregister(fd)
                    pending.discard(fd)

    @staticmethod
    async def _poll_until_exited(pending: set[int]) -> None:
        poller = select.poll()
        for fd in pending:
            poller.register(fd, select.POLLIN)
        while pending:
            for fd, _events in poller.poll(0):
                poller.unregister(fd)
                pending.discard(fd)
            if pending:
                await trio.sleep(0.005)


def walk(
    job: JobIdentity,
    *,
    roots: Iterable[int],
    marker: bytes,
    in_cgroup: Collection[int] = (),
    known: Collection[int] = (),
    stat_of: Callable[[int], ProcStat | None] = read_stat,
    children: Callable[[int, ProcStat], list[int]] = children_of,
    has_marker: Callable[[int, bytes], bool] = has_marker,
) -> tuple[dict[int, ProcStat], set[int]]:
    """The job's part of the process tree: ``roots`` and, below any that is a
    member, their children, recursively; with the marked pids among them.

    Returns what :func:`select_members` needs, so that the walk judges by
    exactly the rules of a full scan (its result is a subset of a full scan's).
    A root that is no member (another job's leader, a helper) is read, not
    descended into. The environment is read only of live processes young
    enough to be members, as in a full scan.

    Why these roots find a job's members (when this process is a child
    subreaper, and started the leader): a process forked inside the job
    descends from the leader; when its parent dies it is re-parented to the
    nearest subreaper above, which is a member or this process; so while it
    lives, its chain of parents up to us is unbroken and every link is alive
    (a process that exits hands its children on before it becomes a zombie).
    The chain's first link below us is a root; unless that link hid from
    every layer (the stated limit of a job without a cgroup), it is a member
    and the walk follows the chain down. What a walk can still miss (a child
    list read while its parent reaps, a marked process outside our tree) is
    left to the full scan that gives the verdict.
    """
    procs: dict[int, ProcStat] = {}
    marked: set[int] = set()
    expanded: set[int] = set()
    gone: set[int] = set()
    stack = [(pid, False) for pid in roots]
    while stack:
        pid, parent_is_member = stack.pop()
        if pid in expanded or pid in gone:
            continue
        stat = procs.get(pid)
        if stat is None:
            stat = stat_of(pid)
            if stat is None:
                gone.add(pid)
                continue
            procs[pid] = stat
            if may_be_member(stat, job) and has_marker(pid, marker):
                marked.add(pid)
        member = (
            parent_is_member
            or pid in marked
            or pid in in_cgroup
            or pid in known
            or in_job_group(stat, job)
        )
        if member and not stat.dead:
            expanded.add(pid)
            stack.extend((child, True) for child in children(pid, stat))
    return procs, marked
