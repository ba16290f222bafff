"""How thoroughly this machine lets the hive contain a job, and the per-job glue.

:func:`open_containment` sets up every teardown layer the machine allows (the
subreaper, a PID namespace and a cgroup per job, restart records), kills what a
previous hive left behind, and runs the reaper while the hive runs.
:class:`JobTree` is one job's share: it starts the job's leader inside the
job's cgroup and namespace (as the build user), records it, and tears the job
down with every layer, then releases the cgroup and the record.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio

from . import cgroups as cgroup_support
from .cgroups import HiveCgroups, JobCgroup
from .jobsandbox import BuildUser, JobSandbox, probe_namespace
from .procfs import JOB_ID_VARIABLE, read_stat
from .proctree import JobIdentity, Layer, NamespaceInit, TeardownReport, TreeKiller, spawn
from .reaper import Reaper, become_subreaper
from .recovery import RecoveredJob, RunningRecord, RunningRecords, recover

log = logging.getLogger("hive")

PIDFD = "pidfd"
SUBREAPER = "subreaper"
RECOVERY = "restart-recovery"

#: Always there: /proc and pidfds are all they need.
BASE_LAYERS: tuple[str, ...] = (
    Layer.PROCESS_GROUP,
    Layer.DESCENDANTS,
    Layer.ENVIRONMENT,
    PIDFD,
)

NO_CGROUP_LIMIT = (
    "no cgroup: a process that clears its environment and leaves the job's session "
    "and process tree (e.g. `env -i setsid` after a double fork) cannot be found"
)

NO_NAMESPACE_LIMIT = (
    "no PID namespace: 'nothing left' rests on scans of /proc, not on the kernel's word"
)

NO_PIDS_LIMIT = "no pids controller and no user of its own: a fork bomb is bounded by the machine"

#: How long the leader may take to name its namespace's init.
INIT_PID_TIMEOUT = 10.0


@dataclass
class Containment:
    """The teardown layers in use, and what the hive needs to apply them."""

    layers: list[str] = field(default_factory=lambda: [str(layer) for layer in BASE_LAYERS])
    limits: list[str] = field(default_factory=lambda: [NO_CGROUP_LIMIT])
    cgroups: HiveCgroups | None = None
    records: RunningRecords | None = None
    reaper: Reaper | None = None
    #: Jobs a previous hive left running, torn down at start-up.
    recovered: list[RecoveredJob] = field(default_factory=list)
    #: How recipe code is started: namespace, build user, RLIMIT_NPROC.
    sandbox: JobSandbox = field(default_factory=JobSandbox)

    def open(self, job_id: str) -> JobTree:
        return JobTree(self, job_id)


class JobTree:
    """One job's containment: :meth:`spawn` once, then :meth:`teardown` once,
    then :meth:`release` (which the job may run alongside its own last steps)."""

    def __init__(self, containment: Containment, job_id: str) -> None:
        self._containment = containment
        self._job_id = job_id
        self._cgroup: JobCgroup | None = None
        self._process: trio.Process | None = None
        self._identity = JobIdentity(job_id, None, None, 0)
        self._namespace: NamespaceInit | None = None
        self._report: TeardownReport | None = None

    async def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None
    ) -> trio.Process:
        """Start the job's leader (a new session, ``HIVE_JOB_ID`` in its environment)
        inside the job's cgroup, and record it.

        The record is written first, so that a hive killed at any moment
        leaves enough behind for the next one to find the job's processes.
        """
        c = self._containment
        record = RunningRecord.start(self._job_id)
        try:
            if c.cgroups is not None:
                self._cgroup = c.cgroups.job(self._job_id)
                record = replace(record, cgroup=str(self._cgroup.path))
            if c.records is not None:
                c.records.write(record)
            if self._cgroup is not None:
                self._cgroup.create()
            pid_read, pid_write = os.pipe() if c.sandbox.namespace else (-1, -1)
            try:
                argv = c.sandbox.wrap(list(argv), pid_fd=pid_write if pid_write >= 0 else None)
                if self._cgroup is not None:
                    argv = self._cgroup.enter_argv(argv)
                process = await self._start(
                    argv,
                    env={**env, JOB_ID_VARIABLE: self._job_id},
                    cwd=cwd,
                    pass_fds=[pid_write] if pid_write >= 0 else [],
                )
            finally:
                if pid_write >= 0:
                    os.close(pid_write)
        except BaseException:
            if pid_read >= 0:
                os.close(pid_read)
            self._release(None)
            raise
        self._process = process
        # The leader cannot be reaped before trio waits for it: its stat is there.
        stat = read_stat(process.pid)
        self._identity = JobIdentity(
            self._job_id, process.pid, process.pid, stat.start_time if stat else 0
        )
        if pid_read >= 0:
            # Shielded: once the leader runs, the job must learn its init even
            # if it is cancelled meanwhile, or nothing would tear the job down.
            with trio.CancelScope(shield=True):
                init_pid = await _read_init_pid(pid_read)
            if init_pid is not None:
                self._namespace = NamespaceInit.open(
                    init_pid, not_before=self._identity.leader_start_time
                )
        init = self._namespace
        if c.records is not None:
            c.records.write(
                replace(
                    record,
                    pgid=process.pid,
                    leader_pid=process.pid,
                    leader_start_time=self._identity.leader_start_time,
                    init_pid=init.pid if init else None,
                    init_start_time=init.start_time if init else 0,
                )
            )
        return process

    async def _start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None,
        pass_fds: Sequence[int],
    ) -> trio.Process:
        reaper = self._containment.reaper
        if reaper is None:
            return await spawn(argv, env=env, cwd=cwd, pass_fds=pass_fds)
        with reaper.spawning():
            process = await spawn(argv, env=env, cwd=cwd, pass_fds=pass_fds)
            reaper.own(process.pid)
        return process

    async def teardown(
        self, *, grace: float, notify: Callable[[str], None] = lambda _line: None
    ) -> TeardownReport:
        """Kill and verify with every layer, and read the job's usage from its
        cgroup; :meth:`release` then removes the cgroup and the record."""
        c = self._containment
        killer = TreeKiller(
            self._identity,
            grace=grace,
            notify=notify,
            leader=self._process,
            cgroup=self._cgroup,
            namespace=self._namespace,
            reaper=c.reaper,
            layers=self._layers(),
            limits=c.limits,
        )
        try:
            report = await killer.teardown()
        finally:
            if self._namespace is not None:
                self._namespace.close()
        if self._cgroup is not None:
            report.usage = self._cgroup.usage()
        self._report = report
        return report

    async def release(self) -> None:
        """After :meth:`teardown`: remove the (empty) cgroup and the running
        record, in a thread (removing a cgroup takes the kernel milliseconds);
        a problem lands in the report's errors. Nothing to do if the job never
        ran, or its teardown was not clean (the next hive tries again)."""
        report, self._report = self._report, None
        if report is None:
            return
        try:
            await trio.to_thread.run_sync(self._release, report)
        except OSError as exc:  # the job still ends, and its report says so
            report.errors.append(f"cannot release the job's cgroup or record: {exc}")

    def _layers(self) -> list[str]:
        """The containment's layers; the namespace only if this job got one."""
        layers = list(self._containment.layers)
        if self._namespace is None and Layer.NAMESPACE in layers:
            layers.remove(Layer.NAMESPACE)
        return layers

    def _release(self, report: TeardownReport | None) -> None:
        c = self._containment
        if self._cgroup is not None and (report is None or report.clean):
            error = self._cgroup.remove()
            if error and report is not None:
                report.errors.append(error)
        if c.records is not None and (report is None or report.clean):
            # An unclean teardown keeps its record: the next hive tries again.
            c.records.remove(self._job_id)
        if c.reaper is not None and self._process is not None:
            c.reaper.disown(self._process.pid)


