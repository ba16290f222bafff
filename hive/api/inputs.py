"""What a request may carry: declared query parameters and JSON object bodies.

Each route declares the query parameters it takes; anything else is refused.
A misspelt parameter (``?wiat=true``) silently ignored is a request that does
something other than what its sender meant, so the API refuses it, in one
hook, instead of every route checking its own arguments. Likewise a JSON body
with a field the route does not know is refused, not ignored, and so is a body
sent to a route that takes none (but ``{}``), or a body that does not say it is
JSON (``415``). Request heads are held to :data:`MAX_HEAD` here, exactly: the
HTTP parser's own limit only applies to heads that arrive in several reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from quart import current_app, has_websocket_context, request, websocket

from .errors import fail

F = TypeVar("F", bound=Callable[..., Any])

#: Largest request head (request line and headers) accepted.
MAX_HEAD = 16 * 1024

#: Per header line beyond its name and value: ": " and CRLF.
HEADER_OVERHEAD = 4


def accepts(*names: str) -> Callable[[F], F]:
    """Declare the query parameters a route takes (none unless declared)."""

    def mark(view: F) -> F:
        view.hive_query_params = frozenset(names)  # type: ignore[attr-defined]
        return view

    return mark


def takes_body(view: F) -> F:
    """Mark a route that reads a JSON body (with :func:`json_object`)."""
    view.hive_body = True  # type: ignore[attr-defined]
    return view


async def check_head() -> None:
    """``before_request``/``before_websocket`` hook: a head over MAX_HEAD → 431."""
    current = websocket if has_websocket_context() else request
    size = len(current.method) + len(current.scope.get("raw_path", b"")) + 11
    size += len(current.scope.get("query_string", b""))
    size += sum(len(k) + len(v) + HEADER_OVERHEAD for k, v in current.scope.get("headers", ()))
    if size > MAX_HEAD:
        fail(
            431,
            "request_header_fields_too_large",
            f"the request head is {size} bytes; the limit is {MAX_HEAD // 1024} KiB",
        )


async def check_body() -> None:
    """``before_request`` hook: a route that takes no body accepts none but ``{}``."""
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None or getattr(view, "hive_body", False):
        return
    if await request.get_data():
        await json_object(frozenset())


async def check_query() -> None:
    """``before_request``/``before_websocket`` hook: unknown or repeated parameters → 400."""
    current = websocket if has_websocket_context() else request
    view = current_app.view_functions.get(current.endpoint or "")
    if view is None:
        return  # no route: the 404/405 follows
    allowed: frozenset[str] = getattr(view, "hive_query_params", frozenset())
    unknown = sorted(set(current.args) - allowed)
    if unknown:
        fail(400, "bad_query", f"unknown query parameter(s): {', '.join(unknown)}")
    repeated = sorted(name for name in allowed if len(current.args.getlist(name)) > 1)
    if repeated:
        fail(400, "bad_query", f"query parameter(s) given more than once: {', '.join(repeated)}")


async def read_body() -> None:
    """``before_request`` hook: read the whole body (at most MAX_CONTENT_LENGTH)
    before anything answers.

    An answer sent while the client is still sending its body (a 401, a 404)
    leaves HTTP/1.1 no choice but to close the connection; a client that had
    already queued its next request on it sees that request fail. Bodies here
    are small, so reading them first keeps keep-alive connections usable.
    Too large a body is a 413, after which the connection is closed.
    """
    await request.get_data(cache=True)


async def json_object(fields: frozenset[str]) -> dict[str, Any]:
    """The request body as a JSON object with no fields but ``fields``; else 400.

    Parsed here rather than by Quart so that every malformed body, including
    one nested too deep for the parser, is the client's error, not a 500.
    """
    data = await request.get_data(as_text=False)
    if not data:
        fail(400, "bad_request", "the body must be a JSON object")
    if request.mimetype != "application/json":
        fail(
            415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)"
        )
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        fail(400, "bad_request", "the body must be a JSON object")
    if not isinstance(body, dict):
        fail(400, "bad_request", "the body must be a JSON object")
    unknown = sorted(set(body) - fields)
    if unknown:
        fail(400, "bad_request", f"unknown field(s): {', '.join(unknown)}")
    return body
