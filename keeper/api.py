"""The hive's HTTP API as data: what to send for each call, and what an answer means.

Sans-IO, like :mod:`hivewire.protocol`: no sockets here. The keeper has two
transports, :mod:`keeper.blocking` (the standard library's sockets and h11, for
commands that make a call or two and exit, so they start at once) and
:mod:`keeper.client` (httpx and trio-websocket on trio, for following streams and
talking to several hives at once). Both send the same :class:`Call` and read its
answer with :func:`answer`, so they cannot disagree on what a hive said.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Generic, NamedTuple, TypeVar
from urllib.parse import quote, urlencode

from hivewire import API_VERSION
from hivewire.names import WORKER_DOWNLOAD, InvalidWorkerName, check_worker_name

from . import __version__
from .errors import HiveError, Incompatible, NotFound, Refused, Unauthorized

T = TypeVar("T")

USER_AGENT = f"keeper/{__version__}"

#: Seconds a call may take, unless it waits for the hive on purpose (``unbounded``).
DEFAULT_TIMEOUT = 10.0


class Call(NamedTuple, Generic[T]):
    """One request, and how to read the JSON body of its successful answer.

    ``read(body, url)`` raises :class:`HiveError` for a body of the wrong shape
    (``KeyError``/``TypeError`` count as that too, see :func:`answer`).
    """

    method: str
    path: str
    read: Callable[[Any, str], T]
    query: Mapping[str, str] = {}  # never changed: each call is made anew
    body: Any = None
    #: Waits as long as the hive takes (a cancel waiting for its teardown report).
    unbounded: bool = False

    @property
    def target(self) -> str:
        return self.path + (f"?{urlencode(self.query)}" if self.query else "")

    @property
    def content(self) -> bytes | None:
        return None if self.body is None else json.dumps(self.body).encode()


def headers(token: str | None) -> list[tuple[str, str]]:
    """The fields every request carries; :class:`HiveError` for a token that cannot
    be sent as one (a line break or a control character in it)."""
    found = [("User-Agent", USER_AGENT)]
    if token is not None:
        if not token.isprintable() or token != token.strip():
            raise HiveError("the token must be one line of printable characters, no blanks around")
        found.append(("Authorization", f"Bearer {token}"))
    return found


def websocket_url(base: str, path: str) -> str:
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + path
    return "ws://" + base.removeprefix("http://") + path


# -- reading answers -----------------------------------------------------------------


def answer(call: Call[T], url: str, status: int, content: bytes, *, token_sent: bool) -> T:
    """What the hive's answer to ``call`` means: the result, or a :class:`HiveError`."""
    if not 200 <= status < 300:
        raise refusal(url, status, content, token_sent=token_sent)
    body = _json(url, status, content)
    try:
        return call.read(body, url)
    except (KeyError, TypeError):
        raise HiveError(f"{url} answered {call.path} with nonsense: is it a hive?") from None


def refusal(url: str, status: int, content: bytes, *, token_sent: bool) -> HiveError:
    """The error an HTTP error status (and its JSON body) stands for."""
    body = _json(url, status, content)
    if status == 401:
        return unauthorized(url, token_sent=token_sent)
    message = body.get("message") if isinstance(body, dict) else None
    message = message or f"HTTP {status}"
    if status == 404:
        return NotFound(message, status=status, body=body)
    return (Refused if status < 500 else HiveError)(message, status=status, body=body)


def _json(url: str, status: int, content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        raise HiveError(
            f"{url} answered {status} without JSON: is it a hive?", status=status
        ) from None


def unauthorized(url: str, *, token_sent: bool) -> Unauthorized:
    if not token_sent:
        return Unauthorized(
            f"the hive at {url} needs a token: pass --token or set HIVE_TOKEN", status=401
        )
    return Unauthorized(f"the hive at {url} refused the token", status=401)


def _dict(body: Any, _url: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise TypeError("not an object")
    return body


def _rows(key: str) -> Callable[[Any, str], list[dict[str, Any]]]:
    def read(body: Any, _url: str) -> list[dict[str, Any]]:
        return list(body[key])

    return read


def _health(body: Any, url: str) -> dict[str, Any]:
    if not isinstance(body, dict) or body.get("status") != "ok":
        raise HiveError(f"{url} answered /v1/health with nonsense: is it a hive?")
    if body.get("api") != API_VERSION:
        raise Incompatible(
            f"the hive at {url} is version {body.get('version', '?')} "
            f"(API {body.get('api', '?')}); this keeper {__version__} speaks API {API_VERSION}"
        )
    return body


# -- the calls -----------------------------------------------------------------------


def health() -> Call[dict[str, Any]]:
    """The hive's health; reading it raises :class:`Incompatible` for another API version."""
    return Call("GET", "/v1/health", _health)


def submit(worker: str, *, force: bool = False, skip_check: bool = False) -> Call[dict[str, Any]]:
    body: dict[str, Any] = {"operation": WORKER_DOWNLOAD, "worker": worker}
    if force:
        body["force"] = True
    if skip_check:
        body["skip_check"] = True
    return Call("POST", "/v1/jobs", _dict, body=body)


def catalog() -> Call[dict[str, Any]]:
    """``{"catalog": {where it comes from}, "workers": [entry, ...]}``."""
    return Call("GET", "/v1/catalog", _dict)


def catalog_entry(worker: str) -> Call[dict[str, Any]]:
    return Call("GET", f"/v1/catalog/{worker_segment(worker)}", _dict)


def refresh_catalog() -> Call[dict[str, Any]]:
    return Call("POST", "/v1/catalog/refresh", _dict, unbounded=True)


def workers() -> Call[list[dict[str, Any]]]:
    return Call("GET", "/v1/workers", _rows("workers"))


def remove_worker(worker: str) -> Call[dict[str, Any]]:
    return Call("DELETE", f"/v1/workers/{worker_segment(worker)}", _dict, unbounded=True)


def jobs() -> Call[list[dict[str, Any]]]:
    return Call("GET", "/v1/jobs", _rows("jobs"))


def job(job_id: str) -> Call[dict[str, Any]]:
    return Call("GET", f"/v1/jobs/{segment(job_id)}", _dict)


def cancel(job_id: str, *, wait: bool = False) -> Call[dict[str, Any]]:
    """Ask for cancellation (and with ``wait``, for the teardown report). A job that
    already ended is refused: :class:`Refused`, status 409, ``body["state"]`` final."""
    query = {"wait": "true"} if wait else {}
    return Call("DELETE", f"/v1/jobs/{segment(job_id)}", _dict, query=query, unbounded=wait)


def log_target(job_id: str, stream: str) -> str:
    """Where the exact bytes of a job's ``stream`` are (a streamed, non-JSON body)."""
    return f"/v1/jobs/{segment(job_id)}/log?{urlencode({'stream': stream})}"


def stream_target(job_id: str, *, since: int | str = 0, tail_lines: int | None = None) -> str:
    """The websocket path of a job's events (see :mod:`hivewire.protocol`)."""
    query = {"tail_lines": tail_lines} if tail_lines is not None else {"since": since}
    return f"/v1/jobs/{segment(job_id)}/stream?{urlencode(query)}"


def segment(value: str) -> str:
    """``value`` as one path segment: a job id argument cannot reach another route."""
    return quote(value, safe="")


def worker_segment(name: str) -> str:
    """A worker name for a URL path: checked here, because a name like "../x"
    would otherwise change the path itself and get a meaningless 404."""
    try:
        return check_worker_name(name)
    except InvalidWorkerName as exc:
        raise Refused(str(exc)) from None