async def _read_init_pid(fd: int) -> int | None:
    """The pid of the namespace's init, as :mod:`hive.jobinit` writes it to ``fd``
    (which this closes); None if the leader could not make the namespace."""
    data = b""
    async with trio.lowlevel.FdStream(fd) as stream:
        with trio.move_on_after(INIT_PID_TIMEOUT):
            while chunk := await stream.receive_some(64):
                data += chunk
    text = data.decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


@asynccontextmanager
async def open_containment(
    state_dir: Path,
    *,
    grace: float,
    build_user: BuildUser | None = None,
    max_pids: int | None = cgroup_support.DEFAULT_MAX_PIDS,
    max_memory: int | None = None,
) -> AsyncIterator[Containment]:
    """Every layer the machine allows, for as long as the hive runs.

    ``build_user`` runs recipe code when the hive is root (see
    :mod:`hive.jobsandbox`); ``max_pids`` and ``max_memory`` limit each job
    through its cgroup, and ``max_pids`` becomes the build's ``RLIMIT_NPROC``
    where no pids controller is writable.

    Before it yields, what a previous hive on ``state_dir`` left running has
    been torn down (see :attr:`Containment.recovered`).
    """
    layers = [str(layer) for layer in BASE_LAYERS]
    # Before the hive becomes a subreaper: the probe's init is no job's, and
    # would be left a zombie of ours.
    namespace, namespace_note = await trio.to_thread.run_sync(probe_namespace)
    subreaper = become_subreaper()
    if subreaper:
        layers.append(SUBREAPER)
    limits: list[str] = []
    if namespace:
        layers.append(Layer.NAMESPACE)
    else:
        limits.append(NO_NAMESPACE_LIMIT)
    cgroups, cgroup_note = await cgroup_support.detect(
        state_dir, max_pids=max_pids, max_memory=max_memory
    )
    if cgroups is not None:
        layers.append(Layer.CGROUP)
    else:
        limits.append(NO_CGROUP_LIMIT)
    layers.append(RECOVERY)
    pids_limited = cgroups is not None and cgroups.has(cgroup_support.PIDS)
    user = build_user if os.geteuid() == 0 else None
    # RLIMIT_NPROC counts every process of the build's user: a bound per job
    # only for a user of its own (the build user) or in a user namespace of
    # its own (counted per namespace); a hive's own user has other processes.
    nproc_per_job = user is not None or (namespace and os.geteuid() != 0)
    if not pids_limited and not nproc_per_job:
        limits.append(NO_PIDS_LIMIT)
    sandbox = JobSandbox(
        namespace=namespace,
        user=user,
        nproc=max_pids if not pids_limited and nproc_per_job else None,
    )
    log.info(
        "teardown: %s; namespaces: %s; cgroups: %s; recipe code runs as %s%s%s",
        "subreaper" if subreaper else "no subreaper (prctl refused)",
        namespace_note,
        cgroup_note,
        sandbox.user.name if sandbox.user else "the hive's own user",
        f", RLIMIT_NPROC {sandbox.nproc}" if sandbox.nproc else "",
        "".join(f"; limit: {limit}" for limit in limits),
    )
    records = RunningRecords(state_dir / "running")
    recovered = await recover(records, cgroups, grace=grace, layers=layers, limits=limits)
    reaper = Reaper(cgroups) if subreaper else None
    containment = Containment(layers, limits, cgroups, records, reaper, recovered, sandbox)
    try:
        async with trio.open_nursery() as nursery:
            if reaper is not None:
                await nursery.start(reaper.run)
            try:
                yield containment
            finally:
                nursery.cancel_scope.cancel()
    finally:
        if cgroups is not None:
            cgroups.remove()
