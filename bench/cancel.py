"""Cancel latency: from "cancel" to "every process of the job is gone".

Three 50-process trees (``bench/recipes/tree*``): one that honours SIGTERM,
one that ignores it (SIGKILL after the grace period), one whose 14 sleeps call
``setsid`` and so leave the process group. Each is cancelled three ways, in the
same run:

* the hive: ``DELETE /v1/jobs/ID?wait=true`` → the ``end`` event on an open
  stream (through the keeper's client code), which the hive sends only after
  it verified that no process of the job is left; and → the answer to the
  ``DELETE`` itself, which comes with the end event;
* the limit: the same tree started by us in its own session, ``killpg``
  (SIGTERM; SIGKILL after the grace period), and a wait on pidfds until every
  member of the group has exited;
* the peer: supervisord with ``stopasgroup=true killasgroup=true``, timed
  over ``stopProcess(wait=True)``.

After each cancel we count the tree's processes still running: a canceller
that says "done" while processes run has not finished.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import xmlrpc.client
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
from supervisor.xmlrpc import SupervisorTransport

from hive.procfs import read_stat, snapshot
from keeper.client import HiveClient

from .harness import (
    JOB_ENV,
    MAKEPKG,
    PYTHON,
    RECIPES,
    Context,
    Figure,
    Proc,
    alive,
    in_turn,
    kill_all,
    makepkg_argv,
    present,
    running_hive,
    wait_for_tree,
)

TREE_SIZE = 50
#: Of which ``sleep``: 7 subshells x 6 (the rest are bash).
SLEEPS = 42
#: The hive's grace period, and ours for the bare killpg.
GRACE = 0.5
#: supervisord's stopwaitsecs is a whole number of seconds: 1 is its shortest.
SUPERVISOR_GRACE = 1
#: How long after "stopped" we keep watching a peer's stragglers.
SETTLE = 1.0
#: SIGKILLed processes are gone within this, or the benchmark is broken.
KILL_TIMEOUT = 10.0
#: How long a hive sample waits for the zombies of earlier samples to be reaped.
REAP_TIMEOUT = 5.0

#: Aims for the tree that honours SIGTERM (ms), and for the one that ignores it.
P50_AIM = 30.0
P99_AIM = 100.0
KILLPG_FACTOR = 2.0
IGNORE_EPSILON = 100.0


@dataclass(frozen=True)
class Tree:
    recipe: str
    label: str
    full_repeats: int
    quick_repeats: int


TERM = Tree("treeterm", "tree honouring SIGTERM", 30, 8)
IGNORE = Tree("treeignore", "tree ignoring SIGTERM", 8, 3)
ESCAPE = Tree("treeescape", "tree with 14 setsid escapees", 8, 3)
TREES = (TERM, IGNORE, ESCAPE)


@dataclass
class Sample:
    ms: float
    #: Processes of the tree still running when the canceller said "done".
    left: int
    #: ... and after another SETTLE seconds.
    left_later: int = 0
    #: The hive's own account of its teardown (the end event's report).
    teardown_ms: float = 0.0
    #: The answer to ``DELETE ?wait=true`` (the hive only).
    answer_ms: float = 0.0
    #: The tree's processes, as found before the cancel.
    procs: set[Proc] = field(default_factory=set)


async def _wait_for_tree(root: int) -> set[Proc]:
    """The whole tree, once every sleep runs (and so has called setsid, if it does)."""
    return await wait_for_tree(root, TREE_SIZE, running="sleep", count=SLEEPS)


async def _settle(procs: set[Proc]) -> int:
    """Count ``procs`` still running after SETTLE seconds; kill them after."""
    with trio.move_on_after(SETTLE):
        await _wait_exited(procs)
    left = alive(procs)
    kill_all(left)
    return len(left)


async def _wait_reaped(procs: set[Proc]) -> None:
    """Wait until earlier samples' processes are gone from /proc, zombies too.

    This machine's PID 1 reaps orphans 1.4-1.9 s late, so every cancelled tree
    leaves ~49 zombies behind for a while. A hive scans /proc on cancel, and
    would pay for the zombies of the samples before it, which no real cancel
    does. Reaping by another process makes no event: this polls, with a bound.
    """
    with trio.move_on_after(REAP_TIMEOUT):
        while present(procs):
            await trio.sleep(0.05)


async def _wait_exited(procs: set[Proc]) -> None:
    """Wait until every one of ``procs`` has exited (pidfd readable)."""
    pidfds = []
    try:
        for pid, start in alive(procs):
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            stat = read_stat(pid)
            if stat is None or stat.start_time != start:  # gone, or the pid reused
                os.close(pidfd)
                continue
            pidfds.append(pidfd)
        async with trio.open_nursery() as nursery:
            for pidfd in pidfds:
                nursery.start_soon(trio.lowlevel.wait_readable, pidfd)
    finally:
        for pidfd in pidfds:
            os.close(pidfd)


# ---------------------------------------------------------------- hive


async def hive_cancel(client: HiveClient, tree: Tree) -> Sample:
    """DELETE ?wait=true → ``end``, on a stream opened before the cancel; and →
    the DELETE's answer."""
    job_id = (await client.submit(tree.recipe))["id"]
    answered: list[float] = []

    async def cancel() -> None:
        await client.cancel(job_id, wait=True)
        answered.append(time.perf_counter())

    async with client.stream(job_id) as events, trio.open_nursery() as nursery:
        async for event in events:
            if getattr(event, "body", {}).get("state") == "running":
                break
        procs = await _wait_for_tree((await client.job(job_id))["pid"])
        started = time.perf_counter()
        nursery.start_soon(cancel)
        async for event in events:
            if getattr(event, "type", None) == "end":
                elapsed = time.perf_counter() - started
                end: dict[str, Any] = event.body  # type: ignore[union-attr]
                break
    if end["state"] != "cancelled":
        raise RuntimeError(f"job {job_id} ended {end['state']}, not cancelled")
    left = alive(procs)
    teardown_ms = end["teardown"]["seconds"] * 1000
    answer_ms = (answered[0] - started) * 1000
    later = await _settle(left)
    return Sample(elapsed * 1000, len(left), later, teardown_ms, answer_ms, procs)


