"""How thoroughly this machine lets the hive contain a job, and the per-job glue.

:func:`open_containment` sets up every teardown layer the machine allows (the
subreaper, a cgroup per job, restart records), kills what a previous hive left
behind, and runs the reaper while the hive runs. :class:`JobTree` is one job's
share: it starts the job's leader inside the job's cgroup, records it, and
tears the job down with every layer, then releases the cgroup and the record.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio

from . import cgroups as cgroup_support
from .cgroups import HiveCgroups, JobCgroup
from .procfs import JOB_ID_VARIABLE, read_stat
from .proctree import JobIdentity, Layer, TeardownReport, TreeKiller, spawn
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

    def open(self, job_id: str) -> JobTree:
        return JobTree(self, job_id)


class JobTree:
    """One job's containment: :meth:`spawn` once, then :meth:`teardown` once."""

    def __init__(self, containment: Containment, job_id: str) -> None:
        self._containment = containment
        self._job_id = job_id
        self._cgroup: JobCgroup | None = None
        self._process: trio.Process | None = None
        self._identity = JobIdentity(job_id, None, None, 0)

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
                argv = self._cgroup.enter_argv(argv)
            process = await self._start(argv, env={**env, JOB_ID_VARIABLE: self._job_id}, cwd=cwd)
        except BaseException:
            self._release(None)
            raise
        self._process = process
        # The leader cannot be reaped before trio waits for it: its stat is there.
        stat = read_stat(process.pid)
        self._identity = JobIdentity(
            self._job_id, process.pid, process.pid, stat.start_time if stat else 0
        )
        if c.records is not None:
            c.records.write(
                replace(
                    record,
                    pgid=process.pid,
                    leader_pid=process.pid,
                    leader_start_time=self._identity.leader_start_time,
                )
            )
        return process

    async def _start(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None
    ) -> trio.Process:
        reaper = self._containment.reaper
        if reaper is None:
            return await spawn(argv, env=env, cwd=cwd)
        with reaper.spawning():
            process = await spawn(argv, env=env, cwd=cwd)
            reaper.own(process.pid)
        return process

    async def teardown(
        self, *, grace: float, notify: Callable[[str], None] = lambda _line: None
    ) -> TeardownReport:
        """Kill and verify with every layer; then release the cgroup and the record."""
        c = self._containment
        killer = TreeKiller(
            self._identity,
            grace=grace,
            notify=notify,
            leader=self._process,
            cgroup=self._cgroup,
            reaper=c.reaper,
            layers=c.layers,
            limits=c.limits,
        )
        report = await killer.teardown()
        self._release(report)
        return report

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


@asynccontextmanager
async def open_containment(state_dir: Path, *, grace: float) -> AsyncIterator[Containment]:
    """Every layer the machine allows, for as long as the hive runs.

    Before it yields, what a previous hive on ``state_dir`` left running has
    been torn down (see :attr:`Containment.recovered`).
    """
    layers = [str(layer) for layer in BASE_LAYERS]
    subreaper = become_subreaper()
    if subreaper:
        layers.append(SUBREAPER)
    cgroups, cgroup_note = await cgroup_support.detect(state_dir)
    limits: list[str] = []
    if cgroups is not None:
        layers.append(Layer.CGROUP)
    else:
        limits.append(NO_CGROUP_LIMIT)
    layers.append(RECOVERY)
    log.info(
        "teardown: %s; cgroups: %s%s",
        "subreaper" if subreaper else "no subreaper (prctl refused)",
        cgroup_note,
        "".join(f"; limit: {limit}" for limit in limits),
    )
    records = RunningRecords(state_dir / "running")
    recovered = await recover(records, cgroups, grace=grace, layers=layers, limits=limits)
    reaper = Reaper(cgroups) if subreaper else None
    containment = Containment(layers, limits, cgroups, records, reaper, recovered)
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
