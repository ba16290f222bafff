"""Access to the hive's :class:`~hive.services.Services` from inside a route."""

from __future__ import annotations

from typing import cast

from quart import current_app

from ..services import Services
from .followers import Followers
from .pace import Pace

EXTENSION = "hive"
PACE = "hive.pace"
FOLLOWERS = "hive.followers"


def services() -> Services:
    return cast(Services, current_app.extensions[EXTENSION])


def pace() -> Pace:
    """The budget of messages to followers (see :mod:`hive.api.pace`)."""
    return cast(Pace, current_app.extensions[PACE])


def followers() -> Followers:
    """Each followed job's followers and the messages they share."""
    return cast(Followers, current_app.extensions[FOLLOWERS])
