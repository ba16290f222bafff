from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .support import Hive, running_hive


@pytest.fixture
async def hive(tmp_path: Path) -> AsyncIterator[Hive]:
    """A real `hive serve` on the test recipes, grace 1 s."""
    async with running_hive(tmp_path / "state") as running:
        yield running
