"""The job stream's state machine, sans-IO: what a hive sends a follower, when
it closes, and what a client makes of the close.

:mod:`hivewire.protocol` says how one event looks on the wire; this module
says which events a follower gets, in which messages, and how the stream ends.
Neither does any I/O: the hive's websocket route is a shell that reads the
job's log and moves the messages :class:`StreamSender` hands it, and the keeper
feeds what it receives to :class:`ResumeCursor` and the close it gets to
:func:`classify_close` (as hypercorn's ``ws_stream.py`` owns a websocket's
states while its trio shell moves bytes). So the rules live in one place, are
the same for both ends, and are tested without a socket
(``tests/test_protocol.py``).

The rules (docs/api.md, "The stream"):

* Where to start: ``since=SEQ`` (default 0), ``since=latest`` or
  ``tail_lines=N`` (:func:`parse_query`); the last two first send a start
  frame, because the client could not know the seq they start after.
* Resume edges: ``since`` equal to the job's last seq when that seq is the
  ``end`` event closes 1000 at once (the client has everything); ``since``
  beyond the job's last seq is refused with 4400 and a reason that names both
  numbers (:func:`beyond_end_reason`): the client holds seqs this hive never
  showed, which can only mean the hive lost them, and waiting would not bring
  them back.
* After the ``end`` event the stream closes with 1000; a log that stops before
  its ``end`` event (removed by retention, damaged) closes with 4410.
* Output is coalesced into binary messages of at most
  :data:`~hivewire.protocol.MAX_FRAME_PAYLOAD` bytes of payload, or with
  ``format=json`` sent one chunk per text message; no message exceeds
  :data:`MAX_MESSAGE`.

Many followers of one job read the same ranges of its log (the hive serves
followers in groups that read at the same moment, and every follower that
starts from 0 replays the same history), so the messages for a range are
encoded once and shared (:class:`SharedFrames`): a range of seqs is immutable,
so its messages are too.
"""

from __future__ import annotations

import enum
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .protocol import (
    ControlEvent,
    Stream,
    coalesce,
    encode_control,
    encode_output,
    encode_start,
    output_event_json,
)

#: Close codes. A refusal is 4000 + the HTTP status it stands for.
NORMAL = 1000
GOING_AWAY = 1001
CLOSE_BASE = 4000
BAD_REQUEST = 4400
NOT_FOUND = 4404
LOG_GONE = 4410

#: No message of the stream is bigger than this (bytes), in either format.
#: Binary messages carry at most MAX_FRAME_PAYLOAD (256 KiB) + 17 bytes; JSON
#: ones at most about 342 KiB (a chunk of 256 KiB in base64). Browsers and
#: Python's ``websockets`` accept 1 MiB by default.
MAX_MESSAGE = 1024 * 1024

#: The longest close reason a websocket close frame can carry is 123 bytes.
MAX_REASON = 120


class StreamRefused(Exception):
    """The stream cannot be served: close with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Close:
    """How the hive ends a stream."""

    code: int
    reason: str
    #: The client was sent the ``end`` event and closes by itself: give it a
    #: moment to, so that two close frames do not cross.
    client_first: bool = False


@dataclass(frozen=True, slots=True)
class StartQuery:
    """Where the stream's query says to start: after ``since``, at the job's
    latest event, or ``tail_lines`` lines before the end of its stdout; and
    whether output travels as JSON text."""

    since: int = 0
    latest: bool = False
    tail_lines: int | None = None
    json: bool = False


def parse_query(args: Mapping[str, str]) -> StartQuery:
    """``since``/``tail_lines``/``format`` from a stream's query, checked before
    the job is looked up, so that a malformed query is a 4400 whether or not
    the job exists. Raises :class:`StreamRefused`."""
    fmt = args.get("format", "binary")
    if fmt not in ("binary", "json"):
        raise StreamRefused(BAD_REQUEST, "format must be binary or json")
    json_output = fmt == "json"
    since = args.get("since")
    tail_lines = args.get("tail_lines")
    if tail_lines is not None:
        if since is not None:
            raise StreamRefused(BAD_REQUEST, "give since or tail_lines, not both")
        return StartQuery(tail_lines=_int_arg(tail_lines, "tail_lines"), json=json_output)
    if since == "latest":
        return StartQuery(latest=True, json=json_output)
    return StartQuery(since=0 if since is None else _int_arg(since, "since"), json=json_output)


def _int_arg(value: str, name: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        extra = ' or "latest"' if name == "since" else ""
        raise StreamRefused(BAD_REQUEST, f"{name} must be a non-negative integer{extra}")
    return int(value)


_BEYOND = re.compile(r"^since (\d+) is beyond the job's last seq (\d+)")


def beyond_end_reason(since: int, last_seq: int) -> str:
    """The 4400 reason for a ``since`` the hive never showed; clients parse it
    with :func:`parse_beyond_end`."""
    return f"since {since} is beyond the job's last seq {last_seq}"


def parse_beyond_end(reason: str) -> tuple[int, int] | None:
    """``(since, last_seq)`` from a :func:`beyond_end_reason`, else None."""
    match = _BEYOND.match(reason)
    return (int(match.group(1)), int(match.group(2))) if match else None


def close_reason(text: str) -> str:
    """A close reason: one line of printable ASCII within the protocol's limit."""
    clean = "".join(
        c if c.isascii() and c.isprintable() else c.encode("unicode_escape").decode("ascii")
        for c in text
    )
    return clean if len(clean) <= MAX_REASON else clean[: MAX_REASON - 3] + "..."


