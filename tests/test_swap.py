"""The install's three steps (stage, commit, settle) on real directories."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hive.swap import MANIFEST, commit, manifest_job, settle, stage


def installed(workers: Path, version: str, job_id: str, content: str) -> Path:
    path = workers / version
    path.mkdir(parents=True)
    (path / "file").write_text(content)
    (path / MANIFEST).write_text(json.dumps({"job_id": job_id}))
    return path


def test_a_succeeded_install_replaces_every_older_version_and_leaves_no_trash(
    tmp_path: Path,
) -> None:
    workers = tmp_path / "workers"
    installed(workers / "demo", "1-1", "old", "1-1")
    package = installed(tmp_path / "build", "pkg", "new", "2-1 rebuilt")
    swap = stage(workers, "demo", "2-1", package, "new")
    assert manifest_job(workers / "demo" / "1-1") == "old"  # staged: the old one still serves
    assert commit(swap) == ["1-1"]
    assert settle(swap, succeeded=True) == "finished"
    assert os.listdir(workers) == ["demo"]  # no swap or trash directory left behind
    assert os.listdir(workers / "demo") == ["2-1"]
    assert (workers / "demo" / "2-1" / "file").read_text() == "2-1 rebuilt"
    assert not package.exists()


def test_an_install_whose_job_failed_is_rolled_back_to_the_old_version(tmp_path: Path) -> None:
    workers = tmp_path / "workers"
    installed(workers / "demo", "1-1", "old", "1-1")
    package = installed(tmp_path / "build", "pkg", "new", "2-1")
    swap = stage(workers, "demo", "2-1", package, "new")
    commit(swap)
    assert settle(swap, succeeded=False) == "rolled back"
    assert os.listdir(workers) == ["demo"]
    assert os.listdir(workers / "demo") == ["1-1"]
    assert manifest_job(workers / "demo" / "1-1") == "old"


def test_a_first_install_that_failed_leaves_nothing_installed(tmp_path: Path) -> None:
    workers = tmp_path / "workers"
    package = installed(tmp_path / "build", "pkg", "new", "1-1")
    swap = stage(workers, "demo", "1-1", package, "new")
    commit(swap)
    assert settle(swap, succeeded=False) == "rolled back"
    assert os.listdir(workers) == []
