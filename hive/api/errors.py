"""The API's one error shape: ``{"error": CODE, "message": ONE_LINE, ...}``.

A websocket is refused the same way whatever refused it (a bad query, a
foreign Host or Origin, a missing token, an unknown job): the handshake is
accepted and the websocket closed at once with code ``4000 + status`` and the
message as the close reason. An HTTP error answer to a handshake would be
invisible to browsers and to most websocket libraries, which report only that
the connection failed; a close code and reason they all show.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import trio
from quart import Response, has_websocket_context, jsonify, request, websocket

from hivewire.stream import CLOSE_BASE, close_reason

log = logging.getLogger("hive.api")

#: Messages may quote what the client sent; this keeps them one short line.
MAX_MESSAGE = 300

#: The close code for a websocket that failed on a bug (RFC 6455: internal error).
CLOSE_INTERNAL_ERROR = 1011

#: What sending to a websocket client that went away raises. It ends that
#: client's websocket, never a job.
FOLLOWER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError)


class ApiError(Exception):
    """Raised by a route to answer with a 4xx/5xx JSON error."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra


def fail(status: int, code: str, message: str, **extra: Any) -> NoReturn:
    raise ApiError(status, code, message, **extra)


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` with control characters escaped, cut to ``limit`` characters."""
    clean = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    response = jsonify({"error": code, "message": one_line(message), **extra})
    response.status_code = status
    return response


def log_refusal(status: int, code: str, message: str) -> None:
    """One log line for a refused request or websocket, whatever refused it."""
    current = websocket if has_websocket_context() else request
    log.info(
        "%s %s from %s -> %d %s: %s",
        "WEBSOCKET" if has_websocket_context() else request.method,
        one_line(current.path, 200),
        current.remote_addr,
        status,
        code,
        one_line(message),
    )


def refusal(status: int, code: str, message: str, **extra: Any) -> Response:
    """The error response for a refused request, logged once."""
    log_refusal(status, code, message)
    response = error_response(status, code, message, **extra)
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def close_websocket(code: int, message: str) -> None:
    """Accept the current websocket (if it is not yet) and close it with ``code``."""
    try:
        await websocket.accept()
        await websocket.close(code, close_reason(message))
    except FOLLOWER_GONE:
        pass  # the client left first
    except RuntimeError:
        pass  # already closed


async def refuse_websocket(status: int, code: str, message: str) -> None:
    """Refuse the current websocket: close it with ``4000 + status``; logged once."""
    log_refusal(status, code, message)
    await close_websocket(CLOSE_BASE + status, message)
