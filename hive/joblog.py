"""A job's output and events: an append-only log on disk that followers read live.

Writers (the job's pipe readers, the job's lifecycle) append; every entry gets
the next ``seq`` and goes straight to the job's log file (format:
:mod:`hive.logfile`), written as it arrives. Appending never waits for a
follower: a slow follower only falls further behind in the log, it never slows
the job.

Followers read everything after the seq they already have and then wait for
more, but only what the log *file* already holds: an entry is shown to a
follower once its ``writev`` returned, so that a crash of the hive (SIGKILL,
OOM) can never take back a seq a follower saw — the page cache survives the
process, and the next hive finds the entry in the file. (A machine crash can
still lose what was not fsynced; the hive fsyncs at the end of every job.) The
cost is one writer round trip before a line reaches followers, measured in
BENCHMARKS.md (line latency). The one exception is a log whose writes failed
(disk full): its last control events, which tell followers why the job failed,
are shown from memory. Followers that keep up are served from a bounded
in-memory tail of the most recent entries, so live following costs no disk
read; one that falls behind the tail reads from the file, in bounded batches,
in a worker thread. Either way a
follower holds at most one batch, so neither a slow follower nor a line of a
hundred megabytes without a newline grows the hive's memory.

Writing happens in one writer task per log (:meth:`JobLog.writing`) that
writes what was appended since its last write as one ``writev``: a batch per
write, not a chunk. Bulk batches go to a worker thread: copying a pipe's
output into the page cache costs about as much CPU as reading the pipe, and on
the event loop it was the largest cost of following a job live. A small batch
(a few lines, at most :data:`INLINE_WRITE`) is written on the event loop
instead, because followers wait for it: the thread hop cost a line 0.3 ms at
the median and 2-4 ms at p99 on a loaded 2-core machine, the inline write
0.04 ms over serving from memory. Entries stay in the in-memory tail
until they are on disk; the job's pipe readers wait (:meth:`wait_writable`)
once :data:`WRITE_BACKLOG` bytes are unwritten, which bounds memory when the
disk is slower than the job.

If a write fails (disk full, I/O error) the log keeps working in memory for
control events, so followers still see the job fail and end, and
:attr:`JobLog.on_failure` tells the job to fail with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio

from hivewire.protocol import ControlEvent, Stream

from .logfile import (
    MAGIC,
    MAX_RECORD,
    RECORD_HEADER,
    LogCorrupt,
    LogEntry,
    OutputEntry,
    SparseIndex,
    encode_control,
    entry_kind,
    find_tail_start,
    open_for_append,
    read_entries,
    record_header,
    scan_log,
    write_all,
)

__all__ = ["JobLog", "LogEntry", "LogUnavailable", "OutputEntry"]

log = logging.getLogger("hive.joblog")

T = TypeVar("T")

#: Recent entries kept in memory for live followers, per job (payload bytes,
#: plus :data:`ENTRY_COST` per entry so that many tiny chunks count too).
TAIL_BYTES = 4 * 1024 * 1024
ENTRY_COST = 64

#: Output appended but not yet on disk beyond which the job's pipe readers
#: wait for the writer.
WRITE_BACKLOG = 4 * 1024 * 1024

#: Most bytes, and records, the writer hands its thread at once (one
#: ``writev``: two buffers per record, within the kernel's IOV_MAX of 1024).
WRITE_BATCH = 1024 * 1024
WRITE_RECORDS = 512

#: A batch this small is written on the event loop: a copy of a few KB into
#: the page cache costs less than the hop to a worker thread and back, and
#: followers wait for that write before they see a line.
INLINE_WRITE = 16 * 1024

#: Most payload bytes one read hands a follower (one record may exceed it).
BATCH_BYTES = 1024 * 1024

#: Where disk readers stopped, remembered so that the next read of a follower
#: that is catching up starts there instead of at an index point.
RESUME_MEMO = 256


_EVICTED: tuple[LogEntry, int] = (ControlEvent(0, {}), 0)


class LogUnavailable(Exception):
    """The log file cannot be read (removed by retention, or damaged)."""


class JobLog:
    """The ordered history of one job, from its first event to ``end``.

    Entries reach the file only while :meth:`writing` runs (the job engine runs
    it for the job's whole life); until then they wait in memory.
    """

    def __init__(self, path: Path, *, on_failure: Callable[[OSError], None] | None = None) -> None:
        self.path = path
        #: Called once, after the first failed write, with the error.
        self.on_failure = on_failure
        #: The write error that stopped the log from growing on disk, if any.
        self.error: OSError | None = None
        self._fd: int | None = None
        self._size = 0  # bytes of complete records in the file
        self._last_seq = 0
        self._disk_seq = 0  # entries up to here are in the file
        self._index = SparseIndex()
        self._indexed = True  # a log this hive writes is indexed as it grows
        self._index_lock = trio.Lock()
        self._tail: list[tuple[LogEntry, int]] = []  # (entry, cost); live from _tail_head
        self._tail_head = 0
        self._tail_cost = 0
        self._written_cost = 0  # of it, entries on disk: only these count against TAIL_BYTES
        self._resume: dict[int, int] = {}  # seq -> offset of its record
        self._unwritten: list[tuple[LogEntry, bytes]] = []  # appended, not yet with the writer
        self._backlog = 0  # payload bytes appended and not yet on disk
        self._appended = trio.Event()  # wakes the writer
        self._progress = trio.Event()  # set (and replaced) after every write
        self._bytes = {Stream.STDOUT: 0, Stream.STDERR: 0}
        self._grown = trio.Event()
        self._closed = False
        self._ends = False  # the last entry is the ``end`` event

    @classmethod
    def existing(cls, path: Path, last_seq: int) -> JobLog:
        """The complete log of a job that ended before this hive started.

        It is read from disk only; the file is scanned (in a thread) the first
        time someone reads it, which also corrects ``last_seq``.
        """
        job_log = cls(path)
        job_log._last_seq = job_log._disk_seq = last_seq
        job_log._closed = True
        job_log._indexed = False
        return job_log

    @property
    def last_seq(self) -> int:
        """The newest seq followers may see: on disk (or anything, once writing failed)."""
        return self._last_seq if self.error is not None else self._disk_seq

    @property
    def ends(self) -> bool:
        """Whether the last entry followers may see is the ``end`` event (for a log
        of an earlier hive: known once it was read)."""
        return self._ends and self.last_seq == self._last_seq

    @property
    def closed(self) -> bool:
        return self._closed

    def bytes_written(self, stream: Stream) -> int:
        """Bytes of ``stream`` so far (for a log of an earlier hive: once it was read)."""
        return self._bytes[stream]

    # -- writing ---------------------------------------------------------------

    def append_output(self, stream: Stream, data: bytes) -> int:
        """Append a chunk of output (split into records of at most 1 MiB).

        After a write error, output is dropped: the job is being failed for it,
        and keeping it in memory instead would be unbounded.
        """
        if self.error is not None:
            return self._last_seq
        self._bytes[stream] += len(data)
        if len(data) <= MAX_RECORD:
            return self._append(OutputEntry(self._last_seq + 1, stream, data), data)
        view = memoryview(data)
        for start in range(0, len(data), MAX_RECORD):
            piece = bytes(view[start : start + MAX_RECORD])
            self._append(OutputEntry(self._last_seq + 1, stream, piece), piece)
        return self._last_seq

    def append_control(self, body: dict[str, Any]) -> int:
        return self._append(ControlEvent(self._last_seq + 1, body), encode_control(body))

    def close(self) -> None:
        """No more entries will come; followers finish once they have read all.

        The writer writes what is still unwritten, then closes the file; the
        in-memory tail keeps each entry until it is on disk (and keeps what a
        write error kept out of the file).
        """
        self._closed = True
        self._evict(0)
        self._appended.set()
        self._wake()

    async def flush(self) -> None:
        """Wait until everything appended so far is on disk, or a write failed."""
        target = self._last_seq
        while self._disk_seq < target and self.error is None:
            await self._progress.wait()

    async def wait_writable(self) -> None:
        """Wait while the writer is more than :data:`WRITE_BACKLOG` bytes behind."""
        while self._backlog > WRITE_BACKLOG and self.error is None:
            await self._progress.wait()

    async def sync(self) -> None:
        """Write what is appended and flush it to stable storage (``fsync``, in a
        thread). A failure counts as a write error, and is raised."""
        await self.flush()
        fd = self._fd
        if fd is None or self.error is not None:
            return
        try:
            await trio.to_thread.run_sync(os.fsync, fd)
        except OSError as exc:
            self._fail(exc)
            raise

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        """Run the log's writer while the body appends. On exit the log is
        closed and everything appended is written (or has failed)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_loop)
            try:
                yield
            finally:
                self.close()

    async def _write_loop(self) -> None:
        # Shielded: what was appended is written even while the job, or the
        # hive, is being cancelled; close() is what ends the loop.
        with trio.CancelScope(shield=True):
            try:
                while not (self._closed and not self._unwritten):
                    if not self._unwritten:
                        await self._appended.wait()
                        self._appended = trio.Event()
                        continue
                    await self._write_batch(self._take_batch())
            finally:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None

    def _take_batch(self) -> list[tuple[LogEntry, bytes]]:
        taken = 0
        count = 0
        for _entry, payload in self._unwritten:
            if count and (taken + len(payload) > WRITE_BATCH or count == WRITE_RECORDS):
                break
            taken += len(payload)
            count += 1
        batch = self._unwritten[:count]
        del self._unwritten[:count]
        return batch

    async def _write_batch(self, batch: list[tuple[LogEntry, bytes]]) -> None:
        parts: list[bytes] = []
        for entry, payload in batch:
            parts += (record_header(entry_kind(entry), entry.seq, len(payload)), payload)
        failure: OSError | None = None
        try:
            if self._fd is not None and sum(map(len, parts)) <= INLINE_WRITE:
                self._write_parts(parts)
                await trio.lowlevel.checkpoint()
            else:
                await trio.to_thread.run_sync(self._write_parts, parts)
        except OSError as exc:
            failure = exc
        if self._fd is not None and self._size == 0:
            self._size = len(MAGIC)  # the thread opened the file and wrote the magic
        if failure is not None:
            self._fail(failure)
            self._unwritten.clear()
            self._backlog = 0
        else:
            for entry, payload in batch:
                self._index.note(entry.seq, self._size)
                self._size += RECORD_HEADER + len(payload)
                self._backlog -= len(payload)
                self._written_cost += len(payload) + ENTRY_COST
            self._disk_seq = batch[-1][0].seq
            self._evict(0 if self._closed else TAIL_BYTES)
        self._wake()  # followers see what reached the file (or, after a failure, everything)
        self._progress.set()
        self._progress = trio.Event()
        if self.error is not None and self.on_failure is not None and not self._closed:
            on_failure, self.on_failure = self.on_failure, None
            on_failure(self.error)  # may append (the job's failure)

    def _write_parts(self, parts: list[bytes]) -> None:
        """In the writer's thread: open the file the first time, append ``parts``."""
        if self._fd is None:
            self._fd = open_for_append(self.path)
        write_all(self._fd, parts)

    def _append(self, entry: LogEntry, payload: bytes) -> int:
        if self._closed:
            raise RuntimeError("append to a closed job log")
        if self.error is None:
            self._unwritten.append((entry, payload))
            self._backlog += len(payload)
            self._appended.set()
        self._last_seq = entry.seq
        self._ends = isinstance(entry, ControlEvent) and entry.type == "end"
        self._tail.append((entry, len(payload) + ENTRY_COST))
        self._tail_cost += len(payload) + ENTRY_COST
        self._evict(TAIL_BYTES)
        if self.error is not None:
            self._wake()  # no writer any more: followers see it from memory
        return entry.seq

    def _fail(self, exc: OSError) -> None:
        log.error("job log %s: write failed: %s", self.path, exc)
        self.error = exc
        if self._fd is not None:
            # Cut a partly written record, so that the file stays readable.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)

    def _evict(self, budget: int) -> None:
        """Drop the oldest entries that are on disk until those on disk fit
        ``budget``. The unwritten backlog (bounded by :data:`WRITE_BACKLOG`) does
        not count: had it pushed written entries out, a follower that keeps up
        with the writer would find nothing it may see in memory, and read every
        entry back from the file."""
        tail = self._tail
        while (
            self._written_cost > budget
            and self._tail_head < len(tail)
            and tail[self._tail_head][0].seq <= self._disk_seq
        ):
            self._tail_cost -= tail[self._tail_head][1]
            self._written_cost -= tail[self._tail_head][1]
            tail[self._tail_head] = _EVICTED  # let the bytes go now, not at compaction
            self._tail_head += 1
        if self._tail_head > 1024 and self._tail_head * 2 > len(tail):
            del tail[: self._tail_head]
            self._tail_head = 0

    def _wake(self) -> None:
        self._grown.set()
        self._grown = trio.Event()

    # -- reading ---------------------------------------------------------------

    async def read_after(self, since: int, max_bytes: int = BATCH_BYTES) -> list[LogEntry]:
        """The next entries with ``seq > since``, oldest first: at most about
        ``max_bytes`` of payload, from memory if they are recent, else from disk.
        Empty only if there is nothing after ``since`` (yet)."""
        await self._ensure_index()
        since = max(since, 0)
        if since >= self.last_seq:
            return []
        first = self._tail_first()
        if since + 1 >= first:
            return self._read_tail(self._tail_head + since + 1 - first, max_bytes)
        return await self._read_disk(since + 1, max_bytes)

    async def follow(self, since: int = 0) -> AsyncIterator[list[LogEntry]]:
        """Yield batches of entries after ``since``, live, until the log is closed."""
        position = since
        while True:
            batch = await self.read_after(position)
            if batch:
                position = batch[-1].seq
                yield batch
            elif self._closed and self.last_seq == self._last_seq:
                return  # everything there will ever be, and it is shown
            else:
                await self._grown.wait()

    async def output(self, stream: Stream) -> AsyncIterator[bytes]:
        """Everything the job wrote to ``stream`` so far, exactly, in chunks read
        from disk: memory stays bounded however big the output."""
        await self.flush()
        await self._ensure_index()
        offset, end = len(MAGIC), self._size
        while offset < end:
            entries, after = await self._in_thread(
                partial(read_entries, self.path, offset, 1, end, BATCH_BYTES, (int(stream),))
            )
            if after <= offset:
                raise LogUnavailable(f"job log {self.path} ends early, at byte {offset}")
            offset = after
            for entry in entries:
                assert isinstance(entry, OutputEntry)
                yield entry.data

    async def shown(self) -> tuple[int, bool]:
        """``(last_seq, ends)``: the newest seq followers may see and whether it
        is the ``end`` event (reading an earlier hive's log first, if need be)."""
        await self._ensure_index()
        return self.last_seq, self.ends

    async def latest(self) -> int:
        """The ``since`` that skips everything so far but a final ``end`` event,
        which every follower must get."""
        await self.flush()
        await self._ensure_index()
        return self.last_seq - 1 if self.ends else self.last_seq

    async def tail_start(self, lines: int) -> tuple[int, int]:
        """Where a stream that starts with the last ``lines`` lines of stdout
        begins: ``(since, skip)`` — send the entries after ``since``, without
        the first ``skip`` bytes of the first one."""
        if lines <= 0:
            return await self.latest(), 0
        await self.flush()
        await self._ensure_index()
        if self._size <= len(MAGIC):
            return 0, 0
        seq, skip = await self._in_thread(
            partial(find_tail_start, self.path, self._index.copy(), self._size, lines)
        )
        return seq - 1, skip

    def _tail_first(self) -> int:
        if self._tail_head < len(self._tail):
            return self._tail[self._tail_head][0].seq
        return self._last_seq + 1

    def _read_tail(self, start: int, max_bytes: int) -> list[LogEntry]:
        batch: list[LogEntry] = []
        taken = 0
        tail = self._tail
        end = len(tail) - (self._last_seq - self.last_seq)  # not past what followers may see
        while start < end and taken < max_bytes:
            entry, cost = tail[start]
            batch.append(entry)
            taken += cost
            start += 1
        return batch

    async def _read_disk(self, seq: int, max_bytes: int) -> list[LogEntry]:
        offset = self._resume.pop(seq, None)
        if offset is None:
            offset = self._index.at_or_before(seq)[1]
        entries, after = await self._in_thread(
            partial(read_entries, self.path, offset, seq, self._size, max_bytes)
        )
        if not entries or entries[0].seq != seq:
            raise LogUnavailable(f"job log {self.path} has no record {seq}")
        self._resume[entries[-1].seq + 1] = after
        if len(self._resume) > RESUME_MEMO:
            del self._resume[next(iter(self._resume))]
        return entries

    async def _ensure_index(self) -> None:
        if self._indexed:
            return
        async with self._index_lock:
            if self._indexed:
                return
            scan = await self._in_thread(partial(scan_log, self.path))
            self._index, self._size, self._bytes = scan.index, scan.size, scan.bytes
            self._last_seq = self._disk_seq = scan.last_seq
            self._ends = (scan.last_control or {}).get("type") == "end"
            self._indexed = True

    async def _in_thread(self, call: Callable[[], T]) -> T:
        try:
            return await trio.to_thread.run_sync(call)
        except (OSError, LogCorrupt) as exc:
            raise LogUnavailable(f"cannot read job log {self.path}: {exc}") from None
