"""Following a job: print its output live, resume after a lost connection,
and turn Ctrl+C into a *confirmed* cancel.

The keeper says "cancelled" only when the hive's ``end`` event says so, and
that event arrives only after the hive verified that no process of the job is
left. Until then it keeps printing what the job and the hive say.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import trio

from hive.protocol import ControlEvent, Frame, OutputChunk, ResumeCursor, Stream

from .client import ExitCode, HiveClient, HiveError, Refused, StreamInterrupted

#: Extra seconds, beyond the hive's grace period, that the keeper waits for
#: the teardown report after a Ctrl+C.
CONFIRM_MARGIN = 5.0

#: Reconnect back-off: first delay, factor, cap; and how long to keep trying.
RECONNECT_FIRST = 0.1
RECONNECT_MAX = 2.0
RECONNECT_GIVE_UP = 60.0


@dataclass
class Console:
    """Where things go: job stdout to stdout, everything else to stderr."""

    stdout: BinaryIO = field(default_factory=lambda: sys.stdout.buffer)
    stderr: BinaryIO = field(default_factory=lambda: sys.stderr.buffer)
    quiet: bool = False

    def output(self, stream: Stream, data: bytes) -> None:
        sink = self.stdout if stream == Stream.STDOUT else self.stderr
        sink.write(data)
        sink.flush()

    def status(self, text: str) -> None:
        if not self.quiet:
            self.stderr.write(f"keeper: {text}\n".encode())
            self.stderr.flush()

    def hive(self, text: str) -> None:
        if not self.quiet:
            self.stderr.write(f"hive: {text}\n".encode())
            self.stderr.flush()


@dataclass
class FollowResult:
    end: dict[str, Any] | None
    interrupted: bool = False
    exit_code: int = ExitCode.OK


def describe_teardown(teardown: dict[str, Any] | None) -> str:
    if not teardown:
        return "no process was started"
    return (
        f"{teardown['found']} process(es) found, {teardown['sigterm']} sent SIGTERM, "
        f"{teardown['sigkill']} sent SIGKILL, {teardown['left']} left, "
        f"{teardown['seconds'] * 1000:.0f} ms"
    )


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
        async with trio.open_nursery() as nursery:
            if cancel_on_interrupt:
                nursery.start_soon(self._handle_interrupts, result, nursery.cancel_scope)
            await self._stream_until_end()
            nursery.cancel_scope.cancel()
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
                        if self._end is not None:
                            return
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
        end = result.end or {}
        state = end.get("state")
        if state == "succeeded":
            self.console.status(f"job {self.job_id} succeeded")
        elif state == "cancelled":
            word = "cancelled" if result.interrupted else "was cancelled"
            self.console.status(
                f"{word}: job {self.job_id}; teardown: {describe_teardown(end.get('teardown'))}"
            )
        elif state == "interrupted":
            self.console.status(f"job {self.job_id} was interrupted: {end.get('error') or state}")
        else:
            self.console.status(f"job {self.job_id} failed: {end.get('error') or state}")
        teardown = end.get("teardown") or {}
        if teardown.get("left"):
            self.console.status(
                f"WARNING: {teardown['left']} process(es) of the job could not be killed: "
                f"pids {teardown.get('left_pids')}"
            )
