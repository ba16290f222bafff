"""Each adversarial process tree, cancelled mid-run through the real hive, must
leave nothing: no process with the job's HIVE_JOB_ID, none in its process group
or session, none of the escapees it printed, no zombie of it.

Every case runs with and without a cgroup per job, and with and without a PID
namespace per job (the layers that a case is there to test are named per mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ..support import Hive, job_processes
from .conftest import GRACE, MODES
from .tools import (
    Leftovers,
    cancel,
    hive_cgroup,
    session_processes,
    submit,
    wait_until,
    watching,
    zombies,
)


@dataclass(frozen=True)
class Case:
    recipe: str
    #: "pid N" lines the recipe prints: processes the test checks by pid.
    pids: int
    #: Processes carrying the job's HIVE_JOB_ID once the recipe is ready.
    at_least: int
    #: Something in it ignores SIGTERM, so SIGKILL is needed after the grace.
    ignores_sigterm: bool = False
    #: Per mode, a layer that must have found a process no other layer found.
    only_by: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.recipe


CASES = [
    # bash -> make -j4 -> sh -> cc-like drivers -> passes: 50+ processes.
    Case("deep", pids=0, at_least=50),
    Case("trapterm", pids=6, at_least=10, ignores_sigterm=True),
    Case("setsid", pids=2, at_least=3, only_by={"no-cgroup": "environment"}),
    Case("daemon", pids=3, at_least=5, only_by={"no-cgroup": "environment"}),
    Case("jobctl", pids=2, at_least=6),
    Case("forker", pids=0, at_least=4, ignores_sigterm=True),
    Case("pipehold", pids=1, at_least=3, ignores_sigterm=True),
    Case("closedfds", pids=1, at_least=3, only_by={"no-cgroup": "environment"}),
    # Cleared environment, own session, orphaned: only the cgroup knows it.
    Case("envclear", pids=1, at_least=2, only_by={"cgroup": "cgroup"}),
]


#: Every case in every mode, but for the one that only a cgroup or a namespace
#: can catch: its run with neither is the stated limit tested in test_limits.py.
MATRIX = [
    pytest.param(mode, case, id=f"{mode}-{case}")
    for mode in MODES
    for case in CASES
    if mode != "no-cgroup" or "cgroup" not in case.only_by.values()
]


@pytest.mark.parametrize(("hive", "case"), MATRIX, indirect=["hive"])
async def test_cancel_mid_run_leaves_nothing(
    request: pytest.FixtureRequest, hive: Hive, leftovers: Leftovers, case: Case
) -> None:
    mode = request.node.callspec.params["hive"]
    cgroups, pidns = MODES[mode]
    job_id = leftovers.job(await submit(hive, case.recipe))
    cgroup = hive_cgroup(hive)
    async with watching(hive, job_id) as watch:
        escapees = await watch.ready(f"{case.recipe} ready".encode(), case.pids)
        leftovers.add(escapees)
        await wait_until(lambda: len(job_processes(job_id)) >= case.at_least)
        assert all(proc.alive() for proc in escapees)
        status, job = await cancel(hive, job_id)
        # The moment the hive answers, nothing of the job may be left.
        pgid = job["pgid"]
        left = {
            "by HIVE_JOB_ID": job_processes(job_id),
            "by process group or session": session_processes(pgid),
            "escapees": [proc.pid for proc in escapees if proc.alive()],
            "zombies": zombies(parent=hive.process.pid, session=pgid),
        }
    assert status == 200 and job["state"] == "cancelled", job
    assert left == {key: [] for key in left}
    report = job["teardown"]
    assert watch.end is not None and watch.end["teardown"] == report
    assert report["left"] == 0 and report["left_pids"] == [] and report["errors"] == []
    assert report["found"] >= case.at_least
    assert report["cgroup_empty"] is (True if cgroups else None)
    assert cgroups == ("cgroup" in report["layers"])
    # With a namespace, "nothing left" is the kernel's word: its init is gone.
    assert report["namespace_empty"] is (True if pidns else None)
    assert pidns == ("pid-namespace" in report["layers"])
    assert report["verified"] is True
    if case.ignores_sigterm:
        assert report["sigkill"] >= 1 and report["seconds"] >= GRACE
        assert any(text.startswith("sent SIGKILL") for text in watch.messages())
    else:
        # Everything honoured SIGTERM: no SIGKILL, no waiting out the grace; and
        # every process found was signalled (by the group strike or by us).
        assert report["sigkill"] == 0 and not report["cgroup_kill"], report
        assert not report["namespace_kill"], report
        assert report["sigterm"] >= report["found"] - 1, report
    if layer := case.only_by.get(mode):
        assert report["by_layer"][layer]["only"] >= 1, report["by_layer"]
    # Released: no running record, no cgroup.
    assert not (hive.state_dir / "running" / f"{job_id}.json").exists()
    assert cgroup is None or not (cgroup / f"job-{job_id}").exists()
