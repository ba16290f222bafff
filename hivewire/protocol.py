"""The job stream protocol, sans-IO.

A job's history is a sequence of *events*, numbered by ``seq`` from 1 with no
gaps. There are two kinds:

* output chunks — raw bytes the job wrote to stdout or stderr;
* control events — JSON objects: state changes, hive messages, and the final
  ``end`` event.

On a websocket, control events travel as text frames (one JSON object each,
carrying its ``seq``). Output travels as binary frames so that no byte of build
output ever goes through JSON: a 17-byte header (stream, first seq, last seq)
followed by the payload. One binary frame may carry several consecutive chunks
of the same stream, coalesced: that keeps the frame rate low for chatty jobs
while the seq range still tells the client exactly what it has. A client that
remembers the last seq it has *printed* resumes with ``?since=<that seq>`` and
gets neither a gap nor a repeat.

A client may also ask to start relative to the end of what exists:
``?since=latest`` (only what comes next) or ``?tail_lines=N`` (the last N
lines of stdout, then live). The hive then first sends a *start* frame,
``{"type": "start", "since": S}`` — not an event, it has no seq of its own —
saying that the stream continues after seq S. With ``tail_lines`` the first
output chunk after it may hold only the end of event S+1's bytes (the start of
the last N lines). Either way the client knows the seq of everything it got
and resumes as usual.

For clients that cannot handle binary frames, ``?format=json`` sends every
output chunk as a text frame too (see :func:`output_event_json`): valid UTF-8
as ``data``, anything else base64-encoded as ``data_b64``, so no byte is ever
altered in either format.

This module does no I/O: it is shared by the hive and the keeper and tested on
its own.
"""

from __future__ import annotations

import base64
import enum
import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

# The API's version lives in the package: a client can learn it without this module.
from hivewire import API_VERSION as API_VERSION

#: Largest payload put into one binary frame. Well under trio-websocket's
#: default 1 MiB message limit, big enough that framing costs nothing.
MAX_FRAME_PAYLOAD = 256 * 1024

_HEADER = struct.Struct(">BQQ")
HEADER_SIZE = _HEADER.size


class Stream(enum.IntEnum):
    STDOUT = 1
    STDERR = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """Bytes the job wrote to one stream, covering events ``first..last``."""

    stream: Stream
    first: int
    last: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """A JSON event: ``{"seq": n, "type": ..., ...}``."""

    seq: int
    body: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.body.get("type", ""))


Event = OutputChunk | ControlEvent


@dataclass(frozen=True, slots=True)
class StartAt:
    """Not an event: the stream continues after seq ``since``."""

    since: int


#: Anything a stream frame decodes to.
Frame = Event | StartAt


class ProtocolError(ValueError):
    """A frame that does not follow the protocol."""


def encode_output(stream: Stream, first: int, last: int, data: bytes) -> bytes:
    return _HEADER.pack(stream, first, last) + data


def encode_control(seq: int, body: dict[str, Any]) -> str:
    return json.dumps({"seq": seq, **body}, separators=(",", ":"))


def encode_start(since: int) -> str:
    return json.dumps({"type": "start", "since": since}, separators=(",", ":"))


def decode_frame(frame: bytes | str) -> Frame:
    """Turn one websocket message back into an event."""
    if isinstance(frame, bytes):
        if len(frame) < HEADER_SIZE:
            raise ProtocolError(f"binary frame of {len(frame)} bytes is shorter than its header")
        stream, first, last = _HEADER.unpack_from(frame)
        try:
            stream = Stream(stream)
        except ValueError:
            raise ProtocolError(f"unknown stream id {stream}") from None
        if last < first:
            raise ProtocolError(f"frame seq range {first}..{last} is reversed")
        return OutputChunk(stream, first, last, frame[HEADER_SIZE:])
    try:
        body = json.loads(frame)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"text frame is not JSON: {exc}") from None
    if isinstance(body, dict) and body.get("type") == "start" and "seq" not in body:
        since = body.get("since")
        if not isinstance(since, int) or since < 0:
            raise ProtocolError("start frame without a valid since")
        return StartAt(since)
    if not isinstance(body, dict) or not isinstance(body.get("seq"), int):
        raise ProtocolError("text frame is not an event object with an integer seq")
    seq = body.pop("seq")
    if body.get("type") == "output":
        return OutputChunk(Stream[str(body["stream"]).upper()], seq, seq, _json_payload(body))
    return ControlEvent(seq, body)


