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

from ..jobs import Job
from .auth import public
from .context import services
from .errors import FOLLOWER_GONE
from .inputs import accepts

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
    """The job list: a snapshot now, then one message per job that changed.

    With 1,000 jobs kept, sending the whole list after every change cost
    ~674 KB per change per watcher; a change is now one job (~700 bytes),
    encoded once for every watcher.
    """
    await websocket.accept()
    engine = services().engine
    try:
        seen: int | None = None
        #: What this watcher was last shown of each job (shared strings).
        shown: dict[str, str] = {}
        async for jobs in engine.watch():
            # Everything up to the sends runs without a checkpoint, so the
            # list and the engine's revision belong to the same moment.
            if seen is None:
                messages = [_snapshot(jobs)]
                shown = {job.id: _delta(job) for job in jobs}
            else:
                messages = []
                for job in jobs:
                    if job.revision > seen and (delta := _delta(job)) != shown.get(job.id):
                        messages.append(delta)
                        shown[job.id] = delta
                gone = set(shown).difference(job.id for job in jobs)
                if gone:
                    messages.append(_dumps({"type": "removed", "ids": sorted(gone)}))
                    for job_id in gone:
                        del shown[job_id]
            seen = engine.revision
            for message in messages:
                await websocket.send(message)
        await websocket.close(1001, "hive shutting down")
    except FOLLOWER_GONE:
        pass


def _dumps(body: object) -> str:
    return json.dumps(body, separators=(",", ":"))


def _snapshot(jobs: list[Job]) -> str:
    return _dumps({"type": "snapshot", "jobs": [job.to_json() for job in jobs]})


#: The last delta message encoded per job: ``id -> (revision, message)``.
_DELTAS: dict[str, tuple[int, str]] = {}
MAX_DELTAS = 10_000


def _delta(job: Job) -> str:
    """``{"type": "job", "job": JOB}``, encoded once per change for every watcher."""
    cached = _DELTAS.get(job.id)
    if cached is not None and cached[0] == job.revision:
        return cached[1]
    if len(_DELTAS) >= MAX_DELTAS:
        _DELTAS.clear()
    message = _dumps({"type": "job", "job": job.to_json()})
    _DELTAS[job.id] = (job.revision, message)
    return message
