"""The /proc readers: pure parsers on fixed input, readers on real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from hive.procfs import (
    JOB_ID_VARIABLE,
    ProcStat,
    children_of,
    environ_has,
    has_marker,
    job_marker,
    marked_pids,
    own_children,
    parse_children,
    parse_stat,
    read_proc_file,
    read_stat,
    snapshot,
)


@pytest.mark.parametrize(
    ("environ", "found"),
    [
        (b"A=1\0HIVE_JOB_ID=abc\0B=2\0", True),
        (b"HIVE_JOB_ID=abc", True),
        (b"HIVE_JOB_ID=abcd\0", False),
        (b"X_HIVE_JOB_ID=abc\0", False),
        (b"", False),
    ],
)
def test_environment_marker_is_a_whole_entry(environ: bytes, found: bool) -> None:
    assert environ_has(environ, b"HIVE_JOB_ID=abc") is found


def test_the_marker_names_the_variable_and_the_job() -> None:
    assert job_marker("abc123") == f"{JOB_ID_VARIABLE}=abc123".encode()


def test_parse_stat_counts_fields_from_the_last_parenthesis() -> None:
    line = "4242 (we(i)rd) name) S 1 4242 4242 0 -1 " + " ".join(["0"] * 13) + " 777 0 0"
    assert parse_stat(line) == ProcStat(4242, 1, 4242, 4242, "S", 777)


def test_parse_stat_reads_threads_and_takes_bytes_that_are_not_utf8() -> None:
    fields = ["0"] * 11 + ["3", "0", "777", "0", "0"]  # num_threads: field 20
    line = b"17 (\xff\xfe) R 2 17 5 0 -1 " + " ".join(fields).encode()
    stat = parse_stat(line)
    assert (stat.pid, stat.ppid, stat.pgid, stat.sid, stat.state) == (17, 2, 17, 5, "R")
    assert (stat.threads, stat.start_time) == (3, 777)
    assert not stat.dead


@pytest.mark.parametrize(("state", "dead"), [("Z", True), ("X", True), ("S", False), ("D", False)])
def test_a_zombie_leader_is_dead_by_its_own_stat(state: str, dead: bool) -> None:
    assert ProcStat(1, 0, 1, 1, state, 0).dead is dead


def test_a_zombie_leader_with_live_threads_is_alive() -> None:
    """pthread_exit() in main: the leader shows Z, the kernel still counts it
    among the threads until the last one exits."""
    assert not ProcStat(1, 0, 1, 1, "Z", 0, threads=2).dead
    assert ProcStat(1, 0, 1, 1, "Z", 0, threads=1).dead


def test_parse_children() -> None:
    assert parse_children(b"12 345 6 ") == [12, 345, 6]
    assert parse_children(b"") == []


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        env={**os.environ, JOB_ID_VARIABLE: "procfs1"},
    )
    try:
        yield process
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait()


def test_readers_on_a_real_child(child: subprocess.Popen[bytes]) -> None:
    stat = read_stat(child.pid)
    assert stat is not None and stat.ppid == os.getpid() and not stat.dead
    assert child.pid in own_children()
    assert child.pid in children_of(os.getpid())
    assert child.pid in snapshot()
    assert has_marker(child.pid, job_marker("procfs1"))
    assert not has_marker(child.pid, job_marker("procfs"))
    assert marked_pids([child.pid, os.getpid()], job_marker("procfs1")) == {child.pid}


def test_readers_of_a_process_that_is_gone_return_nothing() -> None:
    process = subprocess.Popen(["true"])
    process.wait()
    assert read_stat(process.pid) is None
    assert read_proc_file(f"/proc/{process.pid}/environ") is None
    assert children_of(process.pid) == []
    assert not has_marker(process.pid, b"X=1")
