"""Access to the hive's :class:`~hive.services.Services` from inside a route."""

from __future__ import annotations

from typing import cast

from quart import current_app

from ..services import Services

EXTENSION = "hive"


def services() -> Services:
    return cast(Services, current_app.extensions[EXTENSION])
