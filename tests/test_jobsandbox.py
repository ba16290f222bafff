"""hive.jobsandbox: how a build user finds its commands (which_for), and the probe
both sandboxes share, on real files and processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hive.jobsandbox import DEFAULT_BUILD_USER, BuildUser, probe, which_for


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a directory the build user cannot reach")
def test_a_command_the_build_user_cannot_reach_is_passed_over_along_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_path.chmod(0o755)
    hidden, shared = tmp_path / "hidden", tmp_path / "shared"
    for directory, mode in ((hidden, 0o700), (shared, 0o755)):
        directory.mkdir()
        tool = directory / "hive-test-tool"
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o755)
        directory.chmod(mode)
    monkeypatch.setenv("PATH", f"{hidden}{os.pathsep}{shared}")
    user = BuildUser.lookup(DEFAULT_BUILD_USER)
    assert which_for(None)("hive-test-tool") == str(hidden / "hive-test-tool")
    assert which_for(user)("hive-test-tool") == str(shared / "hive-test-tool")
    monkeypatch.setenv("PATH", str(hidden))
    assert which_for(user)("hive-test-tool") is None


def test_a_probe_says_in_one_line_why_it_failed() -> None:
    """One runner for the probes of both sandboxes (jobs and the recipe reader)."""
    assert probe(["true"]) is None
    noisy = "echo 'first' >&2; echo 'the reason' >&2; echo 'harmless noise' >&2; exit 3"
    assert probe(["sh", "-c", noisy], noise=["harmless"]) == "the reason"
    assert probe(["sh", "-c", "exit 4"]) == "sh exited 4"
    missing = probe(["/nonexistent/hive-probe"])
    assert missing is not None and missing.startswith("cannot run hive-probe: ")
