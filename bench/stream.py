"""Streaming overhead: a job's output followed live by ``keeper download X
--follow | cat > /dev/null``, against the very same command (``makepkg.sh`` on
the same recipe) run directly into the same kind of pipe, measured in the same
run.

Each hive sample starts a fresh hive (outside the timing), so that no sample
inherits the memory of an earlier one. The hive sample is end to end: submit,
build, stream, install, keeper exit — what a user waits for.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from .harness import (
    BUNDLED_RECIPES,
    JOB_ENV,
    MB,
    RECIPES,
    Context,
    Figure,
    cpu_seconds,
    in_turn,
    makepkg_argv,
    own_children_cpu,
    peak_rss_mb,
    reaped_children_cpu,
    run_timed,
    running_hive,
    shell_pipe_to_null,
)

#: The end-to-end rate bulk output must reach, and the share of the pipe's.
BULK_RATE = 300.0
RATE_SHARE = 0.7
#: A followed build may take this much longer than the build run directly.
BUILD_OVERHEAD = 1.02


@dataclass(frozen=True)
class Workload:
    benchmark: str
    recipe: str
    catalog: Path
    #: Compare rates (MB/s) when True, wall times (s) when False.
    rate: bool
    full_repeats: int
    quick_repeats: int
    #: Also time a Python reader on the direct pipe (pointless for a build).
    python_reader: bool = True

    @property
    def recipe_dir(self) -> Path:
        return self.catalog / self.recipe


BULK = Workload("bulk", "bulk", RECIPES, rate=True, full_repeats=5, quick_repeats=2)
LINES = Workload("lines", "lines", RECIPES, rate=True, full_repeats=3, quick_repeats=1)
CBUILD = Workload(
    "cbuild",
    "cbuild",
    BUNDLED_RECIPES,
    rate=False,
    full_repeats=5,
    quick_repeats=1,
    python_reader=False,
)


async def direct_to_cat(ctx: Context, work: Workload) -> float:
    """The limit: ``makepkg.sh … | cat > /dev/null``."""
    argv = shell_pipe_to_null(makepkg_argv(work.recipe_dir, ctx.scratch("build")))
    return await run_timed(argv, env=JOB_ENV)


async def direct_to_python(ctx: Context, work: Workload) -> tuple[float, int]:
    """The limit for a Python reader: the pipe read by trio, 1 MiB at a time.

    Returns the wall time and the byte count of the job's stdout.
    """
    argv = makepkg_argv(work.recipe_dir, ctx.scratch("build"))
    started = time.perf_counter()
    process = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=JOB_ENV
    )
    assert process.stdout is not None
    size = 0
    async with process.stdout:
        while chunk := await process.stdout.receive_some(1 << 20):
            size += len(chunk)
    if await process.wait() != 0:
        raise RuntimeError(f"{work.recipe}: direct run exited {process.returncode}")
    return time.perf_counter() - started, size


@dataclass
class HiveSample:
    wall: float
    hive_cpu: float
    hive_rss: float
    #: CPU of the job's own processes, and of the keeper following it.
    job_cpu: float
    keeper_cpu: float

    @property
    def follow_cost(self) -> float:
        """CPU spent getting the output to the user, per CPU second of the job."""
        return (self.hive_cpu + self.keeper_cpu) / self.job_cpu


async def through_hive(ctx: Context, work: Workload) -> HiveSample:
    """``keeper -q download RECIPE --follow | cat > /dev/null`` on a fresh hive:
    the keeper writes into a pipe, as the direct run's ``makepkg.sh`` does."""
    async with running_hive(ctx.scratch("state"), catalog=work.catalog) as hive:
        cpu, job_cpu, keeper_cpu = (
            cpu_seconds(hive.pid),
            reaped_children_cpu(hive.pid),
            own_children_cpu(),
        )
        wall = await run_timed(
            shell_pipe_to_null(hive.keeper("-q", "download", work.recipe, "--follow"))
        )
        return HiveSample(
            wall,
            hive_cpu=cpu_seconds(hive.pid) - cpu,
            hive_rss=peak_rss_mb(hive.pid),
            job_cpu=reaped_children_cpu(hive.pid) - job_cpu,
            keeper_cpu=own_children_cpu() - keeper_cpu,
        )