class OutputRecord(Protocol):
    """An output chunk as the hive's log holds it: one seq, one stream."""

    @property
    def seq(self) -> int: ...
    @property
    def stream(self) -> Stream: ...
    @property
    def data(self) -> bytes: ...


Entry = OutputRecord | ControlEvent

#: A websocket message: bytes for a binary one, str for a text one.
Message = bytes | str


class StreamSender:
    """The hive's side of one follower's stream.

    The shell resolves the start (for ``latest`` and ``tail_lines`` that needs
    the log), calls :meth:`start`, then feeds every batch the log yields to
    :meth:`messages` and sends what comes out; when the log has no more, it
    closes as :meth:`finish` says.
    """

    def __init__(self, query: StartQuery, shared: SharedFrames | None = None) -> None:
        self.query = query
        #: Messages already encoded for other followers of the same job.
        self.shared = shared
        #: The seq of the last event handed out (the stream continues after it).
        self.position = 0
        #: Whether the ``end`` event was handed out.
        self.ended = False
        self._skip = 0

    def start(
        self, *, since: int, last_seq: int, ends: bool, skip: int = 0
    ) -> tuple[list[Message], Close | None]:
        """Begin after ``since`` (dropping ``skip`` bytes of the first entry),
        for a job whose log shows seqs up to ``last_seq`` (``ends``: the last one
        is the ``end`` event). Returns the messages to send first, and a close
        if the stream is already over."""
        if since > last_seq:
            return [], Close(BAD_REQUEST, beyond_end_reason(since, last_seq))
        self.position, self._skip = since, skip
        announce = self.query.latest or self.query.tail_lines is not None
        first: list[Message] = [encode_start(since)] if announce else []
        if ends and since == last_seq:
            self.ended = True
            return first, Close(NORMAL, f"nothing after seq {since}: the job has ended")
        return first, None

    def messages(self, batch: Sequence[Entry]) -> list[Message]:
        """The websocket messages for the next entries of the log, in order."""
        if not batch:
            return []
        entries: Iterable[Entry] = batch
        if self._skip:
            head = batch[0]
            assert not isinstance(head, ControlEvent), "a tail starts inside an output chunk"
            entries = [_Chunk(head.seq, head.stream, head.data[self._skip :]), *batch[1:]]
            self._skip = 0
            out = list(_frames(entries, json_output=self.query.json))
        elif self.shared is not None:
            out = self.shared.messages(batch, json_output=self.query.json)
        else:
            out = list(_frames(entries, json_output=self.query.json))
        last = batch[-1]
        self.position = last.seq
        self.ended = isinstance(last, ControlEvent) and last.type == "end"
        return out

    def finish(self) -> Close:
        """How to close once the log has nothing more to give."""
        if self.ended:
            return Close(NORMAL, "end of job", client_first=True)
        return Close(LOG_GONE, "the job's log ends before its end event")


