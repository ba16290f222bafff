"""HTTP/1.1 and websocket handshakes written by hand, for requests that normal
clients refuse to send (a foreign Host, raw bytes in the path, a half request)."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import trio

#: Every probe finishes within this; a hive that does not answer fails the test.
PROBE_TIMEOUT = 15.0

WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


#: How long a probe waits for the first websocket frame after a 101.
FIRST_FRAME_TIMEOUT = 10.0


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    #: After a 101, the close frame the hive sent at once, as (code, reason):
    #: how it refuses a websocket (4000 + the HTTP status). None if it sent a
    #: message first, or nothing within FIRST_FRAME_TIMEOUT.
    close: tuple[int, str] | None = None

    def json(self) -> Any:
        return json.loads(self.body)

    def refused(self) -> int | None:
        """The HTTP status of a refusal, whether an HTTP answer or a close code."""
        if self.close is not None and self.close[0] >= 4000:
            return self.close[0] - 4000
        return self.status if self.status >= 400 else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


async def connect(
    url: str, ssl_context: ssl.SSLContext | None = None
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    host, port = address(url)
    stream = await trio.open_tcp_stream(host, port)
    if url.startswith("https://"):
        assert ssl_context is not None
        return trio.SSLStream(stream, ssl_context, server_hostname=host)
    return stream


async def probe(
    url: str,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    host: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Answer:
    """One request on a fresh connection. ``method`` WEBSOCKET sends an upgrade
    handshake; its answer is 101 (accepted, then closed by us) or an HTTP error."""
    host = host if host is not None else "{}:{}".format(*address(url))
    lines = [f"{'GET' if method == 'WEBSOCKET' else method} {target} HTTP/1.1", f"Host: {host}"]
    if method == "WEBSOCKET":
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {WS_KEY}",
            "Sec-WebSocket-Version: 13",
        ]
    else:
        lines += ["Connection: close", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with trio.fail_after(PROBE_TIMEOUT):
        stream = await connect(url, ssl_context)
        async with stream:
            await stream.send_all(request)
            reader = AnswerReader(stream)
            answer = await reader.next()
            if answer.status == 101:
                with trio.move_on_after(FIRST_FRAME_TIMEOUT):
                    answer.close = await reader.close_frame()
            return answer


async def read_answer(stream: trio.abc.ReceiveStream) -> Answer:
    """Read one response; whatever follows it is dropped (see :class:`AnswerReader`)."""
    return await AnswerReader(stream).next()


class AnswerReader:
    """Reads the responses of one connection in turn. Bytes that arrive after a
    response (the answer to a pipelined request, sent at once) are kept for the
    next one instead of being dropped with the first."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def close_frame(self) -> tuple[int, str] | None:
        """The first websocket frame, if it is a close: its (code, reason)."""
        while True:
            frame = _parse_frame(self.buffer)
            if frame is not None:
                opcode, payload = frame
                if opcode != 0x8:
                    return None
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                return code, payload[2:].decode("utf-8", "replace")
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return None
            self.buffer += chunk

    async def next(self) -> Answer:
        """The head, then Content-Length bytes (or up to EOF)."""
        while True:
            while b"\r\n\r\n" not in self.buffer:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise ConnectionError(
                        f"connection closed before a full response: {self.buffer!r}"
                    )
                self.buffer += chunk
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split()[1])
            if not 100 <= status < 200 or status == 101:
                break  # a "100 Continue" is followed by the real answer
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status == 101:
            return Answer(status, headers, b"")
        length = int(headers.get("content-length", "-1"))
        while length < 0 or len(self.buffer) < length:
            try:
                chunk = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            self.buffer += chunk
        cut = len(self.buffer) if length < 0 else length
        body, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return Answer(status, headers, body)


def _parse_frame(data: bytes) -> tuple[int, bytes] | None:
    """(opcode, payload) of the unmasked websocket frame at the start of ``data``,
    or None if it is not complete yet."""
    if len(data) < 2:
        return None
    length, offset = data[1] & 0x7F, 2
    if length == 126:
        if len(data) < 4:
            return None
        length, offset = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        if len(data) < 10:
            return None
        length, offset = int.from_bytes(data[2:10], "big"), 10
    if len(data) < offset + length:
        return None
    return data[0] & 0x0F, data[offset : offset + length]
