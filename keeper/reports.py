"""What a job's end means for the person at the keeper: its exit code and the
one-line summary (state, exit code, duration, teardown report).

Pure functions of the hive's ``end`` event (or job record), shared by a single
follower, the fan-out over several hives and the one-shot commands.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .console import human_duration
from .errors import ExitCode


def describe_teardown(teardown: dict[str, Any] | None) -> str:
    if not teardown:
        return "no process was started"
    text = (
        f"{teardown['found']} process(es) found, {teardown['sigterm']} sent SIGTERM, "
        f"{teardown['sigkill']} sent SIGKILL, {teardown['left']} left"
        f"{'' if teardown.get('verified', True) else ' (unverified)'}, "
        f"{teardown['seconds'] * 1000:.0f} ms"
    )
    usage = describe_usage(teardown)
    return f"{text}; used {usage}" if usage else text


def describe_usage(teardown: dict[str, Any] | None) -> str:
    """The job's CPU time, peak memory and peak task count, as far as known."""
    usage = (teardown or {}).get("usage") or {}
    parts = []
    if isinstance(memory := usage.get("memory_peak"), int):
        parts.append(f"peak memory {memory / 2**20:.1f} MiB")
    if isinstance(cpu := usage.get("cpu_seconds"), int | float):
        parts.append(f"CPU {cpu:.2f} s")
    if isinstance(tasks := usage.get("tasks_peak"), int):
        parts.append(f"at most {tasks} tasks")
    return ", ".join(parts)


def exit_code_for(end: dict[str, Any], *, interrupted: bool = False) -> int:
    """The keeper's exit code for a job that ended with ``end``; ``interrupted``:
    this keeper's Ctrl+C asked for the cancel."""
    state = end.get("state")
    if state == "succeeded":
        return ExitCode.OK
    if state == "cancelled":
        return ExitCode.INTERRUPTED if interrupted else ExitCode.JOB_CANCELLED
    code = end.get("exit_code")
    if isinstance(code, int) and 1 <= code <= 123:
        return code
    return 1


def summary(job_id: str, end: dict[str, Any], *, interrupted: bool) -> str:
    """One final line: state, exit code, duration, and the teardown report
    whenever something was killed."""
    state = str(end.get("state"))
    parts = [f"job {job_id} {state}"]
    if end.get("exit_code") is not None:
        parts.append(f"exit code {end['exit_code']}")
    if (duration := duration_of(end)) is not None:
        parts.append(f"in {human_duration(duration)}")
    if state in ("failed", "interrupted") and end.get("error"):
        parts.append(str(end["error"]))
    teardown = end.get("teardown") or {}
    if state == "cancelled" or teardown.get("sigterm") or teardown.get("sigkill"):
        parts.append(f"teardown: {describe_teardown(end.get('teardown'))}")
    elif usage := describe_usage(teardown):
        parts.append(f"used {usage}")
    prefix = "cancelled: " if state == "cancelled" and interrupted else ""
    return prefix + "; ".join(parts)


def left_warning(end: dict[str, Any]) -> str | None:
    """The warning for processes the hive could not kill, if any."""
    teardown = end.get("teardown") or {}
    if not teardown.get("left"):
        return None
    return (
        f"WARNING: {teardown['left']} process(es) of the job could not be killed: "
        f"pids {teardown.get('left_pids')}"
    )


def duration_of(end: dict[str, Any]) -> float | None:
    try:
        started = datetime.fromisoformat(str(end["started_at"]).replace("Z", "+00:00"))
        ended = datetime.fromisoformat(str(end["ended_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return (ended - started).total_seconds()
