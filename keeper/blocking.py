"""A blocking client for commands that ask a hive a question or two and exit.

``keeper jobs``, ``status``, ``cancel``, ``logs``, the catalog commands and shell
completion make one call (after the version check) and print the answer. They
need no event loop, and a person waits for them at the prompt, so they use the
standard library's sockets and :mod:`keeper.http11` (one request, one answer):
a small part of the import time of trio + httpx, or even of h11. The calls
themselves, and what their answers mean, are :mod:`keeper.api`'s, shared with
the async :mod:`keeper.client`.

Each exchange has a connection of its own (a local hive answers in a
millisecond; a CLI makes two calls), closed when the answer has been read.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from . import api, http11
from .clientbase import ClientBase
from .errors import HiveError

if TYPE_CHECKING:
    import ssl

T = TypeVar("T")


class BlockingClient(ClientBase):
    """``BlockingClient(url, token=T).call(api.jobs())``."""

    def call(self, call: api.Call[T]) -> T:
        """Make ``call`` (after checking, once, that this is a hive of our API version)."""
        if not self.compatible and call.method != "GET":
            self.health()  # a change is asked for only of a hive known to understand it
        timeout = None if call.unbounded else self.timeout
        exchange = self._exchange(call.method, call.target, call.content, timeout, check=True)
        with exchange as (status, body):
            content = b"".join(body)
        return self.answer(call, status, content)

    def health(self) -> dict[str, Any]:
        call = api.health()
        with self._exchange(call.method, call.target, None, self.timeout) as (status, body):
            content = b"".join(body)
        return self._checked(status, content)

    @contextmanager
    def log(self, job_id: str, *, stream: str = "stdout") -> Iterator[Iterator[bytes]]:
        """The exact bytes the job wrote to ``stream`` so far, as they arrive."""
        target = api.log_target(job_id, stream)
        with self._exchange("GET", target, None, self.timeout, check=True) as (status, body):
            if not 200 <= status < 300:
                raise self.refusal(status, b"".join(body))
            yield body

    def _checked(self, status: int, content: bytes) -> dict[str, Any]:
        """The health answer read; :class:`Incompatible` for another API version."""
        result = self.answer(api.health(), status, content)
        self.compatible = True
        return result

    @contextmanager
    def _exchange(
        self,
        method: str,
        target: str,
        content: bytes | None,
        timeout: float | None,
        *,
        check: bool = False,
    ) -> Iterator[tuple[int, Iterator[bytes]]]:
        """Send one request; yield its status and an iterator over the body's bytes.

        With ``check``, until the hive's version is checked, a question (GET) goes
        out right behind the health check on the same connection (pipelined): one
        round trip for the hive, not two; its answer is read once the check passed.
        """
        fields = [("Host", self.address.netloc), *self.headers]
        data = b""
        pipelined = check and not self.compatible and method == "GET"
        if pipelined:
            path = self.address.prefix + api.health().target
            data = http11.request("GET", path, fields, None, close=False)
        if content is not None:
            fields.append(("Content-Type", "application/json"))
        data += http11.request(method, self.address.prefix + target, fields, content)
        with self._errors(), self._connect(timeout) as sock:
            sock.sendall(data)
            response = http11.Response(sock.recv)
            if pipelined:
                self._checked(response.read_head(), b"".join(response.body()))
                answered = response.reusable and (response := response.next()).answered()
                if not answered:  # the hive closed after the check: ask again
                    with self._exchange(method, target, content, timeout) as answer:
                        yield answer
                    return
            yield response.read_head(), response.body()

    @cached_property
    def _tls(self) -> ssl.SSLContext:
        # Imported here, not at the top: ssl is a third of bare Python's start,
        # and most hives a keeper talks to from a prompt are local, plain http.
        from .tls import client_context

        return client_context(self.cacert)

    @contextmanager
    def _connect(self, timeout: float | None) -> Iterator[socket.socket]:
        host = self.address.host
        # An ASCII name as bytes (getaddrinfo takes them, typeshed says str): a str
        # goes through the idna codec, and its imports, whatever it holds.
        name = host.encode() if host.isascii() else host
        sock = socket.create_connection((name, self.address.port), timeout)  # type: ignore[arg-type]
        try:
            if self.address.secure:
                sock = self._tls.wrap_socket(sock, server_hostname=host)
            yield sock
        finally:
            sock.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Socket and protocol failures as one-line :class:`HiveError`s."""
        try:
            yield
        except TimeoutError:
            raise self.timed_out() from None
        except http11.ProtocolError as exc:
            raise HiveError(f"{self.url} answered nonsense ({exc}): is it a hive?") from None
        except OSError as exc:
            raise self.unreachable(exc) from None
