"""Catalog routes: what can be installed, and whether it can be built here."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from quart import Blueprint, Response, jsonify

from hivewire.names import InvalidWorkerName

from ..catalog import CatalogEntry, CatalogUnavailable, UnknownWorker
from ..install import Installer
from .context import services
from .errors import fail

blueprint = Blueprint("catalog", __name__)


class _Rows:
    """Catalog entries as the API shows them, with what is installed and installing."""

    def __init__(self, installer: Installer) -> None:
        self.installer = installer
        self.versions: dict[str, list[str]] = defaultdict(list)
        for installed in installer.installed():
            self.versions[installed.name].append(installed.version)

    def row(self, entry: CatalogEntry, *, detail: bool = False) -> dict[str, Any]:
        job = self.installer.active(entry.name)
        return entry.to_json(
            installed=self.versions[entry.name],
            installing=job.id if job else None,
            detail=detail,
        )


@blueprint.get("/v1/catalog")
async def listing() -> Response:
    installer = services().installer
    entries = await installer.catalog.entries()
    rows = _Rows(installer)
    return jsonify(
        {
            "catalog": installer.catalog.describe(),
            "workers": [rows.row(entry) for entry in entries],
        }
    )


@blueprint.get("/v1/catalog/<name>")
async def detail(name: str) -> Response:
    installer = services().installer
    try:
        entry = await installer.catalog.entry(name)
    except InvalidWorkerName as exc:
        fail(400, "bad_worker_name", str(exc))
    except UnknownWorker as exc:
        fail(404, "unknown_worker", str(exc))
    return jsonify(_Rows(installer).row(entry, detail=True))


@blueprint.post("/v1/catalog/refresh")
async def refresh() -> Response:
    """Re-read a local catalog; re-fetch a remote one (502 if it cannot be fetched,
    and the catalog in use stays as it was)."""
    try:
        result = await services().installer.catalog.refresh()
    except CatalogUnavailable as exc:
        fail(502, "catalog_unavailable", str(exc))
    return jsonify(result)
