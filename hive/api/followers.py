"""What the followers of one job share: the messages encoded for them, and the
feed that tells them, in turn, that the job wrote more.

A job followed by a thousand websockets used to have each of its log's entries
encoded a thousand times, once per follower, and each new line woke all
thousand followers at once. The followers of a job now share one
:class:`~hivewire.stream.SharedFrames`, so the encoding of a range of the log is
paid once for every follower that reads the same range, and one
:class:`~hive.api.pace.Feed`, whose single watcher waits on the log for all of
them. Both are made when the first follower attaches and dropped when the last
one leaves.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hivewire.stream import SharedFrames

from ..joblog import JobLog, LogUnavailable
from .pace import Feed, Pace


class LogSource:
    """A job's log as a :class:`~hive.api.pace.Source`."""

    def __init__(self, log: JobLog) -> None:
        self.log = log

    @property
    def last_seq(self) -> int:
        return self.log.last_seq

    async def grown(self, seq: int) -> bool:
        batches = self.log.follow(seq)
        try:
            return await anext(batches, None) is not None
        except LogUnavailable:
            return False  # each follower finds out for itself
        finally:
            if isinstance(batches, AsyncGenerator):
                await batches.aclose()


@dataclass
class JobFollowers:
    """What one job's followers share."""

    shared: SharedFrames
    feed: Feed
    count: int = 0


class Followers:
    """The jobs being followed, each with what its followers share."""

    def __init__(self, pace: Pace) -> None:
        self.pace = pace
        self._jobs: dict[str, JobFollowers] = {}

    @contextmanager
    def attach(self, job_id: str, log: JobLog) -> Iterator[JobFollowers]:
        """One follower of the job for the ``with`` block."""
        job = self._jobs.get(job_id)
        if job is None:
            job = self._jobs[job_id] = JobFollowers(
                SharedFrames(), self.pace.open_feed(LogSource(log))
            )
        job.count += 1
        try:
            yield job
        finally:
            job.count -= 1
            if not job.count:
                del self._jobs[job_id]
                self.pace.close_feed(job.feed)
