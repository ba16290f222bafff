"""The hive's HTTP + websocket API: a thin quart-trio app over the engine.

Each area of the API is a blueprint in its own module; this module only wires
them together and turns every error into the JSON error shape of
:mod:`hive.api.errors`. See ``docs/api.md`` for the protocol.
"""

from __future__ import annotations

import logging

from quart import Response, has_request_context, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..services import Services
from .catalog import blueprint as catalog_blueprint
from .context import EXTENSION
from .errors import ApiError, error_response
from .jobs import blueprint as jobs_blueprint
from .system import blueprint as system_blueprint
from .web import blueprint as web_blueprint
from .workers import blueprint as workers_blueprint

log = logging.getLogger("hive.api")

#: Largest request body accepted; job requests are a few dozen bytes.
MAX_BODY = 64 * 1024


def create_app(services: Services) -> QuartTrio:
    app = QuartTrio("hive")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config["RESPONSE_TIMEOUT"] = None  # DELETE ?wait=true may outlast Quart's 60 s
    app.extensions[EXTENSION] = services

    app.register_blueprint(system_blueprint)
    app.register_blueprint(jobs_blueprint)
    app.register_blueprint(catalog_blueprint)
    app.register_blueprint(workers_blueprint)
    app.register_blueprint(web_blueprint)

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        log.info("%s %s -> %d %s", request.method, request.path, exc.status, exc)
        return error_response(exc.status, exc.code, str(exc), **exc.extra)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or code)

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Response:
        where = f"{request.method} {request.path}" if has_request_context() else "websocket"
        log.error("internal error on %s", where, exc_info=exc)
        return error_response(500, "internal_error", "internal error; see the hive's log")

    return app
