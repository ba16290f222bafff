"""Job lifecycle: queue, run, cancel, and tear down.

Every job runs as a task of the engine's nursery, inside its own cancel scope.
Within that scope, a nursery holds the job's process and one reader task per
output stream. Cancelling the scope — a cancel request, a timeout, the hive
shutting down — interrupts the wait for the process, and a *shielded* ``finally``
then tears down the whole process tree and waits for it to be gone. The same
teardown runs when the job ends by itself, because a script can leave
stragglers behind.

The engine knows nothing of HTTP: the API calls :meth:`JobEngine.submit`,
:meth:`JobEngine.cancel` and reads :class:`Job` objects.

Jobs are durable: each job's record is kept in ``<state>/jobs.db``
(:mod:`hive.store`) and its events in ``<state>/logs/<id>.log``
(:mod:`hive.joblog`). A hive that starts finds the jobs of the previous one;
those that were still running are marked ``interrupted``
(:func:`hive.recovery.settle_jobs`). Old jobs are forgotten by a retention task
(:mod:`hive.retention`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import trio

from hivewire.protocol import Stream

from . import faults
from .containment import Containment, JobTree
from .joblog import JobLog
from .logfile import end_event, log_path
from .pipes import PipeReader
from .proctree import TeardownReport
from .recovery import settle_jobs
from .retention import RetainedJob, Retention, remove_logs, survey_logs
from .store import JobRecord, JobState, JobStore, now

log = logging.getLogger("hive.jobs")

#: After teardown every writer of the pipes is dead, so the readers see EOF at
#: once; this bounds the wait for a writer we could not kill.
DRAIN_TIMEOUT = 1.0

#: Age limits need a clock: retention also runs this often, not only when a job ends.
RETENTION_PERIOD = 3600.0


class JobError(Exception):
    """A request about a job that cannot be honoured."""


class JobNotFound(JobError):
    pass


class JobAlreadyEnded(JobError):
    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} already ended: {job.state}")
        self.job = job


class JobFailure(Exception):
    """Raised by a job's ``finish`` step to fail the job with a one-line reason."""


@dataclass
class JobSpec:
    """What to run for a job. Operations (see :mod:`hive.install`) build these."""

    operation: str
    worker: str
    #: Empty: no process; the job runs only ``finish`` (e.g. "already installed").
    argv: list[str]
    env: dict[str, str]
    cwd: Path | None = None
    #: Runs after the process exited 0 and its tree is gone (e.g. the atomic
    #: install). Raising :class:`JobFailure` fails the job.
    finish: Callable[[Job], Awaitable[None]] | None = None
    #: Runs whatever the outcome, after ``finish`` (e.g. removing a build dir).
    cleanup: Callable[[Job], Awaitable[None]] | None = None
    #: Runs once the job's ``end`` event is in its log, before :attr:`Job.ended`
    #: is set: what must follow the outcome being on record (the install's old
    #: version goes, or its new one is rolled back). A restarted hive does the
    #: same from the log for a job whose hive died before this ran.
    settled: Callable[[Job], Awaitable[None]] | None = None


