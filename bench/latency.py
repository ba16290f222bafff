"""Line latency: how long a line takes from the job's write(2) to the
follower's stdout, while the job prints one line every 10 ms.

The job stamps each line with CLOCK_REALTIME just before writing it; the
reader stamps it with the same clock as it arrives. Through the hive, the reader
is the stdout of a real ``keeper download ticker --follow``; the baseline is the
same ``makepkg.sh`` command piped straight into the same reader.
"""

from __future__ import annotations

import subprocess
import time

import trio

from .harness import JOB_ENV, RECIPES, Context, Figure, in_turn, makepkg_argv, running_hive

RECIPE = "ticker"
#: p99 of the line latency through the hive, in ms, on an idle machine.
P99_AIM = 5.0


async def read_ticks(stream: trio.abc.ReceiveStream) -> list[float]:
    """Latencies (ms) of the ``tick <EPOCHREALTIME>`` lines read from ``stream``.

    Only lines written after the first one arrived count: the ones before it
    measure how long the follower took to start, not the stream.
    """
    latencies: list[float] = []
    live_since: float | None = None
    buffer = b""
    async with stream:
        while chunk := await stream.receive_some(65536):
            now = time.time()
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                if not line.startswith(b"tick "):
                    continue
                # bash prints EPOCHREALTIME with the locale's decimal separator
                written = float(line[5:].replace(b",", b"."))
                if live_since is None:
                    live_since = now
                elif written >= live_since:
                    latencies.append((now - written) * 1000)
    return latencies


async def through_hive(ctx: Context) -> list[float]:
    async with running_hive(ctx.scratch("state")) as hive:
        process = await trio.lowlevel.open_process(
            hive.keeper("-q", "download", RECIPE, "--follow"),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert process.stdout is not None
        latencies = await read_ticks(process.stdout)
        if await process.wait() != 0:
            raise RuntimeError(f"keeper download {RECIPE} exited {process.returncode}")
    return latencies


async def direct(ctx: Context) -> list[float]:
    process = await trio.lowlevel.open_process(
        makepkg_argv(RECIPES / RECIPE, ctx.scratch("build")),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=JOB_ENV,
    )
    assert process.stdout is not None
    latencies = await read_ticks(process.stdout)
    if await process.wait() != 0:
        raise RuntimeError(f"makepkg.sh {RECIPE} exited {process.returncode}")
    return latencies


async def latency(ctx: Context) -> list[Figure]:
    """A line every 10 ms for 10 s; p50/p99 of receive - write."""
    piped: list[float] = []
    followed: list[float] = []
    repeats = ctx.repeats(2)

    async def piped_run() -> None:
        piped.extend(await direct(ctx))

    async def followed_run() -> None:
        followed.extend(await through_hive(ctx))

    for i in range(repeats):
        ctx.log(f"latency: round {i + 1}/{repeats}")
        await in_turn(i, piped_run, followed_run)
    limit = Figure("latency", "direct: makepkg.sh | reader, per line", "ms", piped)
    hive = Figure("latency", "hive → keeper --follow | reader, per line", "ms", followed)
    hive.compare(limit).judge(f"p99 <= {P99_AIM:g} ms (idle machine)", hive.p99 <= P99_AIM)
    return [limit, hive]
