"""The job log on its own: a real file, real trio, no hive."""

from __future__ import annotations

import os
import threading
import tracemalloc
from pathlib import Path

import pytest
import trio
import trio.testing

from hive.joblog import (
    BATCH_BYTES,
    TAIL_BYTES,
    WRITE_BACKLOG,
    WRITE_BATCH,
    JobLog,
    LogEntry,
    LogUnavailable,
    OutputEntry,
)
from hive.logfile import (
    MAGIC,
    MAX_RECORD,
    READ_WINDOW,
    RECORD,
    open_for_append,
    read_entries,
    record_header,
    scan_log,
    settle_log,
    write_all,
)
from hivewire.protocol import ControlEvent, Stream

MiB = 1024 * 1024


def stdout_of(entries: list[LogEntry]) -> bytes:
    return b"".join(
        e.data for e in entries if isinstance(e, OutputEntry) and e.stream == Stream.STDOUT
    )


async def read_all(job_log: JobLog, since: int = 0) -> list[LogEntry]:
    entries: list[LogEntry] = []
    async for batch in job_log.follow(since):
        entries.extend(batch)
    return entries


async def collect(job_log: JobLog, stream: Stream) -> bytes:
    return b"".join([chunk async for chunk in job_log.output(stream)])


def check_seqs(entries: list[LogEntry], first: int = 1) -> None:
    assert [e.seq for e in entries] == list(range(first, first + len(entries)))


async def test_entries_roundtrip_through_memory_and_disk(tmp_path: Path) -> None:
    job_log = JobLog(tmp_path / "a.log")
    async with job_log.writing():
        job_log.append_control({"type": "state", "state": "running"})
        job_log.append_output(Stream.STDOUT, b"hello\n")
        job_log.append_output(Stream.STDERR, b"\xff\xfe not utf-8\n")
        job_log.append_output(Stream.STDOUT, b"world\n")
        job_log.append_control({"type": "end", "state": "succeeded"})
    live = await read_all(job_log)
    check_seqs(live)
    assert stdout_of(live) == b"hello\nworld\n"
    assert await collect(job_log, Stream.STDERR) == b"\xff\xfe not utf-8\n"
    # The same entries, read back by a log that knows only the file.
    again = JobLog.existing(job_log.path, last_seq=0)
    assert await read_all(again) == live
    assert again.last_seq == 5
    assert again.bytes_written(Stream.STDOUT) == 12
    scan = scan_log(job_log.path)
    assert scan.last_control == {"type": "end", "state": "succeeded"}


async def test_follower_far_behind_reads_from_disk_in_bounded_batches(tmp_path: Path) -> None:
    job_log = JobLog(tmp_path / "a.log")
    chunks = [bytes([65 + i % 26]) * (MiB - i) for i in range(20)]  # 20 MiB, far beyond the tail
    batches: list[list[LogEntry]] = []
    async with job_log.writing(), trio.open_nursery() as nursery:
        for chunk in chunks:
            job_log.append_output(Stream.STDOUT, chunk)
        await job_log.flush()
        # Only the tail is in memory; the rest is on disk.
        assert job_log._tail_cost <= TAIL_BYTES + MiB

        async def follow() -> None:
            async for batch in job_log.follow(0):
                batches.append(batch)

        nursery.start_soon(follow)
        await trio.testing.wait_all_tasks_blocked()
        job_log.append_output(Stream.STDOUT, b"live\n")  # arrives while following
        job_log.append_control({"type": "end"})
        job_log.close()
    entries = [e for batch in batches for e in batch]
    check_seqs(entries)
    assert stdout_of(entries) == b"".join(chunks) + b"live\n"
    for batch in batches:  # a batch stops once it holds BATCH_BYTES: one entry may overshoot
        assert sum(len(e.data) for e in batch[:-1] if isinstance(e, OutputEntry)) < BATCH_BYTES


