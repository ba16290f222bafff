"""Fan-out: the control plane while 1,000 websocket followers watch one job.

A job prints 10 lines a second (``bench/recipes/slowticker``). With nobody
following it, ``GET /v1/health`` is timed repeatedly and the job is cancelled
with ``DELETE ?wait=true`` (the limit: the same hive, the same job, no
followers). Then the same job runs again with 1,000 followers attached, and the
same two things are timed. In both phases, another job (``ticker``) is also
submitted and at once cancelled (``DELETE`` without ``wait``) a few times, and
both answers are timed: the control plane a user touches. Last, health is
timed while 1,000 followers watch a job that prints a line every 2 seconds
(``sparseticker``): each line reaches followers that have read everything and
wait, all at once, which once made each line a burst of 1,000 sends. The
followers live
in a child process (``python -m bench.fanout``), so that their own event loop
does not delay the requests being timed; each is a websocket handshake written
by hand on a raw socket whose frames are read and dropped unparsed, the
cheapest follower there is.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import httpx
import trio

from .harness import PYTHON, ROOT, Context, Figure, Hive, cpu_seconds, running_hive

RECIPE = "slowticker"
SPARSE_RECIPE = "sparseticker"
#: Submitted and cancelled at once, CONTROL_ROUNDS times per phase.
CONTROL_RECIPE = "ticker"
CONTROL_ROUNDS = 10
FOLLOWERS = 1000
#: Health requests per phase, one every HEALTH_GAP seconds, for at most HEALTH_WINDOW.
HEALTH_REQUESTS = 100
HEALTH_GAP = 0.05
HEALTH_WINDOW = 30.0
P99_AIM_MS = 100.0
#: The cancel must be confirmed within the grace period plus this.
CANCEL_MARGIN_MS = 100.0
GRACE = 5.0


async def time_health(client: httpx.AsyncClient) -> list[float]:
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < HEALTH_REQUESTS and time.perf_counter() - started < HEALTH_WINDOW:
        before = time.perf_counter()
        response = await client.get("/v1/health")
        response.raise_for_status()
        samples.append((time.perf_counter() - before) * 1000)
        await trio.sleep(HEALTH_GAP)
    return samples


async def start_job(client: httpx.AsyncClient, recipe: str = RECIPE, seq: int = 5) -> str:
    response = await client.post(
        "/v1/jobs", json={"operation": "worker_download", "worker": recipe, "force": True}
    )
    response.raise_for_status()
    job_id: str = response.json()["id"]
    with trio.fail_after(30):
        while (await client.get(f"/v1/jobs/{job_id}")).json()["last_seq"] < seq:
            await trio.sleep(0.1)  # running and printing
    return job_id


@asynccontextmanager
async def attached(ctx: Context, hive: Hive, job_id: str) -> AsyncIterator[int]:
    """FOLLOWERS raw followers of ``job_id`` in a child process, for the block;
    yields how many the hive accepted, once their replays of the history are done."""
    followers = await trio.lowlevel.open_process(
        [PYTHON, "-m", "bench.fanout", hive.url, hive.token, job_id, str(FOLLOWERS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert followers.stdout is not None and followers.stdin is not None
        report = await _read_line(followers.stdout, timeout=300)
        ctx.log(f"fanout: followers: {report}")
        await trio.sleep(1.0)  # the replays of the history are done
        yield int(report.split()[1])
    finally:
        if followers.stdin is not None:
            await followers.stdin.aclose()
        with trio.move_on_after(30):
            await followers.wait()
        if followers.returncode is None:
            followers.kill()
            await followers.wait()


async def time_control(client: httpx.AsyncClient) -> tuple[list[float], list[float]]:
    """Milliseconds to answer ``POST /v1/jobs`` and then ``DELETE`` (no wait)."""
    submits: list[float] = []
    cancels: list[float] = []
    for _ in range(CONTROL_ROUNDS):
        with trio.fail_after(30):
            while True:
                before = time.perf_counter()
                response = await client.post(
                    "/v1/jobs", json={"operation": "worker_download", "worker": CONTROL_RECIPE}
                )
                if response.status_code != 409:  # the last one's claim is not released yet
                    break
                await trio.sleep(HEALTH_GAP)
        submits.append((time.perf_counter() - before) * 1000)
        response.raise_for_status()
        job_id = response.json()["id"]
        before = time.perf_counter()
        response = await client.delete(f"/v1/jobs/{job_id}")
        cancels.append((time.perf_counter() - before) * 1000)
        assert response.status_code in (202, 409), response.text
        await client.delete(f"/v1/jobs/{job_id}", params={"wait": "true"})  # not timed
        await trio.sleep(HEALTH_GAP)
    return submits, cancels


async def time_cancel(client: httpx.AsyncClient, job_id: str) -> float:
    before = time.perf_counter()
    response = await client.delete(f"/v1/jobs/{job_id}", params={"wait": "true"})
    elapsed = (time.perf_counter() - before) * 1000
    response.raise_for_status()
    assert response.json()["state"] == "cancelled", response.json()
    return elapsed


async def fanout(ctx: Context) -> list[Figure]:
    rounds = ctx.repeats(2, 1)
    idle_health: list[float] = []
    idle_cancel: list[float] = []
    busy_health: list[float] = []
    busy_cancel: list[float] = []
    cpu: list[float] = []
    attached_counts: list[int] = []
    sparse_health: list[float] = []
    control = {key: [] for key in ("idle submit", "idle cancel", "busy submit", "busy cancel")}
    for round_ in range(rounds):
        ctx.log(f"fanout: round {round_ + 1}/{rounds}")
        async with running_hive(ctx.scratch("state"), grace=GRACE) as hive:
            headers = {"Authorization": f"Bearer {hive.token}"}
            async with httpx.AsyncClient(base_url=hive.url, headers=headers, timeout=300) as client:
                job_id = await start_job(client)
                idle_health += await time_health(client)
                submits, cancels = await time_control(client)
                control["idle submit"] += submits
                control["idle cancel"] += cancels
                idle_cancel.append(await time_cancel(client, job_id))

                job_id = await start_job(client)
                async with attached(ctx, hive, job_id) as count:
                    attached_counts.append(count)
                    before_cpu, before = cpu_seconds(hive.pid), time.perf_counter()
                    busy_health += await time_health(client)
                    cpu.append(
                        (cpu_seconds(hive.pid) - before_cpu) / (time.perf_counter() - before)
                    )
                    submits, cancels = await time_control(client)
                    control["busy submit"] += submits
                    control["busy cancel"] += cancels
                    busy_cancel.append(await time_cancel(client, job_id))

                job_id = await start_job(client, SPARSE_RECIPE, seq=3)
                async with attached(ctx, hive, job_id) as count:
                    attached_counts.append(count)
                    sparse_health += await time_health(client)
                    await time_cancel(client, job_id)
    health0 = Figure("fanout", "GET /v1/health, nobody following", "ms", idle_health)
    health = Figure(
        "fanout", f"GET /v1/health, {FOLLOWERS} followers of a 10 lines/s job", "ms", busy_health
    )
    health.compare(health0).judge(f"p99 <= {P99_AIM_MS:g} ms", health.p99 <= P99_AIM_MS)
    health.note = f"followers attached: {attached_counts}; hive CPU while timed: " + ", ".join(
        f"{c:.0%}" for c in cpu
    )
    cancel0 = Figure("fanout", "DELETE ?wait=true, nobody following", "ms", idle_cancel)
    cancel = Figure("fanout", f"DELETE ?wait=true, {FOLLOWERS} followers", "ms", busy_cancel)
    aim = GRACE * 1000 + CANCEL_MARGIN_MS
    cancel.compare(cancel0).judge(f"<= grace + {CANCEL_MARGIN_MS:g} ms", max(busy_cancel) <= aim)
    sparse = Figure(
        "fanout",
        f"GET /v1/health, {FOLLOWERS} followers of a job writing a line per 2 s",
        "ms",
        sparse_health,
    )
    sparse.compare(health0).judge(f"p99 <= {P99_AIM_MS:g} ms", sparse.p99 <= P99_AIM_MS)
    figures = [health0, health, sparse, cancel0, cancel]
    for what, request in (("submit", "POST /v1/jobs"), ("cancel", "DELETE (no wait)")):
        idle = Figure("fanout", f"{request}, nobody following", "ms", control[f"idle {what}"])
        busy = Figure("fanout", f"{request}, {FOLLOWERS} followers", "ms", control[f"busy {what}"])
        busy.compare(idle).judge(f"p99 <= {P99_AIM_MS:g} ms", busy.p99 <= P99_AIM_MS)
        figures += [idle, busy]
    return figures


async def _read_line(stream: trio.abc.ReceiveStream, timeout: float) -> str:
    data = b""
    with trio.fail_after(timeout):
        while not data.endswith(b"\n"):
            chunk = await stream.receive_some(1)
            if not chunk:
                raise RuntimeError(f"the followers' process ended: {data!r}")
            data += chunk
    return data.decode().strip()


# ------------------------------------------------------------ the followers' process


async def follow_raw(
    host: str, port: int, target: str, token: str, accepted: list[int], done: trio.Event
) -> None:
    """One follower: handshake, then read and drop until the hive closes."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        await stream.send_all(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            head += chunk
        accepted[0 if head.startswith(b"HTTP/1.1 101") else 1] += 1
        if accepted[0] + accepted[1] == accepted[2]:
            done.set()
        while await stream.receive_some(1 << 16):
            pass


async def followers_main(url: str, token: str, job_id: str, count: int) -> None:
    host, _, port = url.removeprefix("http://").rpartition(":")
    accepted = [0, 0, count]  # accepted, refused, wanted
    done = trio.Event()
    stdin = trio.lowlevel.FdStream(0)
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(
                follow_raw, host, int(port), f"/v1/jobs/{job_id}/stream", token, accepted, done
            )
            await trio.sleep(0)
        await done.wait()
        sys.stdout.write(f"attached {accepted[0]} refused {accepted[1]}\n")
        sys.stdout.flush()
        await stdin.receive_some(1)  # EOF: the benchmark is done with us
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(partial(followers_main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
