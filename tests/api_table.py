"""The API's operations, read from docs/openapi.yaml, for tests that must cover
every endpoint; and the app's own route table, to check that the two agree."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hive.api import create_app
from hive.api.auth import Access
from hive.catalog import Catalog
from hive.install import Installer
from hive.jobs import JobEngine
from hive.services import Services

from .support import ROOT, TEST_RECIPES

SPEC_PATH = ROOT / "docs" / "openapi.yaml"
SAMPLE_JOB_ID = "0123456789ab"
SAMPLE_NAME = "chatty"  # a worker of tests/recipes
METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Operation:
    method: str  # upper case; "WEBSOCKET" for a websocket
    template: str  # /v1/jobs/{job_id}
    public: bool
    query: frozenset[str]

    @property
    def websocket(self) -> bool:
        return self.method == "WEBSOCKET"

    def path(self, job_id: str = SAMPLE_JOB_ID, name: str = SAMPLE_NAME) -> str:
        return self.template.replace("{job_id}", job_id).replace("{name}", name)

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return loaded


def operations() -> list[Operation]:
    document = spec()
    result = []
    for template, item in document["paths"].items():
        shared = [p["name"] for p in item.get("parameters", []) if p.get("in") == "query"]
        for method in METHODS:
            if method not in item:
                continue
            op = item[method]
            query = shared + [p["name"] for p in op.get("parameters", []) if p.get("in") == "query"]
            result.append(
                Operation(
                    method="WEBSOCKET" if op.get("x-websocket") else method.upper(),
                    template=template,
                    public=op.get("security", document.get("security")) == [],
                    query=frozenset(query),
                )
            )
    return result


def app_operations(state_dir: Path) -> list[Operation]:
    """The routes of a real app, in the same shape (no server needed)."""
    engine = JobEngine(state_dir, grace=1)
    services = Services(
        engine=engine, installer=Installer(Catalog(TEST_RECIPES), state_dir, engine)
    )
    app = create_app(services, access=Access.build("not-the-token"))
    result = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        template = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        methods = ["WEBSOCKET"] if rule.websocket else sorted(rule.methods - {"HEAD", "OPTIONS"})
        for method in methods:
            result.append(
                Operation(
                    method=method,
                    template=template,
                    public=getattr(view, "hive_public", False),
                    query=getattr(view, "hive_query_params", frozenset()),
                )
            )
    return result
