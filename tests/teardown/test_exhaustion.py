"""Teardown with no file descriptor left: it falls back, and it says so.

The killer runs in a process of its own (started for the test) that first
starts a job tree, then opens ``/dev/null`` until ``EMFILE``, then tears the
tree down: ``/proc`` cannot be read, no pidfd or epoll set can be opened.
With a PID namespace, the init's pidfd (held since the start) and ``killpg``
still end the job, and the init's exit vouches for it; without, the report is
``verified: false`` rather than a clean "0 left".
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from typing import Any

import pytest
import trio

from ..support import ROOT, job_processes

SCRIPT = r"""
import json, os, sys
import trio
from hive.jobsandbox import JobSandbox
from hive.procfs import read_stat
from hive.proctree import JobIdentity, NamespaceInit, TreeKiller, spawn

JOB = sys.argv[2]
# Everything ignores SIGTERM; one member leaves the process group.
TREE = "trap '' TERM; sleep 300 & setsid sleep 300 & echo ready; wait"

async def main(namespace: bool) -> None:
    sandbox = JobSandbox(namespace=namespace)
    read, write = os.pipe()
    argv = sandbox.wrap(["bash", "-c", TREE], pid_fd=write if namespace else None)
    env = {"PATH": os.environ["PATH"], "HIVE_JOB_ID": JOB}
    leader = await spawn(argv, env=env, pass_fds=[write] if namespace else [])
    os.close(write)
    init = None
    if namespace:
        init = NamespaceInit.open(int(os.read(read, 64)))
    os.close(read)
    out = b""
    while b"ready" not in out:
        out += await leader.stdout.receive_some(1024)
    job = JobIdentity(JOB, leader.pid, leader.pid, read_stat(leader.pid).start_time)
    hog = []
    try:
        while True:
            hog.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    killer = TreeKiller(job, grace=0.3, leader=leader, namespace=init)
    report = await killer.teardown()
    for fd in hog:
        os.close(fd)
    print(json.dumps({**report.to_json(), "clean": report.clean, "problem": report.problem}))

trio.run(main, sys.argv[1] == "namespace")
"""


async def teardown_without_descriptors(namespace: bool, job_id: str) -> dict[str, Any]:
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-c", SCRIPT, "namespace" if namespace else "plain", job_id],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
        )
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def kill_all(job_id: str) -> None:
    for pid in job_processes(job_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_with_a_namespace_the_job_ends_and_the_kernel_vouches(tmp_path: object) -> None:
    job_id = f"exhaust{os.getpid()}a"
    try:
        report = await teardown_without_descriptors(True, job_id)
        if report["namespace_empty"] is None:
            pytest.skip("this machine lets the hive make no PID namespace")
        assert report["namespace_kill"] and report["namespace_empty"] is True, report
        assert report["verified"] and report["clean"], report
        assert any("Too many open files" in error for error in report["errors"]), report
        with trio.fail_after(10):
            while job_processes(job_id):
                await trio.sleep(0.02)
    finally:
        kill_all(job_id)


async def test_without_a_namespace_the_report_says_it_could_not_look(tmp_path: object) -> None:
    job_id = f"exhaust{os.getpid()}b"
    try:
        report = await teardown_without_descriptors(False, job_id)
        assert report["verified"] is False and not report["clean"], report
        assert report["problem"].startswith("teardown unverified"), report
        assert any("Too many open files" in error for error in report["errors"]), report
    finally:
        kill_all(job_id)
