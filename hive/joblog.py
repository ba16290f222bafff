"""A job's output and events: an append-only log that followers read live.

Writers (the job's pipe readers, the job's lifecycle) append; every entry gets
the next ``seq``. Followers read everything after the seq they already have and
then wait for more. Appending never waits for a follower: a slow follower only
falls further behind in the log, it never slows the job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import trio

from .protocol import ControlEvent, Stream


@dataclass(frozen=True, slots=True)
class OutputEntry:
    seq: int
    stream: Stream
    data: bytes


LogEntry = OutputEntry | ControlEvent


class JobLog:
    """The ordered history of one job, from its first event to ``end``."""

    def __init__(self) -> None:
        self._entries: list[LogEntry] = []
        self._grown = trio.Event()
        self._closed = False
        self._bytes = {Stream.STDOUT: 0, Stream.STDERR: 0}

    @property
    def last_seq(self) -> int:
        return len(self._entries)

    @property
    def closed(self) -> bool:
        return self._closed

    def bytes_written(self, stream: Stream) -> int:
        return self._bytes[stream]

    def append_output(self, stream: Stream, data: bytes) -> int:
        self._bytes[stream] += len(data)
        return self._append(OutputEntry(self.last_seq + 1, stream, data))

    def append_control(self, body: dict[str, Any]) -> int:
        return self._append(ControlEvent(self.last_seq + 1, body))

    def close(self) -> None:
        """No more entries will come; followers finish once they have read all."""
        self._closed = True
        self._wake()

    def _append(self, entry: LogEntry) -> int:
        if self._closed:
            raise RuntimeError("append to a closed job log")
        self._entries.append(entry)
        self._wake()
        return entry.seq

    def _wake(self) -> None:
        self._grown.set()
        self._grown = trio.Event()

    def read_after(self, since: int) -> list[LogEntry]:
        """Entries with ``seq > since``, oldest first."""
        return self._entries[max(since, 0) :]

    def output(self, stream: Stream) -> bytes:
        """Everything the job wrote to ``stream`` so far, exactly."""
        return b"".join(
            e.data for e in self._entries if isinstance(e, OutputEntry) and e.stream == stream
        )

    async def follow(self, since: int = 0) -> AsyncIterator[list[LogEntry]]:
        """Yield batches of entries after ``since``, live, until the log is closed."""
        position = since
        while True:
            batch = self.read_after(position)
            if batch:
                position = batch[-1].seq
                yield batch
            elif self._closed:
                return
            else:
                await self._grown.wait()
