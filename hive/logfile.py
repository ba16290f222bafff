"""The on-disk format of a job log, and the blocking operations on such a file.

A job log is one append-only file per job::

    MAGIC                      8 bytes, b"HIVELOG\\x01"
    record, record, ...        in seq order, seq 1, 2, 3, ... with no gap

    record = header (>BQI: kind, seq, length) + payload of `length` bytes
    kind   = 1 stdout, 2 stderr (the :class:`~hivewire.protocol.Stream` values),
             3 control (payload: the event's JSON body without its seq, UTF-8)

Output is stored as the exact bytes the job wrote, in the chunks the hive read
them, under the same ``seq`` the websocket stream uses: a follower that falls
behind reads the very records a live follower got from memory. Records are
appended in order (a batch per ``writev``) to an ``O_APPEND`` file, so a crash
can leave at most one torn record at the end; readers stop before it, and
:func:`settle_log` cuts it off when the hive starts again.

Everything here blocks: the trio layer (:mod:`hive.joblog`) calls it through
``trio.to_thread``. Each call reads a bounded amount, so no call holds much
memory however big the log or however long its lines.
"""

from __future__ import annotations

import bisect
import json
import os
import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from hivewire.protocol import MAX_FRAME_PAYLOAD, ControlEvent, Stream

MAGIC = b"HIVELOG\x01"
RECORD = struct.Struct(">BQI")
RECORD_HEADER = RECORD.size
CONTROL = 3

#: Largest payload of one output record: one seq never holds more than one
#: stream message can carry (a binary frame's payload; base64 of it in a JSON
#: message stays far below the protocol's message limit). The hive reads pipes
#: in chunks of at most this size; a bigger ``append_output`` is split.
MAX_RECORD = MAX_FRAME_PAYLOAD

#: The sparse index remembers where a record starts about every this many bytes:
#: a reader that has to find a seq on disk scans at most this far, plus one record.
INDEX_EVERY = 64 * 1024

#: Buffer of the file object readers use.
READ_BUFFER = 1024 * 1024

#: Bytes of records one read call looks at before it returns, so that a read
#: filtered by stream never runs for long in its thread.
SCAN_BUDGET = 16 * 1024 * 1024


def log_path(log_dir: Path, job_id: str) -> Path:
    """Where the log of ``job_id`` lives."""
    return log_dir / f"{job_id}.log"


def end_event(
    state: str,
    exit_code: int | None,
    error: str | None,
    teardown: dict[str, Any] | None,
    *,
    started_at: str | None = None,
    ended_at: str | None = None,
) -> dict[str, Any]:
    """The body of a job's last control event, which tells a follower it ended and how."""
    return {
        "type": "end",
        "state": state,
        "exit_code": exit_code,
        "error": error,
        "teardown": teardown,
        "started_at": started_at,
        "ended_at": ended_at,
    }


class LogCorrupt(Exception):
    """The file is not a job log, or a record in the middle of it is damaged."""


@dataclass(frozen=True, slots=True)
class OutputEntry:
    seq: int
    stream: Stream
    data: bytes


LogEntry = OutputEntry | ControlEvent


def encode_control(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def record_header(kind: int, seq: int, length: int) -> bytes:
    return RECORD.pack(kind, seq, length)


def entry_kind(entry: LogEntry) -> int:
    return int(entry.stream) if isinstance(entry, OutputEntry) else CONTROL


def _entry(kind: int, seq: int, payload: bytes) -> LogEntry:
    if kind == CONTROL:
        try:
            body = json.loads(payload)
        except ValueError:
            raise LogCorrupt(f"control record {seq} is not JSON") from None
        if not isinstance(body, dict):
            raise LogCorrupt(f"control record {seq} is not a JSON object")
        return ControlEvent(seq, body)
    try:
        return OutputEntry(seq, Stream(kind), payload)
    except ValueError:
        raise LogCorrupt(f"record {seq} has unknown kind {kind}") from None


@dataclass
class SparseIndex:
    """Record starts, (seq, offset), about every :data:`INDEX_EVERY` bytes.

    The first record always has an entry, so every seq on disk has one at or
    before it. A few thousand entries for a log of hundreds of megabytes.
    """

    seqs: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)

    def note(self, seq: int, offset: int) -> None:
        """Record that ``seq`` starts at ``offset``; call for every record, in order."""
        if not self.offsets or offset - self.offsets[-1] >= INDEX_EVERY:
            self.seqs.append(seq)
            self.offsets.append(offset)

    def at_or_before(self, seq: int) -> tuple[int, int]:
        """The indexed record closest before (or at) ``seq``: where to start scanning."""
        i = bisect.bisect_right(self.seqs, seq) - 1
        if i < 0:
            return 1, len(MAGIC)
        return self.seqs[i], self.offsets[i]

    def copy(self) -> SparseIndex:
        return SparseIndex(list(self.seqs), list(self.offsets))


