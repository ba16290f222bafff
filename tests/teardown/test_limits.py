"""What the hive cannot do, it says: the report is evidence, not a claim."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ..support import job_processes
from .conftest import teardown_hive
from .tools import (
    Leftovers,
    Proc,
    cancel,
    get_job,
    session_processes,
    submit,
    wait_until,
    watching,
)

FREEZER = Path("/sys/fs/cgroup/freezer")


async def test_env_cleared_escapee_without_cgroups_is_a_stated_limit(
    tmp_path: Path, leftovers: Leftovers
) -> None:
    async with teardown_hive(tmp_path / "state", leftovers, cgroups=False, pidns=False) as hive:
        job_id = leftovers.job(await submit(hive, "envclear"))
        async with watching(hive, job_id) as watch:
            [escapee] = await watch.ready(b"envclear ready", 1)
            leftovers.add([escapee])
            status, job = await cancel(hive, job_id)
            # Without a cgroup or a namespace nothing can tell this process is the job's: the
            # limit is real (it survives; the cleanup kills it) ...
            assert escapee.alive()
    assert status == 200 and job["state"] == "cancelled"
    assert job_processes(job_id) == [] and session_processes(job["pgid"]) == []
    # ... and stated: the report names the layers it had and what they cannot see.
    report = job["teardown"]
    assert "cgroup" not in report["layers"]
    assert any("env -i" in limit for limit in report["limits"]), report["limits"]
    assert any("no PID namespace" in limit for limit in report["limits"]), report["limits"]
    assert report["cgroup_empty"] is None


def _freezer_state(cgroup: Path) -> str:
    return (cgroup / "freezer.state").read_text().strip()


@contextlib.asynccontextmanager
async def frozen(proc: Proc) -> AsyncIterator[None]:
    """Freeze a process with the cgroup v1 freezer: a frozen task does not die
    of SIGKILL until it is thawed. Thaws it and removes the freezer cgroup after."""
    cgroup = FREEZER / f"hive-test-{os.getpid()}-{proc.pid}"
    cgroup.mkdir()
    try:
        (cgroup / "cgroup.procs").write_text(str(proc.pid))
        (cgroup / "freezer.state").write_text("FROZEN")
        await wait_until(lambda: _freezer_state(cgroup) == "FROZEN")
        yield
    finally:
        (cgroup / "freezer.state").write_text("THAWED")
        for pid in (cgroup / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (FREEZER / "cgroup.procs").write_text(pid)
        # A thawed task with a SIGKILL pending may still be exiting, and keeps
        # its cgroup busy until it has: the removal is retried until then.
        await wait_until(lambda: _removed(cgroup))


def _removed(cgroup: Path) -> bool:
    try:
        cgroup.rmdir()
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        return False
    return True


@pytest.mark.skipif(
    not os.access(FREEZER / "cgroup.procs", os.W_OK), reason="needs the cgroup v1 freezer"
)
async def test_a_process_that_cannot_be_killed_is_reported(
    tmp_path: Path, leftovers: Leftovers
) -> None:
    # Without a namespace: with one, its init (killed, waiting in the kernel for
    # the frozen process) would be left too, which test_sealed.py covers.
    async with teardown_hive(tmp_path / "state", leftovers, cgroups=None, pidns=False) as hive:
        job_id = leftovers.job(await submit(hive, "sleeper"))
        async with watching(hive, job_id) as watch:
            await watch.ready(b"sleeper ready", 0)
            await wait_until(lambda: len(job_processes(job_id)) >= 2)
            leader = (await get_job(hive, job_id))["pid"]
            [victim] = [Proc.of(pid) for pid in job_processes(job_id) if pid != leader]
            assert victim is not None
            leftovers.add([victim])
            async with frozen(victim):
                status, job = await cancel(hive, job_id)
                survived = victim.alive()
    assert status == 200 and survived
    report = job["teardown"]
    assert watch.end is not None and watch.end["teardown"] == report
    assert report["left"] == 1 and report["left_pids"] == [victim.pid]
    assert report["errors"] == [f"pid {victim.pid}: still alive after SIGKILL"]
    assert report["sigkill"] >= 1
    assert report["cgroup_empty"] is (False if "cgroup" in report["layers"] else None)
    # The job does not claim a clean cancel: its error says what is left.
    assert job["state"] == "cancelled"
    assert f"teardown incomplete: 1 process(es) left (pids {victim.pid})" in job["error"]
    assert watch.end["error"] == job["error"]
