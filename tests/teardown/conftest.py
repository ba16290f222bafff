"""Fixtures for the adversarial teardown tests: a hive on the teardown recipes,
with and without cgroups, and a cleanup that kills whatever a test left."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from ..support import Hive, running_hive
from .tools import RECIPES, Leftovers, hive_cgroup

#: Short, so that the SIGKILL cases do not make the suite slow.
GRACE = 0.5

NO_CGROUPS = {"HIVE_DISABLE_CGROUPS": "1"}


@pytest.fixture
async def leftovers() -> AsyncIterator[Leftovers]:
    """Escapees and cgroups to kill after the test, whether it passed or not."""
    found = Leftovers()
    try:
        yield found
    finally:
        await found.cleanup()


@asynccontextmanager
async def teardown_hive(
    state_dir: Path,
    leftovers: Leftovers,
    *,
    cgroups: bool | None,
    grace: float = GRACE,
    extra: Sequence[str] = (),
) -> AsyncIterator[Hive]:
    """A hive on the teardown recipes.

    ``cgroups``: True to require them (skip where there are none), False to
    forbid them, None for whatever this machine allows.
    """
    async with running_hive(
        state_dir,
        catalog=RECIPES,
        grace=grace,
        extra=extra,
        env=NO_CGROUPS if cgroups is False else None,
    ) as hive:
        if (cgroup := hive_cgroup(hive)) is not None:
            leftovers.cgroups.append(cgroup)
        async with hive.client() as client:
            layers = (await client.get("/v1/health")).json()["teardown_layers"]
        if cgroups and "cgroup" not in layers:
            pytest.skip("no writable cgroup v2 hierarchy on this machine")
        if cgroups is False:
            assert "cgroup" not in layers, layers
        yield hive


@pytest.fixture(params=["cgroup", "no-cgroup"])
async def hive(
    request: pytest.FixtureRequest, tmp_path: Path, leftovers: Leftovers
) -> AsyncIterator[Hive]:
    """A hive in each mode: with a cgroup per job, and with the other layers only."""
    async with teardown_hive(
        tmp_path / "state", leftovers, cgroups=request.param == "cgroup"
    ) as running:
        yield running
