"""The API's one error shape: ``{"error": CODE, "message": ONE_LINE, ...}``."""

from __future__ import annotations

from typing import Any, NoReturn

from quart import Response, jsonify

#: Messages may quote what the client sent; this keeps them one short line.
MAX_MESSAGE = 300


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
