"""keeper/http11.py, the blocking client's HTTP/1.1, against h11 as the reference:
what h11 (the state machine under hypercorn, the hive's server) writes is read
back exactly, in every framing and however the bytes are split, and what the
keeper writes is a request h11 reads as meant. The keeper against a real hive is
tested through its commands (test_keeper_cli.py, test_keeper_ux.py, test_fleet.py)."""

from __future__ import annotations

from collections.abc import Iterator

import h11
import pytest

from keeper import http11

BODY = b'{"jobs": []}' + bytes(range(256)) * 40


def recv_from(data: bytes, piece: int) -> http11.Recv:
    """``socket.recv`` of a peer that sends ``data`` in pieces of ``piece`` bytes, then closes."""
    pieces: Iterator[bytes] = iter([data[i : i + piece] for i in range(0, len(data), piece)])

    def recv(_size: int) -> bytes:
        return next(pieces, b"")

    return recv


def served(
    headers: list[tuple[str, str]], chunks: list[bytes], *, client_version: str = "1.1"
) -> bytes:
    """What h11 as a server sends for a 200 with ``chunks`` as the body."""
    server = h11.Connection(h11.SERVER)
    server.receive_data(f"GET /v1/jobs HTTP/{client_version}\r\nHost: h\r\n\r\n".encode())
    assert isinstance(server.next_event(), h11.Request)
    return served_on(server, headers, chunks)


def served_on(server: h11.Connection, headers: list[tuple[str, str]], chunks: list[bytes]) -> bytes:
    """What h11 as ``server`` sends for a 200 with ``chunks`` as the body."""
    data = server.send(h11.Response(status_code=200, headers=headers)) or b""
    for chunk in chunks:
        data += server.send(h11.Data(data=chunk)) or b""
    return data + (server.send(h11.EndOfMessage()) or b"")


def read(data: bytes, piece: int) -> tuple[int, dict[str, str], bytes]:
    response = http11.Response(recv_from(data, piece))
    status = response.read_head()
    return status, response.fields, b"".join(response.body())


@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 20])
@pytest.mark.parametrize(
    ("headers", "client_version"),
    [
        ([("Content-Length", str(len(BODY)))], "1.1"),
        ([("Transfer-Encoding", "chunked")], "1.1"),
        ([], "1.0"),  # no length: the body ends with the connection
    ],
    ids=["content-length", "chunked", "until-close"],
)
def test_reads_what_h11_writes_in_every_framing(
    headers: list[tuple[str, str]], client_version: str, piece: int
) -> None:
    chunks = [BODY[:5], BODY[5:6], BODY[6:]]
    data = served(
        [("Content-Type", "application/json"), *headers], chunks, client_version=client_version
    )
    status, fields, body = read(data, piece)
    assert (status, body) == (200, BODY)
    assert fields["content-type"] == "application/json"


def test_chunk_extensions_trailers_and_interim_answers() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
        b"5;name=value\r\nhello\r\n1\r\n!\r\n0\r\nTrailer: yes\r\n\r\n"
    )
    assert read(data, 3) == (404, {"transfer-encoding": "chunked", "x-a": "1, 2"}, b"hello!")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "closed within the response head"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "closed within the response head"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.1 status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP/1.1 status line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed before the body ended"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nxy", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nxy", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", "closed before"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n", "bad chunk size"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n",
            "longer than",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n",
            "closed within the chunk",
        ),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * http11.MAX_HEAD, "longer than"),
    ],
)
def test_what_is_no_http_answer_is_a_protocol_error(data: bytes, message: str) -> None:
    with pytest.raises(http11.ProtocolError, match=message):
        read(data, 5)


def test_h11_reads_the_request_as_meant() -> None:
    fields = [("Host", "h:1"), ("Authorization", "Bearer t"), ("Content-Type", "application/json")]
    data = http11.request("POST", "/p/v1/jobs?x=%2F", fields, b'{"a": 1}')
    server = h11.Connection(h11.SERVER)
    server.receive_data(data)
    request = server.next_event()
    assert isinstance(request, h11.Request)
    assert (request.method, request.target, request.http_version) == (
        b"POST",
        b"/p/v1/jobs?x=%2F",
        b"1.1",
    )
    assert dict(request.headers) == {
        b"host": b"h:1",
        b"authorization": b"Bearer t",
        b"content-type": b"application/json",
        b"content-length": b"8",
        b"connection": b"close",
    }
    body = server.next_event()
    assert isinstance(body, h11.Data) and body.data == b'{"a": 1}'
    assert isinstance(server.next_event(), h11.EndOfMessage)
    assert http11.request("GET", "/", [("Host", "h")], None).endswith(b"Connection: close\r\n\r\n")
    assert b"Connection" not in http11.request("GET", "/", [("Host", "h")], None, close=False)


@pytest.mark.parametrize("piece", [1, 9, 1 << 20])
def test_answers_to_pipelined_requests_are_read_in_turn(piece: int) -> None:
    server = h11.Connection(h11.SERVER)
    server.receive_data(b"GET /v1/health HTTP/1.1\r\nHost: h\r\n\r\n")
    assert isinstance(server.next_event(), h11.Request)
    assert isinstance(server.next_event(), h11.EndOfMessage)
    first = served_on(server, [("Content-Length", "2")], [b"ok"])
    server.start_next_cycle()
    server.receive_data(b"GET /v1/jobs HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert isinstance(server.next_event(), h11.Request)
    second = served_on(server, [("Transfer-Encoding", "chunked")], [BODY[:7], BODY[7:]])
    response = http11.Response(recv_from(first + second, piece))
    assert response.read_head() == 200 and b"".join(response.body()) == b"ok"
    assert response.reusable
    response = response.next()
    assert response.read_head() == 200 and b"".join(response.body()) == BODY
    assert not response.reusable  # h11 said Connection: close
    with pytest.raises(http11.ProtocolError, match="ends with this answer"):
        response.next()


def test_a_connection_that_ends_after_an_answer_brings_no_other() -> None:
    response = http11.Response(recv_from(served([("Content-Length", "1")], [b"x"]), 4))
    response.read_head()
    assert b"".join(response.body()) == b"x"
    assert response.reusable  # nothing said it would close, but it did
    assert not response.next().answered()


def test_an_answer_that_ends_with_the_connection_is_the_last() -> None:
    response = http11.Response(recv_from(served([], [b"x"], client_version="1.0"), 4))
    response.read_head()
    assert b"".join(response.body()) == b"x" and not response.reusable
