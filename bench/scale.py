"""Scale: 64 concurrent jobs, each printing 10 MB, each followed by 4 followers.

Every follower is the keeper's own :class:`~keeper.follow.Follower` (resume,
gap checks and all) writing into a SHA-256 instead of a terminal; 256 keeper
processes would measure Python start-up, not the hive. Each follower's digest
must equal the digest of the same ``makepkg.sh`` run directly. The same 64
jobs then run on a fresh hive with nobody following, which is the baseline for
the jobs' wall time.

The hive runs one install of a worker at a time, so the 64 jobs install 64
workers: copies of ``bench/recipes/scale`` under their own names, in a
catalog made for the run.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import trio

from keeper.client import HiveClient
from keeper.console import Console
from keeper.follow import Follower

from .harness import (
    JOB_ENV,
    RECIPES,
    Context,
    Figure,
    cpu_seconds,
    makepkg_argv,
    peak_rss_mb,
    running_hive,
)

RECIPE = "scale"
JOBS = 64
FOLLOWERS = 4
RSS_AIM = 200.0


class Digest:
    """A binary sink that only remembers SHA-256s of what was written: of the
    first ``prefix`` bytes, and of everything."""

    def __init__(self, prefix: int = 0) -> None:
        self.prefix = prefix
        self.head = hashlib.sha256()
        self.whole = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        if self.size < self.prefix:
            self.head.update(data[: self.prefix - self.size])
        self.whole.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def make_catalog(ctx: Context) -> list[str]:
    """Write JOBS copies of the scale recipe into the run's catalog; their names."""
    text = (RECIPES / RECIPE / "PKGBUILD").read_text()
    names = [f"{RECIPE}{i:02d}" for i in range(JOBS)]
    for name in names:
        (ctx.catalog / name).mkdir()
        (ctx.catalog / name / "PKGBUILD").write_text(
            text.replace(f"pkgname={RECIPE}\n", f"pkgname={name}\n")
        )
    return names