@dataclass(eq=False)
class Job:
    id: str
    spec: JobSpec
    grace: float
    log: JobLog
    state: JobState = JobState.QUEUED
    created_at: str = field(default_factory=now)
    started_at: str | None = None
    ended_at: str | None = None
    exit_code: int | None = None
    error: str | None = None
    pid: int | None = None
    cancel_requested_by: str | None = None
    teardown: TeardownReport | None = None
    #: The processes are done and the finish step (e.g. the install) runs: it
    #: only renames, so a cancel no longer interrupts it.
    finishing: bool = False
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    #: Set once the ``end`` event is in the job's log file, where followers
    #: read it: the outcome is final and every process of the job is gone (or
    #: the report says what is left). What :attr:`ended` adds comes after it:
    #: the log flushed to stable storage, the record saved, the outcome settled.
    concluded: trio.Event = field(default_factory=trio.Event)
    ended: trio.Event = field(default_factory=trio.Event)
    #: Called after every state change (the engine uses it to wake watchers).
    on_change: Callable[[Job], None] = field(default=lambda _job: None, repr=False)
    #: The engine's change counter at this job's last state change: a watcher
    #: that has seen revision R needs the jobs whose revision is above R.
    revision: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "operation": self.spec.operation,
            "worker": self.spec.worker,
            "state": self.state.value,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "exit_code": self.exit_code,
            "error": self.error,
            "pid": self.pid,
            "pgid": self.pid,
            "grace": self.grace,
            "cancel_requested_by": self.cancel_requested_by,
            "teardown": self.teardown.to_json() if self.teardown else None,
            "last_seq": self.log.last_seq,
        }

    def to_record(self) -> JobRecord:
        return JobRecord(
            id=self.id,
            operation=self.spec.operation,
            worker=self.spec.worker,
            state=self.state.value,
            created_at=self.created_at,
            started_at=self.started_at,
            ended_at=self.ended_at,
            exit_code=self.exit_code,
            error=self.error,
            pid=self.pid,
            grace=self.grace,
            cancel_requested_by=self.cancel_requested_by,
            teardown=self.teardown.to_json() if self.teardown else None,
            last_seq=self.log.last_seq,
            log_complete=self.log.closed and self.log.error is None,
        )

    @classmethod
    def from_record(cls, record: JobRecord, log: JobLog) -> Job:
        """A job of an earlier hive: ended, read-only."""
        teardown = record.teardown
        job = cls(
            id=record.id,
            spec=JobSpec(record.operation, record.worker, argv=[], env={}),
            grace=record.grace,
            log=log,
            state=JobState(record.state),
            created_at=record.created_at,
            started_at=record.started_at,
            ended_at=record.ended_at,
            exit_code=record.exit_code,
            error=record.error,
            pid=record.pid,
            cancel_requested_by=record.cancel_requested_by,
            teardown=_teardown_from_json(teardown) if teardown else None,
        )
        job.concluded.set()
        job.ended.set()
        return job

    def fail(self, reason: str) -> None:
        """Fail the job for a reason of the hive's (its log cannot be written):
        its processes are torn down as for a cancel, but it ends ``failed``."""
        if self.ended.is_set():
            return
        self.error = f"{self.error}; {reason}" if self.error else reason
        self.message(reason)
        self.set_state(JobState.FAILED)
        self.cancel_scope.cancel()

    def message(self, text: str) -> None:
        """A hive message: into the job's stream and the hive's log."""
        log.info("job %s: %s", self.id, text)
        self.log.append_control({"type": "message", "text": text})

    def set_state(self, state: JobState) -> None:
        self.state = state
        self.log.append_control({"type": "state", "state": state.value})
        self.on_change(self)


def _teardown_from_json(data: dict[str, Any]) -> TeardownReport:
    """The report of :meth:`TeardownReport.to_json`, less what it derives (``sigkill_needed``)."""
    known = {f.name for f in fields(TeardownReport)}
    return TeardownReport(**{k: v for k, v in data.items() if k in known})