# ---------------------------------------------------------------- the limit


async def bare_killpg(ctx: Context, tree: Tree) -> Sample:
    """``kill -TERM -PGID``, grace, ``kill -KILL -PGID``; wait until the group is gone."""
    process = await trio.lowlevel.open_process(
        makepkg_argv(RECIPES / tree.recipe, ctx.scratch("build")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=JOB_ENV,
    )
    pgid = process.pid
    try:
        procs = await _wait_for_tree(pgid)
        table = snapshot()
        group = {(pid, start) for pid, start in procs if table[pid].pgid == pgid}
        started = time.perf_counter()
        os.killpg(pgid, signal.SIGTERM)
        with trio.move_on_after(GRACE) as waited:
            await _wait_exited(group)
        if waited.cancelled_caught:
            os.killpg(pgid, signal.SIGKILL)
            with trio.fail_after(KILL_TIMEOUT):  # SIGKILLed members cannot take long
                await _wait_exited(group)
        elapsed = time.perf_counter() - started
    finally:
        if process.returncode is None:
            await process.wait()  # reaped only now: the pgid could not be reused above
    left = alive(procs)
    return Sample(elapsed * 1000, len(left), await _settle(left), procs=procs)


# ---------------------------------------------------------------- the peer

SUPERVISOR_CONF = """\
[supervisord]
nodaemon=true
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
childlogdir={dir}
loglevel=warn

[unix_http_server]
file={dir}/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
"""

SUPERVISOR_PROGRAM = """
[program:{name}]
command=bash -c 'exec bash {makepkg} {recipe} "$(mktemp -d -p {dir})"'
autostart=false
autorestart=false
startsecs=0
stopasgroup=true
killasgroup=true
stopwaitsecs={grace}
stdout_logfile=NONE
stderr_logfile=NONE
"""


class Supervisor:
    """A supervisord subprocess and its XML-RPC API (blocking calls, run in a thread)."""

    def __init__(self, socket: Path) -> None:
        self._socket = socket

    async def call(self, method: str, *args: Any) -> Any:
        # A fresh proxy per call: a failed call leaves the transport unusable.
        transport = SupervisorTransport(None, None, f"unix://{self._socket}")
        proxy = xmlrpc.client.ServerProxy("http://localhost", transport=transport)
        function: Callable[..., Any] = getattr(proxy.supervisor, method)
        return await trio.to_thread.run_sync(partial(function, *args))


@asynccontextmanager
async def supervisord(ctx: Context) -> AsyncIterator[Supervisor]:
    workdir = ctx.scratch("supervisor")
    config = SUPERVISOR_CONF.format(dir=workdir) + "".join(
        SUPERVISOR_PROGRAM.format(
            name=tree.recipe,
            makepkg=MAKEPKG,
            recipe=RECIPES / tree.recipe,
            dir=workdir,
            grace=SUPERVISOR_GRACE,
        )
        for tree in TREES
    )
    (workdir / "supervisord.conf").write_text(config)
    binary = Path(PYTHON).parent / "supervisord"
    process = await trio.lowlevel.open_process(
        [str(binary), "-c", str(workdir / "supervisord.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        supervisor = Supervisor(workdir / "supervisor.sock")
        with trio.fail_after(20):
            while True:  # supervisord tells nobody when its socket is up
                try:
                    if (await supervisor.call("getState"))["statename"] == "RUNNING":
                        break
                except OSError:
                    pass
                await trio.sleep(0.05)
        yield supervisor
    finally:
        process.terminate()
        with trio.CancelScope(shield=True), trio.fail_after(20):
            await process.wait()


async def supervisor_stop(supervisor: Supervisor, tree: Tree) -> Sample:
    await supervisor.call("startProcess", tree.recipe, True)
    pid = (await supervisor.call("getProcessInfo", tree.recipe))["pid"]
    procs = await _wait_for_tree(pid)
    started = time.perf_counter()
    await supervisor.call("stopProcess", tree.recipe, True)
    elapsed = time.perf_counter() - started
    left = alive(procs)
    return Sample(elapsed * 1000, len(left), await _settle(left), procs=procs)


# ---------------------------------------------------------------- the benchmark


def figures(tree: Tree, hive: list[Sample], bare: list[Sample], peer: list[Sample]) -> list[Figure]:
    def figure(name: str, unit: str, values: list[float]) -> Figure:
        return Figure("cancel", f"{tree.label}: {name}", unit, values)

    limit = figure("bare killpg + wait (the limit)", "ms", [s.ms for s in bare])
    ours = figure("hive: DELETE ?wait=true → end event", "ms", [s.ms for s in hive]).compare(limit)
    answer = figure("hive: DELETE ?wait=true → its answer", "ms", [s.answer_ms for s in hive])
    teardown = figure("hive: of which teardown (its report)", "ms", [s.teardown_ms for s in hive])
    theirs = figure("supervisord stopProcess", "ms", [s.ms for s in peer]).compare(limit)
    per_round = figure(
        "hive / bare killpg, per round", "x", [h.ms / b.ms for h, b in zip(hive, bare, strict=True)]
    )
    if tree is TERM:
        ours.judge(
            f"p50 <= {P50_AIM:g} ms, p99 <= {P99_AIM:g} ms",
            ours.median <= P50_AIM and ours.p99 <= P99_AIM,
        )
        per_round.judge(f"<= {KILLPG_FACTOR:g}", per_round.median <= KILLPG_FACTOR)
    elif tree is IGNORE:
        aim = GRACE * 1000 + IGNORE_EPSILON
        ours.judge(f"p99 <= grace + {IGNORE_EPSILON:g} ms = {aim:g} ms", ours.p99 <= aim)
        ours.note = f"grace {GRACE:g} s; supervisord stopwaitsecs={SUPERVISOR_GRACE}"
    left = [
        figure("processes left when the hive sent end", "procs", [s.left for s in hive]),
        figure("processes left after killpg + wait", "procs", [s.left for s in bare]),
        figure("processes left when supervisord said stopped", "procs", [s.left for s in peer]),
        figure(
            f"processes left {SETTLE:g} s after supervisord said stopped",
            "procs",
            [s.left_later for s in peer],
        ),
    ]
    left[0].judge("0, always", max(left[0].samples) == 0)
    return [limit, ours, answer.compare(limit), teardown.compare(limit), per_round, theirs, *left]


async def measure(
    ctx: Context, client: HiveClient, supervisor: Supervisor, tree: Tree
) -> list[Figure]:
    hive: list[Sample] = []
    bare: list[Sample] = []
    peer: list[Sample] = []

    async def ours() -> None:
        await _wait_reaped({proc for sample in hive + bare + peer for proc in sample.procs})
        hive.append(await hive_cancel(client, tree))

    async def limit() -> None:
        bare.append(await bare_killpg(ctx, tree))

    async def theirs() -> None:
        peer.append(await supervisor_stop(supervisor, tree))

    repeats = ctx.repeats(tree.full_repeats, tree.quick_repeats)
    ctx.log(f"cancel: {tree.label}, {repeats} rounds")
    for i in range(repeats):
        await in_turn(i, ours, limit, theirs)
    return figures(tree, hive, bare, peer)


async def cancel(ctx: Context) -> list[Figure]:
    """50-process trees: hive DELETE → end vs bare killpg vs supervisord."""
    results: list[Figure] = []
    async with (
        running_hive(ctx.scratch("state"), grace=GRACE, max_parallel=4) as hive,
        hive.client() as client,
        supervisord(ctx) as supervisor,
    ):
        for tree in TREES:
            results += await measure(ctx, client, supervisor, tree)
    return results
