"""Installed workers: list and remove."""

from __future__ import annotations

from quart import Blueprint, Response, jsonify

from hivewire.names import InvalidWorkerName

from ..install import InstallInProgress, NotInstalled
from .context import services
from .errors import fail

blueprint = Blueprint("workers", __name__)


@blueprint.get("/v1/workers")
async def listing() -> Response:
    installed = services().installer.installed()
    return jsonify({"workers": [worker.to_json() for worker in installed]})


@blueprint.delete("/v1/workers/<name>")
async def remove(name: str) -> Response:
    try:
        versions = await services().installer.remove(name)
    except InvalidWorkerName as exc:
        fail(400, "bad_worker_name", str(exc))
    except NotInstalled as exc:
        fail(404, "not_installed", str(exc))
    except InstallInProgress as exc:
        fail(409, "install_in_progress", str(exc), job_id=exc.job_id)
    return jsonify({"name": name, "removed": versions})
