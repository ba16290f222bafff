"""The vertical slice, end to end: a real hive, a real keeper, real process trees."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import trio
from trio_websocket import open_websocket_url

from hive.install import build_root
from hivewire.protocol import ControlEvent, OutputChunk, ResumeCursor, Stream, decode_frame

from .support import Hive, job_processes, keeper, keeper_process, running_hive

JOB_LINE = re.compile(r"job ([0-9a-f]{12})")


def job_id_from(stderr: bytes | str) -> str:
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    match = JOB_LINE.search(text)
    assert match, f"no job id in keeper output: {text!r}"
    return match.group(1)


async def wait_for_processes(job_id: str, at_least: int, timeout: float = 20.0) -> list[int]:
    """Wait until the job has ``at_least`` live processes (poll with a deadline)."""
    with trio.fail_after(timeout):
        while len(found := job_processes(job_id)) < at_least:
            await trio.sleep(0.02)
    return found


async def ws_events(hive: Hive, job_id: str, since: int = 0) -> list[OutputChunk | ControlEvent]:
    url = hive.ws_url(f"/v1/jobs/{job_id}/stream?since={since}")
    events: list[OutputChunk | ControlEvent] = []
    with trio.fail_after(30):
        async with open_websocket_url(url, extra_headers=hive.ws_headers()) as ws:
            while True:
                event = decode_frame(await ws.get_message())
                events.append(event)
                if isinstance(event, ControlEvent) and event.type == "end":
                    break
    return events


def stdout_of(events: list[OutputChunk | ControlEvent]) -> bytes:
    return b"".join(
        e.data for e in events if isinstance(e, OutputChunk) and e.stream == Stream.STDOUT
    )


async def test_ctrl_c_tears_down_the_whole_tree_before_keeper_says_cancelled(hive: Hive) -> None:
    async with keeper_process(hive, "download", "tree", "--follow") as (process, out, err):
        await out.wait_for(b"tree ready")
        job_id = job_id_from(err.data)
        # bash driver + 2 x (bash, bash, sleep, sleep) + the TERM-ignoring loop
        before = await wait_for_processes(job_id, 8)
        process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            await process.wait()
        # The moment the keeper has exited, nothing of the job may be alive.
        assert job_processes(job_id) == []
    assert process.returncode == 130, err.data.decode()
    stderr = err.data.decode()
    assert "cancelling job" in stderr
    assert "sent SIGTERM" in stderr and "sent SIGKILL" in stderr  # the trap "" TERM child
    assert re.search(
        r"cancelled: job \w+ cancelled; .*teardown: \d+ process\(es\) found.*0 left", stderr
    )
    assert len(before) >= 8
    async with hive.client() as client:
        assert (await client.get("/v1/health")).json()["status"] == "ok"
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert job["state"] == "cancelled"
    assert job["teardown"]["left"] == 0 and job["teardown"]["sigkill"] >= 1
    assert "cancel requested by DELETE" in hive.log and f"job {job_id} ended: cancelled" in hive.log


async def test_success_exits_zero_and_installs(hive: Hive) -> None:
    result = await keeper(hive, "download", "chatty", "--follow")
    assert result.returncode == 0, result.stderr
    assert b"out line 2000" in result.stdout
    assert "succeeded" in result.stderr
    assert (hive.state_dir / "workers" / "chatty" / "1-1" / ".hive-manifest.json").is_file()
    roots = [build_root(hive.state_dir, shared=shared) for shared in (False, True)]
    left = [path for root in roots if root.is_dir() for path in root.iterdir()]
    assert not left, "build dir left behind"


async def test_failure_passes_the_exit_code_and_separates_streams(hive: Hive) -> None:
    result = await keeper(hive, "download", "fails", "--follow")
    assert result.returncode == 3, result.stderr
    assert b"to stdout" in result.stdout and b"to stderr" not in result.stdout
    assert "to stderr" in result.stderr
    assert re.search(r"job \w+ failed; exit code 3; in [\d.]+ s; exited with code 3", result.stderr)
    assert not (hive.state_dir / "workers" / "fails").exists()


async def test_grandchild_holding_the_pipe_does_not_hang_the_job(hive: Hive) -> None:
    result = await keeper(hive, "download", "pipeholder", "--follow", timeout=20)
    assert result.returncode == 0, result.stderr
    job_id = job_id_from(result.stderr)
    assert job_processes(job_id) == []
    assert "sent SIGTERM to 1 process(es)" in result.stderr  # the straggler


async def test_replay_since_and_two_followers_get_the_same_bytes(hive: Hive) -> None:
    submitted = await keeper(hive, "download", "chatty")
    job_id = submitted.stdout.decode().strip()
    async with trio.open_nursery() as nursery:
        results: list[list[OutputChunk | ControlEvent]] = []

        async def follow() -> None:
            results.append(await ws_events(hive, job_id))

        nursery.start_soon(follow)
        nursery.start_soon(follow)
    first, second = results
    assert stdout_of(first) == stdout_of(second)
    assert b"binary: \xff\xfe\x00 end\n" in stdout_of(first)
    cursor = ResumeCursor()
    for event in first:
        assert cursor.accept(event)  # no gap, no repeat
    # Resume from the middle: exactly the rest, nothing before it.
    middle = first[len(first) // 2]
    resume_at = middle.last if isinstance(middle, OutputChunk) else middle.seq
    rest = await ws_events(hive, job_id, since=resume_at)
    resumed = ResumeCursor(resume_at)
    for event in rest:
        assert resumed.accept(event)
    assert resumed.since == cursor.since
    before = b"".join(
        e.data
        for e in first
        if isinstance(e, OutputChunk) and e.stream == Stream.STDOUT and e.last <= resume_at
    )
    assert before + stdout_of(rest) == stdout_of(first)


async def test_keeper_follow_output_matches_the_log(hive: Hive) -> None:
    submitted = await keeper(hive, "download", "chatty")
    job_id = submitted.stdout.decode().strip()
    followed = await keeper(hive, "follow", job_id)
    assert followed.returncode == 0
    events = await ws_events(hive, job_id)
    assert followed.stdout == stdout_of(events)


async def test_hive_shutdown_tears_down_running_jobs(tmp_path: Path) -> None:
    async with running_hive(tmp_path / "state") as hive:
        async with keeper_process(hive, "download", "tree", "--follow") as (process, out, err):
            await out.wait_for(b"tree ready")
            job_id = job_id_from(err.data)
            await wait_for_processes(job_id, 8)
            assert await hive.stop(signal.SIGTERM) == 0
            assert job_processes(job_id) == []
            with trio.fail_after(30):
                await process.wait()
        # The follower got its end event before the hive went away.
        assert process.returncode == 3, err.data.decode()
        assert f"job {job_id} cancelled; exit code" in err.data.decode()
        assert "cancel requested by hive shutdown" in hive.log


async def test_cancel_api_semantics(hive: Hive) -> None:
    # The tree has a child that ignores SIGTERM: the job stays "cancelling" for the grace.
    async with keeper_process(hive, "download", "tree", "--follow") as (process, out, err):
        await out.wait_for(b"tree ready")
        job_id = job_id_from(err.data)
        async with hive.client() as client:
            first = await client.delete(f"/v1/jobs/{job_id}")
            again = await client.delete(f"/v1/jobs/{job_id}?wait=true")
            ended = await client.delete(f"/v1/jobs/{job_id}")
            unknown = await client.delete("/v1/jobs/000000000000")
            malformed = await client.delete("/v1/jobs/nope")
    assert first.status_code == 202 and first.json()["state"] == "cancelling"
    assert again.status_code == 200 and again.json()["state"] == "cancelled"
    assert again.json()["teardown"]["left"] == 0
    assert ended.status_code == 409 and ended.json()["state"] == "cancelled"
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_job"
    assert malformed.status_code == 400
    assert process.returncode == 3  # cancelled, but not by this keeper


async def test_keeper_cancel_waits_for_the_report(hive: Hive) -> None:
    async with keeper_process(hive, "download", "tree", "--follow") as (_process, out, err):
        await out.wait_for(b"tree ready")
        job_id = job_id_from(err.data)
        result = await keeper(hive, "cancel", job_id)
        assert result.returncode == 0, result.stderr
        assert job_processes(job_id) == []
        assert "0 left" in result.stderr


async def test_bad_input_gets_clear_errors(hive: Hive) -> None:
    unknown = await keeper(hive, "download", "no-such-worker")
    assert unknown.returncode == 4
    assert unknown.stderr.strip() == "keeper: no worker named 'no-such-worker' in the catalog"
    bad_name = await keeper(hive, "download", "../etc")
    assert bad_name.returncode == 5 and "invalid worker name" in bad_name.stderr
    no_job = await keeper(hive, "status", "0123456789ab")
    assert no_job.returncode == 4 and "no job 0123456789ab" in no_job.stderr
    async with hive.client() as client:
        cases = [
            (b"not json", 400),
            (b"[]", 400),
            (b'{"operation": "worker_download"}', 400),
            (b'{"operation": "rm -rf", "worker": "hello"}', 400),
            (b'{"operation": "worker_download", "worker": "chatty", "extra": 1}', 400),
            (b'{"operation": "worker_download", "worker": "nope"}', 404),
        ]
        for body, status in cases:
            response = await client.post(
                "/v1/jobs", content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == status, body
            assert set(response.json()) >= {"error", "message"}
        assert (await client.get("/v1/nothing")).status_code == 404
        assert (await client.get("/v1/health")).json()["status"] == "ok"


async def test_dead_hive_is_one_line_and_exit_125(tmp_path: Path) -> None:
    async with running_hive(tmp_path / "state") as hive:
        url = hive.url
    dead = Hive(hive.process, url, tmp_path)
    result = await keeper(dead, "jobs")
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1 and "cannot reach the hive" in result.stderr