async def expected_digests(ctx: Context, names: list[str]) -> dict[str, tuple[str, int]]:
    """SHA-256 and size of each job's stdout when run directly (they differ by name)."""
    digests: dict[str, tuple[str, int]] = {}

    async def run(name: str, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            done = await trio.run_process(
                makepkg_argv(ctx.catalog / name, ctx.scratch("build")),
                capture_stdout=True,
                stderr=subprocess.DEVNULL,
                env=JOB_ENV,
            )
        digests[name] = hashlib.sha256(done.stdout).hexdigest(), len(done.stdout)

    limiter = trio.CapacityLimiter(2)
    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(run, name, limiter)
    return digests


@dataclass
class Round:
    wall: float = 0.0
    job_seconds: list[float] = field(default_factory=list)
    #: One per follower: (worker, SHA-256 of the first bytes it printed, as
    #: many as the job prints when run directly, SHA-256 of all it printed).
    digests: list[tuple[str, str, str]] = field(default_factory=list)
    #: Why jobs failed (a job, not a follower, error): reason -> count.
    failures: Counter[str] = field(default_factory=Counter)
    rss: float = 0.0
    hive_cpu: float = 0.0


def _reason(error: str) -> str:
    """An error without its paths, so that equal failures count together."""
    return re.sub(r"'/[^']*'", "'…'", error)


def _job_seconds(job: dict[str, Any]) -> float:
    started = datetime.fromisoformat(job["started_at"])
    ended = datetime.fromisoformat(job["ended_at"])
    return (ended - started).total_seconds()


async def _follow(client: HiveClient, job: dict[str, Any], size: int, result: Round) -> None:
    sink = Digest(prefix=size)
    console = Console(stdout=sink, stderr=Digest(), quiet=True)  # type: ignore[arg-type]
    outcome = await Follower(client, job["id"], console, grace=job["grace"]).run(
        cancel_on_interrupt=False
    )
    result.digests.append((job["worker"], sink.head.hexdigest(), sink.whole.hexdigest()))
    if outcome.exit_code != 0 and (outcome.end or {}).get("state") != "failed":
        result.failures[f"follower exited {outcome.exit_code}"] += 1


async def _wait_all_ended(client: HiveClient) -> list[dict[str, Any]]:
    """With nobody following, nothing tells us when jobs end: poll the list.

    ``ended_at``, not a final ``state``: a job that fails in its finish step
    shows ``failed`` before its cleanup has run and its end is recorded.
    """
    while True:
        jobs = await client.jobs()
        if all(job["ended_at"] is not None for job in jobs):
            return jobs
        await trio.sleep(0.05)


async def run_round(ctx: Context, expected: dict[str, tuple[str, int]], followers: int) -> Round:
    result = Round()
    state = ctx.scratch("state")
    async with running_hive(state, catalog=ctx.catalog, max_parallel=JOBS) as hive:
        async with hive.client() as client:
            started = time.perf_counter()
            cpu = cpu_seconds(hive.pid)
            async with trio.open_nursery() as nursery:
                for name, (_digest, size) in expected.items():
                    job = await client.submit(name)
                    for _ in range(followers):
                        nursery.start_soon(_follow, client, job, size, result)
            jobs = await _wait_all_ended(client)
            result.wall = time.perf_counter() - started
        result.job_seconds = [_job_seconds(job) for job in jobs]
        result.failures.update(
            _reason(job["error"] or job["state"]) for job in jobs if job["state"] != "succeeded"
        )
        result.rss = peak_rss_mb(hive.pid)
        result.hive_cpu = cpu_seconds(hive.pid) - cpu
    return result


async def scale(ctx: Context) -> list[Figure]:
    """64 jobs x 4 followers x 10 MB: bytes delivered, hive RSS, job wall time."""
    names = make_catalog(ctx)
    expected = await expected_digests(ctx, names)
    rounds = ctx.repeats(2)
    followed: list[Round] = []
    alone: list[Round] = []
    for i in range(rounds):
        ctx.log(f"scale: round {i + 1}/{rounds}: {JOBS} jobs x {FOLLOWERS} followers")
        followed.append(await run_round(ctx, expected, FOLLOWERS))
        ctx.log(f"scale: round {i + 1}/{rounds}: {JOBS} jobs, no follower")
        alone.append(await run_round(ctx, expected, 0))

    def figure(name: str, unit: str, values: list[float]) -> Figure:
        return Figure("scale", name, unit, values)

    base_job = figure("job wall time, no follower", "s", [s for r in alone for s in r.job_seconds])
    job = figure(
        "job wall time, 4 followers each", "s", [s for r in followed for s in r.job_seconds]
    )
    base_all = figure("all 64 jobs done, no follower", "s", [r.wall for r in alone])
    all_ = figure(
        "all 64 jobs done and followed, 4 followers each", "s", [r.wall for r in followed]
    )

    def exact(r: Round) -> int:
        """Followers that printed the job's own output exactly, and then the
        same as every other follower of that job (the hive's install line)."""
        whole: dict[str, set[str]] = {}
        for name, _head, everything in r.digests:
            whole.setdefault(name, set()).add(everything)
        return sum(
            head == expected[name][0] and len(whole[name]) == 1
            for name, head, _everything in r.digests
        )

    intact = figure(
        "followers that got every byte (SHA-256 equal)",
        "share",
        [exact(r) / (JOBS * FOLLOWERS) for r in followed],
    )
    intact.judge("1.0 (all of them)", min(intact.samples) == 1.0)
    failures: Counter[str] = sum((r.failures for r in followed + alone), Counter())
    intact.note = (
        f"{sum(len(r.digests) for r in followed)} followers, "
        f"{sum(exact(r) for r in followed)} exact. Failures: "
        + ("; ".join(f"{n} x {reason}" for reason, n in failures.items()) or "none")
    )
    rss = figure("hive peak RSS (VmHWM), 4 followers each", "MB", [r.rss for r in followed])
    base_rss = figure("hive peak RSS (VmHWM), no follower", "MB", [r.rss for r in alone])
    rss.compare(base_rss).judge(f"<= {RSS_AIM:g} MB", rss.median <= RSS_AIM)
    base_cpu = figure("hive CPU, no follower", "s", [r.hive_cpu for r in alone])
    cpu = figure("hive CPU, 4 followers each", "s", [r.hive_cpu for r in followed])
    return [
        base_job,
        job.compare(base_job),
        base_all,
        all_.compare(base_all),
        intact,
        base_rss,
        rss,
        base_cpu,
        cpu.compare(base_cpu),
    ]
