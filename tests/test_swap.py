"""The install swap on its own (hive.swap): real directories, no hive.

Every step is checked in the state a crash right after it would leave, then
settled the way a restarted hive would (tests/test_crash.py kills real hives
at the same steps)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hive.swap import MANIFEST, Swap, commit, recover, settle, stage


def version(folder: Path, name: str, job: str, content: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "file").write_text(content)
    (folder / MANIFEST).write_text(json.dumps({"name": name, "job_id": job}))
    return folder


def installed(workers: Path, name: str = "demo") -> dict[str, str]:
    """version -> content of what is installed; {} if nothing."""
    folder = workers / name
    if not folder.exists():
        return {}
    return {v: (folder / v / "file").read_text() for v in sorted(os.listdir(folder))}


def dot_entries(workers: Path) -> list[str]:
    return sorted(p.name for p in workers.iterdir() if p.name.startswith("."))


@pytest.fixture
def upgrade(tmp_path: Path) -> tuple[Path, Path]:
    """workers/demo holds 1-1 and 2-1 (installed by job "old"); a rebuilt 2-1 by job "new"."""
    workers = tmp_path / "workers"
    version(workers / "demo" / "1-1", "demo", "old", "one")
    version(workers / "demo" / "2-1", "demo", "old", "two")
    package = version(tmp_path / "build" / "pkg", "demo", "new", "two rebuilt")
    return workers, package


def test_commit_then_success_keeps_only_the_new_version(upgrade: tuple[Path, Path]) -> None:
    workers, package = upgrade
    swap = stage(workers, "demo", "2-1", package, "new")
    assert not package.exists() and installed(workers) == {"1-1": "one", "2-1": "two"}
    assert not swap.committed()
    assert commit(swap) == ["1-1", "2-1"]  # what was replaced, still on disk until settled
    assert swap.committed() and installed(workers) == {"2-1": "two rebuilt"}
    assert settle(swap, succeeded=True) == "finished"
    assert installed(workers) == {"2-1": "two rebuilt"} and dot_entries(workers) == []


def test_a_job_that_did_not_succeed_is_rolled_back(upgrade: tuple[Path, Path]) -> None:
    workers, package = upgrade
    swap = stage(workers, "demo", "2-1", package, "new")
    commit(swap)
    assert settle(swap, succeeded=False) == "rolled back"
    assert installed(workers) == {"1-1": "one", "2-1": "two"} and dot_entries(workers) == []


def test_a_staged_install_that_never_committed_is_discarded(upgrade: tuple[Path, Path]) -> None:
    workers, package = upgrade
    swap = stage(workers, "demo", "2-1", package, "new")
    # Whatever the job's outcome, an install that never swapped in leaves the old one.
    assert settle(swap, succeeded=True) == "discarded"
    assert installed(workers) == {"1-1": "one", "2-1": "two"} and dot_entries(workers) == []


def test_a_first_install_rolled_back_leaves_nothing(tmp_path: Path) -> None:
    workers = tmp_path / "workers"
    package = version(tmp_path / "pkg", "demo", "new", "fresh")
    swap = stage(workers, "demo", "1-1", package, "new")
    assert installed(workers) == {}  # an empty worker directory: nothing installed
    commit(swap)
    assert installed(workers) == {"1-1": "fresh"}
    assert settle(swap, succeeded=False) == "rolled back"
    assert os.listdir(workers) == []


def test_recovery_settles_each_swap_by_its_job(tmp_path: Path) -> None:
    workers = tmp_path / "workers"
    for name in ("good", "bad", "early"):
        version(workers / name / "1-1", name, "old", f"{name} one")
        package = version(tmp_path / name, name, f"job{name}", f"{name} two")
        swap = stage(workers, name, "2-1", package, f"job{name}")
        if name != "early":
            commit(swap)
    outcomes = recover(workers, lambda job: job == "jobgood")
    assert sorted((s.name, outcome) for s, outcome in outcomes) == [
        ("bad", "rolled back"),
        ("early", "discarded"),
        ("good", "finished"),
    ]
    assert installed(workers, "good") == {"2-1": "good two"}
    assert installed(workers, "bad") == {"1-1": "bad one"}
    assert installed(workers, "early") == {"1-1": "early one"}
    assert dot_entries(workers) == []
    assert Swap.parse(workers / ".swap-a-b-c-0123456789ab") == Swap(
        workers, "a-b-c", "0123456789ab"
    )