async def measure(ctx: Context, work: Workload) -> list[Figure]:
    pipe: list[float] = []
    pipe_cpu: list[float] = []
    python: list[float] = []
    hive: list[HiveSample] = []
    size = 0

    async def to_cat() -> None:
        cpu = own_children_cpu()
        pipe.append(await direct_to_cat(ctx, work))
        pipe_cpu.append(own_children_cpu() - cpu)

    async def to_python() -> None:
        nonlocal size
        wall, size = await direct_to_python(ctx, work)
        python.append(wall)

    async def followed() -> None:
        hive.append(await through_hive(ctx, work))

    steps = (to_cat, to_python, followed) if work.python_reader else (to_cat, followed)
    repeats = ctx.repeats(work.full_repeats, work.quick_repeats)
    for i in range(repeats):
        ctx.log(f"{work.benchmark}: round {i + 1}/{repeats}")
        await in_turn(i, *steps)

    def figure(name: str, walls: list[float]) -> Figure:
        if work.rate:
            return Figure(work.benchmark, name, "MB/s", [size / MB / w for w in walls])
        return Figure(work.benchmark, name, "s", walls)

    limit = figure("direct: makepkg.sh | cat > /dev/null", pipe)
    figures = [limit]
    if python:
        figures.append(figure("direct: makepkg.sh → Python (trio) reader", python).compare(limit))
    walls = [s.wall for s in hive]
    ours = figure("hive → keeper download --follow | cat > /dev/null", walls)
    figures.append(ours.compare(limit))
    if work.rate:
        share = paired_ratio(work, "hive rate / direct rate, per round", pipe, walls)
        share.judge(f">= {RATE_SHARE:g}", share.median >= RATE_SHARE)
        if work.benchmark == "bulk":
            ours.judge(f">= {BULK_RATE:g} MB/s", ours.median >= BULK_RATE)
    else:
        share = paired_ratio(work, "hive wall time / direct wall time, per round", walls, pipe)
        share.judge(f"<= {BUILD_OVERHEAD:g}", share.median <= BUILD_OVERHEAD)
    figures.append(share)
    if work.rate:
        figures[0].note = f"job stdout: {size:,} bytes"
    figures += [
        Figure(work.benchmark, "direct: CPU of makepkg.sh and cat", "s", pipe_cpu),
        Figure(work.benchmark, "hive: job CPU (its own processes)", "s", [s.job_cpu for s in hive]),
        Figure(work.benchmark, "hive CPU during the hive run", "s", [s.hive_cpu for s in hive]),
        Figure(work.benchmark, "keeper CPU (and its cat)", "s", [s.keeper_cpu for s in hive]),
        Figure(
            work.benchmark,
            "cost of following: (hive + keeper CPU) / job CPU",
            "x",
            [s.follow_cost for s in hive],
        ),
        Figure(work.benchmark, "hive peak RSS (VmHWM)", "MB", [s.hive_rss for s in hive]),
    ]
    return figures


def paired_ratio(
    work: Workload, name: str, numerators: list[float], denominators: list[float]
) -> Figure:
    """Ratios within each round: the rounds are paired (same moment, order
    rotated), which is the steadiest comparison a noisy machine allows."""
    return Figure(
        work.benchmark, name, "x", [n / d for n, d in zip(numerators, denominators, strict=True)]
    )


async def bulk(ctx: Context) -> list[Figure]:
    """1 GiB in 64 KiB writes."""
    return await measure(ctx, BULK)


async def lines(ctx: Context) -> list[Figure]:
    """10 M short lines, one write(2) each."""
    return await measure(ctx, LINES)


async def cbuild(ctx: Context) -> list[Figure]:
    """The bundled C build (make -j$(nproc)), followed live vs run directly."""
    return await measure(ctx, CBUILD)