@dataclass
class LogScan:
    """What a full pass over a log file found."""

    size: int  # bytes holding complete records (what follows is a torn record)
    file_size: int
    last_seq: int
    index: SparseIndex
    bytes: dict[Stream, int]
    last_control: dict[str, Any] | None  # the body of the last record, if a control event


def _records(
    f: BinaryIO, offset: int, end: int
) -> Iterator[tuple[int, int, int, int]]:  # (offset, kind, seq, length)
    """Headers of the complete records in ``[offset, end)``; the caller reads or
    skips each payload before asking for the next."""
    f.seek(offset)
    while offset + RECORD_HEADER <= end:
        header = f.read(RECORD_HEADER)
        if len(header) < RECORD_HEADER:
            return
        kind, seq, length = RECORD.unpack(header)
        if offset + RECORD_HEADER + length > end:
            return
        yield offset, kind, seq, length
        offset += RECORD_HEADER + length
        f.seek(offset)


def _check_magic(f: BinaryIO) -> None:
    if f.read(len(MAGIC)) != MAGIC:
        raise LogCorrupt("not a hive job log (bad magic)")


def scan_log(path: Path) -> LogScan:
    """Walk every record header: size, last seq, index, byte counts.

    A missing or empty file is an empty log. Payloads are skipped, except the
    control ones (small), so a pass costs a seek per record, not a read of
    the output.
    """
    result = LogScan(len(MAGIC), 0, 0, SparseIndex(), {s: 0 for s in Stream}, None)
    try:
        f = path.open("rb", buffering=READ_BUFFER)
    except FileNotFoundError:
        result.size = 0
        return result
    with f:
        result.file_size = os.fstat(f.fileno()).st_size
        if result.file_size < len(MAGIC):
            result.size = 0
            return result
        _check_magic(f)
        expected = 1
        for offset, kind, seq, length in _records(f, len(MAGIC), result.file_size):
            if seq != expected:
                raise LogCorrupt(f"{path}: record {seq} found where {expected} was expected")
            expected += 1
            result.index.note(seq, offset)
            result.last_seq = seq
            result.size = offset + RECORD_HEADER + length
            if kind == CONTROL:
                event = _entry(kind, seq, f.read(length))
                assert isinstance(event, ControlEvent)
                result.last_control = event.body
            else:
                result.bytes[Stream(kind)] += length
                result.last_control = None
    return result


def read_entries(
    path: Path,
    offset: int,
    first_seq: int,
    end: int,
    max_bytes: int,
    kinds: Collection[int] | None = None,
) -> tuple[list[LogEntry], int]:
    """Entries with ``seq >= first_seq`` from ``offset`` on, stopping at ``end``.

    ``offset`` must be the start of a record at or before ``first_seq``.
    Returns at least one entry if one is there, and stops once the payloads
    read reach ``max_bytes`` (or :data:`SCAN_BUDGET` bytes were looked at), with
    the offset to continue from. ``kinds`` keeps only those record kinds; the
    others are skipped without being read.

    This is how a follower that fell behind the in-memory tail catches up, so
    it reads with ``pread`` (:class:`_Reader`): a bulk payload arrives in one
    copy, straight into the bytes object the follower sends.
    """
    entries: list[LogEntry] = []
    taken = 0
    start = offset
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        reader = _Reader(fd)
        while offset + RECORD_HEADER <= end:
            if taken >= max_bytes or offset - start >= SCAN_BUDGET:
                break
            header = reader.read(offset, RECORD_HEADER)
            if len(header) < RECORD_HEADER:
                break
            kind, seq, length = RECORD.unpack(header)
            after = offset + RECORD_HEADER + length
            if after > end:
                break
            if seq >= first_seq and (kinds is None or kind in kinds):
                payload = reader.read(offset + RECORD_HEADER, length)
                if len(payload) < length:
                    break  # the file was cut under us
                entries.append(_entry(kind, seq, payload))
                taken += RECORD_HEADER + length
            offset = after
    finally:
        os.close(fd)
    return entries, offset


