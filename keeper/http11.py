"""HTTP/1.1 for the blocking client: a request or two per connection, each answer
read as it arrives.

The one-shot commands (``keeper jobs``, ``status``, ``logs``, completion) pay for
every module they import while a person waits at the prompt, and h11's import
alone (it compiles the whole grammar of HTTP into regular expressions) cost about
half of what bare Python takes to start. A client that sends a request or two
(the second may follow the first at once: HTTP/1.1 pipelining) and then
``Connection: close`` needs little of that grammar: the status line, the header
fields, and the three ways a body can end (``Content-Length``, ``chunked``, the
close). Anything else is :class:`ProtocolError`: the peer is no hive.

The reader takes a ``recv`` callable (``socket.recv``), so the parsing is tested
on bytes alone, and against h11 as the reference (``tests/test_keeper_http11.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

#: Bytes asked of ``recv`` per read.
READ_SIZE = 256 * 1024

#: The most a response head (status line and fields) may take.
MAX_HEAD = 64 * 1024

#: The most a chunk-size line of a chunked body may take.
MAX_CHUNK_LINE = 1024

#: Characters allowed in a field name (RFC 9110 ``token``).
TOKEN_CHARS = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)

HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")

Recv = Callable[[int], bytes]


class ProtocolError(Exception):
    """What the peer sent is not an HTTP/1.1 answer (or ended before it was one)."""


def request(
    method: str,
    target: str,
    fields: Sequence[tuple[str, str]],
    content: bytes | None,
    *,
    close: bool = True,
) -> bytes:
    """The bytes of a request; with ``close``, the last on its connection."""
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in fields)]
    if content is not None:
        lines.append(f"Content-Length: {len(content)}")
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head + (content or b"")


class Response:
    """An answer read from ``recv``: :meth:`read_head`, then :meth:`body`; then,
    if :attr:`reusable`, :meth:`next` for the answer to the next request."""

    def __init__(self, recv: Recv, buffered: bytes = b"") -> None:
        self._recv = recv
        self._buffer = bytearray(buffered)
        self._eof = False
        self._ends_with_close = False
        self.status = 0
        self.fields: dict[str, str] = {}

    @property
    def reusable(self) -> bool:
        """Whether the connection goes on after this answer (its body read whole)."""
        closing = "close" in self.fields.get("connection", "").lower()
        return not (closing or self._ends_with_close or self._eof)

    def next(self) -> Response:
        """The answer after this one on the same connection."""
        if not self.reusable:
            raise ProtocolError("the connection ends with this answer")
        return Response(self._recv, bytes(self._buffer))

    def answered(self) -> bool:
        """Whether an answer comes: False if the connection ends first (a server
        may close after an answer without saying so)."""
        return bool(self._buffer) or self._fill()

    def read_head(self) -> int:
        """Read the status line and fields of the final answer (an interim 1xx
        answer is skipped); return the status."""
        while True:
            head = self._until(b"\r\n\r\n", MAX_HEAD, "response head")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            self.status = _status(status_line)
            self.fields = _fields(lines)
            if not 100 <= self.status < 200:
                return self.status

    def body(self) -> Iterator[bytes]:
        """The body's bytes as they arrive; :class:`ProtocolError` if the
        connection ends before the body does."""
        if self.status in (204, 304):
            return
        coding = self.fields.get("transfer-encoding")
        if coding is not None:
            if coding.lower() != "chunked":
                raise ProtocolError(f"unsupported Transfer-Encoding {coding!r}")
            yield from self._chunked()
        elif (length := self.fields.get("content-length")) is not None:
            yield from self._exactly(_length(length))
        else:
            self._ends_with_close = True
            yield from self._until_close()

    # -- the three ways a body ends ------------------------------------------------

    def _chunked(self) -> Iterator[bytes]:
        while True:
            line = self._until(b"\r\n", MAX_CHUNK_LINE, "chunk size")
            digits = line.split(b";", 1)[0].strip(b" \t")
            if not digits or not set(digits) <= HEX_DIGITS:
                raise ProtocolError(f"bad chunk size {line[:40]!r}")
            size = int(digits, 16)
            if size == 0:
                break
            yield from self._exactly(size)
            if self._until(b"\r\n", 2, "chunk end"):
                raise ProtocolError("a chunk longer than its size")
        while self._until(b"\r\n", MAX_HEAD, "trailer"):  # trailer fields: not needed
            pass

    def _exactly(self, count: int) -> Iterator[bytes]:
        while count:
            if not self._buffer and not self._fill():
                raise ProtocolError("the connection closed before the body ended")
            piece = bytes(self._buffer[:count])
            del self._buffer[:count]
            count -= len(piece)
            yield piece

    def _until_close(self) -> Iterator[bytes]:
        while self._buffer or self._fill():
            piece = bytes(self._buffer)
            self._buffer.clear()
            yield piece

    # -- buffering -------------------------------------------------------------------

    def _fill(self) -> bool:
        """Read more into the buffer; False at the end of the connection."""
        if self._eof:
            return False
        data = self._recv(READ_SIZE)
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    def _until(self, mark: bytes, limit: int, what: str) -> bytes:
        """The bytes before the next ``mark`` (consumed with it)."""
        start = 0
        while (at := self._buffer.find(mark, start)) < 0:
            if len(self._buffer) > limit:
                raise ProtocolError(f"{what} longer than {limit} bytes")
            start = max(len(self._buffer) - len(mark) + 1, 0)
            if not self._fill():
                raise ProtocolError(f"the connection closed within the {what}")
        if at > limit:
            raise ProtocolError(f"{what} longer than {limit} bytes")
        found = bytes(self._buffer[:at])
        del self._buffer[: at + len(mark)]
        return found


def _status(line: str) -> int:
    version, _, rest = line.partition(" ")
    code = rest[:3]
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdecimal():
        raise ProtocolError(f"not an HTTP/1.1 status line: {line[:60]!r}")
    if rest[3:4] not in ("", " "):
        raise ProtocolError(f"not an HTTP/1.1 status line: {line[:60]!r}")
    return int(code)


def _fields(lines: list[str]) -> dict[str, str]:
    """Field names lowercased; a repeated field's values joined with ", "."""
    fields: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or not set(name.encode("latin-1")) <= TOKEN_CHARS:
            raise ProtocolError(f"bad header line {line[:60]!r}")
        key, value = name.lower(), value.strip(" \t")
        fields[key] = f"{fields[key]}, {value}" if key in fields else value
    return fields


def _length(value: str) -> int:
    """A Content-Length (repeated identical values are one, as RFC 9110 allows)."""
    values = {part.strip() for part in value.split(",")}
    if len(values) != 1 or not (text := values.pop()).isascii() or not text.isdigit():
        raise ProtocolError(f"bad Content-Length {value!r}")
    return int(text)
