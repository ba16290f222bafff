"""Following a job: print its output live, resume after a lost connection,
and turn Ctrl+C into a *confirmed* cancel.

The keeper says "cancelled" only when the hive's ``end`` event says so, and
that event arrives only after the hive verified that no process of the job is
left. Until then it keeps printing what the job and the hive say.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import trio

from hivewire.protocol import ControlEvent, Frame, OutputChunk, ResumeCursor

from .client import (
    BeyondEnd,
    ExitCode,
    HiveClient,
    HiveError,
    Refused,
    StreamComplete,
    StreamInterrupted,
)
from .console import Console, human_duration

#: Extra seconds, beyond the hive's grace period, that the keeper waits for
#: the teardown report after a Ctrl+C.
CONFIRM_MARGIN = 5.0

#: Reconnect back-off: first delay, factor, cap; and how long to keep trying.
RECONNECT_FIRST = 0.1
RECONNECT_MAX = 2.0
RECONNECT_GIVE_UP = 60.0

#: How often the live status line is redrawn (it shows the elapsed time).
LIVE_REFRESH = 0.5


@dataclass
class FollowResult:
    end: dict[str, Any] | None
    interrupted: bool = False
    exit_code: int = ExitCode.OK


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


def exit_code_for(end: dict[str, Any]) -> int:
    state = end.get("state")
    if state == "succeeded":
        return ExitCode.OK
    if state == "cancelled":
        return ExitCode.JOB_CANCELLED
    code = end.get("exit_code")
    if isinstance(code, int) and 1 <= code <= 123:
        return code
    return 1


class Follower:
    """Streams one job to a :class:`Console` until its ``end`` event."""

    def __init__(
        self,
        client: HiveClient,
        job_id: str,
        console: Console,
        *,
        since: int = 0,
        tail_lines: int | None = None,
        replay: bool = True,
        grace: float = 5.0,
    ) -> None:
        self.client = client
        self.job_id = job_id
        self.console = console
        self.cursor = ResumeCursor(since)
        #: The last seq this keeper showed (printed); 0 before it showed any.
        self._shown = 0
        self.grace = grace
        self._end: dict[str, Any] | None = None
        # Until the hive told us where the stream starts, (re)connect asking for
        # the tail or the live end; after that, resume from the cursor.
        self._start: dict[str, Any] | None = None
        if tail_lines is not None:
            self._start = {"tail_lines": tail_lines}
        elif not replay:
            self._start = {"since": "latest"}

    async def run(self, *, cancel_on_interrupt: bool) -> FollowResult:
        result = FollowResult(end=None)
        try:
            async with trio.open_nursery() as nursery:
                if cancel_on_interrupt:
                    nursery.start_soon(self._handle_interrupts, result, nursery.cancel_scope)
                if self.console.live:
                    nursery.start_soon(self._refresh_live_line)
                await self._stream_until_end()
                nursery.cancel_scope.cancel()
        finally:
            self.console.close()
        result.end = self._end
        if self._end is None:
            return result  # exit code was set by the interrupt handler
        if result.interrupted:
            result.exit_code = (
                ExitCode.INTERRUPTED
                if self._end.get("state") == "cancelled"
                else exit_code_for(self._end)
            )
        else:
            result.exit_code = exit_code_for(self._end)
        self._summarise(result)
        return result

    async def _refresh_live_line(self) -> None:
        while True:
            self.console.tick()
            await trio.sleep(LIVE_REFRESH)

    async def _stream_until_end(self) -> None:
        delay = RECONNECT_FIRST
        lost_at: float | None = None
        while self._end is None:
            try:
                query = self._start or {"since": self.cursor.since}
                async with self.client.stream(self.job_id, **query) as events:
                    if lost_at is not None:
                        self.console.status(f"reconnected; resuming after seq {self.cursor.since}")
                        lost_at, delay = None, RECONNECT_FIRST
                    async for event in events:
                        self._start = None
                        if self.cursor.accept(event):
                            self._show(event)
                            self._shown = self.cursor.since
                        if self._end is not None:
                            return
            except StreamComplete:
                # Nothing after our cursor and the job has ended: its end event
                # is behind us (we resumed after it). The job's record says how it ended.
                self._end = _end_from_job(await self.client.job(self.job_id))
            except BeyondEnd as exc:
                if self._shown > exc.last_seq:
                    raise OutputLost(
                        f"the hive lost output it had shown: this keeper printed job "
                        f"{self.job_id} up to seq {self._shown}, but the hive's log of "
                        f"it now ends at seq {exc.last_seq} (was the hive's machine reset?)"
                    ) from None
                raise
            except StreamInterrupted as exc:
                now = trio.current_time()
                lost_at = lost_at if lost_at is not None else now
                if now - lost_at > RECONNECT_GIVE_UP:
                    raise HiveError(
                        f"{exc}; gave up reconnecting after {RECONNECT_GIVE_UP:.0f} s"
                    ) from None
                self.console.status(f"connection lost ({exc}); reconnecting in {delay:.1f} s")
                await trio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)

    def _show(self, event: Frame) -> None:
        if isinstance(event, OutputChunk):
            self.console.output(event.stream, event.data)
            return
        if not isinstance(event, ControlEvent):
            return  # a start frame only moves the cursor
        body = event.body
        if event.type == "message":
            self.console.hive(str(body.get("text", "")))
        elif event.type == "state" and body.get("state") in ("queued", "running", "cancelling"):
            self.console.status(f"job {self.job_id} is {body.get('state')}")
        elif event.type == "end":
            self._end = body

    async def _handle_interrupts(self, result: FollowResult, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async for _ in signals:
                result.interrupted = True
                self.console.status(
                    f"cancelling job {self.job_id}; waiting for the hive to confirm teardown "
                    "(Ctrl+C again to stop waiting)"
                )
                # Requesting the cancel must not stop us from hearing a second Ctrl+C.
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._request_cancel, result, scope)
                    async for _ in signals:
                        self.console.status(
                            f"stopped waiting: job {self.job_id} may still be running "
                            f"(check with `keeper status {self.job_id}`)"
                        )
                        result.exit_code = ExitCode.INTERRUPTED
                        scope.cancel()
                        return

    async def _request_cancel(self, result: FollowResult, scope: trio.CancelScope) -> None:
        try:
            await self.client.cancel(self.job_id)
        except Refused as exc:
            if exc.status != 409:
                raise
            # Already ended: the end event is on its way.
        except HiveError as exc:
            self.console.status(f"cancel request failed: {exc}")
        limit = self.grace + CONFIRM_MARGIN
        await trio.sleep(limit)
        self.console.status(
            f"the hive did not confirm the teardown of job {self.job_id} within {limit:g} s; "
            "its processes may still be running"
        )
        result.exit_code = ExitCode.CANCEL_UNCONFIRMED
        scope.cancel()

    def _summarise(self, result: FollowResult) -> None:
        """One final line: state, exit code, duration, and the teardown report
        whenever something was killed."""
        end = result.end or {}
        state = str(end.get("state"))
        parts = [f"job {self.job_id} {state}"]
        if end.get("exit_code") is not None:
            parts.append(f"exit code {end['exit_code']}")
        if (duration := _duration(end)) is not None:
            parts.append(f"in {human_duration(duration)}")
        if state in ("failed", "interrupted") and end.get("error"):
            parts.append(str(end["error"]))
        teardown = end.get("teardown") or {}
        if state == "cancelled" or teardown.get("sigterm") or teardown.get("sigkill"):
            parts.append(f"teardown: {describe_teardown(end.get('teardown'))}")
        elif usage := describe_usage(teardown):
            parts.append(f"used {usage}")
        prefix = "cancelled: " if state == "cancelled" and result.interrupted else ""
        self.console.summary(prefix + "; ".join(parts), ok=state == "succeeded")
        if teardown.get("left"):
            self.console.status(
                f"WARNING: {teardown['left']} process(es) of the job could not be killed: "
                f"pids {teardown.get('left_pids')}",
                tone="bad",
            )


class OutputLost(HiveError):
    """The hive no longer has output this keeper printed: it says so and exits
    non-zero rather than leave printed bytes unexplained."""


def _end_from_job(job: dict[str, Any]) -> dict[str, Any]:
    """An ``end`` event's fields, from the job's record (they are the same)."""
    fields = ("state", "exit_code", "error", "teardown", "started_at", "ended_at")
    return {"type": "end", **{name: job.get(name) for name in fields}}


def _duration(end: dict[str, Any]) -> float | None:
    try:
        started = datetime.fromisoformat(str(end["started_at"]).replace("Z", "+00:00"))
        ended = datetime.fromisoformat(str(end["ended_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return (ended - started).total_seconds()
