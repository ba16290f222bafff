"""Cancel at each moment of a job's life: queued, starting, running (see
test_adversarial.py), and already exiting. Each must end "cancelled", with a
truthful report, and leave no process."""

from __future__ import annotations

from pathlib import Path

from ..support import job_processes
from .conftest import teardown_hive
from .tools import Leftovers, cancel, get_job, session_processes, submit, watching


async def test_cancel_while_queued_starts_nothing(tmp_path: Path, leftovers: Leftovers) -> None:
    async with teardown_hive(
        tmp_path / "state", leftovers, cgroups=None, extra=["--max-parallel", "1"]
    ) as hive:
        running = leftovers.job(await submit(hive, "sleeper"))
        async with watching(hive, running) as first:
            await first.ready(b"sleeper ready", 0)
            queued = leftovers.job(await submit(hive, "deep"))
            async with watching(hive, queued) as second:
                status, job = await cancel(hive, queued)
            assert (await get_job(hive, running))["state"] == "running"
            await cancel(hive, running)
    assert status == 200 and job["state"] == "cancelled", job
    # Never started: no process, no teardown to report, no "running" state.
    assert job["pid"] is None and job["started_at"] is None and job["teardown"] is None
    states = [e["state"] for e in second.events if e["type"] == "state"]
    assert "running" not in states and states[-1] == "cancelled"
    assert job_processes(queued) == [] and job_processes(running) == []


async def test_cancel_right_after_submit(tmp_path: Path, leftovers: Leftovers) -> None:
    """DELETE at once after POST: the job is queued, or its leader is starting."""
    async with teardown_hive(tmp_path / "state", leftovers, cgroups=None) as hive:
        for recipe in ["deep", "setsid", "envclear", "trapterm", "forker"]:
            job_id = leftovers.job(await submit(hive, recipe))
            status, job = await cancel(hive, job_id)
            assert status == 200 and job["state"] == "cancelled", job
            report = job["teardown"]
            assert report is None or (report["left"] == 0 and report["errors"] == []), report
            assert job_processes(job_id) == []
            if job["pgid"] is not None:
                assert session_processes(job["pgid"]) == []


async def test_cancel_the_moment_it_runs(tmp_path: Path, leftovers: Leftovers) -> None:
    """DELETE as soon as the stream says "running": makepkg.sh is still starting."""
    async with teardown_hive(tmp_path / "state", leftovers, cgroups=None) as hive:
        job_id = leftovers.job(await submit(hive, "deep"))
        async with watching(hive, job_id) as watch:
            await watch.wait_for(
                lambda: any(e.get("state") == "running" for e in watch.events), "running"
            )
            status, job = await cancel(hive, job_id)
    assert status == 200 and job["state"] == "cancelled", job
    report = job["teardown"]
    assert report["found"] >= 1 and report["sigterm"] >= 1
    assert report["left"] == 0 and report["errors"] == []
    assert job_processes(job_id) == [] and session_processes(job["pgid"]) == []


async def test_cancel_while_already_exiting(tmp_path: Path, leftovers: Leftovers) -> None:
    """The leader has exited by itself and the hive is tearing down a straggler
    that ignores SIGTERM when the cancel arrives: one teardown, still verified,
    and the job is cancelled (nothing is installed)."""
    async with teardown_hive(tmp_path / "state", leftovers, cgroups=None, grace=2.0) as hive:
        job_id = leftovers.job(await submit(hive, "exiting"))
        async with watching(hive, job_id) as watch:
            [straggler] = await watch.ready(b"exiting ready", 1)
            leftovers.add([straggler])
            await watch.wait_for(
                lambda: any(m.startswith("sent SIGTERM") for m in watch.messages()),
                "the teardown of the straggler",
            )
            async with hive.client() as client:
                response = await client.delete(f"/v1/jobs/{job_id}")
            end = await watch.ended()
    assert response.status_code == 202, response.text
    assert end["state"] == "cancelled" and end["exit_code"] == 0, end
    assert end["teardown"]["left"] == 0 and end["teardown"]["sigkill"] >= 1
    assert not straggler.alive()
    assert job_processes(job_id) == []
    messages = watch.messages()
    assert sum(m.startswith("sent SIGKILL") for m in messages) == 1, messages
    assert not any(m.startswith("installed") for m in messages), messages
    assert not (hive.state_dir / "running" / f"{job_id}.json").exists()
