"""File descriptors: take what the system allows, and keep some for jobs.

Every websocket follower holds a socket, and a job needs pipes, its log file,
pidfds for its teardown and ``/proc`` reads. With the common soft limit of
1,024 descriptors, a thousand followers took them all: the hive could accept
nothing, and could not open the pidfds and ``/proc`` files that a job's
teardown needs. So the hive raises its soft ``RLIMIT_NOFILE`` to the hard limit
at start (as systemd and Go's runtime do; the soft limit exists for programs
that still use ``select()``, which the hive does not), and caps the websockets
it keeps open so that a share of the descriptors always remains for everything
else. Job processes inherit the raised limit; build tools do not use
``select()`` on descriptors they did not open.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

#: Descriptors kept for everything but websockets: at most this many...
RESERVE = 256
#: ...and at most this share of the limit (for small limits).
RESERVE_SHARE = 0.5
#: A websocket may need a second descriptor while it catches up from the job's
#: log on disk.
PER_WEBSOCKET = 2
MIN_WEBSOCKETS = 4


@dataclass(frozen=True)
class FdLimit:
    """The soft limit found at start, and the one the hive runs with."""

    original: int
    current: int

    def max_websockets(self) -> int:
        """Websockets the hive keeps open at most, unless told otherwise."""
        reserve = min(RESERVE, int(self.current * RESERVE_SHARE))
        return max(MIN_WEBSOCKETS, (self.current - reserve) // PER_WEBSOCKET)


def raise_nofile_limit() -> FdLimit:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (best effort)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY:
        return FdLimit(soft, soft)  # not on Linux; leave it
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return FdLimit(soft, soft)
    return FdLimit(soft, hard)
