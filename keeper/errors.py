"""How a keeper command can fail: one exception per reason, each with its exit code.

Every way a call to a hive can fail becomes a :class:`HiveError` with a one-line
message, so no command ever shows a traceback. This module imports nothing but
the standard library: every part of the keeper may raise these.
"""

from __future__ import annotations

import enum
from typing import Any


class ExitCode(enum.IntEnum):
    """The keeper's exit codes; the job's own code (1-123) is passed through."""

    OK = 0
    USAGE = 2
    JOB_CANCELLED = 3
    NOT_FOUND = 4
    REFUSED = 5
    AUTH = 6
    INCOMPATIBLE = 7
    CANCEL_UNCONFIRMED = 124
    HIVE_ERROR = 125
    INTERRUPTED = 130


class HiveError(Exception):
    """A call that failed; ``str()`` is the one-line reason."""

    exit_code = ExitCode.HIVE_ERROR

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class HiveUnreachable(HiveError):
    exit_code = ExitCode.HIVE_ERROR


class NotFound(HiveError):
    exit_code = ExitCode.NOT_FOUND


class Refused(HiveError):
    exit_code = ExitCode.REFUSED


class Unauthorized(HiveError):
    """The hive wants a token, or another one."""

    exit_code = ExitCode.AUTH


class Incompatible(HiveError):
    """A hive that speaks another version of the API."""

    exit_code = ExitCode.INCOMPATIBLE


class StreamInterrupted(HiveError):
    """The websocket closed before the job's ``end`` event."""


class StreamComplete(HiveError):
    """The hive closed the stream normally without an ``end`` event: there is
    nothing after the ``since`` asked for, and the job has ended."""


class BeyondEnd(Refused):
    """The hive's log of the job ends before the ``since`` asked for."""

    def __init__(self, message: str, *, last_seq: int) -> None:
        super().__init__(message, status=400)
        self.last_seq = last_seq


class OutputLost(HiveError):
    """The hive no longer has output this keeper printed: it says so and exits
    non-zero rather than leave printed bytes unexplained."""


def innermost(exc: BaseException) -> BaseException:
    """trio wraps errors in exception groups; the keeper reports the one inside."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def reason(exc: BaseException) -> str:
    """One line about ``exc``, from the first exception in its chain that says something
    (a connect error often says nothing itself; its cause, e.g. the TLS error, does)."""
    cause: BaseException | None = exc
    while cause is not None and not str(cause):
        cause = cause.__cause__ or cause.__context__
    text = str(cause) if cause is not None else type(exc).__name__
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused (is `hive serve` running?)"
    return text.splitlines()[0]


#: The order in which codes of several hives win: the most severe first. A job's
#: own code (1-123) comes after these; 0 last.
SEVERITY = (
    ExitCode.CANCEL_UNCONFIRMED,
    ExitCode.HIVE_ERROR,
    ExitCode.INCOMPATIBLE,
    ExitCode.AUTH,
    ExitCode.REFUSED,
    ExitCode.NOT_FOUND,
    ExitCode.JOB_CANCELLED,
)


def combine(codes: list[int], *, interrupted: bool = False) -> int:
    """One exit code for the outcomes of several hives (given in --hive order).

    0 if all succeeded; after this keeper's Ctrl+C, 130 unless some hive did not
    confirm its teardown (124) or was lost (125); otherwise the most severe code
    (:data:`SEVERITY`), else the job code of the first hive whose job failed.
    """
    if interrupted and not {ExitCode.CANCEL_UNCONFIRMED, ExitCode.HIVE_ERROR} & set(codes):
        return ExitCode.INTERRUPTED
    for code in SEVERITY:
        if code in codes:
            return code
    return next((code for code in codes if code != ExitCode.OK), ExitCode.OK)
