"""The stream protocol on its own: the codec and the state machine, no socket."""

from __future__ import annotations

import base64
import json

import pytest

from hive.logfile import OutputEntry  # the hive's own record type must fit the machine
from hivewire.protocol import (
    HEADER_SIZE,
    MAX_FRAME_PAYLOAD,
    ControlEvent,
    OutputChunk,
    ProtocolError,
    ResumeCursor,
    StartAt,
    Stream,
    decode_frame,
    encode_output,
)
from hivewire.stream import (
    BAD_REQUEST,
    GOING_AWAY,
    LOG_GONE,
    MAX_MESSAGE,
    MAX_REASON,
    NORMAL,
    NOT_FOUND,
    Close,
    CloseKind,
    Entry,
    SharedFrames,
    StartQuery,
    StreamRefused,
    StreamSender,
    beyond_end_reason,
    classify_close,
    close_reason,
    parse_beyond_end,
    parse_query,
)

END = ControlEvent(9, {"type": "end", "state": "succeeded"})


def out(seq: int, data: bytes, stream: Stream = Stream.STDOUT) -> OutputEntry:
    return OutputEntry(seq, stream, data)


def decoded(messages: list[bytes | str]) -> list[object]:
    return [decode_frame(m) for m in messages]


@pytest.mark.parametrize(
    ("args", "query"),
    [
        ({}, StartQuery()),
        ({"since": "17"}, StartQuery(since=17)),
        ({"since": "latest"}, StartQuery(latest=True)),
        ({"tail_lines": "5", "format": "json"}, StartQuery(tail_lines=5, json=True)),
        ({"format": "binary"}, StartQuery()),
    ],
)
def test_parse_query(args: dict[str, str], query: StartQuery) -> None:
    assert parse_query(args) == query


@pytest.mark.parametrize(
    "args",
    [
        {"since": "-1"},
        {"since": "abc"},
        {"since": "1" * 19},
        {"since": "١٢"},  # digits, but not ASCII ones
        {"tail_lines": "x"},
        {"since": "3", "tail_lines": "2"},
        {"format": "xml"},
    ],
)
def test_parse_query_refuses_with_4400(args: dict[str, str]) -> None:
    with pytest.raises(StreamRefused) as refused:
        parse_query(args)
    assert refused.value.code == BAD_REQUEST and refused.value.reason


def test_since_beyond_the_last_seq_is_refused_naming_both_numbers() -> None:
    sender = StreamSender(StartQuery(since=12))
    first, close = sender.start(since=12, last_seq=9, ends=True)
    assert first == [] and close == Close(BAD_REQUEST, beyond_end_reason(12, 9))
    assert parse_beyond_end(close.reason) == (12, 9)
    closed = classify_close(close.code, close.reason)
    assert closed.kind is CloseKind.BEYOND_END and closed.last_seq == 9
    # The same for a job still running: a client cannot hold seqs the hive never showed.
    _, close = StreamSender(StartQuery(since=12)).start(since=12, last_seq=11, ends=False)
    assert close is not None and close.code == BAD_REQUEST


def test_since_at_the_end_event_closes_1000_with_nothing_to_send() -> None:
    sender = StreamSender(StartQuery(since=9))
    first, close = sender.start(since=9, last_seq=9, ends=True)
    assert first == [] and close is not None
    assert close.code == NORMAL and not close.client_first  # the client is not closing
    assert classify_close(close.code, close.reason).kind is CloseKind.DONE


def test_since_at_the_last_seq_of_a_running_job_waits_for_more() -> None:
    sender = StreamSender(StartQuery(since=9))
    assert sender.start(since=9, last_seq=9, ends=False) == ([], None)
    assert decoded(sender.messages([out(10, b"more\n")])) == [
        OutputChunk(Stream.STDOUT, 10, 10, b"more\n")
    ]


def test_latest_and_tail_announce_where_they_start() -> None:
    sender = StreamSender(StartQuery(latest=True))
    first, close = sender.start(since=8, last_seq=9, ends=True)
    assert decoded(first) == [StartAt(8)] and close is None
    assert decoded(sender.messages([END])) == [END]
    assert sender.finish() == Close(NORMAL, "end of job", client_first=True)
    # latest on an ended job whose end is all there is still gets the end event.
    tail = StreamSender(StartQuery(tail_lines=2))
    first, close = tail.start(since=3, last_seq=9, ends=True, skip=4)
    assert decoded(first) == [StartAt(3)] and close is None
    messages = tail.messages([out(4, b"one\ntwo\nthree\n"), out(5, b"four\n")])
    assert decoded(messages) == [OutputChunk(Stream.STDOUT, 4, 5, b"two\nthree\nfour\n")]


