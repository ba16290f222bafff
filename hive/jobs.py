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
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from .containment import Containment
from .joblog import JobLog
from .proctree import TeardownReport
from .protocol import Stream

log = logging.getLogger("hive.jobs")

#: Bytes asked of a pipe per read. The hive enlarges job pipes to this size so
#: that bulk output arrives in few, large chunks.
PIPE_SIZE = 1024 * 1024

#: After teardown every writer of the pipes is dead, so the readers see EOF at
#: once; this bounds the wait for a writer we could not kill.
DRAIN_TIMEOUT = 1.0


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(eq=False)
class Job:
    id: str
    spec: JobSpec
    grace: float
    state: JobState = JobState.QUEUED
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    ended_at: str | None = None
    exit_code: int | None = None
    error: str | None = None
    pid: int | None = None
    cancel_requested_by: str | None = None
    teardown: TeardownReport | None = None
    log: JobLog = field(default_factory=JobLog)
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    ended: trio.Event = field(default_factory=trio.Event)
    #: Called after every state change (the engine uses it to wake watchers).
    on_change: Callable[[Job], None] = field(default=lambda _job: None, repr=False)

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

    def message(self, text: str) -> None:
        """A hive message: into the job's stream and the hive's log."""
        log.info("job %s: %s", self.id, text)
        self.log.append_control({"type": "message", "text": text})

    def set_state(self, state: JobState) -> None:
        self.state = state
        self.log.append_control({"type": "state", "state": state.value})
        self.on_change(self)


class JobEngine:
    """Runs jobs in its own nursery; :meth:`running` owns that nursery."""

    def __init__(
        self,
        *,
        grace: float = 5.0,
        max_parallel: int | None = None,
        containment: Containment | None = None,
    ) -> None:
        self.grace = grace
        self.containment = containment or Containment()
        self._jobs: dict[str, Job] = {}
        self._slots = trio.CapacityLimiter(max_parallel or os.cpu_count() or 1)
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()
        self._stopping = False

    @asynccontextmanager
    async def running(self) -> AsyncIterator[JobEngine]:
        """Run jobs while the block runs; on the way out, tear all of them down."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield self
            finally:
                with trio.CancelScope(shield=True):
                    await self.shutdown()
                self._nursery = None

    def submit(self, spec: JobSpec) -> Job:
        if self._nursery is None:
            raise RuntimeError("the job engine is not running")
        job = Job(id=secrets.token_hex(6), spec=spec, grace=self.grace, on_change=self._job_changed)
        self._jobs[job.id] = job
        log.info("job %s submitted: %s worker=%s", job.id, spec.operation, spec.worker)
        job.set_state(JobState.QUEUED)
        self._nursery.start_soon(self._run, job, name=f"job {job.id}")
        return job

    def _job_changed(self, _job: Job) -> None:
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
        for job in self._jobs.values():
            await job.ended.wait()

    async def _run(self, job: Job) -> None:
        try:
            with job.cancel_scope:
                if job.spec.argv:  # a job without argv has only its finish step
                    async with self._slots:
                        await self._execute(job)
            if job.cancel_requested_by is not None:
                job.state = JobState.CANCELLED
            elif job.state != JobState.FAILED:
                await self._finish(job)
        except Exception as exc:  # a bug in a finish step must not take the hive down
            log.exception("job %s: internal error", job.id)
            job.state, job.error = JobState.FAILED, f"internal error: {exc}"
        finally:
            with trio.CancelScope(shield=True):
                await self._end(job)

    async def _execute(self, job: Job) -> None:
        spec = job.spec
        tree = self.containment.open(job.id)
        try:
            process = await tree.spawn(spec.argv, env=spec.env, cwd=spec.cwd)
        except OSError as exc:
            job.state, job.error = JobState.FAILED, f"could not start {spec.argv[0]}: {exc}"
            return
        job.pid = process.pid
        job.started_at = _now()
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
                _Reader(job, Stream.STDOUT, process.stdout),
                _Reader(job, Stream.STDERR, process.stderr),
            ]
            for reader in readers:
                nursery.start_soon(reader.run)
            try:
                job.exit_code = await process.wait()
            finally:
                with trio.CancelScope(shield=True):
                    if job.exit_code is None and job.cancel_requested_by is None:
                        job.cancel_requested_by = "hive (job scope cancelled)"
                    job.teardown = await tree.teardown(grace=job.grace, notify=job.message)
                    job.exit_code = process.returncode
                    with trio.move_on_after(DRAIN_TIMEOUT):
                        for reader in readers:
                            await reader.done.wait()
                    for reader in readers:
                        reader.scope.cancel()
        if job.exit_code != 0 and job.cancel_requested_by is None:
            job.state, job.error = JobState.FAILED, _describe_exit(job.exit_code)

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

    async def _end(self, job: Job) -> None:
        if job.spec.cleanup is not None:
            try:
                await job.spec.cleanup(job)
            except Exception:
                log.exception("job %s: cleanup failed", job.id)
        if job.teardown is not None and (leftover := job.teardown.problem):
            job.error = f"{job.error}; {leftover}" if job.error else leftover
        job.ended_at = _now()
        job.set_state(job.state)
        job.log.append_control(
            {
                "type": "end",
                "state": job.state.value,
                "exit_code": job.exit_code,
                "error": job.error,
                "teardown": job.teardown.to_json() if job.teardown else None,
            }
        )
        job.log.close()
        job.ended.set()
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


class _Reader:
    """Copies one pipe of the job into its log until EOF.

    It runs in its own *shielded* scope: when the job is cancelled it keeps
    reading, so whatever the processes print while they are torn down still
    reaches the log. The job cancels :attr:`scope` once teardown is over.
    """

    def __init__(self, job: Job, stream: Stream, pipe: trio.abc.ReceiveStream | None) -> None:
        assert pipe is not None
        self.job, self.stream, self.pipe = job, stream, pipe
        self.scope = trio.CancelScope(shield=True)
        self.done = trio.Event()
        _enlarge_pipe(pipe)

    async def run(self) -> None:
        try:
            with self.scope:
                async with self.pipe:
                    while chunk := await self.pipe.receive_some(PIPE_SIZE):
                        self.job.log.append_output(self.stream, bytes(chunk))
        finally:
            self.done.set()


def _enlarge_pipe(pipe: trio.abc.ReceiveStream) -> None:
    """Ask for a bigger pipe buffer: fewer, larger reads for bulk output."""
    fileno = getattr(pipe, "fileno", None)
    if fileno is None:
        return
    # Capped by /proc/sys/fs/pipe-max-size for unprivileged users: then keep the default.
    with contextlib.suppress(OSError):
        fcntl.fcntl(fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
