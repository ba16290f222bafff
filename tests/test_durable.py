"""Durable jobs and lossless streams, end to end: a real hive on a real state
dir, restarted, killed, cut off from its followers, and out of disk space."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from hivewire.protocol import (
    ControlEvent,
    Frame,
    OutputChunk,
    ResumeCursor,
    StartAt,
    Stream,
    decode_frame,
)

from .proxy import running_proxy
from .support import ROOT, Hive, job_processes, keeper, keeper_process, running_hive
from .test_end_to_end import job_id_from, stdout_of, ws_events

MiB = 1024 * 1024
BULK_BYTES = 200 * MiB  # what tests/recipes/bulk writes to stdout
LONG_LINE = 100 * MiB  # tests/recipes/longline
RSS_LIMIT = 150 * MiB  # measured: about 60 MiB
INTERRUPTED = "hive stopped while the job was running"


async def submit(hive: Hive, worker: str) -> str:
    async with hive.client() as client:
        response = await client.post(
            "/v1/jobs", json={"operation": "worker_download", "worker": worker}
        )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def get_log(hive: Hive, job_id: str, stream: str = "stdout") -> bytes:
    async with hive.client() as client:
        response = await client.get(f"/v1/jobs/{job_id}/log", params={"stream": stream})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    return response.content


async def log_digest(hive: Hive, job_id: str) -> tuple[str, int]:
    """sha256 and size of the job's stdout, streamed (it may be hundreds of MB)."""
    digest, size = hashlib.sha256(), 0
    async with (
        hive.client() as client,
        client.stream("GET", f"/v1/jobs/{job_id}/log") as response,
    ):
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


async def jobs_by_id(hive: Hive) -> dict[str, dict[str, Any]]:
    async with hive.client() as client:
        return {job["id"]: job for job in (await client.get("/v1/jobs")).json()["jobs"]}


def stream_url(base: str, job_id: str, query: str = "") -> str:
    return (
        base.replace("http://", "ws://")
        + f"/v1/jobs/{job_id}/stream"
        + (f"?{query}" if query else "")
    )


def vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class Sink:
    """A follower's view of a stream: checks seqs, hashes stdout, keeps nothing."""

    def __init__(self) -> None:
        self.cursor = ResumeCursor()
        self.digest = hashlib.sha256()
        self.size = 0
        self.head = b""
        self.tail = b""
        self.newlines = 0
        self.end: dict[str, Any] | None = None
        self.frames: list[Frame] = []

    def feed(self, frame: Frame) -> None:
        assert self.cursor.accept(frame) or isinstance(frame, StartAt)
        if isinstance(frame, OutputChunk) and frame.stream == Stream.STDOUT:
            self.digest.update(frame.data)
            self.size += len(frame.data)
            self.newlines += frame.data.count(b"\n")
            if len(self.head) < 1000:
                self.head += frame.data[: 1000 - len(self.head)]
            self.tail = (self.tail + frame.data)[-200:]
        elif isinstance(frame, ControlEvent) and frame.type == "end":
            self.end = frame.body
        if not isinstance(frame, OutputChunk):
            self.frames.append(frame)

    async def follow(self, hive: Hive, url: str) -> None:
        """Follow ``url`` (the hive's stream, or a proxy in front of it) with the hive's token."""
        async with open_websocket_url(
            url,
            extra_headers=hive.ws_headers(),
            max_message_size=4 * MiB,
            receive_buffer_size=256 * 1024,
        ) as ws:
            while self.end is None:
                self.feed(decode_frame(await ws.get_message()))


async def closed_with(hive: Hive, url: str) -> tuple[int | None, str | None, list[Frame]]:
    """Read a stream to its ``end`` event (then close it: code None) or until
    the hive closes it: (code, reason, frames)."""
    frames: list[Frame] = []
    with trio.fail_after(30):
        async with open_websocket_url(url, extra_headers=hive.ws_headers()) as ws:
            try:
                while True:
                    frames.append(decode_frame(await ws.get_message()))
                    if isinstance(frames[-1], ControlEvent) and frames[-1].type == "end":
                        return None, None, frames
            except ConnectionClosed as exc:
                return exc.reason.code, exc.reason.reason, frames
    raise AssertionError("unreachable")


def controls(events: list[OutputChunk | ControlEvent]) -> list[ControlEvent]:
    return [e for e in events if isinstance(e, ControlEvent)]


async def wait_for_output(hive: Hive, job_id: str, needle: bytes) -> None:
    with trio.fail_after(30):
        while needle not in await get_log(hive, job_id):
            await trio.sleep(0.05)


