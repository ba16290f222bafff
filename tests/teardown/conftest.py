"""Fixtures for the adversarial teardown tests: a hive on the teardown recipes,
with and without cgroups, with and without a PID namespace per job, and a
cleanup that kills whatever a test left."""

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
NO_PIDNS = {"HIVE_DISABLE_PIDNS": "1"}

#: The modes of the ``hive`` fixture: (cgroups, PID namespace).
MODES = {
    "cgroup": (True, False),
    "no-cgroup": (False, False),
    "pidns-cgroup": (True, True),
    "pidns": (False, True),
}


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
    pidns: bool | None = None,
    grace: float = GRACE,
    extra: Sequence[str] = (),
) -> AsyncIterator[Hive]:
    """A hive on the teardown recipes.

    ``cgroups`` and ``pidns``: True to require the layer (skip where the
    machine has none), False to forbid it, None for whatever this machine allows.
    """
    env = {**(NO_CGROUPS if cgroups is False else {}), **(NO_PIDNS if pidns is False else {})}
    async with running_hive(
        state_dir,
        catalog=RECIPES,
        grace=grace,
        extra=extra,
        env=env,
    ) as hive:
        if (cgroup := hive_cgroup(hive)) is not None:
            leftovers.cgroups.append(cgroup)
        async with hive.client() as client:
            layers = (await client.get("/v1/health")).json()["teardown_layers"]
        if cgroups and "cgroup" not in layers:
            pytest.skip("no writable cgroup v2 hierarchy on this machine")
        if cgroups is False:
            assert "cgroup" not in layers, layers
        if pidns and "pid-namespace" not in layers:
            pytest.skip("this machine lets the hive make no PID namespace")
        if pidns is False:
            assert "pid-namespace" not in layers, layers
        yield hive


@pytest.fixture(params=list(MODES))
async def hive(
    request: pytest.FixtureRequest, tmp_path: Path, leftovers: Leftovers
) -> AsyncIterator[Hive]:
    """A hive in each mode: with or without a cgroup per job, with or without
    a PID namespace per job (see :data:`MODES`)."""
    cgroups, pidns = MODES[request.param]
    async with teardown_hive(
        tmp_path / "state", leftovers, cgroups=cgroups, pidns=pidns
    ) as running:
        yield running
