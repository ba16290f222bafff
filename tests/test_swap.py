"""The install's three steps (stage, commit, settle) on real directories."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hive.swap import MANIFEST, Swap, commit, manifest_job, recover, settle, stage


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


def _version(folder: Path, name: str, job: str, content: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "file").write_text(content)
    (folder / MANIFEST).write_text(json.dumps({"name": name, "job_id": job}))
    return folder


def _installed(workers: Path, name: str) -> dict[str, str]:
    folder = workers / name
    return {v: (folder / v / "file").read_text() for v in sorted(os.listdir(folder))}


def test_a_staged_install_that_never_committed_is_discarded(tmp_path: Path) -> None:
    workers = tmp_path / "workers"
    _version(workers / "demo" / "1-1", "demo", "old", "one")
    package = _version(tmp_path / "pkg", "demo", "new", "two")
    swap = stage(workers, "demo", "2-1", package, "new")
    # Whatever the job's outcome, an install that never swapped in leaves the old one.
    assert settle(swap, succeeded=True) == "discarded"
    assert _installed(workers, "demo") == {"1-1": "one"} and os.listdir(workers) == ["demo"]


def test_recovery_settles_each_swap_by_its_job(tmp_path: Path) -> None:
    workers = tmp_path / "workers"
    for name in ("good", "bad", "early"):
        _version(workers / name / "1-1", name, "old", f"{name} one")
        package = _version(tmp_path / name, name, f"job{name}", f"{name} two")
        swap = stage(workers, name, "2-1", package, f"job{name}")
        if name != "early":
            commit(swap)
    outcomes = recover(workers, lambda job: job == "jobgood")
    assert sorted((s.name, outcome) for s, outcome in outcomes) == [
        ("bad", "rolled back"),
        ("early", "discarded"),
        ("good", "finished"),
    ]
    assert _installed(workers, "good") == {"2-1": "good two"}
    assert _installed(workers, "bad") == {"1-1": "bad one"}
    assert _installed(workers, "early") == {"1-1": "early one"}
    assert sorted(os.listdir(workers)) == ["bad", "early", "good"]
    assert Swap.parse(workers / ".swap-a-b-c-0123456789ab") == Swap(
        workers, "a-b-c", "0123456789ab"
    )