async def test_log_endpoint_and_keeper_logs_give_the_exact_bytes(hive: Hive) -> None:
    job_id = await submit(hive, "chatty")
    events = await ws_events(hive, job_id)
    stdout, stderr = await get_log(hive, job_id), await get_log(hive, job_id, "stderr")
    assert stdout == stdout_of(events)
    assert b"binary: \xff\xfe\x00 end\n" in stdout and b"err line 2000\n" in stderr
    assert stderr == b"".join(
        e.data for e in events if isinstance(e, OutputChunk) and e.stream == Stream.STDERR
    )
    logs = await keeper(hive, "logs", job_id)
    assert logs.returncode == 0 and logs.stdout == stdout
    logs_err = await keeper(hive, "logs", job_id, "--stderr")
    assert logs_err.returncode == 0 and logs_err.stdout == stderr
    async with hive.client() as client:
        bad = await client.get(f"/v1/jobs/{job_id}/log", params={"stream": "both"})
    assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
    unknown = await keeper(hive, "logs", "0123456789ab")
    assert unknown.returncode == 4 and "no job 0123456789ab" in unknown.stderr


async def test_stream_query_params_and_close_reasons(hive: Hive) -> None:
    job_id = await submit(hive, "chatty")
    events = await ws_events(hive, job_id)
    end = events[-1]
    assert isinstance(end, ControlEvent) and end.type == "end"
    stdout = stdout_of(events)

    # since=latest on an ended job: where the stream starts, then only the end event.
    code, _, frames = await closed_with(hive, stream_url(hive.url, job_id, "since=latest"))
    assert code is None and frames == [StartAt(end.seq - 1), end]

    # tail_lines: the last lines of stdout, with seqs that resume cleanly.
    code, _, frames = await closed_with(hive, stream_url(hive.url, job_id, "tail_lines=3"))
    assert code is None and isinstance(frames[0], StartAt)
    sink = Sink()
    for frame in frames:
        sink.feed(frame)
    tail = b"".join(stdout.splitlines(keepends=True)[-3:])
    assert sink.size == len(tail) and sink.digest.hexdigest() == hashlib.sha256(tail).hexdigest()
    assert sink.cursor.since == end.seq

    for query in ("since=-1", "since=abc", "tail_lines=x", "since=3&tail_lines=2", "format=xml"):
        code, reason, frames = await closed_with(hive, stream_url(hive.url, job_id, query))
        assert (code, frames) == (4400, []), query
        assert reason

    # A follower of a job that does not exist is told so, and not left hanging.
    code, reason, frames = await closed_with(hive, stream_url(hive.url, "000000000000"))
    assert (code, reason, frames) == (4404, "no job 000000000000", [])


async def test_keeper_follow_tail_and_no_replay(hive: Hive) -> None:
    ended = await submit(hive, "chatty")
    await ws_events(hive, ended)
    stdout = await get_log(hive, ended)
    tail = await keeper(hive, "follow", ended, "--tail", "5")
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout == b"".join(stdout.splitlines(keepends=True)[-5:])
    nothing_new = await keeper(hive, "follow", ended, "--no-replay")
    assert nothing_new.returncode == 0 and nothing_new.stdout == b""
    assert "succeeded" in nothing_new.stderr
    both = await keeper(hive, "follow", ended, "--tail", "1", "--no-replay")
    assert both.returncode == 2

    # On a running job: the end of what is there, then everything that follows.
    running = await submit(hive, "trickle")
    await wait_for_output(hive, running, b"line 3.1:")
    async with trio.open_nursery() as nursery:
        results = {}

        async def run(name: str, *args: str) -> None:
            results[name] = await keeper(hive, "follow", running, *args)

        nursery.start_soon(run, "tail", "--tail", "2")
        nursery.start_soon(run, "new", "--no-replay")
    final = await get_log(hive, running)
    for name, result in results.items():
        assert result.returncode == 0, result.stderr
        assert result.stdout and final.endswith(result.stdout), name
        before = final[: len(final) - len(result.stdout)]
        assert before.endswith(b"\n") or name == "new"  # a tail starts at a line
        assert b"line 1.1:" not in result.stdout


async def test_history_survives_a_clean_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with running_hive(state) as hive:
        done = await submit(hive, "chatty")
        await ws_events(hive, done)
        stdout, stderr = await get_log(hive, done), await get_log(hive, done, "stderr")
        async with keeper_process(hive, "download", "sleeper", "--follow") as (_, out, err):
            await out.wait_for(b"sleeper ready")
            running = job_id_from(err.data)
            before = await jobs_by_id(hive)
            assert await hive.stop() == 0
    async with running_hive(state) as hive:
        after = await jobs_by_id(hive)
        assert after[done] == before[done]
        assert after[running]["state"] == "cancelled"
        assert after[running]["cancel_requested_by"] == "hive shutdown"
        assert await get_log(hive, done) == stdout
        assert await get_log(hive, done, "stderr") == stderr
        followed = await keeper(hive, "follow", done)
        assert followed.returncode == 0 and followed.stdout == stdout
        assert (await keeper(hive, "follow", running)).returncode == 3  # cancelled


