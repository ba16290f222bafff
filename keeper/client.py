"""A typed async client for the hive's HTTP + websocket API.

It turns every way a call can fail into a :class:`HiveError` with a one-line
message and the exit code the keeper uses for it, so the CLI never shows a
traceback.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from hivewire.protocol import Frame, ProtocolError, decode_frame
from hivewire.stream import CloseKind, StreamClosed, classify_close

from . import api
from .clientbase import ClientBase
from .errors import (
    BeyondEnd,
    HiveError,
    NotFound,
    Refused,
    StreamComplete,
    StreamInterrupted,
    Unauthorized,
)
from .tls import client_context

T = TypeVar("T")

#: trio-websocket refuses bigger messages; the hive sends at most 1 MiB + header.
MAX_MESSAGE = 4 * 1024 * 1024

#: Bytes asked of the socket per read. trio-websocket's default (4 KiB) makes
#: bulk output cost a websocket parse per 4 KiB: a third of the throughput.
RECEIVE_BUFFER = 256 * 1024


class HiveClient(ClientBase):
    """``async with HiveClient(url, token=T) as hive: await hive.submit("cbuild")``.

    Before its first call the client checks, with ``/v1/health``, that it talks
    to a hive of its own API version. ``cacert`` is a PEM file of CAs to trust
    for an ``https://`` hive instead of the system's. The calls and what their
    answers mean are :mod:`keeper.api`'s, shared with :mod:`keeper.blocking`.
    """

    _http: httpx.AsyncClient
    _ssl: ssl.SSLContext

    async def __aenter__(self) -> HiveClient:
        self._ssl = client_context(self.cacert)
        try:
            self._http = httpx.AsyncClient(
                base_url=self.url, timeout=self.timeout, headers=self.headers, verify=self._ssl
            )
        except httpx.InvalidURL as exc:  # what httpx alone refuses
            raise HiveError(f"bad hive URL {self.url!r}: {exc}") from None
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._http.aclose()

    async def call(self, call: api.Call[T]) -> T:
        """Make ``call`` (after checking, once, that this is a hive of our API version)."""
        if not self.compatible:
            await self.health()
        return await self._call(call)

    async def _call(self, call: api.Call[T]) -> T:
        timeout = None if call.unbounded else self.timeout
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=dict(call.query),
                content=call.content,
                headers={"Content-Type": "application/json"} if call.content else None,
                timeout=timeout,
            )
        except httpx.TimeoutException:
            raise self.timed_out() from None
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from None
        return self.answer(call, response.status_code, response.content)

    async def health(self) -> dict[str, Any]:
        """The hive's health; raises :class:`Incompatible` for another API version."""
        result = await self._call(api.health())
        self.compatible = True
        return result

    async def submit(
        self, worker: str, *, force: bool = False, skip_check: bool = False
    ) -> dict[str, Any]:
        return await self.call(api.submit(worker, force=force, skip_check=skip_check))

    async def jobs(self) -> list[dict[str, Any]]:
        return await self.call(api.jobs())

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self.call(api.job(job_id))

    async def cancel(self, job_id: str, *, wait: bool = False) -> dict[str, Any]:
        """Ask for cancellation. A job that already ended raises :class:`Refused`
        (status 409) whose ``body["state"]`` is its final state."""
        return await self.call(api.cancel(job_id, wait=wait))

    @asynccontextmanager
    async def stream(
        self, job_id: str, *, since: int | str = 0, tail_lines: int | None = None
    ) -> AsyncIterator[AsyncIterator[Frame]]:
        """The job's events after ``since`` (a seq, or ``"latest"``), or from the
        last ``tail_lines`` lines of stdout on; ending after the ``end`` event.

        Raises :class:`StreamInterrupted` if the connection is lost first.
        """
        if not self.compatible:
            await self.health()
        target = api.stream_target(job_id, since=since, tail_lines=tail_lines)
        url = api.websocket_url(self.url, target)
        headers = [(name.lower().encode(), value.encode()) for name, value in self.headers]
        try:
            async with open_websocket_url(
                url,
                ssl_context=self._ssl if url.startswith("wss://") else None,
                extra_headers=headers,
                max_message_size=MAX_MESSAGE,
                receive_buffer_size=RECEIVE_BUFFER,
            ) as ws:
                yield _events(ws)
        except ConnectionRejected as exc:
            raise self._rejected(exc) from None
        except HandshakeError as exc:
            raise StreamInterrupted(f"websocket handshake with {self.url} failed: {exc}") from None
        except OSError as exc:
            raise StreamInterrupted(f"cannot reach the hive at {self.url}: {exc}") from None

    def _rejected(self, exc: ConnectionRejected) -> HiveError:
        """The HTTP answer that refused a websocket handshake, as an error."""
        if exc.status_code == 401:
            return api.unauthorized(self.url, token_sent=self.token is not None)
        try:
            body = json.loads(exc.body or b"")
            message = str(body["message"])
        except (ValueError, TypeError, KeyError):
            message = f"the hive refused the stream (HTTP {exc.status_code})"
        if exc.status_code == 404:
            return NotFound(message, status=404)
        return (Refused if exc.status_code < 500 else HiveError)(message, status=exc.status_code)


async def _events(ws: WebSocketConnection) -> AsyncIterator[Frame]:
    while True:
        try:
            message = await ws.get_message()
        except ConnectionClosed as exc:
            closed = classify_close(
                getattr(exc.reason, "code", None), getattr(exc.reason, "reason", None)
            )
            raise _close_error(closed) from None
        try:
            yield decode_frame(message)
        except ProtocolError as exc:
            raise HiveError(f"hive sent a bad frame: {exc}") from None
        await trio.lowlevel.checkpoint_if_cancelled()


#: A websocket refused for its token (4000 + 401), like an HTTP 401.
CLOSE_UNAUTHORIZED = 4401


def _close_error(closed: StreamClosed) -> HiveError:
    """The error a stream's close (before its ``end`` event) raises."""
    text = closed.reason or closed.describe()
    if closed.code == CLOSE_UNAUTHORIZED:
        return Unauthorized(text, status=401)
    if closed.kind is CloseKind.DONE:
        return StreamComplete(text)
    if closed.kind is CloseKind.BEYOND_END:
        assert closed.last_seq is not None
        return BeyondEnd(text, last_seq=closed.last_seq)
    if closed.kind is CloseKind.NOT_FOUND:
        return NotFound(text)
    if closed.kind in (CloseKind.LOG_GONE, CloseKind.REFUSED):
        return Refused(text)
    detail = f"{closed.code}{': ' + closed.reason if closed.reason else ''}"
    return StreamInterrupted(f"stream closed before the job ended ({detail})")
