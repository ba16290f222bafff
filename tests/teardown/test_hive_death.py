"""When the hive itself goes: on SIGTERM it tears every job down before it
exits; after SIGKILL, the next hive on the same state dir kills what the dead
one left running, before it serves."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from ..support import ROOT, Hive, job_processes
from .conftest import teardown_hive
from .tools import RECIPES as RECIPE_DIR
from .tools import (
    Leftovers,
    Proc,
    get_job,
    hive_cgroup,
    session_processes,
    submit,
    wait_until,
    watching,
)

#: Recipe, and the "pid N" lines it prints.
RECIPES = {"deep": 0, "setsid": 2, "daemon": 3, "trapterm": 6, "closedfds": 1, "envclear": 1}


async def start_ready(
    hive: Hive, leftovers: Leftovers, recipes: list[str]
) -> tuple[list[dict[str, Any]], list[Proc]]:
    """Submit ``recipes`` and wait until each is ready; the jobs and their escapees."""
    jobs: list[dict[str, Any]] = []
    escapees: list[Proc] = []

    async def one(recipe: str) -> None:
        job_id = leftovers.job(await submit(hive, recipe))
        async with watching(hive, job_id) as watch:
            procs = await watch.ready(f"{recipe} ready".encode(), RECIPES[recipe])
            leftovers.add(procs)
            escapees.extend(procs)
            jobs.append(await get_job(hive, job_id))
            watch.cancel()

    async with trio.open_nursery() as nursery:
        for recipe in recipes:
            nursery.start_soon(one, recipe)
    return jobs, escapees


def leftovers_of(jobs: list[dict[str, Any]], escapees: list[Proc]) -> dict[str, list[int]]:
    found = {f"job {job['id']}": job_processes(job["id"]) for job in jobs}
    found |= {f"session {job['pgid']}": session_processes(job["pgid"]) for job in jobs}
    found["escapees"] = [proc.pid for proc in escapees if proc.alive()]
    return found


async def test_hive_sigterm_tears_down_five_running_jobs(
    tmp_path: Path, leftovers: Leftovers
) -> None:
    async with teardown_hive(
        tmp_path / "state", leftovers, cgroups=None, extra=["--max-parallel", "5"]
    ) as hive:
        cgroup = hive_cgroup(hive)
        with_cgroups = cgroup is not None and cgroup.is_dir()
        recipes = ["deep", "setsid", "daemon", "trapterm"]
        recipes.append("envclear" if with_cgroups else "closedfds")
        jobs, escapees = await start_ready(hive, leftovers, recipes)
        assert await hive.stop(signal.SIGTERM) == 0
        # The moment the hive has exited, nothing of its jobs is left.
        left = leftovers_of(jobs, escapees)
    assert left == {key: [] for key in left}
    for job in jobs:
        assert f"job {job['id']} ended: cancelled" in hive.log
    assert hive.log.count("cancel requested by hive shutdown") == 5
    assert list((hive.state_dir / "running").iterdir()) == []
    assert cgroup is None or not cgroup.exists()


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup", "no-cgroup"])
async def test_restart_after_sigkill_kills_what_the_dead_hive_left(
    tmp_path: Path, leftovers: Leftovers, cgroups: bool
) -> None:
    state = tmp_path / "state"
    recipes = ["trapterm", "daemon", "setsid", "envclear" if cgroups else "closedfds"]
    async with teardown_hive(
        state, leftovers, cgroups=cgroups, extra=["--max-parallel", "4"]
    ) as first:
        jobs, escapees = await start_ready(first, leftovers, recipes)
        await first.stop(signal.SIGKILL)
    # Nobody supervises these any more: they run on (the problem recovery solves).
    orphaned = leftovers_of(jobs, escapees)
    assert all(orphaned[f"job {job['id']}"] for job in jobs), orphaned
    assert all(proc.alive() for proc in escapees)
    records = sorted(path.stem for path in (state / "running").iterdir())
    assert records == sorted(job["id"] for job in jobs)

    async with teardown_hive(state, leftovers, cgroups=cgroups) as second:
        # Recovery ran before the hive said it was ready.
        left = leftovers_of(jobs, escapees)
        lines = [line for line in second.log_lines if "recovered job" in line]
        async with second.client() as client:
            listed = (await client.get("/v1/jobs")).json()["jobs"]
    assert left == {key: [] for key in left}
    assert len(lines) == len(jobs), second.log
    for job in jobs:
        [line] = [line for line in lines if f"recovered job {job['id']} " in line]
        assert " 0 left" in line, line
    assert list((state / "running").iterdir()) == []
    # The dead hive's jobs are on record, as interrupted.
    assert {job["id"]: job["state"] for job in listed} == {job["id"]: "interrupted" for job in jobs}
    await wait_until(lambda: all(not proc.alive() for proc in escapees))


async def test_a_second_hive_on_the_same_state_dir_leaves_the_first_ones_jobs_alone(
    tmp_path: Path, leftovers: Leftovers
) -> None:
    """It refuses to start: it would share the first one's job store and logs."""
    state = tmp_path / "state"
    async with teardown_hive(state, leftovers, cgroups=None) as first:
        jobs, escapees = await start_ready(first, leftovers, ["setsid"])
        argv = ["serve", "--bind", "127.0.0.1:0", "--state-dir", str(state)]
        with trio.fail_after(30):
            second = await trio.run_process(
                [sys.executable, "-m", "hive", *argv, "--catalog", str(RECIPE_DIR)],
                capture_stderr=True,
                stdout=subprocess.DEVNULL,
                check=False,
                cwd=ROOT,
            )
        stderr = second.stderr.decode()
        assert second.returncode == 2, stderr
        assert f"another hive (pid {first.process.pid}) already runs on the state dir" in stderr
        assert "Traceback" not in stderr
        assert all(proc.alive() for proc in escapees)
        assert (await get_job(first, jobs[0]["id"]))["state"] == "running"
    assert f"job {jobs[0]['id']} ended: cancelled" in first.log
    left = leftovers_of(jobs, escapees)
    assert left == {key: [] for key in left}
