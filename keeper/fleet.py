"""One keeper command across several hives: ``keeper --hive a,b,c download X --follow``.

One job per hive, submitted at once: one trio nursery, a task per hive, each
with its own :class:`~keeper.client.HiveClient` and, with ``--follow``, its own
:class:`~keeper.follow.Follower` (resume after a lost connection, confirmed
cancel) writing through its part of a :class:`~keeper.fleet_console.FleetConsole`.

A hive that cannot be reached at submit time, or is lost mid-run (the follower
gave up reconnecting), is named and the others go on. One Ctrl+C cancels the
job on every hive and waits for every teardown report; a second one stops
waiting and names the hives that had not confirmed. At the end, one summary
line per hive, and one exit code for all (:func:`keeper.errors.combine`).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

import trio

from .client import HiveClient
from .config import HiveTarget
from .context import Context
from .errors import ExitCode, HiveError, HiveUnreachable, combine, innermost
from .fleet_console import FleetConsole
from .follow import LIVE_REFRESH, RECONNECT_GIVE_UP, Follower
from .reports import left_warning, summary


@dataclass
class HiveRun:
    """What happened on one hive."""

    target: HiveTarget
    job_id: str | None = None
    follower: Follower | None = None
    end: dict[str, Any] | None = None
    #: The keeper's exit code for this hive; None while it runs.
    code: int | None = None
    error: str | None = None
    started: float = 0.0
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return self.target.label


class Fleet:
    def __init__(
        self, ctx: Context, *, as_json: bool, reconnect_for: float = RECONNECT_GIVE_UP
    ) -> None:
        self.ctx = ctx
        self.runs = [HiveRun(target) for target in ctx.targets]
        self.console = FleetConsole(
            [run.label for run in self.runs], quiet=ctx.quiet, as_json=as_json
        )
        self.as_json = as_json
        self.reconnect_for = reconnect_for
        self.interrupted = False
        self._jobs = trio.CancelScope()

    async def download(self, worker: str, force: bool, skip_check: bool, follow: bool) -> int:
        """Submit ``worker`` on every hive (and follow every job); the exit code for all."""
        async with trio.open_nursery() as outer:
            if follow:
                outer.start_soon(self._handle_interrupts)
                if self.console.live:
                    outer.start_soon(self._refresh_live_line)
            with self._jobs:
                async with trio.open_nursery() as jobs:
                    for run in self.runs:
                        jobs.start_soon(self._one, run, worker, force, skip_check, follow)
            outer.cancel_scope.cancel()
        self.console.close()
        for run in self.runs:
            if run.code is None:  # a second Ctrl+C stopped the wait
                run.code = ExitCode.CANCEL_UNCONFIRMED
                run.error = "teardown not confirmed: stopped waiting"
        if follow:
            self._summarise()
        return combine([int(run.code or 0) for run in self.runs], interrupted=self.interrupted)

    async def _one(
        self, run: HiveRun, worker: str, force: bool, skip_check: bool, follow: bool
    ) -> None:
        view = self.console.view(run.label)
        run.started = trio.current_time()
        try:
            self.console.set_stage(run.label, "submitting")
            async with HiveClient.of(self.ctx.credentials(run.target)) as client:
                job = await client.submit(worker, force=force, skip_check=skip_check)
                run.job_id = job["id"]
                if not follow:
                    self._submitted(run, job)
                    run.code = ExitCode.OK
                    return
                self.console.set_stage(run.label, "queued")
                view.status(f"job {run.job_id}: installing {worker}")
                run.follower = Follower(
                    client,
                    job["id"],
                    view,
                    grace=job["grace"],
                    reconnect_for=self.reconnect_for,
                    summarise=False,
                )
                if self.interrupted:
                    run.follower.interrupt()
                result = await run.follower.run(cancel_on_interrupt=False)
                run.end, run.code = result.end, result.exit_code
                self.console.set_stage(run.label, str((run.end or {}).get("state", "stopped")))
        except Exception as group:  # a HiveError, perhaps inside the follower's exception group
            exc = innermost(group)
            if not isinstance(exc, HiveError):
                raise
            what = "lost" if run.job_id else "not submitted"
            if run.job_id is None and isinstance(exc, HiveUnreachable):
                what = "unreachable"
            run.error, run.code = f"{what}: {exc}", exc.exit_code
            self.console.set_stage(run.label, what)
            view.status(run.error, tone="bad")
        finally:
            view.close()
            run.seconds = trio.current_time() - run.started

    def _submitted(self, run: HiveRun, job: dict[str, Any]) -> None:
        if self.as_json:
            self.console.record({"hive": run.label, **job})
        else:
            self.console.stdout.write(f"{run.label}:{job['id']}\n".encode())
            self.console.stdout.flush()

    async def _refresh_live_line(self) -> None:
        while True:
            self.console.tick()
            await trio.sleep(LIVE_REFRESH)

    async def _handle_interrupts(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async for _ in signals:
                if not self.interrupted:
                    self.interrupted = True
                    self.console.message(
                        None,
                        "keeper",
                        f"cancelling on {len(self.runs)} hives; waiting for every teardown "
                        "report (Ctrl+C again to stop waiting)",
                    )
                    for run in self.runs:
                        if run.follower is not None and run.code is None:
                            self.console.set_stage(run.label, "cancelling")
                            run.follower.interrupt()
                    continue
                waiting = [run.label for run in self.runs if run.code is None]
                self.console.message(
                    None,
                    "keeper",
                    "stopped waiting; teardown not confirmed on "
                    f"{', '.join(waiting) or 'no hive'}: their jobs may still be running",
                    "bad",
                )
                self._jobs.cancel()
                return

    def _summarise(self) -> None:
        """One line per hive on stderr (a ``summary`` object each with --json)."""
        for run in self.runs:
            code = int(run.code or 0)
            if self.as_json:
                self.console.record(
                    {
                        "hive": run.label,
                        "type": "summary",
                        "job": run.job_id,
                        "state": (run.end or {}).get("state"),
                        "exit_code": code,
                        "seconds": round(run.seconds, 3),
                        "teardown": (run.end or {}).get("teardown"),
                        "error": run.error,
                    }
                )
                continue
            if run.end is not None:
                text = summary(str(run.job_id), run.end, interrupted=self.interrupted)
            else:
                text = f"{run.error}; after {run.seconds:.1f} s"
            ok = code == ExitCode.OK
            self.console.message(
                run.label, "keeper", f"{text} (exit {code})", "ok" if ok else "bad"
            )
            if run.end is not None and (warning := left_warning(run.end)):
                self.console.message(run.label, "keeper", warning, "bad")
