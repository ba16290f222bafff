"""Fault injection for crash tests: stop the hive dead at a named point.

``HIVE_FAULT_POINT=NAME`` in the hive's environment makes :func:`point` with
that name send the hive SIGSTOP: every thread freezes at that instant, and the
test, which sees the hive stopped (``T`` in ``/proc/PID/stat``), kills it with
SIGKILL. That makes "killed exactly between these two steps" repeatable, which
a kill at a random moment is not. Unset (always, outside tests), a point costs
a dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "HIVE_FAULT_POINT"


def point(name: str) -> None:
    """Stop the whole hive here if the environment names this point."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGSTOP)
