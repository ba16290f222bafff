"""The engine-side objects a running hive is made of, bundled for the API.

Routes reach them through :func:`hive.api.context.services`; nothing here
knows about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from .install import Installer
from .jobs import JobEngine
from .recovery import RecoveredJob


@dataclass
class Services:
    engine: JobEngine
    installer: Installer
    #: Teardown mechanisms in use, as reported at start-up and by /v1/health.
    layers: list[str] = field(default_factory=list)
    #: The sealed recipe reader's layers (:attr:`hive.sandbox.Capabilities.layers`).
    reader_layers: list[str] = field(default_factory=list)
    #: Jobs a previous hive on this state dir left running; torn down at start-up.
    recovered: list[RecoveredJob] = field(default_factory=list)
    #: Set when the hive starts to shut down: followers stop waiting for
    #: their clients to close first.
    stopping: trio.Event = field(default_factory=trio.Event)
