"""Randomized cancel cycles over the adversarial recipes, through a real hive.

Each cycle submits a random recipe, cancels it at a random moment (at once, as
soon as it runs, once it is ready, or after a random delay) with
``DELETE ?wait=true``, and then counts what is left of it: live processes (by
HIVE_JOB_ID, by process group and session, by the pids it printed) and zombies.
Anything left is killed so that the run goes on, and counted.

The run is repeated in each mode of the teardown suite (a cgroup per job or
not, a PID namespace per job or not; a mode the machine cannot give is
skipped). Alone (one lane), any zombie child of the hive after a cycle counts
as left; side by side, another lane's job may be mid-teardown, so that check
waits for the end of the run (every job ended: the hive must have none).

Environment: HIVE_STRESS_CYCLES (per mode, default 1000), HIVE_STRESS_LANES
(cycles run side by side, default 8), HIVE_STRESS_MODES (comma-separated, of
cgroup, no-cgroup, pidns-cgroup, pidns; default all), HIVE_STRESS_GRACE
(seconds, default 0.5), HIVE_STRESS_SEED.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from ..support import Hive, job_processes
from ..teardown.conftest import MODES, teardown_hive
from ..teardown.tools import (
    PID_LINE,
    Leftovers,
    Proc,
    all_stats,
    get_job,
    host_pid,
    job_namespace,
    session_processes,
    submit,
    watching,
    zombies,
)
from .conftest import SUMMARY

CYCLES = int(os.environ.get("HIVE_STRESS_CYCLES", "1000"))
LANES = int(os.environ.get("HIVE_STRESS_LANES", "8"))
STRESS_MODES = [m for m in os.environ.get("HIVE_STRESS_MODES", ",".join(MODES)).split(",") if m]
GRACE = float(os.environ.get("HIVE_STRESS_GRACE", "0.5"))
SEED = int(os.environ.get("HIVE_STRESS_SEED", str(time.time_ns() % 1_000_000)))

RECIPES = [
    "deep",
    "trapterm",
    "setsid",
    "daemon",
    "jobctl",
    "forker",
    "pipehold",
    "closedfds",
    "exiting",
    "sleeper",
]
MOMENTS = ["at-once", "running", "ready", "random"]


@dataclass
class Tally:
    cycles: int = 0
    moments: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    leftover_processes: int = 0
    zombies: int = 0
    unclean_reports: int = 0
    latencies: dict[str, list[float]] = field(default_factory=dict)
    #: The report's own ``seconds``: the teardown, without HTTP and the end event.
    teardowns: dict[str, list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def latency(self, kind: str, seconds: float, teardown: float | None = None) -> None:
        self.latencies.setdefault(kind, []).append(seconds)
        if teardown is not None:
            self.teardowns.setdefault(kind, []).append(teardown)


def cgroup_zombies(job_id: str) -> list[int]:
    """Zombies still in the job's cgroup (they keep its path in /proc/PID/cgroup)."""
    found = []
    for pid, fields in all_stats().items():
        if fields[0] != "Z":
            continue
        try:
            if f"/job-{job_id}" in Path(f"/proc/{pid}/cgroup").read_text():
                found.append(pid)
        except (FileNotFoundError, ProcessLookupError):  # gone meanwhile
            continue
    return found