def test_output_is_coalesced_per_stream_and_control_events_keep_their_place() -> None:
    sender = StreamSender(StartQuery())
    sender.start(since=0, last_seq=9, ends=True)
    batch: list[Entry] = [
        ControlEvent(1, {"type": "state", "state": "running"}),
        out(2, b"a"),
        out(3, b"b"),
        out(4, b"E", Stream.STDERR),
        out(5, b"c"),
        ControlEvent(6, {"type": "message", "text": "hi"}),
        out(7, b"x" * MAX_FRAME_PAYLOAD),
        out(8, b"y"),
    ]
    assert decoded(sender.messages(batch)) == [
        batch[0],
        OutputChunk(Stream.STDOUT, 2, 3, b"ab"),
        OutputChunk(Stream.STDERR, 4, 4, b"E"),
        OutputChunk(Stream.STDOUT, 5, 5, b"c"),
        batch[5],
        OutputChunk(Stream.STDOUT, 7, 7, b"x" * MAX_FRAME_PAYLOAD),
        OutputChunk(Stream.STDOUT, 8, 8, b"y"),
    ]
    assert sender.position == 8 and not sender.ended
    assert sender.finish().code == LOG_GONE  # the log stopped before its end event
    sender.messages([END])
    assert sender.ended and sender.finish().code == NORMAL


