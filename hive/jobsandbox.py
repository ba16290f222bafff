"""What recipe code runs inside: its environment (and, below, its seal).

Imports only the standard library: the engine builds a job's command line from
it, and tools (``bench/``) use it to run a build the way the hive does.
"""

from __future__ import annotations

import os

#: The part of the hive's environment a build may see. Everything else (tokens,
#: the operator's credentials) stays out of job processes.
ENV_ALLOW = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TERM", "USER", "LOGNAME", "TMPDIR")


def job_environment() -> dict[str, str]:
    """The environment of a build: the allowed part of the hive's own."""
    return {name: os.environ[name] for name in ENV_ALLOW if name in os.environ}
