"""A typed async client for the hive's HTTP + websocket API.

It turns every way a call can fail into a :class:`HiveError` with a one-line
message and the exit code the keeper uses for it, so the CLI never shows a
traceback.
"""

from __future__ import annotations

import enum
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from hivewire.names import WORKER_DOWNLOAD, InvalidWorkerName, check_worker_name
from hivewire.protocol import API_VERSION, Frame, ProtocolError, decode_frame
from hivewire.stream import CloseKind, StreamClosed, classify_close

from . import __version__

DEFAULT_URL = "http://127.0.0.1:7835"

#: trio-websocket refuses bigger messages; the hive sends at most 1 MiB + header.
MAX_MESSAGE = 4 * 1024 * 1024

#: Bytes asked of the socket per read. trio-websocket's default (4 KiB) makes
#: bulk output cost a websocket parse per 4 KiB: a third of the throughput.
RECEIVE_BUFFER = 256 * 1024


class ExitCode(enum.IntEnum):
    """The keeper's exit codes; the job's own code (1-123) is passed through."""

    OK = 0
    USAGE = 2
    JOB_CANCELLED = 3
    NOT_FOUND = 4
    REFUSED = 5
    AUTH = 6
    INCOMPATIBLE = 7
    CANCEL_UNCONFIRMED = 124
    HIVE_ERROR = 125
    INTERRUPTED = 130


class HiveError(Exception):
    """A call that failed; ``str()`` is the one-line reason."""

    exit_code = ExitCode.HIVE_ERROR

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class HiveUnreachable(HiveError):
    exit_code = ExitCode.HIVE_ERROR


class NotFound(HiveError):
    exit_code = ExitCode.NOT_FOUND


class Refused(HiveError):
    exit_code = ExitCode.REFUSED


class Unauthorized(HiveError):
    """The hive wants a token, or another one."""

    exit_code = ExitCode.AUTH


class Incompatible(HiveError):
    """A hive that speaks another version of the API."""

    exit_code = ExitCode.INCOMPATIBLE


class StreamInterrupted(HiveError):
    """The websocket closed before the job's ``end`` event."""


class StreamComplete(HiveError):
    """The hive closed the stream normally without an ``end`` event: there is
    nothing after the ``since`` asked for, and the job has ended."""


class BeyondEnd(Refused):
    """The hive's log of the job ends before the ``since`` asked for."""

    def __init__(self, message: str, *, last_seq: int) -> None:
        super().__init__(message, status=400)
        self.last_seq = last_seq


def websocket_url(base: str, path: str) -> str:
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + path
    return "ws://" + base.removeprefix("http://") + path


