"""The API's one error shape: ``{"error": CODE, "message": ONE_LINE, ...}``."""

from __future__ import annotations

from typing import Any, NoReturn

from quart import Response, jsonify


class ApiError(Exception):
    """Raised by a route to answer with a 4xx/5xx JSON error."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra


def fail(status: int, code: str, message: str, **extra: Any) -> NoReturn:
    raise ApiError(status, code, message, **extra)


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    response = jsonify({"error": code, "message": message, **extra})
    response.status_code = status
    return response
