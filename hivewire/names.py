"""Names the API accepts: worker names and operations.

Both sides check a worker name the same way, so the keeper refuses a bad name
before it dials and the hive refuses it again for every other client.
"""

from __future__ import annotations

import re

#: makepkg's rule for a pkgname; also what keeps "../x" or "/etc" out of paths.
WORKER_NAME = re.compile(r"^[a-z0-9@_+][a-z0-9@._+-]*\Z")  # \Z: "$" accepts a final "\n"
MAX_NAME_LENGTH = 127

#: The one job operation a hive runs: build a worker from its recipe and install it.
WORKER_DOWNLOAD = "worker_download"


class InvalidWorkerName(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"invalid worker name {name!r}: use lowercase letters, digits and @._+- "
            "(not starting with . or -)"
        )


def check_worker_name(name: str) -> str:
    """Return ``name`` if it is a valid worker name, else raise :class:`InvalidWorkerName`."""
    if len(name) > MAX_NAME_LENGTH or not WORKER_NAME.match(name):
        raise InvalidWorkerName(name)
    return name