class HiveClient:
    """``async with HiveClient(url, token=T) as hive: await hive.submit("cbuild")``.

    Before its first call the client checks, with ``/v1/health``, that it talks
    to a hive of its own API version. ``cacert`` is a PEM file of CAs to trust
    for an ``https://`` hive instead of the system's.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        cacert: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise HiveError(f"hive URL must start with http:// or https://, got {url!r}")
        self._token = token
        headers = {"User-Agent": f"keeper/{__version__}"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            self._ssl = ssl.create_default_context(cafile=cacert)
        except (OSError, ssl.SSLError) as exc:
            raise HiveError(f"cannot use CA file {cacert}: {_reason(exc)}") from None
        try:
            self._http = httpx.AsyncClient(
                base_url=self.url, timeout=timeout, headers=headers, verify=self._ssl
            )
        except httpx.InvalidURL as exc:
            raise HiveError(f"bad hive URL {url!r}: {exc}") from None
        self._compatible = False

    async def __aenter__(self) -> HiveClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        if not self._compatible:
            await self.health()
        return await self._call(method, path, **kwargs)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise HiveUnreachable(f"hive at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise HiveUnreachable(f"cannot reach the hive at {self.url}: {_reason(exc)}") from None
        return self._json(response)

    def _json(self, response: httpx.Response) -> Any:
        """The body of a (read) JSON response; an error status raises."""
        try:
            body = response.json()
        except ValueError:
            raise HiveError(
                f"{self.url} answered {response.status_code} without JSON: is it a hive?",
                status=response.status_code,
            ) from None
        if response.is_success:
            return body
        if response.status_code == 401:
            raise self._unauthorized()
        message = body.get("message") if isinstance(body, dict) else None
        message = message or f"HTTP {response.status_code}"
        error_class = (
            NotFound
            if response.status_code == 404
            else (Refused if response.status_code < 500 else HiveError)
        )
        raise error_class(message, status=response.status_code, body=body)

    def _unauthorized(self) -> Unauthorized:
        if self._token is None:
            return Unauthorized(
                f"the hive at {self.url} needs a token: pass --token or set HIVE_TOKEN",
                status=401,
            )
        return Unauthorized(f"the hive at {self.url} refused the token", status=401)

    async def health(self) -> dict[str, Any]:
        """The hive's health; raises :class:`Incompatible` for another API version."""
        result = await self._call("GET", "/v1/health")
        if not isinstance(result, dict) or result.get("status") != "ok":
            raise HiveError(f"{self.url} answered /v1/health with nonsense: is it a hive?")
        if result.get("api") != API_VERSION:
            raise Incompatible(
                f"the hive at {self.url} is version {result.get('version', '?')} "
                f"(API {result.get('api', '?')}); this keeper {__version__} speaks API "
                f"{API_VERSION}"
            )
        self._compatible = True
        return result

    async def submit(
        self, worker: str, *, force: bool = False, skip_check: bool = False
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"operation": WORKER_DOWNLOAD, "worker": worker}
        if force:
            body["force"] = True
        if skip_check:
            body["skip_check"] = True
        result: dict[str, Any] = await self._request("POST", "/v1/jobs", json=body)
        return result

    async def catalog(self) -> dict[str, Any]:
        """``{"catalog": {where it comes from}, "workers": [entry, ...]}``."""
        result: dict[str, Any] = await self._request("GET", "/v1/catalog")
        return result

    async def catalog_entry(self, worker: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", f"/v1/catalog/{_worker(worker)}")
        return result

    async def refresh_catalog(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("POST", "/v1/catalog/refresh", timeout=None)
        return result

    async def workers(self) -> list[dict[str, Any]]:
        result = await self._request("GET", "/v1/workers")
        return list(result["workers"])

    async def remove_worker(self, worker: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request(
            "DELETE", f"/v1/workers/{_worker(worker)}", timeout=None
        )
        return result

    async def jobs(self) -> list[dict[str, Any]]:
        result = await self._request("GET", "/v1/jobs")
        return list(result["jobs"])

    async def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", f"/v1/jobs/{_segment(job_id)}")
        return result

    async def cancel(self, job_id: str, *, wait: bool = False) -> dict[str, Any]:
        """Ask for cancellation. A job that already ended raises :class:`Refused`
        (status 409) whose ``body["state"]`` is its final state."""
        params = {"wait": "true"} if wait else {}
        timeout = None if wait else self._http.timeout
        result: dict[str, Any] = await self._request(
            "DELETE", f"/v1/jobs/{_segment(job_id)}", params=params, timeout=timeout
        )
        return result

    @asynccontextmanager
    async def log(
        self, job_id: str, *, stream: str = "stdout"
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The exact bytes the job wrote to ``stream`` so far, as they arrive."""
        try:
            async with self._http.stream(
                "GET", f"/v1/jobs/{job_id}/log", params={"stream": stream}, timeout=None
            ) as response:
                if not response.is_success:
                    await response.aread()
                    self._json(response)
                yield response.aiter_bytes()
        except httpx.HTTPError as exc:
            raise HiveUnreachable(
                f"reading the log from {self.url} failed: {_reason(exc)}"
            ) from None

    @asynccontextmanager
    async def stream(
        self, job_id: str, *, since: int | str = 0, tail_lines: int | None = None
    ) -> AsyncIterator[AsyncIterator[Frame]]:
        """The job's events after ``since`` (a seq, or ``"latest"``), or from the
        last ``tail_lines`` lines of stdout on; ending after the ``end`` event.

        Raises :class:`StreamInterrupted` if the connection is lost first.
        """
        if not self._compatible:
            await self.health()
        query = {"tail_lines": tail_lines} if tail_lines is not None else {"since": since}
        url = websocket_url(self.url, f"/v1/jobs/{_segment(job_id)}/stream?{urlencode(query)}")
        headers = [(b"user-agent", f"keeper/{__version__}".encode())]
        if self._token is not None:
            headers.append((b"authorization", f"Bearer {self._token}".encode()))
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
            return self._unauthorized()
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


def _close_error(closed: StreamClosed) -> HiveError:
    """The error a stream's close (before its ``end`` event) raises."""
    text = closed.reason or closed.describe()
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


def _segment(value: str) -> str:
    """``value`` as one path segment: a job id argument cannot reach another route."""
    return quote(value, safe="")


def _worker(name: str) -> str:
    """A worker name for a URL path: checked here, because a name like "../x"
    would otherwise change the path itself and get a meaningless 404."""
    try:
        return check_worker_name(name)
    except InvalidWorkerName as exc:
        raise Refused(str(exc)) from None


def _reason(exc: BaseException) -> str:
    """One line about ``exc``, from the first exception in its chain that says something
    (httpx's ConnectError often says nothing itself; its cause, e.g. the TLS error, does)."""
    cause: BaseException | None = exc
    while cause is not None and not str(cause):
        cause = cause.__cause__ or cause.__context__
    text = str(cause) if cause is not None else type(exc).__name__
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused (is `hive serve` running?)"
    return text.splitlines()[0]