#: Bytes :class:`_Reader` reads at once for headers and small payloads.
READ_WINDOW = 64 * 1024


class _Reader:
    """``pread`` with a small window: headers and small payloads come from one
    read of :data:`READ_WINDOW` bytes, a payload as large as the window or
    larger from a read of its own (one copy, no buffer in between)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.window = b""
        self.at = 0

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer only at the end of the file)."""
        skip = offset - self.at
        if skip >= 0 and skip + length <= len(self.window):
            return self.window[skip : skip + length]
        if length >= READ_WINDOW:
            return _pread_all(self.fd, length, offset)
        self.window, self.at = _pread_all(self.fd, READ_WINDOW, offset), offset
        return self.window[:length]


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if 0 < len(data) < length:  # a short read of a regular file: only at its end, or a signal
        parts = [data]
        got = len(data)
        while got < length and (more := os.pread(fd, length - got, offset + got)):
            parts.append(more)
            got += len(more)
        data = b"".join(parts)
    return data


def find_tail_start(path: Path, index: SparseIndex, end: int, lines: int) -> tuple[int, int]:
    """Where the last ``lines`` lines of stdout begin: ``(seq, skip)``.

    The stream should start at record ``seq``, dropping the first ``skip`` bytes
    of its payload (``skip`` is 0 or inside a stdout record, never all of it).
    ``(1, 0)`` if stdout has no more lines than that. As
    ``tail -n`` does, a last line without a newline counts as a line.

    Works backwards one indexed segment at a time, so it holds at most one
    segment (about :data:`INDEX_EVERY` bytes plus one record) however long the
    lines are.
    """
    assert lines > 0
    need: int | None = None  # newlines still to find, once we know how stdout ends
    bounds = [*index.offsets, end]
    with path.open("rb", buffering=READ_BUFFER) as f:
        for i in range(len(index.offsets) - 1, -1, -1):
            segment = [
                (seq, f.read(length))
                for _, kind, seq, length in _records(f, bounds[i], bounds[i + 1])
                if kind == Stream.STDOUT
            ]
            for seq, data in reversed(segment):
                if not data:
                    continue
                if need is None:
                    need = lines + 1 if data.endswith(b"\n") else lines
                count = data.count(b"\n")
                if count < need:
                    need -= count
                    continue
                position = len(data)
                for _ in range(need):
                    position = data.rfind(b"\n", 0, position)
                if position + 1 == len(data):
                    return seq + 1, 0  # the lines start with the next record
                return seq, position + 1
    return 1, 0


def open_for_append(path: Path) -> int:
    """Open (creating) a log for appending; write the magic if the file is new."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_size == 0:
            write_all(fd, [MAGIC])
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, parts: list[bytes]) -> int:
    """Write ``parts`` in one ``writev`` if the kernel takes it all (it does for
    regular files unless the disk fills up); return the bytes written."""
    total = sum(len(p) for p in parts)
    done = os.writev(fd, parts)
    if done < total:
        rest = b"".join(parts)[done:]
        while rest:
            rest = rest[os.write(fd, rest) :]
    return total


def settle_log(path: Path, end: dict[str, Any], before_end: list[dict[str, Any]]) -> LogScan:
    """Make a log left by a stopped hive whole: cut a torn last record, and
    append ``before_end`` events and ``end`` unless the log already ends with an
    ``end`` event. Fsyncs what it appended. Returns the scan of the result."""
    scan = scan_log(path)
    if scan.file_size > scan.size:
        os.truncate(path, scan.size)
    last = scan.last_control
    if last is not None and last.get("type") == "end":
        return scan
    fd = open_for_append(path)
    try:
        seq = scan.last_seq
        for body in [*before_end, end]:
            seq += 1
            payload = encode_control(body)
            write_all(fd, [record_header(CONTROL, seq, len(payload)), payload])
        os.fsync(fd)
    finally:
        os.close(fd)
    return scan_log(path)
