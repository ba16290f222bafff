"""Following a job: print its output live, resume after a lost connection,
and turn Ctrl+C into a *confirmed* cancel.

The keeper says "cancelled" only when the hive's ``end`` event says so, and
that event arrives only after the hive verified that no process of the job is
left. Until then it keeps printing what the job and the hive say.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

import trio

from hivewire.protocol import ControlEvent, Frame, OutputChunk, ResumeCursor, Stream

from .client import HiveClient
from .console import JobView
from .errors import (
    BeyondEnd,
    ExitCode,
    HiveError,
    OutputLost,
    Refused,
    StreamComplete,
    StreamInterrupted,
)
from .reports import exit_code_for, left_warning, summary

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


class Follower:
    """Streams one job to a :class:`Console` (or another :class:`JobView`) until
    its ``end`` event.

    :meth:`interrupt` turns this keeper's Ctrl+C into a confirmed cancel; with
    ``run(cancel_on_interrupt=True)`` the follower listens for SIGINT itself,
    otherwise its owner (the fan-out over several hives) calls it.
    """

    def __init__(
        self,
        client: HiveClient,
        job_id: str,
        console: JobView,
        *,
        since: int = 0,
        tail_lines: int | None = None,
        replay: bool = True,
        grace: float = 5.0,
        reconnect_for: float = RECONNECT_GIVE_UP,
        summarise: bool = True,
    ) -> None:
        self.client = client
        self.job_id = job_id
        self.console = console
        self.cursor = ResumeCursor(since)
        #: The last seq this keeper showed (printed); 0 before it showed any.
        self._shown = 0
        self.grace = grace
        self.reconnect_for = reconnect_for
        self.summarise = summarise
        self.result = FollowResult(end=None)
        self._end: dict[str, Any] | None = None
        self._nursery: trio.Nursery | None = None
        self._cancel_pending = False
        # Until the hive told us where the stream starts, (re)connect asking for
        # the tail or the live end; after that, resume from the cursor.
        self._start: dict[str, Any] | None = None
        if tail_lines is not None:
            self._start = {"tail_lines": tail_lines}
        elif not replay:
            self._start = {"since": "latest"}

    async def run(self, *, cancel_on_interrupt: bool) -> FollowResult:
        result = self.result
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._cancel_pending:
                    nursery.start_soon(self._request_cancel)
                if cancel_on_interrupt:
                    nursery.start_soon(self._handle_interrupts)
                if self.console.live:
                    nursery.start_soon(self._refresh_live_line)
                await self._stream_until_end()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self.console.close()
        result.end = self._end
        if self._end is None:
            return result  # exit code was set by the interrupt handling
        result.exit_code = exit_code_for(self._end, interrupted=result.interrupted)
        if self.summarise:
            self._summarise(result)
        return result

    def interrupt(self, note: str = "") -> None:
        """This keeper's Ctrl+C: ask the hive to cancel the job, and keep following
        until the teardown report (or the confirmation deadline)."""
        if self.result.interrupted:
            return
        self.result.interrupted = True
        self.console.status(
            f"cancelling job {self.job_id}; waiting for the hive to confirm teardown{note}"
        )
        if self._nursery is None:
            self._cancel_pending = True
        else:
            self._nursery.start_soon(self._request_cancel)

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
                if now - lost_at > self.reconnect_for:
                    raise HiveError(
                        f"{exc}; gave up reconnecting after {self.reconnect_for:g} s"
                    ) from None
                self.console.status(f"connection lost ({exc}); reconnecting in {delay:.1f} s")
                await trio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)

    def _show(self, event: Frame) -> None:
        if isinstance(event, OutputChunk):
            self.console.output(event.data, to_stdout=event.stream == Stream.STDOUT)
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

    async def _handle_interrupts(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async for _ in signals:
                if not self.result.interrupted:
                    self.interrupt(" (Ctrl+C again to stop waiting)")
                    continue
                self.console.status(
                    f"stopped waiting: job {self.job_id} may still be running "
                    f"(check with `keeper status {self.job_id}`)"
                )
                self.result.exit_code = ExitCode.INTERRUPTED
                if self._nursery is not None:
                    self._nursery.cancel_scope.cancel()
                return

    async def _request_cancel(self) -> None:
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
        self.result.exit_code = ExitCode.CANCEL_UNCONFIRMED
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _summarise(self, result: FollowResult) -> None:
        end = result.end or {}
        text = summary(self.job_id, end, interrupted=result.interrupted)
        self.console.summary(text, ok=end.get("state") == "succeeded")
        if warning := left_warning(end):
            self.console.status(warning, tone="bad")


def _end_from_job(job: dict[str, Any]) -> dict[str, Any]:
    """An ``end`` event's fields, from the job's record (they are the same)."""
    fields = ("state", "exit_code", "error", "teardown", "started_at", "ended_at")
    return {"type": "end", **{name: job.get(name) for name in fields}}
