from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from .support import Hive, make_upstream_repo, running_hive, serve_directory


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
