"""Restart recovery: everything a dead hive left — processes, records, logs.

**Processes.**
While a job runs, ``<state>/running/<job id>.json`` records how to find its
processes: the job id (the ``HIVE_JOB_ID`` marker), its cgroup, its process
group and the start time of its leader. The record is written before the
leader starts (then completed with the leader's pid) and removed after the
teardown. If the hive dies (SIGKILL, a crash), the records stay; the next
``hive serve`` on the same state dir tears each recorded job down before it
serves, and reports those jobs as interrupted.

A process group is trusted only with proof that it is still the job's: a pgid
is a pid, and pids are reused. The proof is the leader itself (same pid, same
start time), or a member of the group that carries the job's marker or sits in
the job's cgroup. Without proof, the other layers still apply.

**Records and logs.** A job that was not final when its hive stopped becomes
``interrupted``; its log gets the events a follower needs to reach ``end``
(:func:`settle_jobs`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import trio

from .cgroups import HiveCgroups, JobCgroup
from .logfile import LogCorrupt, end_event, log_path, settle_log
from .procfs import ProcStat, job_marker, marked_pids, read_stat, snapshot
from .proctree import JobIdentity, NamespaceInit, TeardownReport, TreeKiller, candidates
from .store import JobRecord, JobState, JobStore, now

log = logging.getLogger("hive.recovery")

#: Why a job that was running when the previous hive stopped is ``interrupted``.
INTERRUPTED_REASON = "hive stopped while the job was running"

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    """Names this boot: start times and pids from another boot mean nothing."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class RunningRecord:
    """How to find a running job's processes, should the hive die."""

    job_id: str
    boot_id: str
    hive_pid: int
    hive_start_time: int = 0
    cgroup: str | None = None
    pgid: int | None = None
    leader_pid: int | None = None
    leader_start_time: int = 0
    #: The init of the job's PID namespace: killing it kills the whole job.
    init_pid: int | None = None
    init_start_time: int = 0

    @classmethod
    def start(cls, job_id: str) -> RunningRecord:
        """A record of ``job_id`` that names this hive (and this boot)."""
        own = read_stat(os.getpid())
        return cls(job_id, boot_id(), os.getpid(), own.start_time if own else 0)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> RunningRecord:
        """Parse a record; ValueError if it is not one."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        try:
            record = cls(**data)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        if not (isinstance(record.job_id, str) and record.job_id.isalnum()):
            raise ValueError("bad job_id")
        if not isinstance(record.boot_id, str):
            raise ValueError("bad boot_id")
        if not (isinstance(record.hive_pid, int) and isinstance(record.hive_start_time, int)):
            raise ValueError("bad hive_pid or hive_start_time")
        if record.cgroup is not None and not isinstance(record.cgroup, str):
            raise ValueError("bad cgroup")
        for name in ("pgid", "leader_pid", "init_pid"):
            value = getattr(record, name)
            if value is not None and not (isinstance(value, int) and value > 1):
                raise ValueError(f"bad {name}")
        if not isinstance(record.leader_start_time, int):
            raise ValueError("bad leader_start_time")
        if not isinstance(record.init_start_time, int):
            raise ValueError("bad init_start_time")
        return record


class RunningRecords:
    """The ``running/`` directory: one record per job that has processes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, job_id: str) -> Path:
        return self.directory / f"{job_id}.json"

    def write(self, record: RunningRecord) -> None:
        """Write atomically: a reader sees the old record or the new, never half."""
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(record.job_id)
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(record.to_json()) + "\n")
        os.replace(temporary, target)

    def remove(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(job_id).unlink()

    def load(self) -> list[RunningRecord]:
        """Every readable record; unreadable ones are logged and removed."""
        records: list[RunningRecord] = []
        if not self.directory.is_dir():
            return records
        for path in sorted(self.directory.glob("*.json")):
            try:
                records.append(RunningRecord.from_json(json.loads(path.read_text())))
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable record %s: %s", path, exc)
                path.unlink(missing_ok=True)
        for stale in self.directory.glob("*.tmp"):
            stale.unlink(missing_ok=True)
        return records


@dataclass
class RecoveredJob:
    """A job a previous hive left behind, and the teardown of what was left of it."""

    job_id: str
    report: TeardownReport
    #: None when only a leftover cgroup told of the job.
    record: RunningRecord | None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        r = self.report
        text = (
            f"recovered job {self.job_id} left by a previous hive: {r.found} process(es) found, "
            f"{r.sigterm} SIGTERM, {r.sigkill} SIGKILL, {r.left} left, "
            f"{r.seconds * 1000:.0f} ms"
        )
        extra = [*self.notes, *([r.problem] if r.problem else [])]
        return text + "".join(f"; {note}" for note in extra)


def hive_still_runs(record: RunningRecord) -> bool:
    """Whether the hive that wrote ``record`` is alive (another hive on the same
    state dir, a mistake): its jobs are then its own to tear down, not ours."""
    if record.hive_pid == os.getpid():
        return False
    stat = read_stat(record.hive_pid)
    return stat is not None and not stat.dead and stat.start_time == record.hive_start_time


def trusted_pgid(
    record: RunningRecord, procs: Mapping[int, ProcStat], vouched: Collection[int]
) -> int | None:
    """The record's process group if there is proof it is still the job's, else None."""
    pgid = record.pgid
    if pgid is None:
        return None
    leader = procs.get(record.leader_pid) if record.leader_pid is not None else None
    if leader is not None and leader.start_time == record.leader_start_time:
        return pgid
    in_group = (p for p, s in procs.items() if s.pgid == pgid or s.sid == pgid)
    return pgid if any(pid in vouched for pid in in_group) else None


def _identity(record: RunningRecord, cgroup: JobCgroup | None) -> JobIdentity:
    unproven = JobIdentity(record.job_id, None, record.leader_pid, record.leader_start_time)
    procs = snapshot()
    vouched = marked_pids(candidates(procs, unproven), job_marker(record.job_id))
    if cgroup is not None:
        vouched |= cgroup.pids()
    return JobIdentity(
        record.job_id,
        trusted_pgid(record, procs, vouched),
        record.leader_pid,
        record.leader_start_time,
    )


def _namespace_for(record: RunningRecord | None) -> NamespaceInit | None:
    """The init of the job's namespace, if the record names one that still runs
    (same pid, same start time)."""
    if record is None or record.init_pid is None:
        return None
    init = NamespaceInit.open(record.init_pid, not_before=record.init_start_time)
    if init is not None and init.start_time != record.init_start_time:
        init.close()
        return None
    return init


def _cgroup_for(record: RunningRecord, cgroups: HiveCgroups | None) -> JobCgroup | None:
    """The job's cgroup, if the record names one that is still a cgroup."""
    if record.cgroup is None:
        return None
    if cgroups is not None:
        ours = cgroups.job(record.job_id)
        if str(ours.path) == record.cgroup:
            return ours
    path = Path(record.cgroup)
    # Only a real cgroup directory: the record must not make us write elsewhere.
    return JobCgroup(path) if (path / "cgroup.procs").is_file() else None


async def recover(
    records: RunningRecords,
    cgroups: HiveCgroups | None,
    *,
    grace: float,
    layers: Sequence[str],
    limits: Sequence[str] = (),
) -> list[RecoveredJob]:
    """Tear down every job a previous hive left running; one log line per job.

    All jobs are torn down at once, so start-up waits at most one grace period.
    """
    current_boot = boot_id()
    recovered: list[RecoveredJob] = []
    work: list[tuple[RecoveredJob, JobIdentity, JobCgroup | None]] = []
    theirs: set[str] = set()
    for record in records.load():
        if record.boot_id == current_boot and hive_still_runs(record):
            log.warning(
                "job %s belongs to hive pid %d, which still runs on this state dir: left alone",
                record.job_id,
                record.hive_pid,
            )
            theirs.add(record.job_id)
            continue
        job = RecoveredJob(record.job_id, TeardownReport(layers=list(layers)), record)
        recovered.append(job)
        if record.boot_id != current_boot:
            job.notes.append("recorded in an earlier boot: nothing of it can still run")
            continue
        cgroup = _cgroup_for(record, cgroups)
        work.append((job, _identity(record, cgroup), cgroup))
    if cgroups is not None:
        recorded = theirs | {job.job_id for job in recovered}
        for job_id, cgroup in cgroups.jobs().items():
            if job_id not in recorded:
                job = RecoveredJob(job_id, TeardownReport(layers=list(layers)), None)
                job.notes.append(f"found only as a leftover cgroup {cgroup.path}")
                recovered.append(job)
                work.append((job, JobIdentity(job_id, None, None, 0), cgroup))

    async def tear_down(job: RecoveredJob, identity: JobIdentity, cgroup: JobCgroup | None) -> None:
        namespace = _namespace_for(job.record)
        killer = TreeKiller(
            identity,
            grace=grace,
            notify=lambda line: log.info("recovering job %s: %s", job.job_id, line),
            cgroup=cgroup,
            namespace=namespace,
            layers=layers,
            limits=limits,
        )
        try:
            job.report = await killer.teardown()
        finally:
            if namespace is not None:
                namespace.close()
        if job.report.clean and cgroup is not None and (error := cgroup.remove()):
            job.notes.append(error)

    async with trio.open_nursery() as nursery:
        for job, identity, cgroup in work:
            nursery.start_soon(tear_down, job, identity, cgroup)
    for job in recovered:
        if job.report.clean:
            # Otherwise the record stays, and the next start tries again.
            records.remove(job.job_id)
        log.info("%s", job.describe())
    return recovered


@dataclass
class SettledJobs:
    """The job records after :func:`settle_jobs`."""

    #: Every record in the store, as it is now.
    records: list[JobRecord]
    #: Those of them the previous hive interrupted; they still carry its ``pid``.
    interrupted: list[JobRecord]


async def settle_jobs(
    store: JobStore, log_dir: Path, reason: str = INTERRUPTED_REASON
) -> SettledJobs:
    """Close the books a previous hive left open; load every record once.

    Jobs that were not final when that hive stopped become ``interrupted`` with
    ``reason``, and their logs get the events a follower needs to reach ``end``
    (a torn last record is cut off first). If a log already ends with ``end``,
    the job did end and only its record was not saved: the record takes the
    state from that event. Ended jobs whose log was not completed (a write
    error, a crash before the final sync) get their ``end`` event too.
    """
    records = await store.load_all()
    interrupted: list[JobRecord] = []
    settled: dict[str, JobRecord] = {}
    for record in records:
        if JobState(record.state).final and record.log_complete:
            continue
        path = log_path(log_dir, record.id)
        try:
            fixed = await trio.to_thread.run_sync(partial(_settle, record, path, reason))
        except OSError as exc:
            log.error("job %s: cannot complete its log %s: %s", record.id, path, exc)
            continue
        settled[record.id] = fixed
        if fixed.state == JobState.INTERRUPTED and not JobState(record.state).final:
            interrupted.append(fixed)
            log.info("job %s: %s (%s)", record.id, fixed.state, fixed.error)
    if settled:
        await store.save(*settled.values())
    return SettledJobs([settled.get(r.id, r) for r in records], interrupted)


def _settle(record: JobRecord, path: Path, reason: str) -> JobRecord:
    """Blocking part of :func:`settle_jobs`, for one job."""
    if JobState(record.state).final:
        before: list[dict[str, Any]] = []
        end = end_event(record.state, record.exit_code, record.error, record.teardown)
    else:
        state = JobState.INTERRUPTED.value
        before = [{"type": "message", "text": reason}, {"type": "state", "state": state}]
        end = end_event(state, None, reason, None)
    try:
        scan = settle_log(path, end, before)
    except LogCorrupt as exc:
        aside = path.with_name(path.name + ".corrupt")
        log.error("job %s: %s; moved to %s, starting a new log", record.id, exc, aside)
        os.replace(path, aside)
        scan = settle_log(path, end, before)
    final = scan.last_control or end
    return replace(
        record,
        state=str(final.get("state", end["state"])),
        exit_code=final.get("exit_code"),
        error=final.get("error"),
        teardown=final.get("teardown"),
        ended_at=record.ended_at or now(),
        last_seq=scan.last_seq,
        log_complete=True,
    )
