"""Job records in SQLite, settling a stopped hive's jobs, retention, start frames."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hive.jobs import Job, JobLog
from hive.logfile import log_path, scan_log
from hive.proctree import TeardownReport
from hive.recovery import INTERRUPTED_REASON, settle_jobs
from hive.retention import RetainedJob, Retention, parse_size
from hive.store import JobRecord, JobStore
from hivewire.protocol import (
    ControlEvent,
    OutputChunk,
    ProtocolError,
    ResumeCursor,
    StartAt,
    Stream,
    decode_frame,
    encode_start,
)


def record(job_id: str, state: str, **changes: object) -> JobRecord:
    base = JobRecord(
        id=job_id,
        operation="worker_download",
        worker="hello",
        state=state,
        created_at="2026-01-01T00:00:00.000Z",
        started_at=None,
        ended_at=None,
        exit_code=None,
        error=None,
        pid=4242,
        grace=1.0,
        cancel_requested_by=None,
        teardown=None,
        last_seq=0,
        log_complete=False,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


async def test_records_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    teardown = {"found": 3, "sigterm": 3, "sigkill": 0, "left": 0, "left_pids": []}
    async with JobStore.open(path) as store:
        store.put(record("a" * 12, "running"))
        store.put(record("a" * 12, "succeeded", exit_code=0, teardown=teardown))  # newest wins
        await store.save(record("b" * 12, "queued", created_at="2026-01-02T00:00:00.000Z"))
    async with JobStore.open(path) as store:
        loaded = await store.load_all()
        assert [r.id for r in loaded] == ["a" * 12, "b" * 12]
        assert loaded[0] == record("a" * 12, "succeeded", exit_code=0, teardown=teardown)
        await store.delete(["a" * 12])
        assert [r.id for r in await store.load_all()] == ["b" * 12]


def test_a_reloaded_job_keeps_its_whole_teardown_report(tmp_path: Path) -> None:
    report = TeardownReport(
        found=3,
        sigterm=3,
        sigkill=1,
        left=0,
        seconds=1.25,
        layers=["cgroup", "environment"],
        by_layer={"cgroup": {"found": 3, "only": 1}, "environment": {"found": 2, "only": 0}},
        cgroup_kill=True,
        cgroup_empty=True,
        reaped=2,
        errors=["pid 7: permission denied"],
        limits=["no subreaper"],
    )
    saved = record("c" * 12, "cancelled", teardown=report.to_json(), log_complete=True)
    job = Job.from_record(saved, JobLog.existing(tmp_path / "c.log", 0))
    assert job.teardown == report
    assert job.to_record() == saved


async def test_settle_jobs_closes_what_a_dead_hive_left(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    running, ended_late, failed_log, done = "1" * 12, "2" * 12, "3" * 12, "4" * 12
    # A job that was running: some output, no end.
    live = JobLog(log_path(logs, running))
    async with live.writing():
        live.append_output(Stream.STDOUT, b"half a build\n")
    # A job that ended, but whose final record was never saved.
    late = JobLog(log_path(logs, ended_late))
    async with late.writing():
        late.append_control({"type": "end", "state": "succeeded", "exit_code": 0, "error": None})
    # A failed job whose log could not take its end event.
    broken = JobLog(log_path(logs, failed_log))
    async with broken.writing():
        broken.append_output(Stream.STDOUT, b"until the disk filled\n")
    async with JobStore.open(tmp_path / "jobs.db") as store:
        await store.save(
            record(running, "running"),
            record(ended_late, "running"),
            record(failed_log, "failed", exit_code=None, error="cannot write the job log"),
            record(done, "succeeded", exit_code=0, log_complete=True),
        )
        settled = await settle_jobs(store, logs)
        interrupted = settled.interrupted
        assert [r.id for r in interrupted] == [running]
        assert interrupted[0].pid == 4242  # for whoever cleans up its processes
        by_id = {r.id: r for r in await store.load_all()}
    # What it returns is what the store now holds: the engine loads once.
    assert sorted(settled.records, key=lambda r: r.id) == sorted(by_id.values(), key=lambda r: r.id)
    assert by_id[running].state == "interrupted"
    assert by_id[running].error == INTERRUPTED_REASON
    assert by_id[running].ended_at is not None
    assert by_id[ended_late].state == "succeeded" and by_id[ended_late].exit_code == 0
    assert by_id[failed_log].state == "failed"
    for job_id in (running, ended_late, failed_log):
        scan = scan_log(log_path(logs, job_id))
        assert scan.last_control is not None and scan.last_control["type"] == "end"
        assert by_id[job_id].last_seq == scan.last_seq and by_id[job_id].log_complete
    assert scan_log(log_path(logs, failed_log)).last_control == {
        "type": "end",
        "state": "failed",
        "exit_code": None,
        "error": "cannot write the job log",
        "teardown": None,
        "started_at": None,  # as in its record
        "ended_at": None,
    }
    replay = JobLog.existing(log_path(logs, running), by_id[running].last_seq)
    assert b"".join([c async for c in replay.output(Stream.STDOUT)]) == b"half a build\n"


NOW = datetime(2026, 6, 1, tzinfo=UTC)


def jobs(*specs: tuple[str, float | None, int]) -> list[RetainedJob]:
    return [
        RetainedJob(name, None if age is None else NOW - timedelta(days=age), size)
        for name, age, size in specs
    ]


@pytest.mark.parametrize(
    ("policy", "specs", "expected"),
    [
        (Retention(2, 30, 10**9), [("a", 5, 1), ("b", 4, 1), ("c", 3, 1)], ["a"]),
        (Retention(10, 30, 10**9), [("a", 40, 1), ("b", 4, 1)], ["a"]),
        (Retention(10, 30, 100), [("a", 5, 60), ("b", 4, 60), ("c", 3, 10)], ["a"]),
        # Running jobs are never removed, but they count.
        (Retention(1, 0, 10**9), [("a", None, 1), ("b", 1, 1)], ["b"]),
        (Retention(0, 30, 50), [("a", None, 100), ("b", 1, 1)], ["b"]),
        (Retention(10, 30, 10**9), [("a", 5, 1)], []),
    ],
)
def test_retention(
    policy: Retention, specs: list[tuple[str, float | None, int]], expected: list[str]
) -> None:
    assert policy.expired(jobs(*specs), now=NOW) == expected


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1048576), ("2G", 2 * 1024**3), ("500MiB", 500 * 1024**2), ("1.5k", 1536)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1G", "nan"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_start_frame_moves_the_cursor_without_being_an_event() -> None:
    start = decode_frame(encode_start(41))
    assert start == StartAt(41)
    cursor = ResumeCursor()
    assert cursor.accept(start) is False and cursor.since == 41
    assert cursor.accept(OutputChunk(Stream.STDOUT, 42, 43, b"tail"))
    with pytest.raises(ProtocolError):
        cursor.accept(StartAt(10))  # going back would repeat events
    assert decode_frame('{"seq": 3, "type": "start"}') == ControlEvent(3, {"type": "start"})
    with pytest.raises(ProtocolError):
        decode_frame('{"type": "start", "since": -1}')
