"""The pure parts of teardown, without processes: who is a member and why, which
zombie may be reaped, which process group is still a job's, what a record is."""

from __future__ import annotations

from pathlib import Path

import pytest

from hive.cgroups import find_cgroup2_mount, own_cgroup
from hive.procfs import ProcStat, parse_stat
from hive.proctree import (
    JobIdentity,
    Layer,
    TeardownReport,
    group_exists,
    reached_by_strike,
    select_members,
    walk,
)
from hive.reaper import orphaned
from hive.recovery import RunningRecord, hive_still_runs, trusted_pgid

HIVE, HIVE_SID = 100, 90


def proc(
    pid: int, ppid: int, pgid: int, sid: int | None = None, *, state: str = "S", start: int = 50
) -> ProcStat:
    return ProcStat(pid, ppid, pgid, pgid if sid is None else sid, state, start)


def table(*procs: ProcStat) -> dict[int, ProcStat]:
    return {p.pid: p for p in procs}


JOB = JobIdentity("abc", pgid=200, leader_pid=200, leader_start_time=40)

# The shapes the adversarial recipes make, as /proc would show them.
PROCS = table(
    proc(1, 0, 1),
    proc(HIVE, 1, HIVE, HIVE_SID, start=10),
    proc(200, HIVE, 200, start=40),  # leader
    proc(201, 200, 200),  # plain child
    proc(202, 200, 202),  # setsid child, parent alive
    proc(203, 202, 202),  # its child
    proc(204, HIVE, 204),  # setsid'd double fork: re-parented to the hive
    proc(205, HIVE, 205),  # same, but `env -i`: only the cgroup knows it
    proc(206, 201, 200, state="Z"),  # exited: not a member any more
    proc(300, 1, 200, start=5),  # older than the leader: a recycled pgid's stranger
    proc(400, 1, 400),  # unrelated
)


def test_members_and_the_layers_that_found_them() -> None:
    members = select_members(PROCS, JOB, marked={200, 201, 202, 203, 204}, in_cgroup={205})
    pg, desc, env, cg = Layer.PROCESS_GROUP, Layer.DESCENDANTS, Layer.ENVIRONMENT, Layer.CGROUP
    assert members == {
        200: {pg, env},
        201: {pg, desc, env},
        202: {desc, env},
        203: {desc, env},
        204: {env},
        205: {cg},
    }


def test_known_pids_pull_in_their_descendants() -> None:
    members = select_members(PROCS, JobIdentity("abc", None, None, 0), known=[202])
    assert set(members) == {202, 203}
    assert members[203] == {Layer.DESCENDANTS}


def test_an_untrusted_group_finds_nothing_by_group() -> None:
    untrusted = JobIdentity("abc", None, 200, 40)
    assert select_members(PROCS, untrusted) == {}


def test_a_group_is_gone_only_when_no_process_zombies_included_is_in_it() -> None:
    assert group_exists(PROCS, 200)
    assert group_exists(table(proc(5, 1, 7, 7, state="Z")), 7)
    assert not group_exists(PROCS, 999)


@pytest.mark.parametrize(
    ("zombie", "kwargs", "reap"),
    [
        # In a job's session, not its leader: forked by a job process, re-parented.
        (proc(201, HIVE, 200, state="Z"), {}, True),
        # The hive's own children: a job leader (owned) and a helper in the hive's session.
        (proc(200, HIVE, 200, state="Z"), {"owned": {200}}, False),
        (proc(210, HIVE, HIVE, HIVE_SID, state="Z"), {}, False),
        # A session leader: could be one the hive started (a recipe reader) ...
        (proc(204, HIVE, 204, state="Z"), {}, False),
        # ... unless it is in a job's cgroup, or a job's process was in its session.
        (proc(204, HIVE, 204, state="Z"), {"in_job_cgroup": True}, True),
        (proc(204, HIVE, 204, state="Z", start=50), {"job_sessions": {204: 60}}, True),
        # A younger leader of that number is a reused pid.
        (proc(204, HIVE, 204, state="Z", start=70), {"job_sessions": {204: 60}}, False),
        # Owned wins over everything.
        (proc(200, HIVE, 200, state="Z"), {"owned": {200}, "in_job_cgroup": True}, False),
    ],
)
def test_which_zombies_the_hive_may_reap(
    zombie: ProcStat, kwargs: dict[str, object], reap: bool
) -> None:
    options: dict[str, object] = {"owned": set(), **kwargs}
    assert orphaned(zombie, own_sid=HIVE_SID, **options) is reap  # type: ignore[arg-type]


RECORD = RunningRecord("abc", "boot", 1, pgid=200, leader_pid=200, leader_start_time=40)


