"""The hive's HTTP + websocket API: a thin quart-trio app over the engine.

Each area of the API is a blueprint in its own module; this module only wires
them together, puts the access checks of :mod:`hive.api.auth` and the query
check of :mod:`hive.api.inputs` in front of every route, and turns every error
into the JSON error shape of :mod:`hive.api.errors`. See ``docs/openapi.yaml``
for the API and ``docs/security.md`` for the access rules.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from quart import Response, has_websocket_context, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..services import Services
from . import auth
from .catalog import blueprint as catalog_blueprint
from .context import EXTENSION, FOLLOWERS, PACE
from .errors import (
    CLOSE_INTERNAL_ERROR,
    ApiError,
    close_websocket,
    error_response,
    one_line,
    refusal,
    refuse_websocket,
)
from .followers import Followers
from .inputs import check_body, check_head, check_query, read_body
from .jobs import blueprint as jobs_blueprint
from .limits import WebsocketLimit
from .pace import Pace
from .system import blueprint as system_blueprint
from .web import blueprint as web_blueprint
from .workers import blueprint as workers_blueprint

log = logging.getLogger("hive.api")

#: Largest request body accepted; job requests are a few dozen bytes.
MAX_BODY = 64 * 1024

#: A request body must arrive within this many seconds (slow-body clients);
#: bodies are at most MAX_BODY bytes.
BODY_TIMEOUT = 5


ASGIApp = Any  # (scope, receive, send) -> Awaitable[None]; hypercorn's types are untyped


def shield_send(asgi_app: ASGIApp) -> ASGIApp:
    """Make the server's ``send`` callable immune to the app's own cancellation.

    quart-trio cancels a request's nursery as soon as the server reports the
    client's ``http.disconnect`` — which hypercorn does from *inside* the
    ``send`` that ends the response. If the request body was not read (a 401,
    413 or 404 sent before it), hypercorn is then half-way through closing the
    connection and the cancellation stops it there: the connection stays open,
    never recycled, and the client's next request on it hangs forever. Found by
    fuzzing; see tests/test_bad_input.py.
    """

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # websockets: a send per message, nothing to protect
            await asgi_app(scope, receive, send)
            return

        async def send_shielded(message: Any) -> None:
            with trio.CancelScope(shield=True):
                await send(message)

        await asgi_app(scope, receive, send_shielded)

    return app


def create_app(
    services: Services,
    *,
    access: auth.Access,
    max_websockets: int | None = None,
    pace: Pace | None = None,
) -> QuartTrio:
    """The app; ``max_websockets`` caps the websockets open at once (none: no
    cap); ``pace`` spaces followers' messages once its ``run`` runs."""
    app = QuartTrio("hive")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config["BODY_TIMEOUT"] = BODY_TIMEOUT
    app.config["RESPONSE_TIMEOUT"] = None  # DELETE ?wait=true may outlast Quart's 60 s
    app.extensions[EXTENSION] = services
    app.extensions[PACE] = pace = pace or Pace()
    app.extensions[FOLLOWERS] = Followers(pace)
    app.asgi_app = shield_send(app.asgi_app)  # type: ignore[method-assign]
    if max_websockets is not None:
        app.asgi_app = WebsocketLimit(max_websockets).wrap(app.asgi_app)  # type: ignore[method-assign]

    app.before_request(check_head)
    app.before_websocket(check_head)
    app.before_request(read_body)
    auth.install(app, access)
    app.before_request(check_query)
    app.before_websocket(check_query)
    app.before_request(check_body)
    app.register_blueprint(system_blueprint)
    app.register_blueprint(jobs_blueprint)
    app.register_blueprint(catalog_blueprint)
    app.register_blueprint(workers_blueprint)
    app.register_blueprint(web_blueprint)

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        if has_websocket_context():
            await refuse_websocket(exc.status, exc.code, str(exc))
            return Response("", 204)  # nothing is sent: the websocket is closed
        return refusal(exc.status, exc.code, str(exc), **exc.extra)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or code
        if exc.code == 404:
            current = websocket if has_websocket_context() else request
            message = f"no such endpoint: {current.path}"
        if has_websocket_context():
            await refuse_websocket(exc.code or 500, code, message)
            return Response("", 204)
        response = refusal(exc.code or 500, code, message)
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value  # e.g. Allow on a 405
        if exc.code == 413:
            response.headers["Connection"] = "close"  # the rest of the body is not read
        return response

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Response:
        current = websocket if has_websocket_context() else request
        log.exception("internal error on %s", one_line(current.path, 200))
        if has_websocket_context():
            await close_websocket(CLOSE_INTERNAL_ERROR, "internal error; see the hive's log")
            return Response("", 204)
        return error_response(500, "internal_error", "internal error; see the hive's log")

    return app
