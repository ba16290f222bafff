"""What the followers of one job share: the messages encoded for them.

A job followed by a thousand websockets used to have each of its log's entries
encoded a thousand times, once per follower. The followers of a job now share
one :class:`~hivewire.stream.SharedFrames`, made when the first one attaches
and dropped when the last one leaves, so the encoding of a range of the log is
paid once for every follower that reads the same range.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hivewire.stream import SharedFrames


class Followers:
    """The jobs being followed, each with its followers' count and shared messages."""

    def __init__(self) -> None:
        self._jobs: dict[str, tuple[SharedFrames, list[int]]] = {}

    def count(self, job_id: str) -> int:
        found = self._jobs.get(job_id)
        return found[1][0] if found else 0

    @contextmanager
    def attach(self, job_id: str) -> Iterator[SharedFrames]:
        """One follower of ``job_id`` for the ``with`` block; yields what the job's
        followers share."""
        shared, count = self._jobs.setdefault(job_id, (SharedFrames(), [0]))
        count[0] += 1
        try:
            yield shared
        finally:
            count[0] -= 1
            if not count[0]:
                del self._jobs[job_id]