def test_a_recorded_group_needs_proof_that_it_is_still_the_job() -> None:
    # The leader itself, with its start time.
    assert trusted_pgid(RECORD, PROCS, vouched=()) == 200
    # Leader gone: a member that carries the marker (or is in the cgroup).
    without_leader = {pid: p for pid, p in PROCS.items() if pid != 200}
    assert trusted_pgid(RECORD, without_leader, vouched={201}) == 200
    assert trusted_pgid(RECORD, without_leader, vouched=()) is None
    # Same pid, other start time: the number was reused.
    reused = {**PROCS, 200: proc(200, 1, 200, start=99)}
    assert trusted_pgid(RECORD, reused, vouched=()) is None


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"job_id": "../x", "boot_id": "b", "hive_pid": 1},
        {"job_id": "abc", "boot_id": "b", "hive_pid": 1, "pgid": 1},
        {"job_id": "abc", "boot_id": "b", "hive_pid": 1, "leader_pid": "7"},
        {"job_id": "abc", "boot_id": "b", "hive_pid": 1, "surprise": True},
        {"job_id": "abc"},
    ],
)
def test_bad_records_are_refused(data: object) -> None:
    with pytest.raises(ValueError):
        RunningRecord.from_json(data)


def test_records_round_trip() -> None:
    assert RunningRecord.from_json(RECORD.to_json()) == RECORD


def test_a_record_of_a_hive_that_still_runs_is_not_ours() -> None:
    init = parse_stat(Path("/proc/1/stat").read_text())
    alive = RunningRecord("abc", "boot", 1, hive_start_time=init.start_time)
    assert hive_still_runs(alive)
    assert not hive_still_runs(RunningRecord("abc", "boot", 1, init.start_time + 1))  # reused
    assert not hive_still_runs(RunningRecord.start("abc"))  # this very process


def test_cgroup2_mount_and_own_cgroup() -> None:
    mountinfo = (
        "31 23 0:27 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
        "41 31 0:38 / /sys/fs/cgroup/un\\040ified rw,relatime shared:9 - cgroup2 cgroup2 rw\n"
    )
    assert find_cgroup2_mount(mountinfo) == Path("/sys/fs/cgroup/un ified")
    assert find_cgroup2_mount("31 23 0:27 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n") is None
    assert own_cgroup("4:memory:/x\n0::/system.slice/hive.service\n") == (
        "/system.slice/hive.service"
    )
    assert own_cgroup("4:memory:/x\n") is None


def test_report_counts_layers_and_states_its_problem() -> None:
    report = TeardownReport(layers=["process-group", "environment", "cgroup", "pidfd"])
    pg, env, cg = Layer.PROCESS_GROUP, Layer.ENVIRONMENT, Layer.CGROUP
    report.count([frozenset({pg, env, cg}), frozenset({env, cg}), frozenset({cg})])
    assert report.found == 3
    assert report.by_layer == {
        "process-group": {"found": 1, "only": 0},
        "environment": {"found": 2, "only": 0},
        "cgroup": {"found": 3, "only": 1},
    }
    assert report.clean and report.problem is None
    report.left, report.left_pids, report.errors = 1, [77], ["pid 77: SIGKILL not permitted"]
    assert report.problem == (
        "teardown incomplete: 1 process(es) left (pids 77): pid 77: SIGKILL not permitted"
    )
    assert not TeardownReport(cgroup_empty=False).clean


def _walk(job: JobIdentity, roots: list[int], **kwargs: object) -> set[int]:
    """Walk PROCS (children from parent links, markers from ``marked``) and select."""
    marked_set: set[int] = set(kwargs.pop("marked", ()))  # type: ignore[call-overload]
    procs, marked = walk(
        job,
        roots=roots,
        marker=b"HIVE_JOB_ID=abc",
        stat_of=PROCS.get,
        children=lambda pid, _stat: [p.pid for p in PROCS.values() if p.ppid == pid],
        has_marker=lambda pid, _marker: pid in marked_set,
        **kwargs,  # type: ignore[arg-type]
    )
    return set(select_members(procs, job, marked=marked, **kwargs))  # type: ignore[arg-type]


def test_the_walk_finds_what_a_full_scan_finds_under_the_hive() -> None:
    # Roots: the hive's children (the leader and two re-parented escapees).
    hive_children = [p.pid for p in PROCS.values() if p.ppid == HIVE]
    full = select_members(PROCS, JOB, marked={204}, in_cgroup={205})
    assert _walk(JOB, hive_children, marked={204}, in_cgroup={205}) == set(full)
    # The stranger in a recycled group (300) and the unrelated 400 are not read at all.
    assert 300 not in full


def test_the_walk_does_not_descend_into_what_is_no_member() -> None:
    # 204 carries no marker here and is in no cgroup: not a member, so neither is
    # anything below it; 202 and 203 descend from the leader and are.
    assert _walk(JOB, [200, 204]) == {200, 201, 202, 203}
    assert _walk(JobIdentity("abc", None, 200, 40), [204]) == set()


@pytest.mark.parametrize(
    ("before", "after", "reached"),
    [
        (200, 200, True),  # in the group before and after the killpg
        (None, 200, False),  # not in the census: forked since, maybe after the killpg
        (200, 202, False),  # left the group (setsid) around the killpg
        (202, 202, False),  # never in it
    ],
)
def test_a_strike_counts_only_for_members_in_the_group_on_both_sides(
    before: int | None, after: int | None, reached: bool
) -> None:
    assert reached_by_strike(200, before, after) is reached