class SharedFrames:
    """The messages for ranges of one job's log, encoded once for all its followers.

    Keyed by the range's first and last seq and the format: a seq names one
    event for good, so two followers that read the same range get the same
    messages, the very same objects. The most recently used ranges are kept,
    at most :attr:`max_ranges` of them and :attr:`max_bytes` of messages, so
    that a cache costs a bounded amount whatever the job writes.
    """

    def __init__(self, max_ranges: int = 256, max_bytes: int = 8 * 1024 * 1024) -> None:
        self.max_ranges = max_ranges
        self.max_bytes = max_bytes
        self.size = 0
        #: Messages looked up, and how many of them were already encoded.
        self.lookups = 0
        self.hits = 0
        self._ranges: OrderedDict[tuple[int, int, bool], tuple[list[Message], int]] = OrderedDict()

    def messages(self, batch: Sequence[Entry], *, json_output: bool) -> list[Message]:
        """The messages for ``batch`` (consecutive entries), as :func:`_frames`
        makes them; the list is the caller's, the messages are shared."""
        key = (batch[0].seq, batch[-1].seq, json_output)
        self.lookups += 1
        found = self._ranges.get(key)
        if found is not None:
            self.hits += 1
            self._ranges.move_to_end(key)
            return list(found[0])
        out = list(_frames(batch, json_output=json_output))
        size = sum(map(len, out))
        if size <= self.max_bytes // 4:  # one huge range must not empty the cache
            self._ranges[key] = (out, size)
            self.size += size
            while len(self._ranges) > self.max_ranges or self.size > self.max_bytes:
                _, (_, dropped) = self._ranges.popitem(last=False)
                self.size -= dropped
        return list(out)


@dataclass(frozen=True, slots=True)
class _Chunk:
    seq: int
    stream: Stream
    data: bytes


def _frames(entries: Iterable[Entry], *, json_output: bool) -> Iterator[Message]:
    """Messages for consecutive entries: control events one each; runs of
    output coalesced (binary) or one message per chunk (JSON)."""
    run: list[OutputRecord] = []
    for entry in [*entries, None]:
        if entry is not None and not isinstance(entry, ControlEvent):
            run.append(entry)
            continue
        if run:
            if json_output:
                for out in run:
                    yield output_event_json(out.stream, out.seq, out.data)
            else:
                for chunk in coalesce((out.seq, out.stream, out.data) for out in run):
                    yield encode_output(chunk.stream, chunk.first, chunk.last, chunk.data)
            run = []
        if entry is not None:
            yield encode_control(entry.seq, entry.body)


class CloseKind(enum.Enum):
    """What a close of the stream means to a client."""

    #: 1000: the stream is complete (after ``end``, or nothing was after ``since``).
    DONE = "done"
    #: 1001: the hive is shutting down; reconnect to a restarted hive.
    GOING_AWAY = "going away"
    #: 4400 with :func:`beyond_end_reason`: the client holds seqs the hive does not.
    BEYOND_END = "beyond end"
    #: 4404: no such job.
    NOT_FOUND = "not found"
    #: 4410: the job's log can no longer be read to its end.
    LOG_GONE = "log gone"
    #: Any other 44xx: the request was refused (malformed query, access).
    REFUSED = "refused"
    #: No close frame, or any other code: the connection was lost; resume.
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class StreamClosed:
    kind: CloseKind
    code: int | None
    reason: str
    #: For BEYOND_END: the job's last seq, as the hive has it.
    last_seq: int | None = None

    def describe(self) -> str:
        text = f"{self.code}: {self.reason}" if self.reason else str(self.code)
        return f"the hive closed the stream ({text})"


def classify_close(code: int | None, reason: str | None) -> StreamClosed:
    """What a client should make of the stream's close."""
    text = reason or ""
    if code == NORMAL:
        return StreamClosed(CloseKind.DONE, code, text)
    if code == GOING_AWAY:
        return StreamClosed(CloseKind.GOING_AWAY, code, text)
    if code == BAD_REQUEST and (beyond := parse_beyond_end(text)) is not None:
        return StreamClosed(CloseKind.BEYOND_END, code, text, last_seq=beyond[1])
    if code == NOT_FOUND:
        return StreamClosed(CloseKind.NOT_FOUND, code, text)
    if code == LOG_GONE:
        return StreamClosed(CloseKind.LOG_GONE, code, text)
    if code is not None and CLOSE_BASE + 400 <= code < CLOSE_BASE + 500:
        return StreamClosed(CloseKind.REFUSED, code, text)
    return StreamClosed(CloseKind.LOST, code, text)
