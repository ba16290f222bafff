"""A blocking client for commands that ask a hive a question or two and exit.

``keeper jobs``, ``status``, ``cancel``, ``logs``, the catalog commands and shell
completion make one call (after the version check) and print the answer. They
need no event loop, and a person waits for them at the prompt, so they use the
standard library's sockets and h11 (the sans-IO HTTP/1.1 state machine httpx is
built on): about a tenth of the import time of trio + httpx. The calls
themselves, and what their answers mean, are :mod:`keeper.api`'s, shared with
the async :mod:`keeper.client`.

Each exchange has a connection of its own (a local hive answers in a
millisecond; a CLI makes two calls), closed when the answer has been read.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import h11

from . import api
from .auth import Credentials
from .errors import HiveError, HiveUnreachable, reason

T = TypeVar("T")

#: Bytes asked of the socket per read.
READ_SIZE = 256 * 1024


class BlockingClient:
    """``BlockingClient(url, token=T).call(api.jobs())``; ``cacert`` is a PEM file
    of CAs to trust for an ``https://`` hive instead of the system's."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        cacert: str | None = None,
        timeout: float = api.DEFAULT_TIMEOUT,
    ) -> None:
        self.url = api.check_url(url)
        parts = urlsplit(self.url)
        try:
            port = parts.port
        except ValueError as exc:
            raise HiveError(f"bad hive URL {url!r}: {exc}") from None
        if not parts.hostname:
            raise HiveError(f"bad hive URL {url!r}: no host")
        self._address = (parts.hostname, port or (443 if parts.scheme == "https" else 80))
        self._netloc = parts.netloc.rpartition("@")[2]
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self._headers = api.headers(token)
        self._timeout = timeout
        self._tls: ssl.SSLContext | None = None
        if parts.scheme == "https":
            try:
                self._tls = ssl.create_default_context(cafile=cacert)
            except (OSError, ssl.SSLError) as exc:
                raise HiveError(f"cannot use CA file {cacert}: {reason(exc)}") from None
        self._compatible = False

    @classmethod
    def of(cls, hive: Credentials, *, timeout: float = api.DEFAULT_TIMEOUT) -> BlockingClient:
        return cls(hive.url, token=hive.token, cacert=hive.cacert, timeout=timeout)

    def call(self, call: api.Call[T]) -> T:
        """Make ``call`` (after checking, once, that this is a hive of our API version)."""
        if not self._compatible:
            self.health()
        return self._call(call)

    def health(self) -> dict[str, Any]:
        result = self._call(api.health())
        self._compatible = True
        return result

    def _call(self, call: api.Call[T]) -> T:
        timeout = None if call.unbounded else self._timeout
        with self._exchange(call.method, call.target, call.content, timeout) as (status, body):
            content = b"".join(body)
        return api.answer(call, self.url, status, content, token_sent=self._token is not None)

    @contextmanager
    def log(self, job_id: str, *, stream: str = "stdout") -> Iterator[Iterator[bytes]]:
        """The exact bytes the job wrote to ``stream`` so far, as they arrive."""
        if not self._compatible:
            self.health()
        target = api.log_target(job_id, stream)
        with self._exchange("GET", target, None, self._timeout) as (status, body):
            if not 200 <= status < 300:
                content = b"".join(body)
                raise api.refusal(self.url, status, content, token_sent=self._token is not None)
            yield body

    @contextmanager
    def _exchange(
        self, method: str, target: str, content: bytes | None, timeout: float | None
    ) -> Iterator[tuple[int, Iterator[bytes]]]:
        """Send one request; yield its status and an iterator over the body's bytes."""
        headers = [("Host", self._netloc), *self._headers]
        if content is not None:
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(content)))]
        with self._errors(), self._connect(timeout) as sock:
            connection = h11.Connection(h11.CLIENT)
            request = h11.Request(method=method, target=self._prefix + target, headers=headers)
            sock.sendall(connection.send(request))
            if content:
                sock.sendall(connection.send(h11.Data(data=content)))
            sock.sendall(connection.send(h11.EndOfMessage()))
            event = _next_event(connection, sock)
            while isinstance(event, h11.InformationalResponse):
                event = _next_event(connection, sock)
            if not isinstance(event, h11.Response):
                raise HiveError(f"{self.url} answered nonsense: is it a hive?")
            yield event.status_code, _body(connection, sock)

    @contextmanager
    def _connect(self, timeout: float | None) -> Iterator[socket.socket]:
        sock = socket.create_connection(self._address, timeout=timeout)
        try:
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._address[0])
            yield sock
        finally:
            sock.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Socket and protocol failures as one-line :class:`HiveError`s."""
        try:
            yield
        except TimeoutError:
            raise HiveUnreachable(f"hive at {self.url} did not answer in time") from None
        except h11.ProtocolError as exc:
            raise HiveError(f"{self.url} answered nonsense ({exc}): is it a hive?") from None
        except OSError as exc:
            raise HiveUnreachable(f"cannot reach the hive at {self.url}: {reason(exc)}") from None


def _next_event(connection: h11.Connection, sock: socket.socket) -> object:
    while (event := connection.next_event()) is h11.NEED_DATA:
        connection.receive_data(sock.recv(READ_SIZE))
    return event


def _body(connection: h11.Connection, sock: socket.socket) -> Iterator[bytes]:
    while True:
        event = _next_event(connection, sock)
        if isinstance(event, h11.Data):
            yield bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return
        else:
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}")
