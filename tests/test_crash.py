"""Crashes at chosen instants, and the stream's resume edges, with real hives.

A hive is stopped dead — SIGSTOP, so every thread freezes at one instant,
then SIGKILL — while followers read a job, or at a named point of an install
(``HIVE_FAULT_POINT``, :mod:`hive.faults`). The next hive on the same state dir
must never contradict what the dead one showed: every seq a follower saw is
in the log with the same bytes, and exactly one complete version of a worker
is installed, with its own manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from hive.logfile import MAGIC, scan_log
from hivewire.protocol import (
    ControlEvent,
    OutputChunk,
    ResumeCursor,
    Stream,
    decode_frame,
)
from hivewire.stream import BAD_REQUEST, NORMAL, parse_beyond_end

from .support import (
    ROOT,
    Hive,
    LineWatcher,
    job_processes,
    keeper,
    keeper_process,
    running_hive,
)
from .test_durable import INTERRUPTED, get_log, jobs_by_id, stream_url, submit
from .test_end_to_end import ws_events
from .test_install import builds_left, pkgbuild, write

STOPPED_TIMEOUT = 20.0


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


async def until_stopped(hive: Hive) -> None:
    """Wait (polling, with a deadline) until the hive is stopped by a signal."""
    with trio.fail_after(STOPPED_TIMEOUT):
        while process_state(hive.process.pid) != "T":
            await trio.sleep(0.01)


async def kill(hive: Hive) -> None:
    hive.process.kill()
    await hive.process.wait()


async def no_processes_of(job_id: str) -> None:
    """The restarted hive kills what the dead one left of the job."""
    with trio.fail_after(20):
        while job_processes(job_id):
            await trio.sleep(0.05)


class Follower:
    """A raw websocket follower that keeps what it was shown."""

    def __init__(self) -> None:
        self.cursor = ResumeCursor()
        self.stdout = b""
        self.end: dict[str, Any] | None = None
        self.lost = trio.Event()
        self.started = trio.Event()

    async def follow(self, hive: Hive, url: str) -> None:
        """Until the ``end`` event, or until the connection is lost."""
        try:
            async with open_websocket_url(url, extra_headers=hive.ws_headers()) as ws:
                while self.end is None:
                    event = decode_frame(await ws.get_message())
                    if not self.cursor.accept(event):
                        continue
                    if isinstance(event, OutputChunk) and event.stream == Stream.STDOUT:
                        self.stdout += event.data
                        self.started.set()
                    elif isinstance(event, ControlEvent) and event.type == "end":
                        self.end = event.body
        except (ConnectionClosed, OSError):
            pass
        finally:
            self.lost.set()


@asynccontextmanager
async def keeper_to_file(
    hive: Hive, stdout: Path, *args: str
) -> AsyncIterator[tuple[trio.Process, LineWatcher]]:
    """A keeper in the background, its stdout into a file (tens of MB), its stderr watched."""
    with stdout.open("wb") as sink:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "keeper", "--hive", hive.url, *args],
            stdout=sink,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=hive.keeper_env(),
        )
    err = LineWatcher()
    try:
        async with trio.open_nursery() as nursery:
            assert process.stderr is not None
            nursery.start_soon(err.pump, process.stderr)
            yield process, err
            with trio.fail_after(60):
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize("round_", range(4))
async def test_a_crash_never_takes_back_what_followers_were_shown(
    tmp_path: Path, round_: int
) -> None:
    seed = random.randrange(1 << 30)
    delay = random.Random(seed).uniform(0.0, 1.0)
    state = tmp_path / "state"
    printed = tmp_path / "keeper.out"
    async with running_hive(state) as first:
        port = urlsplit(first.url).port
        job_id = await submit(first, "burst")
        raw = Follower()
        async with (
            keeper_to_file(first, printed, "follow", job_id) as (kept, err),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(raw.follow, first, stream_url(first.url, job_id))
            with trio.fail_after(30):
                await raw.started.wait()
                while printed.stat().st_size == 0:  # the keeper follows too
                    await trio.sleep(0.01)
            await trio.sleep(delay)  # the random instant of the crash
            first.process.send_signal(signal.SIGSTOP)
            await until_stopped(first)
            await kill(first)
            with trio.fail_after(10):
                await raw.lost.wait()
            shown = raw.cursor.since
            # Everything a follower saw is in the file, before any hive settles it.
            on_disk = scan_log(state / "logs" / f"{job_id}.log").last_seq
            assert on_disk >= shown, f"seed {seed}: shown up to seq {shown}, on disk {on_disk}"

            async with running_hive(state, extra=["--bind", f"127.0.0.1:{port}"]) as second:
                await no_processes_of(job_id)
                stdout = await get_log(second, job_id)
                assert stdout.startswith(raw.stdout), f"seed {seed}"
                # The raw follower resumes where it was: the rest, then the end.
                for event in await ws_events(second, job_id, since=shown):
                    assert raw.cursor.accept(event), f"seed {seed}: {event} again"
                assert isinstance(event, ControlEvent) and event.body["state"] == "interrupted"
                # The keeper reconnected by itself and printed every byte exactly once.
                with trio.fail_after(60):
                    await kept.wait()
                assert kept.returncode == 1, err.data.decode()
                assert printed.read_bytes() == stdout, f"seed {seed}"
                assert b"reconnected; resuming after seq" in err.data
                assert f"interrupted; {INTERRUPTED}".encode() in err.data
    print(f"\nseed {seed}: crash {delay:.3f} s in, follower at seq {shown}, log at {on_disk}")


async def test_keeper_says_when_the_hive_lost_output_it_had_printed(tmp_path: Path) -> None:
    """A machine crash can lose what was not fsynced: simulated by cutting the
    log file while the hive is dead. The keeper must not carry on silently."""
    state = tmp_path / "state"
    async with running_hive(state) as first:
        port = urlsplit(first.url).port
        job_id = await submit(first, "trickle")
        async with keeper_process(first, "follow", job_id) as (kept, out, err):
            await out.wait_for(b"line 3.1:")
            await kill(first)
            path = state / "logs" / f"{job_id}.log"
            scan = scan_log(path)
            assert scan.last_seq > 3  # more than the restart will append
            os.truncate(path, len(MAGIC))  # every record lost
            async with running_hive(state, extra=["--bind", f"127.0.0.1:{port}"]):
                await no_processes_of(job_id)
                with trio.fail_after(60):
                    await kept.wait()
    assert kept.returncode == 125, err.data.decode()
    assert b"the hive lost output it had shown" in err.data
    assert b"now ends at seq 3" in err.data  # the 3 events of the restart


async def test_resume_edges(hive: Hive) -> None:
    job_id = await submit(hive, "chatty")
    events = await ws_events(hive, job_id)
    last = events[-1]
    assert isinstance(last, ControlEvent) and last.type == "end"
    last_seq = last.seq
    assert (await jobs_by_id(hive))[job_id]["last_seq"] == last_seq

    async def closing(query: str) -> tuple[int | None, str | None, list[object]]:
        got: list[object] = []
        with trio.fail_after(10):
            async with open_websocket_url(
                stream_url(hive.url, job_id, query), extra_headers=hive.ws_headers()
            ) as ws:
                try:
                    while True:
                        got.append(await ws.get_message())
                except ConnectionClosed as exc:
                    return exc.reason.code, exc.reason.reason, got
        raise AssertionError("unreachable")

    # At the end event: nothing to send, a normal close at once.
    code, reason, got = await closing(f"since={last_seq}")
    assert (code, got) == (NORMAL, []) and reason
    # Beyond it: refused, naming both numbers.
    code, reason, got = await closing(f"since={last_seq + 1}")
    assert code == BAD_REQUEST and got == []
    assert reason is not None and parse_beyond_end(reason) == (last_seq + 1, last_seq)
    # One before it: only the end event.
    code, _, got = await closing(f"since={last_seq - 1}")
    assert code == NORMAL and [decode_frame(m) for m in got] == [last]

    # The keeper: resuming at the end prints nothing and reports the job's outcome.
    at_end = await keeper(hive, "follow", job_id, "--since", str(last_seq))
    assert at_end.returncode == 0 and at_end.stdout == b"", at_end.stderr
    assert f"job {job_id} succeeded" in at_end.stderr
    beyond = await keeper(hive, "follow", job_id, "--since", str(last_seq + 10))
    assert beyond.returncode == 5
    assert f"since {last_seq + 10} is beyond the job's last seq {last_seq}" in beyond.stderr

    # A running job: since beyond what it has shown is refused too.
    running = await submit(hive, "sleeper")
    with trio.fail_after(30):
        while b"sleeper ready" not in await get_log(hive, running):
            await trio.sleep(0.05)
    shown = (await jobs_by_id(hive))[running]["last_seq"]
    async with open_websocket_url(
        stream_url(hive.url, running, f"since={shown + 100}"), extra_headers=hive.ws_headers()
    ) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == BAD_REQUEST
    async with hive.client() as client:
        await client.delete(f"/v1/jobs/{running}?wait=true")


# ------------------------------------------------------------------ installs

#: Where a forced upgrade is killed, and which version the next hive must have:
#: before the job's end is in its log the install rolls back, after it, it finishes.
INSTALL_POINTS = [
    ("install:staged", "old"),
    ("install:exchanged", "old"),
    ("install:finished", "old"),
    ("job:end-logged", "new"),
    ("install:settling", "new"),
    ("install:trashed", "new"),
]


def manifest_matches(version_dir: Path) -> dict[str, Any]:
    """The manifest of an installed version, checked against the files there."""
    manifest: dict[str, Any] = json.loads((version_dir / ".hive-manifest.json").read_text())
    files = {
        str(p.relative_to(version_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(version_dir.rglob("*"))
        if p.is_file() and p.name != ".hive-manifest.json"
    }
    assert manifest["files"] == files
    assert manifest["version"] == version_dir.name
    return manifest


async def install(hive: Hive, worker: str, **flags: Any) -> str:
    async with hive.client() as client:
        response = await client.post(
            "/v1/jobs", json={"operation": "worker_download", "worker": worker, **flags}
        )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.mark.parametrize(("point", "survivor"), INSTALL_POINTS)
@pytest.mark.parametrize("upgrade", [True, False], ids=["upgrade", "first-install"])
async def test_an_install_killed_at_any_point_leaves_one_whole_version(
    tmp_path: Path, point: str, survivor: str, upgrade: bool
) -> None:
    catalog, state = tmp_path / "catalog", tmp_path / "state"
    workers = state / "workers"
    old_job = None
    if upgrade:
        write(catalog, "up", pkgbuild("up", "1"))
        async with running_hive(state, catalog=catalog) as hive:
            old_job = await install(hive, "up")
            assert (await ws_events(hive, old_job))[-1].body["state"] == "succeeded"  # type: ignore[union-attr]
    write(catalog, "up", pkgbuild("up", "2"))
    async with running_hive(state, catalog=catalog, env={"HIVE_FAULT_POINT": point}) as hive:
        new_job = await install(hive, "up", force=True)
        await until_stopped(hive)
        await kill(hive)
    async with running_hive(state, catalog=catalog) as hive:
        jobs = await jobs_by_id(hive)
        expected_job = new_job if survivor == "new" else old_job
        assert jobs[new_job]["state"] == ("succeeded" if survivor == "new" else "interrupted")
        leftovers = [p.name for p in workers.iterdir() if p.name.startswith(".")]
        assert leftovers == [] and builds_left(hive) == []
        if expected_job is None:
            assert not (workers / "up").exists()  # a first install rolled back: nothing
            async with hive.client() as client:
                assert (await client.get("/v1/workers")).json()["workers"] == []
            return
        (version,) = os.listdir(workers / "up")
        manifest = manifest_matches(workers / "up" / version)
        assert manifest["job_id"] == expected_job
        assert version == ("2-1" if survivor == "new" else "1-1")
        assert (workers / "up" / version / "bin" / "up").read_text() == version[0] + "\n"
        async with hive.client() as client:
            (row,) = (await client.get("/v1/workers")).json()["workers"]
        assert (row["version"], row["job_id"]) == (version, expected_job)


async def _raw_request(hive: Hive, method: str, path: str, body: dict[str, Any]) -> int:
    """Send one whole HTTP request and return the status code, for a hive that
    may be stopped: the request waits in the socket until the hive runs."""
    url = urlsplit(hive.url)
    assert url.hostname is not None and url.port is not None
    data = json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: Bearer {hive.token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream(url.hostname, url.port)
    async with stream:
        await stream.send_all(head + data)
        os.kill(hive.process.pid, signal.SIGCONT)
        answer = b""
        with trio.fail_after(30):
            while chunk := await stream.receive_some():
                answer += chunk
    return int(answer.split(b" ", 2)[1])


async def test_a_worker_is_free_once_its_install_ended(tmp_path: Path) -> None:
    """The end event is in the log before the install's swap is settled (so a
    crash between them never contradicts it). A client that read ``end`` and
    asks again at once must not be refused as "install in progress" while the
    hive settles: the request is in the socket before the hive runs on."""
    catalog, state = tmp_path / "catalog", tmp_path / "state"
    write(catalog, "up", pkgbuild("up", "1"))
    env = {"HIVE_FAULT_POINT": "job:end-logged"}
    async with running_hive(state, catalog=catalog, env=env) as hive:
        await install(hive, "up")
        await until_stopped(hive)  # the end event is logged, the swap not settled
        status = await _raw_request(
            hive, "POST", "/v1/jobs", {"operation": "worker_download", "worker": "up"}
        )
        assert status == 201
        await until_stopped(hive)  # the second job ("already installed") ended too
        await kill(hive)
    async with running_hive(state, catalog=catalog) as hive:
        (version,) = os.listdir(state / "workers" / "up")
        assert version == "1-1"
