"""Exhaustion degrades and recovers, and the state dir is private: against
real hives, one of them started with only 128 file descriptors."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from pathlib import Path

import pytest
import trio

from hive.fdlimit import FdLimit

from .rawhttp import AnswerReader, address
from .support import ROOT, Hive, job_processes, keeper, running_hive

#: The fd limit the starved hive gets, soft and hard: it cannot raise it.
NOFILE = 128
#: What hive.fdlimit allows that hive: (128 - 64) // 2.
ALLOWED = FdLimit(NOFILE, NOFILE).max_websockets()
#: More followers than the hive has descriptors.
FOLLOWERS = 130


async def open_follower(
    hive: Hive, job_id: str
) -> tuple[trio.SocketStream, int, dict[str, str], bytes]:
    """A follower by hand: (socket, status, headers, body) of the handshake's answer."""
    host, port = address(hive.url)
    stream = await trio.open_tcp_stream(host, port)
    handshake = (
        f"GET /v1/jobs/{job_id}/stream HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {hive.token}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await stream.send_all(handshake.encode())
    answer = await AnswerReader(stream).next()
    return stream, answer.status, answer.headers, answer.body


async def attach(
    hive: Hive, job_id: str, count: int
) -> tuple[list[trio.SocketStream], list[dict[str, str]]]:
    """Open ``count`` followers one by one; keep the accepted ones open. Returns
    them and the answers (headers + parsed body) of the refused ones."""
    accepted: list[trio.SocketStream] = []
    refused: list[dict[str, str]] = []
    with trio.fail_after(60):
        for _ in range(count):
            stream, status, headers, body = await open_follower(hive, job_id)
            if status == 101:
                accepted.append(stream)
                continue
            await stream.aclose()
            assert status == 503, (status, body)
            refused.append({**headers, **json.loads(body)})
    return accepted, refused


async def close_all(streams: list[trio.SocketStream]) -> None:
    for stream in streams:
        await stream.aclose()


async def submit(hive: Hive, worker: str) -> str:
    result = await keeper(hive, "download", worker)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


async def wait_running(hive: Hive, job_id: str) -> None:
    async with hive.client() as client:
        with trio.fail_after(30):
            while (await client.get(f"/v1/jobs/{job_id}")).json()["state"] != "running":
                await trio.sleep(0.05)
            while not job_processes(job_id):
                await trio.sleep(0.05)


async def test_more_followers_than_descriptors_are_refused_and_the_hive_recovers(
    tmp_path: Path,
) -> None:
    wrapper = ["prlimit", f"--nofile={NOFILE}:{NOFILE}"]
    async with running_hive(tmp_path / "state", wrapper=wrapper) as hive:
        assert f"at most {ALLOWED} websockets" in hive.log, hive.log
        job_id = await submit(hive, "sleeper")
        await wait_running(hive, job_id)

        followers, refused = await attach(hive, job_id, FOLLOWERS)
        try:
            assert len(followers) == ALLOWED
            assert len(refused) == FOLLOWERS - ALLOWED
            for answer in refused:
                assert answer["error"] == "too_many_websockets", answer
                assert answer["retry-after"] == "1"
                assert "\n" not in answer["message"]
            async with hive.client() as client:
                assert (await client.get("/v1/health")).status_code == 200
                # The job can still be cancelled, and its processes die.
                with trio.fail_after(30):
                    done = await client.delete(f"/v1/jobs/{job_id}", params={"wait": "true"})
                assert done.status_code == 200
                assert done.json()["state"] == "cancelled"
                assert done.json()["teardown"]["left"] == 0
            assert job_processes(job_id) == []
        finally:
            await close_all(followers)

        # Once the followers have gone, the hive takes followers again.
        job_id = await submit(hive, "sleeper")
        await wait_running(hive, job_id)
        with trio.fail_after(30):
            while True:
                followers, refused = await attach(hive, job_id, 1)
                if followers:
                    break
                await trio.sleep(0.05)  # the hive has not yet seen every close
        followers += (await attach(hive, job_id, ALLOWED - 1))[0]
        try:
            more, refused = await attach(hive, job_id, 5)
            assert not more and len(refused) == 5
            # SIGTERM at the limit still tears the job down, and the hive exits cleanly.
            assert await hive.stop(signal.SIGTERM) == 0
        finally:
            await close_all(followers)
        assert job_processes(job_id) == []
        assert "Traceback" not in hive.log


async def test_max_websockets_option(tmp_path: Path) -> None:
    async with running_hive(tmp_path / "state", extra=["--max-websockets", "2"]) as hive:
        assert "at most 2 websockets" in hive.log
        job_id = await submit(hive, "sleeper")
        followers, refused = await attach(hive, job_id, 4)
        try:
            assert len(followers) == 2 and len(refused) == 2
        finally:
            await close_all(followers)
        async with hive.client() as client:
            await client.delete(f"/v1/jobs/{job_id}", params={"wait": "true"})


def test_the_default_cap_leaves_descriptors_for_jobs() -> None:
    assert FdLimit(128, 128).max_websockets() == 32
    assert FdLimit(1024, 1024).max_websockets() == (1024 - 256) // 2
    assert FdLimit(1024, 1048576).max_websockets() == (1048576 - 256) // 2
    assert FdLimit(8, 8).max_websockets() >= 1


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_an_existing_state_dir_is_made_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True, mode=0o755)
    state.chmod(0o755)
    (state / "logs").chmod(0o755)
    old_log = state / "logs" / "0123456789ab.log"
    old_log.write_bytes(b"")
    old_log.chmod(0o644)
    (state / "notes").write_text("x")
    (state / "notes").chmod(0o664)
    async with running_hive(state) as hive:
        assert mode(state) == 0o700
        assert mode(state / "logs") == 0o700
        assert mode(old_log) == 0o600 and mode(state / "notes") == 0o600
        result = await keeper(hive, "download", "chatty", "--follow")
        assert result.returncode == 0, result.stderr
        made = [p for p in [*state.iterdir(), *(state / "logs").iterdir()] if p.is_file()]
        assert any(p.name == "jobs.db" for p in made)
        assert any(p.suffix == ".log" for p in made)  # the new job's (the old one was no job's)
        for path in made:
            assert mode(path) == 0o600, path


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the state dir to another user")
async def test_a_state_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)  # nobody
    with trio.fail_after(30):
        done = await trio.run_process(
            [
                sys.executable,
                "-m",
                "hive",
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--state-dir",
                str(state),
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
        )
    stderr = done.stderr.decode()
    assert done.returncode != 0
    assert stderr.count("\n") == 1 and "belongs to another user (uid 65534)" in stderr, stderr
    assert list(state.iterdir()) == []  # nothing written into it
    assert mode(state) == 0o700