@pytest.mark.parametrize(
    "data",
    [
        b"plain text\n" * 1000,
        b"\x00" * MAX_FRAME_PAYLOAD,  # valid UTF-8 that JSON escapes six-fold
        "é".encode() * (MAX_FRAME_PAYLOAD // 2),  # \u00e9: three-fold
        "𝄞".encode() * (MAX_FRAME_PAYLOAD // 4),  # a surrogate pair: 12 bytes for 4
        b"\xff\xfe" * (MAX_FRAME_PAYLOAD // 2),  # not UTF-8
        b"",
    ],
)
def test_json_messages_stay_under_the_limit_and_keep_every_byte(data: bytes) -> None:
    sender = StreamSender(StartQuery(json=True))
    sender.start(since=0, last_seq=2, ends=False)
    (message,) = sender.messages([out(2, data, Stream.STDERR)])
    assert isinstance(message, str) and len(message.encode()) <= MAX_MESSAGE
    assert len(message.encode()) <= MAX_FRAME_PAYLOAD * 4 // 3 + 100
    assert decode_frame(message) == OutputChunk(Stream.STDERR, 2, 2, data)
    body = json.loads(message)
    if "data_b64" in body:
        assert base64.b64decode(body["data_b64"]) == data
    else:
        assert body["data"].encode() == data


def test_binary_messages_stay_under_the_limit() -> None:
    sender = StreamSender(StartQuery())
    sender.start(since=0, last_seq=0, ends=False)
    chunks = [out(seq, b"z" * (MAX_FRAME_PAYLOAD // 3)) for seq in range(1, 20)]
    messages = sender.messages(chunks)
    assert all(len(m) <= HEADER_SIZE + MAX_FRAME_PAYLOAD for m in messages)
    assert b"".join(m[HEADER_SIZE:] for m in messages if isinstance(m, bytes)) == b"".join(
        c.data for c in chunks
    )


HISTORY: list[Entry] = [
    ControlEvent(1, {"type": "state", "state": "running"}),
    out(2, b"one\ntwo\n"),
    out(3, b"three\n"),
    out(4, b"\xff\xfe not utf-8\n", Stream.STDERR),
    ControlEvent(5, {"type": "message", "text": "h\u00e9"}),
    out(6, b"x" * (MAX_FRAME_PAYLOAD - 1)),
    out(7, b"yz"),
    out(8, "\u00e9\n".encode()),
    END,
]


@pytest.mark.parametrize("json_output", [False, True])
@pytest.mark.parametrize("cuts", [(9,), (1, 4, 9), (3, 5, 6, 8, 9), tuple(range(1, 10))])
def test_shared_frames_are_the_bytes_a_follower_encodes_alone(
    json_output: bool, cuts: tuple[int, ...]
) -> None:
    """Followers sharing one cache get exactly the messages each would encode
    on its own, the second one the very same objects."""
    shared = SharedFrames()
    streams: list[list[bytes | str]] = []
    for cache in (None, shared, shared):
        sender = StreamSender(StartQuery(json=json_output), cache)
        sender.start(since=0, last_seq=9, ends=True)
        messages: list[bytes | str] = []
        start = 0
        for cut in cuts:  # the same batches a follower gets from the log
            messages += sender.messages(HISTORY[start:cut])
            start = cut
        assert sender.ended and sender.position == 9
        streams.append(messages)
    alone, first, second = streams
    assert first == alone and second == alone
    assert all(a is b for a, b in zip(first, second, strict=True))
    assert shared.lookups == 2 * len(cuts) and shared.hits == len(cuts)
    cursor = ResumeCursor()
    assert all(cursor.accept(decode_frame(m)) for m in alone) and cursor.since == 9


def test_shared_frames_keep_the_formats_apart() -> None:
    shared = SharedFrames()
    binary = StreamSender(StartQuery(), shared)
    text = StreamSender(StartQuery(json=True), shared)
    batch = HISTORY[1:3]
    assert binary.messages(batch) == [encode_output(Stream.STDOUT, 2, 3, b"one\ntwo\nthree\n")]
    assert [json.loads(m)["data"] for m in text.messages(batch)] == ["one\ntwo\n", "three\n"]
    assert shared.hits == 0


def test_a_tail_start_is_cut_for_its_follower_alone() -> None:
    """The first batch of ``tail_lines`` drops the start of its first chunk: that
    is this follower's own message, not the range's, and must not be shared."""
    shared = SharedFrames()
    tail = StreamSender(StartQuery(tail_lines=2), shared)
    tail.start(since=1, last_seq=9, ends=True, skip=4)
    assert decoded(tail.messages(HISTORY[1:3])) == [
        OutputChunk(Stream.STDOUT, 2, 3, b"two\nthree\n")
    ]
    whole = StreamSender(StartQuery(), shared)
    whole.start(since=1, last_seq=9, ends=True)
    assert decoded(whole.messages(HISTORY[1:3])) == [
        OutputChunk(Stream.STDOUT, 2, 3, b"one\ntwo\nthree\n")
    ]
    assert decoded(tail.messages(HISTORY[3:4])) == decoded(whole.messages(HISTORY[3:4]))
    assert shared.hits == 1  # the tail's next batch is the range's own


def test_shared_frames_stay_within_their_bounds() -> None:
    shared = SharedFrames(max_ranges=4, max_bytes=4096)
    for seq in range(1, 20):
        shared.messages([out(seq, b"a" * 100)], json_output=False)
    assert len(shared._ranges) == 4 and shared.size == 4 * (HEADER_SIZE + 100)
    shared.messages([out(20, b"b" * 2000)], json_output=False)  # over a quarter: not kept
    assert (20, 20, False) not in shared._ranges and shared.size <= 4096
    shared.messages([out(19, b"a" * 100)], json_output=False)
    assert shared.hits == 1  # the most recent ranges are the ones kept


@pytest.mark.parametrize(
    ("code", "reason", "kind"),
    [
        (NORMAL, "end of job", CloseKind.DONE),
        (GOING_AWAY, "hive shutting down", CloseKind.GOING_AWAY),
        (NOT_FOUND, "no job 000000000000", CloseKind.NOT_FOUND),
        (LOG_GONE, "the job's log ends before its end event", CloseKind.LOG_GONE),
        (BAD_REQUEST, "since must be a non-negative integer", CloseKind.REFUSED),
        (4403, "forbidden origin", CloseKind.REFUSED),
        (1006, None, CloseKind.LOST),
        (None, None, CloseKind.LOST),
        (1011, "internal error", CloseKind.LOST),
    ],
)
def test_classify_close(code: int | None, reason: str | None, kind: CloseKind) -> None:
    assert classify_close(code, reason).kind is kind


def test_close_reasons_are_short_printable_ascii() -> None:
    reason = close_reason("job log /tmp/é\n" + "x" * 300)
    assert reason.isascii() and reason.isprintable() and len(reason) <= MAX_REASON
    assert reason.startswith("job log /tmp/\\xe9\\n")


def test_the_cursor_takes_no_gap_and_drops_repeats() -> None:
    cursor = ResumeCursor(3)
    assert not cursor.accept(OutputChunk(Stream.STDOUT, 2, 3, b"seen"))
    assert cursor.accept(OutputChunk(Stream.STDOUT, 4, 6, b"new"))
    assert cursor.accept(ControlEvent(7, {"type": "state"})) and cursor.since == 7
    with pytest.raises(ProtocolError):
        cursor.accept(ControlEvent(9, {"type": "state"}))
