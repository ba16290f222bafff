"""The web page (static ES modules, no build step) and its live job list.

The page and its assets are public: they hold no data. Everything they show
comes from the API, which the page reaches with the session cookie it gets from
``POST /v1/session`` (see docs/security.md).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from quart import Blueprint, Response, send_from_directory, websocket
from werkzeug.exceptions import NotFound

from .auth import public
from .context import services
from .inputs import accepts
from .errors import FOLLOWER_GONE

blueprint = Blueprint("web", __name__)

WEB_ROOT = Path(str(resources.files("hive") / "web"))

#: The page's files (ES modules, style sheets). Any other name is a 404 that
#: never reaches the filesystem, where a name too long is an OSError (a 500).
ASSETS = frozenset(path.name for path in WEB_ROOT.iterdir() if path.suffix in (".js", ".css"))


@blueprint.get("/")
@public
@accepts()
async def index() -> Response:
    response = await send_from_directory(WEB_ROOT, "index.html")
    response.headers["Cache-Control"] = "no-cache"
    return response


@blueprint.get("/ui/<path:name>")
@public
@accepts()
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound()
    response = await send_from_directory(WEB_ROOT, name)
    response.headers["Cache-Control"] = "no-cache"
    return response


@blueprint.websocket("/v1/events")
@accepts()
async def events() -> None:
    """The job list, pushed now and after every job state change."""
    await websocket.accept()
    try:
        async for jobs in services().engine.watch():
            body = {"type": "jobs", "jobs": [job.to_json() for job in jobs]}
            await websocket.send(json.dumps(body, separators=(",", ":")))
        await websocket.close(1001, "hive shutting down")
    except FOLLOWER_GONE:
        pass