async def test_written_entries_stay_in_memory_while_the_writer_lags(tmp_path: Path) -> None:
    """The unwritten backlog does not push what is already on disk out of the
    in-memory tail: a follower just behind the writer is served from memory.
    (It once did, and every follower of a bulk job read every byte back.)"""
    job_log = JobLog(tmp_path / "a.log")
    writes = threading.Semaphore(0)  # each write of the writer's thread waits for one
    write_parts = job_log._write_parts

    def gated(parts: list[bytes]) -> None:
        writes.acquire()
        write_parts(parts)

    job_log._write_parts = gated  # type: ignore[method-assign]
    # Records of the largest size, twice what the tail holds; a batch is a few of them.
    chunks = [bytes([65 + i % 26]) * MAX_RECORD for i in range(2 * TAIL_BYTES // MAX_RECORD)]
    per_batch = WRITE_BATCH // MAX_RECORD
    async with job_log.writing():
        try:
            for chunk in chunks:
                job_log.append_output(Stream.STDOUT, chunk)
            writes.release()  # the first batch reaches the file
            with trio.fail_after(10):
                while job_log.last_seq < 1:
                    await trio.sleep(0.001)
            assert job_log.last_seq == per_batch  # the writer waits at its second batch
            job_log.path.unlink()  # a read from the file would fail now
            first = await job_log.read_after(0)
            assert [e.seq for e in first] == list(range(1, per_batch + 1))
            assert stdout_of(first) == b"".join(chunks[:per_batch])
        finally:
            writes.release(len(chunks))
    assert job_log.last_seq == len(chunks)


async def test_memory_stays_bounded_however_much_is_written(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        job_log = JobLog(tmp_path / "a.log")
        held = 0
        async with job_log.writing():
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(64):
                job_log.append_output(Stream.STDOUT, b"y" * MiB)  # a new object each time
                await job_log.wait_writable()  # as the job's pipe readers do
                held = max(held, tracemalloc.get_traced_memory()[0] - before)
            await job_log.flush()
            settled = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert job_log.path.stat().st_size > 64 * MiB
    # The unwritten backlog plus the tail, at most, and only the tail once written.
    assert held < TAIL_BYTES + WRITE_BACKLOG + 2 * MiB
    assert settled < TAIL_BYTES + 2 * MiB


async def test_resume_from_any_seq_gives_exactly_the_rest(tmp_path: Path) -> None:
    job_log = JobLog(tmp_path / "a.log")
    async with job_log.writing():
        for i in range(3000):
            job_log.append_output(Stream(1 + i % 2), f"line {i}\n".encode() * (1 + i % 50))
        job_log.append_control({"type": "end"})
    everything = await read_all(job_log)
    for since in (0, 1, 777, 1500, 2999, 3000):
        rest = await read_all(job_log, since)
        assert rest == everything[since:]
    assert await read_all(job_log, 3001) == []


async def test_big_chunks_are_split_and_output_streams_in_pieces(tmp_path: Path) -> None:
    job_log = JobLog(tmp_path / "a.log")
    data = os.urandom(MAX_RECORD * 3 + 5)
    async with job_log.writing():
        assert job_log.append_output(Stream.STDOUT, data) == 4
        assert job_log.last_seq == 0  # not shown before it is in the file
        await job_log.flush()
        assert job_log.last_seq == 4
        pieces = [chunk async for chunk in job_log.output(Stream.STDOUT)]
    assert b"".join(pieces) == data
    assert max(len(p) for p in pieces) <= MAX_RECORD


@pytest.mark.parametrize(
    ("chunks", "lines", "expected"),
    [
        ([b"a\nb\nc\n"], 2, b"b\nc\n"),
        ([b"a\nb\nc"], 2, b"b\nc"),  # a last line without newline counts
        ([b"a\n", b"b\n", b"c\n"], 2, b"b\nc\n"),  # the cut falls between records
        ([b"a\nb", b"b", b"b\nc\n"], 2, b"bbb\nc\n"),  # a line across records
        ([b"a\nb\n"], 5, b"a\nb\n"),  # fewer lines than asked
        ([b"x" * 300_000, b"y" * 300_000, b"\nz\n"], 1, b"z\n"),
        ([b"x" * 300_000, b"y" * 300_000, b"\nz\n"], 2, b"x" * 300_000 + b"y" * 300_000 + b"\nz\n"),
    ],
)
async def test_tail_start(tmp_path: Path, chunks: list[bytes], lines: int, expected: bytes) -> None:
    job_log = JobLog(tmp_path / "a.log")
    async with job_log.writing():
        job_log.append_control({"type": "state", "state": "running"})
        for chunk in chunks:
            job_log.append_output(Stream.STDOUT, chunk)
            job_log.append_output(Stream.STDERR, b"noise\n")
        since, skip = await job_log.tail_start(lines)
    rest = (await job_log.read_after(since, max_bytes=10 * MiB))[:]
    if skip:
        first = rest[0]
        assert isinstance(first, OutputEntry) and 0 < skip < len(first.data)
        rest[0] = OutputEntry(first.seq, first.stream, first.data[skip:])
    assert stdout_of(rest) == expected


async def test_latest_skips_all_but_the_end(tmp_path: Path) -> None:
    job_log = JobLog(tmp_path / "a.log")
    async with job_log.writing():
        job_log.append_output(Stream.STDOUT, b"old\n")
        assert await job_log.latest() == 1
        assert await job_log.tail_start(0) == (1, 0)
        job_log.append_control({"type": "end"})
        assert await job_log.latest() == 1  # a late follower still gets the end event
    assert await job_log.latest() == 1
    assert [e.seq for e in await read_all(job_log, await job_log.latest())] == [2]


async def test_a_write_error_fails_once_and_keeps_control_events(tmp_path: Path) -> None:
    failures: list[OSError] = []
    job_log = JobLog(Path("/dev/full"), on_failure=failures.append)  # every write: ENOSPC
    async with job_log.writing():
        job_log.append_output(Stream.STDOUT, b"lost\n")
        await job_log.flush()
        job_log.append_output(Stream.STDOUT, b"dropped\n")  # after the failure: dropped
        job_log.append_control({"type": "end", "state": "failed"})
    assert len(failures) == 1 and "No space left" in str(failures[0])
    entries = await read_all(job_log)
    check_seqs(entries)
    assert isinstance(entries[-1], ControlEvent) and entries[-1].type == "end"


async def test_on_failure_may_append(tmp_path: Path) -> None:
    """The job reacts to a failure by appending its own events: seqs stay whole."""
    job_log = JobLog(Path("/dev/full"))
    job_log.on_failure = lambda exc: job_log.append_control({"type": "message", "text": str(exc)})
    async with job_log.writing():
        job_log.append_output(Stream.STDOUT, b"x")
        await job_log.flush()
    entries = await read_all(job_log)
    check_seqs(entries)
    assert [type(e) for e in entries] == [OutputEntry, ControlEvent]


async def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    job_log = JobLog(tmp_path / "a.log")
    async with job_log.writing():
        for _ in range(8):
            job_log.append_output(Stream.STDOUT, b"x" * MiB)
    job_log.path.unlink()  # e.g. removed by retention under a late follower
    with pytest.raises(LogUnavailable, match="cannot read job log"):
        await read_all(job_log)


def test_settle_cuts_a_torn_record_and_appends_the_end(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    payload = b"complete\n"
    with path.open("wb") as f:
        f.write(MAGIC + RECORD.pack(1, 1, len(payload)) + payload)
        f.write(RECORD.pack(1, 2, 1000) + b"torn")  # the hive died mid-write
    end = {"type": "end", "state": "interrupted"}
    scan = settle_log(path, end, [{"type": "state", "state": "interrupted"}])
    assert scan.last_seq == 3 and scan.last_control == end
    assert scan.size == scan.file_size == path.stat().st_size
    assert settle_log(path, end, []).last_seq == 3  # idempotent


async def test_thousands_of_small_entries_appended_at_once_are_all_written(tmp_path: Path) -> None:
    """More records than one writev takes (IOV_MAX) wait for the writer at once."""
    job_log = JobLog(tmp_path / "a.log")
    lines = [f"line {i}\n".encode() for i in range(5000)]
    async with job_log.writing():
        for line in lines:
            job_log.append_output(Stream.STDOUT, line)
    assert job_log.error is None
    assert scan_log(job_log.path).last_seq == len(lines)
    assert await collect(job_log, Stream.STDOUT) == b"".join(lines)


def test_read_entries_gives_records_of_every_size_around_the_read_window(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    sizes = [0, 1, READ_WINDOW - RECORD.size - 1, READ_WINDOW - 1, READ_WINDOW, READ_WINDOW + 1]
    payloads = [os.urandom(n) for n in sizes * 3]
    fd = open_for_append(path)
    try:
        for seq, payload in enumerate(payloads, 1):
            write_all(fd, [record_header(1 + seq % 2, seq, len(payload)), payload])
    finally:
        os.close(fd)
    end = path.stat().st_size
    for first in (1, 2, 7, len(payloads)):
        got: list[LogEntry] = []
        offset, seq = len(MAGIC), first
        while offset < end:
            entries, offset = read_entries(path, offset, seq, end, 3 * READ_WINDOW)
            got += entries
            seq = got[-1].seq + 1 if got else seq
        assert [e.seq for e in got] == list(range(first, len(payloads) + 1))
        assert [e.data for e in got if isinstance(e, OutputEntry)] == payloads[first - 1 :]
    # Filtered by kind, and stopped early by the end given.
    entries, _ = read_entries(path, len(MAGIC), 1, end, end, (2,))
    assert [e.seq for e in entries] == list(range(1, len(payloads) + 1, 2))
