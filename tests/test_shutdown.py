"""SIGTERM: every websocket gets a close frame, and an idle hive exits at once,
also just after a client left. Real hives, real clients."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from hive.server import GRACEFUL_TIMEOUT

from .support import Hive, job_processes, keeper, running_hive

#: An idle hive must exit well within this after SIGTERM. The old hive always
#: waited out hypercorn's graceful timeout (2 s) once a websocket had been open;
#: measured now: 0.03-0.11 s on a loaded 2-core machine.
IDLE_EXIT_BOUND = 0.5


async def sigterm_to_exit(hive: Hive) -> float:
    started = time.perf_counter()
    assert await hive.stop(signal.SIGTERM) == 0
    return time.perf_counter() - started


async def test_an_idle_hive_exits_at_once_even_after_clients_left(tmp_path: Path) -> None:
    for round_ in range(2):
        async with running_hive(tmp_path / f"state{round_}") as hive:
            async with open_websocket_url(
                hive.ws_url("/v1/events"), extra_headers=hive.ws_headers()
            ) as ws:
                assert json.loads(await ws.get_message())["type"] == "snapshot"
            assert (await keeper(hive, "jobs")).returncode == 0
            async with hive.client() as client:
                assert (await client.get("/v1/health")).status_code == 200
            elapsed = await sigterm_to_exit(hive)
            assert elapsed < IDLE_EXIT_BOUND < GRACEFUL_TIMEOUT, elapsed


async def follow_until_closed(
    hive: Hive, path: str, seen: list[object], closed: list[tuple[int | None, str | None]]
) -> None:
    """Read until the hive closes; never close first (as a browser that waits)."""
    async with open_websocket_url(hive.ws_url(path), extra_headers=hive.ws_headers()) as ws:
        try:
            while True:
                message = await ws.get_message()
                seen.append(json.loads(message) if isinstance(message, str) else message)
        except ConnectionClosed as exc:
            closed.append((exc.reason.code, exc.reason.reason) if exc.reason else (None, None))


async def test_on_sigterm_every_websocket_gets_end_and_a_close_frame(tmp_path: Path) -> None:
    async with running_hive(tmp_path / "state") as hive:
        submitted = await keeper(hive, "download", "sleeper")
        job_id = submitted.stdout.decode().strip()
        stream_seen: list[object] = []
        events_seen: list[object] = []
        closed: dict[str, list[tuple[int | None, str | None]]] = {"stream": [], "events": []}
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(
                    follow_until_closed,
                    hive,
                    f"/v1/jobs/{job_id}/stream",
                    stream_seen,
                    closed["stream"],
                )
            nursery.start_soon(
                follow_until_closed, hive, "/v1/events", events_seen, closed["events"]
            )
            with trio.fail_after(30):
                while not job_processes(job_id) or len(events_seen) < 1:
                    await trio.sleep(0.05)
            started = time.perf_counter()
            hive.process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                while len(closed["stream"]) < 3 or not closed["events"]:
                    await trio.sleep(0.01)
            elapsed = time.perf_counter() - started
        assert closed["stream"] == [(1000, "end of job")] * 3, closed
        assert closed["events"] == [(1001, "hive shutting down")], closed
        ends = [e for e in stream_seen if isinstance(e, dict) and e.get("type") == "end"]
        assert len(ends) == 3 and all(e["state"] == "cancelled" for e in ends), ends
        # The close came with the end, not after hypercorn's graceful timeout.
        assert elapsed < GRACEFUL_TIMEOUT, elapsed
        with trio.fail_after(30):
            assert await hive.process.wait() == 0
    assert job_processes(job_id) == []