async def test_kill_9_keeps_finished_jobs_and_interrupts_running_ones(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with running_hive(state) as hive:
        done = await submit(hive, "chatty")
        done_events = await ws_events(hive, done)
        stdout = await get_log(hive, done)
        running = await submit(hive, "sleeper")
        await wait_for_output(hive, running, b"sleeper ready")
        hive.process.kill()
        await hive.process.wait()
    # Nothing tore the job down: its processes outlived the hive. (Cleaning
    # them up after a crash is another part's business; here the test does it.)
    leftovers = job_processes(running)
    assert leftovers
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    with trio.fail_after(10):
        while job_processes(running):
            await trio.sleep(0.02)

    async with running_hive(state) as hive:
        jobs = await jobs_by_id(hive)
        assert jobs[done]["state"] == "succeeded" and jobs[done]["exit_code"] == 0
        assert await get_log(hive, done) == stdout
        replayed = await ws_events(hive, done)  # framed differently, the same events
        assert stdout_of(replayed) == stdout_of(done_events)
        assert controls(replayed) == controls(done_events)
        assert jobs[running]["state"] == "interrupted"
        assert jobs[running]["error"] == INTERRUPTED
        assert jobs[running]["ended_at"] is not None
        assert b"sleeper ready" in await get_log(hive, running)
        events = await ws_events(hive, running)
        end = events[-1]
        assert isinstance(end, ControlEvent) and end.type == "end"
        assert end.body["state"] == "interrupted" and end.body["error"] == INTERRUPTED
        followed = await keeper(hive, "follow", running)
        assert followed.returncode == 1
        assert b"sleeper ready" in followed.stdout
        assert f"job {running} interrupted; {INTERRUPTED}" in followed.stderr
        assert f"job {running}: interrupted" in hive.log


async def test_keeper_resumes_through_connections_cut_at_random_points(hive: Hive) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    cuts = [rng.randrange(2_000, 1_000_000) for _ in range(5)]
    port = urlsplit(hive.url).port
    assert port is not None
    # Connection 0 is the keeper's HTTP request; every websocket after it is cut
    # once it carried its budget, until the budgets run out.
    async with running_proxy(port, cut_after=[None, *cuts]) as proxy:
        job_id = await submit(hive, "trickle")
        result = await keeper(dataclasses.replace(hive, url=proxy.url), "follow", job_id)
    assert proxy.cuts == len(cuts), f"seed {seed}"
    assert result.returncode == 0, f"seed {seed}: {result.stderr}"
    assert result.stdout == await get_log(hive, job_id), f"seed {seed}"
    assert result.stderr.count("connection lost") == len(cuts), result.stderr
    assert result.stderr.count("reconnected; resuming after seq") == len(cuts)


@pytest.mark.slow
async def test_slow_follower_never_slows_the_job_nor_grows_the_hive(hive: Hive) -> None:
    port = urlsplit(hive.url).port
    assert port is not None
    rss: list[int] = []
    slow = Sink()
    async with running_proxy(port, slow=True) as proxy, trio.open_nursery() as nursery:

        async def sample_rss() -> None:
            while True:
                rss.append(vm_rss(hive.process.pid))
                await trio.sleep(0.05)

        nursery.start_soon(sample_rss)
        job_id = await submit(hive, "bulk")
        following = trio.Event()

        async def follow_slowly() -> None:
            await slow.follow(hive, stream_url(proxy.url, job_id))
            following.set()

        nursery.start_soon(follow_slowly)
        # A second follower at full speed sees the job end...
        fast = Sink()
        with trio.fail_after(120):
            await fast.follow(hive, stream_url(hive.url, job_id))
        assert fast.end is not None and fast.end["state"] == "succeeded"
        # ...while the slow one has a small fraction: the job never waited for it.
        at_end = proxy.to_client
        assert at_end < BULK_BYTES // 10, at_end
        assert fast.size == BULK_BYTES  # stdout is the recipe's, and only the recipe's
        peak_while_running = max(rss)
        proxy.go_fast()
        with trio.fail_after(120):
            await following.wait()
        nursery.cancel_scope.cancel()
    digest, size = await log_digest(hive, job_id)
    assert (slow.digest.hexdigest(), slow.size) == (digest, size)
    assert (fast.digest.hexdigest(), fast.size) == (digest, size)
    print(
        f"\nslow follower: {at_end} bytes when the job ended; hive VmRSS peak "
        f"{peak_while_running / MiB:.0f} MiB while running, {max(rss) / MiB:.0f} MiB overall"
    )
    assert max(rss) < RSS_LIMIT


async def test_a_hundred_followers_receive_identical_bytes(hive: Hive) -> None:
    job_id = await submit(hive, "trickle")
    sinks = [Sink() for _ in range(100)]
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for sink in sinks:
                nursery.start_soon(sink.follow, hive, stream_url(hive.url, job_id))
    digest, size = await log_digest(hive, job_id)
    assert {(s.digest.hexdigest(), s.size) for s in sinks} == {(digest, size)}
    assert {s.cursor.since for s in sinks} == {sinks[0].cursor.since}


@pytest.mark.slow
async def test_a_100_mb_line_costs_bounded_memory(hive: Hive) -> None:
    rss: list[int] = []
    async with trio.open_nursery() as nursery:

        async def sample_rss() -> None:
            while True:
                rss.append(vm_rss(hive.process.pid))
                await trio.sleep(0.05)

        nursery.start_soon(sample_rss)
        job_id = await submit(hive, "longline")
        live = Sink()
        with trio.fail_after(120):
            await live.follow(hive, stream_url(hive.url, job_id))
        # The last three lines of stdout: the 100 MB one is all there is (the
        # driver's and the installer's stage lines are on stderr).
        tail = Sink()
        with trio.fail_after(120):
            await tail.follow(hive, stream_url(hive.url, job_id, "tail_lines=3"))
        nursery.cancel_scope.cancel()
    assert (live.digest.hexdigest(), live.size) == await log_digest(hive, job_id)
    assert tail.size == LONG_LINE and tail.newlines == 0
    assert tail.head == b"x" * 1000 and tail.tail == b"x" * 200
    print(f"\n100 MB line: hive VmRSS peak {max(rss) / MiB:.0f} MiB")
    assert max(rss) < RSS_LIMIT


@pytest.fixture
def small_log_disk(tmp_path: Path) -> Iterator[Path]:
    """A state dir whose logs live on a 4 MiB tmpfs (needs root to mount)."""
    state = tmp_path / "state"
    logs = state / "logs"
    logs.mkdir(parents=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(logs)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a small tmpfs here: {exc}")
    try:
        yield state
    finally:
        subprocess.run(["umount", str(logs)], check=True)


async def test_disk_full_fails_the_job_and_the_hive_goes_on(small_log_disk: Path) -> None:
    async with running_hive(small_log_disk) as hive:
        result = await keeper(hive, "download", "bulk", "--follow")
        job_id = job_id_from(result.stderr)
        assert result.returncode == 1, result.stderr
        assert "cannot write the job log: No space left on device" in result.stderr
        assert job_processes(job_id) == []
        job = (await jobs_by_id(hive))[job_id]
        assert job["state"] == "failed" and "No space left on device" in job["error"]
        assert job["teardown"]["left"] == 0
        partial = await get_log(hive, job_id)
        assert b"bulk output: the quick brown fox" in partial and len(partial) < 4 * MiB
        # Once there is room again, new jobs run as usual.
        subprocess.run(
            ["mount", "-o", "remount,size=64m", str(small_log_disk / "logs")], check=True
        )
        again = await keeper(hive, "download", "chatty", "--follow")
        assert again.returncode == 0, again.stderr


async def test_retention_forgets_the_oldest_ended_jobs(tmp_path: Path) -> None:
    state = tmp_path / "state"

    async def wait_for_count(hive: Hive, count: int) -> dict[str, dict[str, Any]]:
        with trio.fail_after(30):  # retention runs in the background after each job
            while len(jobs := await jobs_by_id(hive)) != count:
                await trio.sleep(0.05)
        return jobs

    async def wait_for_logs(job_ids: list[str]) -> None:
        """Until only these jobs have log files: retention forgets a job, then
        removes its file."""
        with trio.fail_after(30):
            while sorted(os.listdir(state / "logs")) != sorted(f"{i}.log" for i in job_ids):
                await trio.sleep(0.05)

    async with running_hive(state, extra=["--keep-jobs", "2"]) as hive:
        ids = []
        for _ in range(3):
            ids.append(await submit(hive, "fails"))
            await ws_events(hive, ids[-1])
        assert list(await wait_for_count(hive, 2)) == ids[1:]
        await wait_for_logs(ids[1:])
        assert (await keeper(hive, "logs", ids[0])).returncode == 4
    # A tighter limit applies as soon as a hive starts.
    async with running_hive(state, extra=["--keep-jobs", "1"]) as hive:
        assert list(await wait_for_count(hive, 1)) == ids[2:]
        await wait_for_logs(ids[2:])


async def test_retention_options_refuse_nonsense() -> None:
    done = await trio.run_process(
        [sys.executable, "-m", "hive", "serve", "--keep-bytes", "lots"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert b"not a size: 'lots'" in done.stderr