async def one_cycle(
    hive: Hive, recipe: str, rng: random.Random, tally: Tally, pidns: bool = False
) -> None:
    moment = rng.choice(MOMENTS)
    leftovers = Leftovers()
    job_id = leftovers.job(await submit(hive, recipe))
    async with watching(hive, job_id) as watch:
        if moment == "running":
            await watch.wait_for(
                lambda: any(e.get("state") == "running" for e in watch.events), "running"
            )
        elif moment == "ready":
            await watch.wait_for(lambda: f"{recipe} ready".encode() in watch.stdout, "ready")
            await trio.sleep(rng.uniform(0, 0.5))
        elif moment == "random":
            await trio.sleep(rng.uniform(0, 1.5))
        # Named while alive (pid + start time), so that a reused pid is not taken for one.
        # Recipes print the pids they see, inside the job's PID namespace.
        now = await get_job(hive, job_id)
        namespace = job_namespace(now["pgid"], job_id) if now["pgid"] else None
        printed = (Proc.of(host_pid(int(pid), namespace)) for pid in PID_LINE.findall(watch.stdout))
        escapees = [proc for proc in printed if proc is not None]
        if pidns and namespace is None:
            # Nothing of the job is left to name its namespace: the pids it
            # printed name no process of ours (pid 10 was a kworker).
            escapees = []
        started = time.monotonic()
        async with hive.client() as client:
            response = await client.delete(f"/v1/jobs/{job_id}?wait=true")
        latency = time.monotonic() - started
        end = await watch.ended()
    job: dict[str, Any] = response.json()
    pgid = job.get("pgid")
    left = set(job_processes(job_id)) | {p.pid for p in escapees if p.alive()}
    if pgid is not None:
        left |= set(session_processes(pgid))
    dead = set(cgroup_zombies(job_id)) | {p.pid for p in escapees if p.zombie()}
    if pgid is not None:
        dead |= set(zombies(session=pgid))
    if LANES == 1:
        # Alone, any zombie child of the hive is a leak (in parallel, another
        # lane's job may be mid-teardown).
        dead |= set(zombies(parent=hive.process.pid))
    tally.cycles += 1
    tally.moments[moment] += 1
    if response.status_code == 409:
        tally.outcomes[f"ended before the cancel ({end['state']})"] += 1
    else:
        tally.outcomes[end["state"]] += 1
        report = end["teardown"]
        if report is None:
            tally.latency("never started", latency)
        else:
            kind = "needed SIGKILL" if report["sigkill"] else "SIGTERM honoured"
            tally.latency(kind, latency, report["seconds"])
    if end["teardown"] is not None and end["teardown"]["left"]:
        tally.unclean_reports += 1
    if left or dead:
        tally.leftover_processes += len(left)
        tally.zombies += len(dead)
        tally.problems.append(f"{recipe}/{moment} job {job_id}: left {sorted(left)} zombies {dead}")
        leftovers.add(escapees)
        await leftovers.cleanup()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(tally: Tally, mode: str, layers: list[str], seconds: float) -> list[str]:
    lines = [
        f"mode {mode}: {tally.cycles} cancel cycles in {seconds:.0f} s, {LANES} lane(s), "
        f"grace {GRACE} s, seed {SEED}, layers: {', '.join(layers)}",
        f"moments: {dict(tally.moments)}",
        f"outcomes: {dict(tally.outcomes)}",
        f"leftover processes: {tally.leftover_processes}, zombies: {tally.zombies}, "
        f"reports with left > 0: {tally.unclean_reports}",
    ]
    for what, table in [("DELETE -> end", tally.latencies), ("teardown", tally.teardowns)]:
        everything = [s for values in table.values() for s in values]
        for kind, values in [("all", everything), *sorted(table.items())]:
            if values:
                lines.append(
                    f"{what}, {kind} (n={len(values)}): "
                    f"p50 {percentile(values, 0.5) * 1000:.0f} ms, "
                    f"p90 {percentile(values, 0.9) * 1000:.0f} ms, "
                    f"p99 {percentile(values, 0.99) * 1000:.0f} ms, "
                    f"max {max(values) * 1000:.0f} ms, "
                    f"mean {statistics.fmean(values) * 1000:.0f} ms"
                )
    lines.extend(tally.problems[:20])
    return lines


@pytest.mark.parametrize("mode", STRESS_MODES)
async def test_random_cancel_cycles_leave_nothing(tmp_path: Path, mode: str) -> None:
    cgroups, pidns = MODES[mode]
    rng = random.Random(SEED)
    tally = Tally()
    leftovers = Leftovers()
    layers: list[str] = []
    started = time.monotonic()
    try:
        async with teardown_hive(
            tmp_path / "state",
            leftovers,
            cgroups=cgroups,
            pidns=pidns,
            grace=GRACE,
            extra=["--max-parallel", str(LANES)],
        ) as hive:
            async with hive.client() as client:
                layers = (await client.get("/v1/health")).json()["teardown_layers"]
            # Only a cgroup or a namespace holds a process that clears its
            # environment and leaves the job's session and tree (test_limits.py).
            held = "cgroup" in layers or "pid-namespace" in layers
            recipes = RECIPES + (["envclear"] if held else [])
            remaining = CYCLES
            #: One install per worker at a time: side by side, lanes take
            #: recipes no other lane has in flight.
            busy: set[str] = set()

            async def lane() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    recipe = rng.choice([r for r in recipes if r not in busy])
                    busy.add(recipe)
                    try:
                        await one_cycle(hive, recipe, rng, tally, "pid-namespace" in layers)
                    finally:
                        busy.discard(recipe)

            try:
                async with trio.open_nursery() as nursery:
                    for _ in range(LANES):
                        nursery.start_soon(lane)
            except BaseException:
                SUMMARY.extend([f"mode {mode}: the hive's last log lines:", *hive.log_lines[-40:]])
                raise
            # Every job has ended: no zombie child of the hive may be left.
            if stray := zombies(parent=hive.process.pid):
                tally.zombies += len(stray)
                tally.problems.append(f"zombie children of the hive after the run: {stray}")
    finally:
        await leftovers.cleanup()
        SUMMARY.extend(summarise(tally, mode, layers, time.monotonic() - started))
    assert tally.leftover_processes == 0 and tally.zombies == 0, tally.problems[:20]
    assert tally.unclean_reports == 0
