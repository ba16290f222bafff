"""The web page (static ES modules, no build step) and its live job list."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from quart import Blueprint, Response, send_from_directory, websocket

from .context import services
from .jobs import FOLLOWER_GONE

blueprint = Blueprint("web", __name__)

WEB_ROOT = Path(str(resources.files("hive") / "web"))


@blueprint.get("/")
async def index() -> Response:
    response = await send_from_directory(WEB_ROOT, "index.html")
    response.headers["Cache-Control"] = "no-cache"
    return response


@blueprint.get("/ui/<path:name>")
async def asset(name: str) -> Response:
    response = await send_from_directory(WEB_ROOT, name)
    response.headers["Cache-Control"] = "no-cache"
    return response


@blueprint.websocket("/v1/events")
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