class JobEngine:
    """Runs jobs in its own nursery; :meth:`running` owns that nursery, the job
    store, and the retention task."""

    def __init__(
        self,
        state_dir: Path,
        *,
        grace: float = 5.0,
        max_parallel: int | None = None,
        containment: Containment | None = None,
        retention: Retention | None = None,
    ) -> None:
        self.grace = grace
        self.containment = containment or Containment()
        self.state_dir = state_dir
        self.log_dir = state_dir / "logs"
        self.retention = retention or Retention()
        #: Jobs the previous hive left running, as :func:`settle_jobs` found them.
        self.interrupted: list[JobRecord] = []
        self._jobs: dict[str, Job] = {}
        self._slots = trio.CapacityLimiter(max_parallel or os.cpu_count() or 1)
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()
        self._stopping = False
        self._store: JobStore | None = None
        self._retention_due = trio.Event()
        #: Counts job state changes (see :attr:`Job.revision`).
        self.revision = 0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[JobEngine]:
        """Run jobs while the block runs; on the way out, tear all of them down.

        On the way in, the jobs of earlier hives are loaded (and settled).
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        async with JobStore.open(self.state_dir / "jobs.db") as store:
            self._store = store
            settled = await settle_jobs(store, self.log_dir)
            self.interrupted = settled.interrupted
            for record in settled.records:
                job_log = JobLog.existing(log_path(self.log_dir, record.id), record.last_seq)
                self._jobs[record.id] = Job.from_record(record, job_log)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._retain)
                try:
                    yield self
                finally:
                    with trio.CancelScope(shield=True):
                        await self.shutdown()
                    self._nursery = None
                    nursery.cancel_scope.cancel()  # the retention task; every job has ended

    def submit(self, spec: JobSpec) -> Job:
        if self._nursery is None:
            raise RuntimeError("the job engine is not running")
        job_id = secrets.token_hex(6)
        job = Job(
            id=job_id,
            spec=spec,
            grace=self.grace,
            log=JobLog(log_path(self.log_dir, job_id)),
            on_change=self._job_changed,
        )
        job.log.on_failure = partial(_log_failed, job)
        self._jobs[job.id] = job
        log.info("job %s submitted: %s worker=%s", job.id, spec.operation, spec.worker)
        job.set_state(JobState.QUEUED)
        self._nursery.start_soon(self._run, job, name=f"job {job.id}")
        return job

    def _job_changed(self, job: Job) -> None:
        assert self._store is not None
        self.revision += 1
        job.revision = self.revision
        self._store.put(job.to_record())  # queued: written soon, off the event loop
        self._wake_watchers()

    def _wake_watchers(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def watch(self) -> AsyncIterator[list[Job]]:
        """Yield the job list now and again after every state change of any job,
        until the engine shuts down."""
        while not self._stopping:
            changed = self._changed
            yield self.jobs()
            await changed.wait()

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(f"no job {job_id}") from None

    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def cancel(self, job_id: str, *, by: str) -> Job:
        """Request cancellation; idempotent while the job is not yet ended."""
        job = self.get(job_id)
        if job.state.final:
            raise JobAlreadyEnded(job)
        if job.cancel_requested_by is None:
            job.cancel_requested_by = by
            if job.finishing:
                job.message(
                    f"cancel requested by {by} after every process of the job had ended: "
                    "the finish step (renames only) completes, and the job ends as it does"
                )
                return job
            job.message(f"cancel requested by {by}")
            if job.state == JobState.RUNNING:
                job.set_state(JobState.CANCELLING)
            job.cancel_scope.cancel()
        return job

    async def shutdown(self) -> None:
        """Cancel every job that has not ended and wait until all have."""
        self._stopping = True
        self._wake_watchers()
        for job in self._jobs.values():
            if not job.state.final:
                self.cancel(job.id, by="hive shutdown")
        for job in list(self._jobs.values()):
            await job.ended.wait()

    async def _retain(self) -> None:
        """Apply the retention limits at start-up, after every job, and hourly."""
        while True:
            self._retention_due = trio.Event()
            try:
                await self.apply_retention()
            except OSError as exc:
                log.error("retention: %s", exc)
            with trio.move_on_after(RETENTION_PERIOD):
                await self._retention_due.wait()

    async def apply_retention(self) -> list[str]:
        """Forget the ended jobs the retention limits leave no room for, and
        remove log files that belong to no job; return the forgotten ids."""
        assert self._store is not None
        jobs = list(self._jobs.values())
        names, sizes = await survey_logs(self.log_dir, [job.id for job in jobs])
        retained = [
            RetainedJob(
                job.id,
                datetime.fromisoformat(job.ended_at)
                if job.ended.is_set() and job.ended_at
                else None,
                size,
            )
            for job, size in zip(jobs, sizes, strict=True)
        ]
        doomed = self.retention.expired(retained, now=datetime.now(UTC))
        for job_id in doomed:
            del self._jobs[job_id]
        if doomed:
            await self._store.delete(doomed)
        await remove_logs(self.log_dir, names, doomed=doomed, known=set(self._jobs))
        if doomed:
            log.info("retention: forgot %d job(s): %s", len(doomed), ", ".join(doomed))
            self._wake_watchers()
        return doomed

    async def _run(self, job: Job) -> None:
        async with job.log.writing():
            await self._lifecycle(job)

    async def _lifecycle(self, job: Job) -> None:
        tree = self.containment.open(job.id)
        try:
            with job.cancel_scope:
                if job.spec.argv:  # a job without argv has only its finish step
                    async with self._slots:
                        await self._execute(job, tree)
            if job.state == JobState.FAILED:
                pass
            elif job.cancel_requested_by is not None:
                job.state = JobState.CANCELLED
            else:
                job.finishing = True
                await self._finish(job)
        except Exception as exc:  # a bug in a finish step must not take the hive down
            log.exception("job %s: internal error", job.id)
            job.state, job.error = JobState.FAILED, f"internal error: {exc}"
        finally:
            with trio.CancelScope(shield=True):
                await self._end(job, tree)

    async def _execute(self, job: Job, tree: JobTree) -> None:
        spec = job.spec
        try:
            process = await tree.spawn(spec.argv, env=spec.env, cwd=spec.cwd)
        except OSError as exc:
            job.state, job.error = JobState.FAILED, f"could not start {spec.argv[0]}: {exc}"
            return
        job.pid = process.pid
        job.started_at = now()
        log.info(
            "job %s started: pid %d, pgid %d: %s",
            job.id,
            process.pid,
            process.pid,
            " ".join(spec.argv),
        )
        job.set_state(JobState.RUNNING)
        async with trio.open_nursery() as nursery:
            readers = [
                PipeReader(job.log, Stream.STDOUT, process.stdout),
                PipeReader(job.log, Stream.STDERR, process.stderr),
            ]
            for reader in readers:
                nursery.start_soon(reader.run)
            try:
                job.exit_code = await process.wait()
            finally:
                with trio.CancelScope(shield=True):
                    if (
                        job.exit_code is None
                        and job.cancel_requested_by is None
                        and job.state != JobState.FAILED
                    ):
                        job.cancel_requested_by = "hive (job scope cancelled)"
                    job.teardown = await tree.teardown(grace=job.grace, notify=job.message)
                    job.exit_code = process.returncode
                    with trio.move_on_after(DRAIN_TIMEOUT):
                        for reader in readers:
                            await reader.done.wait()
                    for reader in readers:
                        reader.scope.cancel()
        if job.exit_code != 0 and job.cancel_requested_by is None and job.state != JobState.FAILED:
            job.state, job.error = JobState.FAILED, _describe_exit(job.exit_code)

    @staticmethod
    async def _cleanup(job: Job) -> None:
        if job.spec.cleanup is not None:
            try:
                await job.spec.cleanup(job)
            except Exception:
                log.exception("job %s: cleanup failed", job.id)

    async def _finish(self, job: Job) -> None:
        if job.spec.finish is None:
            job.state = JobState.SUCCEEDED
            return
        try:
            await job.spec.finish(job)
        except JobFailure as exc:
            job.state, job.error = JobState.FAILED, str(exc)
        else:
            job.state = JobState.SUCCEEDED

    async def _end(self, job: Job, tree: JobTree) -> None:
        # What must precede the end event, side by side: none waits for another.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tree.release)
            nursery.start_soon(self._cleanup, job)
            nursery.start_soon(_sync_output, job)
        if job.teardown is not None and (leftover := job.teardown.problem):
            job.error = f"{job.error}; {leftover}" if job.error else leftover
        job.ended_at = now()
        job.set_state(job.state)
        teardown_json = job.teardown.to_json() if job.teardown else None
        job.log.append_control(
            end_event(
                job.state.value,
                job.exit_code,
                job.error,
                teardown_json,
                started_at=job.started_at,
                ended_at=job.ended_at,
            )
        )
        await job.log.flush()
        job.concluded.set()
        with contextlib.suppress(OSError):  # logged; the record says the log is incomplete
            await job.log.sync()
        faults.point("job:end-logged")
        job.log.close()
        assert self._store is not None
        await self._store.save(job.to_record())
        if job.spec.settled is not None:
            try:
                await job.spec.settled(job)
            except Exception:
                log.exception("job %s: settling its outcome failed", job.id)
        job.ended.set()
        self._retention_due.set()
        teardown = job.teardown
        log.info(
            "job %s ended: %s, exit code %s%s",
            job.id,
            job.state.value,
            job.exit_code,
            f", teardown {teardown.seconds * 1000:.1f} ms, {teardown.found} found, "
            f"{teardown.sigterm} SIGTERM, {teardown.sigkill} SIGKILL, {teardown.left} left"
            if teardown
            else "",
        )


async def _sync_output(job: Job) -> None:
    """The output, on disk before the outcome that depends on it."""
    try:
        await job.log.sync()
    except OSError as exc:
        _log_failed(job, exc)


def _log_failed(job: Job, exc: OSError) -> None:
    job.fail(f"cannot write the job log: {exc.strerror or exc} ({job.log.path})")


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exited with code {code}"