#: A JSON output message carries its chunk as ``data`` only if the message stays
#: within this many bytes; escaping can make it six times the chunk (a NUL is
#: ``\u0000``), base64 never more than 4/3.
MAX_JSON_DATA_MESSAGE = 2 * MAX_FRAME_PAYLOAD


def output_event_json(stream: Stream, seq: int, data: bytes) -> str:
    """An output chunk as a JSON text frame, for clients without binary frames.

    Text that is valid UTF-8 travels as ``data``, unless escaping would make
    the message larger than :data:`MAX_JSON_DATA_MESSAGE`; anything else as
    ``data_b64``. So no byte is ever altered, and a chunk of the hive's
    largest size (:data:`MAX_FRAME_PAYLOAD`) makes a message of at most about
    342 KiB.
    """
    body: dict[str, Any] = {"seq": seq, "type": "output", "stream": stream.label}
    try:
        body["data"] = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        message = json.dumps(body, separators=(",", ":"))
        if len(message) <= MAX_JSON_DATA_MESSAGE:  # escapes are ASCII: chars = bytes
            return message
        del body["data"]
    body["data_b64"] = base64.b64encode(data).decode("ascii")
    return json.dumps(body, separators=(",", ":"))


def _json_payload(body: dict[str, Any]) -> bytes:
    if "data_b64" in body:
        return base64.b64decode(body["data_b64"])
    return str(body.get("data", "")).encode("utf-8")


def coalesce(
    chunks: Iterable[tuple[int, Stream, bytes]], max_payload: int = MAX_FRAME_PAYLOAD
) -> Iterator[OutputChunk]:
    """Merge runs of consecutive same-stream chunks into frames of bounded size.

    ``chunks`` are ``(seq, stream, data)`` with consecutive seqs. A chunk larger
    than ``max_payload`` is never split (its seq must stay whole); it becomes a
    frame of its own.
    """
    run: list[bytes] = []
    run_stream: Stream | None = None
    first = last = 0
    size = 0
    for seq, stream, data in chunks:
        if run and (stream != run_stream or size + len(data) > max_payload or seq != last + 1):
            yield OutputChunk(run_stream or stream, first, last, b"".join(run))
            run = []
        if not run:
            run_stream, first, size = stream, seq, 0
        run.append(data)
        size += len(data)
        last = seq
    if run:
        yield OutputChunk(run_stream or Stream.STDOUT, first, last, b"".join(run))


class ResumeCursor:
    """What a follower has received so far, and where to resume from.

    Feeding it every event in order checks that the stream has no gap and no
    repeat; :attr:`since` is the value to pass as ``?since=`` after a
    reconnect.
    """

    def __init__(self, since: int = 0) -> None:
        self.since = since

    def accept(self, event: Frame) -> bool:
        """Record ``event``; return False for a replayed event already seen,
        and for a start frame (which only moves the cursor forward).

        Raises :class:`ProtocolError` if events were skipped.
        """
        if isinstance(event, StartAt):
            if event.since < self.since:
                raise ProtocolError(
                    f"stream restarts at seq {event.since + 1}, before {self.since + 1}"
                )
            self.since = event.since
            return False
        first, last = (
            (event.first, event.last) if isinstance(event, OutputChunk) else (event.seq, event.seq)
        )
        if last <= self.since:
            return False
        if first != self.since + 1:
            raise ProtocolError(f"stream gap: expected seq {self.since + 1}, got {first}")
        self.since = last
        return True
