from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from .support import (
    STATE_DIRS,
    Hive,
    cgroups_left,
    make_upstream_repo,
    running_hive,
    serve_directory,
)


def pytest_configure(config: pytest.Config) -> None:
    """Run as root, a hive builds as ``nobody``, which must read what a test puts
    in ``tmp_path`` for a build (``file://`` sources, a git upstream). pytest's
    own ``/tmp/pytest-of-root`` is 0700 (and made so again by every session):
    the tests of this session get a base of their own that others may pass
    through (see :func:`build_user_can_read_tmp_path`)."""
    if os.geteuid() == 0 and config.option.basetemp is None:
        parent = Path(tempfile.mkdtemp(prefix="hive-tests-"))
        parent.chmod(0o711)
        config.option.basetemp = str(parent / "base")
        config.stash[_SHARED_BASE] = parent


def pytest_unconfigure(config: pytest.Config) -> None:
    if (parent := config.stash.get(_SHARED_BASE, None)) is not None:
        shutil.rmtree(parent, ignore_errors=True)


_SHARED_BASE = pytest.StashKey[Path]()


@pytest.fixture(autouse=True)
def build_user_can_read_tmp_path(tmp_path: Path) -> None:
    """Others may pass through the directories above ``tmp_path`` (not list
    them) and read ``tmp_path`` itself; a hive's state dir in it is still 0700."""
    if os.geteuid() != 0:
        return
    tmp_path.parent.parent.chmod(0o711)
    tmp_path.parent.chmod(0o711)
    tmp_path.chmod(0o755)


@pytest.fixture(autouse=True)
def no_cgroup_left_behind() -> Iterator[None]:
    """The hives a test started left no cgroup: a hive removes its job cgroups
    and its own when it stops, and a restart on the same state dir removes what
    a killed one left. Whatever is left is removed here, once it is reported."""
    STATE_DIRS.clear()
    yield
    left = [path for state_dir in STATE_DIRS for path in cgroups_left(state_dir)]
    STATE_DIRS.clear()
    for path in left:
        with contextlib.suppress(OSError):
            for job in path.glob("job-*"):
                job.rmdir()
            path.rmdir()
    assert not left, f"cgroups left behind: {[str(p) for p in left]}"


@pytest.fixture
async def hive(tmp_path: Path) -> AsyncIterator[Hive]:
    """A real `hive serve` on the test recipes, grace 1 s."""
    async with running_hive(tmp_path / "state") as running:
        yield running


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1: (directory, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    with serve_directory(root) as base:
        yield root, base


@pytest.fixture
def upstream_repo(tmp_path: Path) -> tuple[Path, str]:
    """A git repo (see :func:`make_upstream_repo`) and its first commit."""
    repo = tmp_path / "upstream.git"
    return repo, make_upstream_repo(repo)
