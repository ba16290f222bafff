"""Routes about the hive itself."""

from __future__ import annotations

from quart import Blueprint, Response, jsonify

from hivewire.protocol import API_VERSION

from .. import __version__
from .context import services

blueprint = Blueprint("system", __name__)


@blueprint.get("/v1/health")
async def health() -> Response:
    hive = services()
    jobs = hive.engine.jobs()
    return jsonify(
        {
            "status": "ok",
            "version": __version__,
            "api": API_VERSION,
            "grace": hive.engine.grace,
            "teardown_layers": hive.layers,
            "reader_layers": hive.reader_layers,
            "jobs": {"total": len(jobs), "active": sum(not job.state.final for job in jobs)},
        }
    )
