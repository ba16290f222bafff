"""One keeper command across three real hives (issue 16).

As root, each hive runs in a network namespace of its own, joined to the
test's namespace by a veth pair and bound to its own non-loopback address, as
separate machines are; otherwise the hives listen on three loopback ports.
Every namespace and link the test makes is removed in a ``finally``, and the
test checks that none is left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from .support import (
    TEST_RECIPES,
    Hive,
    LineWatcher,
    job_processes,
    keeper_in,
    keeper_running,
    recipe,
    running_hive,
)

NAMES = ("alpha", "beta", "gamma")

#: Namespaces and veth links are named after this test run (pid), so that two
#: runs on one machine never touch each other's.
TAG = f"kf{os.getpid() % 100000}"

ISOLATED = os.geteuid() == 0 and bool(shutil.which("ip")) and bool(shutil.which("nsenter"))


@dataclass
class Site:
    """Where one hive runs: a command that puts it in its namespace, its address."""

    wrapper: list[str] = field(default_factory=list)
    bind: str = "127.0.0.1:0"
    extra: list[str] = field(default_factory=list)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def leftovers() -> list[str]:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return [line for line in (namespaces + links).splitlines() if TAG in line]


@contextmanager
def sites(count: int) -> Iterator[list[Site]]:
    """``count`` places for a hive: network namespaces joined by veth pairs (as root),
    else loopback."""
    if not ISOLATED:
        yield [Site() for _ in range(count)]
        return
    namespaces: list[str] = []
    links: list[str] = []
    base = (os.getpid() % 60) * 4  # 10.77.{base+n}.0/30: distinct per run
    try:
        found = []
        for n in range(count):
            namespace, outside, inside = f"{TAG}n{n}", f"{TAG}o{n}", f"{TAG}i{n}"
            ip("netns", "add", namespace)
            namespaces.append(namespace)
            ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", namespace)
            links.append(outside)
            net = f"10.77.{base + n}"
            ip("addr", "add", f"{net}.1/30", "dev", outside)
            ip("link", "set", outside, "up")
            ip("-n", namespace, "addr", "add", f"{net}.2/30", "dev", inside)
            ip("-n", namespace, "link", "set", inside, "up")
            ip("-n", namespace, "link", "set", "lo", "up")
            found.append(
                Site(
                    wrapper=["nsenter", f"--net=/run/netns/{namespace}"],
                    bind=f"{net}.2:0",
                    extra=["--allow-remote"],
                )
            )
        yield found
    finally:
        for link in links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        for namespace in namespaces:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        assert not leftovers(), leftovers()


@dataclass
class Fleet:
    hives: dict[str, Hive]
    sites: dict[str, Site]
    config: Path
    catalog: Path

    def env(self) -> dict[str, str]:
        env = {**os.environ, "KEEPER_CONFIG": str(self.config)}
        for name in ("HIVE_URL", "HIVE_TOKEN", "HIVE_CACERT", "HIVE_STATE_DIR"):
            env.pop(name, None)
        return env


def write_recipes(catalog: Path, gate: Path) -> None:
    shutil.copytree(TEST_RECIPES / "tree", catalog / "tree")
    recipe(
        catalog / "lines",
        """\
        pkgname=lines
        pkgver=1
        pkgrel=1
        arch=(any)
        build() {
            seq -f "line %g: padding that makes chunks end in the middle of lines ....." 1 3000
            for i in $(seq 1 20); do echo "err $i" >&2; done
        }
        package() {
            mkdir -p "$pkgdir"
            printf 'the last line has no newline'
        }
        """,
    )
    recipe(
        catalog / "gated",
        f"""\
        pkgname=gated
        pkgver=1
        pkgrel=1
        arch=(any)
        build() {{
            echo "gated ready"
            while [ ! -e {gate} ]; do sleep 0.05; done
            seq -f "after the gate %g" 1 100
        }}
        package() {{
            mkdir -p "$pkgdir"
        }}
        """,
    )


@asynccontextmanager
async def fleet_of_three(tmp_path: Path, grace: float = 1.0) -> AsyncIterator[Fleet]:
    catalog = tmp_path / "catalog"
    write_recipes(catalog, tmp_path / "gate")
    with sites(len(NAMES)) as places:
        async with AsyncExitStack() as stack:
            hives: dict[str, Hive] = {}
            for name, site in zip(NAMES, places, strict=True):
                hives[name] = await stack.enter_async_context(
                    running_hive(
                        tmp_path / name,
                        catalog=catalog,
                        grace=grace,
                        bind=site.bind,
                        wrapper=site.wrapper,
                        extra=site.extra,
                    )
                )
            config = tmp_path / "config.toml"
            config.write_text(
                "".join(
                    f'[hives.{name}]\nurl = "{hive.url}"\ntoken = "{hive.token}"\n'
                    for name, hive in hives.items()
                )
            )
            yield Fleet(hives, dict(zip(NAMES, places, strict=True)), config, catalog)


def keeper_run(
    env: dict[str, str], *args: str
) -> AbstractAsyncContextManager[tuple[trio.Process, LineWatcher, LineWatcher]]:
    return keeper_running(*args, env=env, timeout=120)


@asynccontextmanager
async def ready_everywhere(
    fleet: Fleet, worker: str, *args: str, hives: str = "all"
) -> AsyncIterator[tuple[trio.Process, LineWatcher, LineWatcher]]:
    """`keeper --hive HIVES download WORKER --follow ARGS...`, once WORKER says it is
    ready on every hive of the fleet."""
    argv = ("--hive", hives, "download", worker, "--follow", *args)
    async with keeper_run(fleet.env(), *argv) as running:
        for name in NAMES:
            await running[1].wait_for(f"[{name}] {worker} ready".encode(), timeout=60)
        yield running


def job_ids(stderr: bytes, labels: list[str]) -> dict[str, str]:
    text = stderr.decode()
    found = {}
    for label in labels:
        match = re.search(rf"^\[{re.escape(label)}\] keeper: job ([0-9a-f]{{12}}): ", text, re.M)
        assert match, f"no job id for {label} in {text!r}"
        found[label] = match.group(1)
    return found


async def wait_for_processes(job_id: str, at_least: int) -> None:
    with trio.fail_after(30):
        while len(job_processes(job_id)) < at_least:
            await trio.sleep(0.02)


async def test_fan_out_install_keeps_every_line_whole_and_prefixed(tmp_path: Path) -> None:
    async with fleet_of_three(tmp_path) as fleet:
        gamma = fleet.hives["gamma"]
        # Two hives by name, one by URL (its token given on the command line).
        gamma_label = gamma.url.removeprefix("http://")
        targets = f"alpha,beta,{gamma.url}"
        async with keeper_run(
            fleet.env(), "--hive", targets, "--token", gamma.token, "download", "lines", "--follow"
        ) as (process, out, err):
            pass
        assert process.returncode == 0, err.data.decode()[-3000:]
        labels = ["alpha", "beta", gamma_label]
        ids = job_ids(err.data, labels)
        by_label: dict[str, list[bytes]] = {label: [] for label in labels}
        assert out.data.endswith(b"\n")
        for line in out.data.split(b"\n")[:-1]:
            label, _, rest = line.partition(b"] ")
            assert label.startswith(b"[") and label[1:].decode() in by_label, line
            by_label[label[1:].decode()].append(rest)
        for label, hive in zip(labels, fleet.hives.values(), strict=True):
            async with hive.client() as client:
                job_log = f"/v1/jobs/{ids[label]}/log"
                log = (await client.get(job_log)).content
                errors = (await client.get(job_log, params={"stream": "stderr"})).content
            # Every line of the job's stdout, whole, in order; its unfinished last
            # line ended with a newline by the keeper.
            assert log.endswith(b"\nthe last line has no newline"), label
            assert by_label[label] == log.split(b"\n"), label
            assert b"line 3000: " in log and b"err 20\n" in errors
        stderr = err.data.decode()
        for label in labels:
            assert f"[{label}] err 20\n" in stderr
            assert f"\n[{label}] the last line has no newline\n".encode() in out.data
            assert re.search(
                rf"^\[{re.escape(label)}\] keeper: job \w+ succeeded; .*\(exit 0\)$", stderr, re.M
            )
        # The jobs of all hives in one list, with a HIVE column; a job found by id alone.
        env = {**fleet.env(), "HIVE_TOKEN": gamma.token}
        listed = await keeper_in(env, "--hive", targets, "jobs", "--json")
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert sorted((row["hive"], row["id"]) for row in rows) == sorted(ids.items())
        table = await keeper_in(env, "--hive", targets, "jobs")
        assert table.stdout.decode().splitlines()[0].split()[:2] == ["HIVE", "JOB"]
        status = await keeper_in(env, "--hive", "all", "status", ids["beta"], "--json")
        assert json.loads(status.stdout)["hive"] == "beta"
        named = await keeper_in(env, "--hive", "all", "status", f"alpha:{ids['alpha']}")
        assert f"job:          {ids['alpha']}" in named.stdout.decode()
        missing = await keeper_in(env, "--hive", "all", "cancel", "0123456789ab")
        assert missing.returncode == 4
        assert "no job 0123456789ab on alpha, beta, gamma" in missing.stderr


async def test_one_ctrl_c_cancels_on_every_hive_and_waits_for_every_report(
    tmp_path: Path,
) -> None:
    async with fleet_of_three(tmp_path) as fleet:
        async with ready_everywhere(fleet, "tree") as (process, _out, err):
            ids = job_ids(err.data, list(NAMES))
            for job_id in ids.values():
                # bash driver + 2 x (bash, bash, sleep, sleep) + the TERM-ignoring loop
                await wait_for_processes(job_id, 8)
            process.send_signal(signal.SIGINT)
            with trio.fail_after(60):
                await process.wait()
            # The moment the keeper has exited, nothing of any job may be alive.
            assert {name: job_processes(job_id) for name, job_id in ids.items()} == {
                name: [] for name in NAMES
            }
        stderr = err.data.decode()
        assert process.returncode == 130, stderr[-3000:]
        assert "cancelling on 3 hives" in stderr
        for name, job_id in ids.items():
            assert re.search(
                rf"^\[{name}\] keeper: cancelled: job {job_id} cancelled; .*teardown: "
                r"\d+ process\(es\) found, .* 0 left, .*\(exit 130\)$",
                stderr,
                re.M,
            ), name
            async with fleet.hives[name].client() as client:
                job = (await client.get(f"/v1/jobs/{job_id}")).json()
            assert job["state"] == "cancelled" and job["teardown"]["left"] == 0


async def test_a_second_ctrl_c_stops_waiting_and_names_the_unconfirmed_hives(
    tmp_path: Path,
) -> None:
    # A grace of 5 s: the TERM-ignoring member of `tree` keeps every teardown
    # unconfirmed for that long, so the second Ctrl+C surely comes first.
    async with fleet_of_three(tmp_path, grace=5.0) as fleet:
        async with ready_everywhere(fleet, "tree") as (process, _out, err):
            process.send_signal(signal.SIGINT)
            for name in NAMES:
                await err.wait_for(f"[{name}] hive: sent SIGTERM".encode(), timeout=60)
            process.send_signal(signal.SIGINT)
            with trio.fail_after(30):
                await process.wait()
        stderr = err.data.decode()
        assert process.returncode == 124, stderr[-3000:]
        assert "stopped waiting; teardown not confirmed on alpha, beta, gamma" in stderr
        for name in NAMES:
            assert f"[{name}] keeper: teardown not confirmed: stopped waiting" in stderr
    # Leaving the hives waited for their teardowns and found nothing left.


async def test_a_hive_lost_mid_run_is_named_and_the_others_complete(tmp_path: Path) -> None:
    async with fleet_of_three(tmp_path) as fleet:
        # A fourth hive that is not there at all: named, and the others go on.
        hives = "alpha,beta,gamma,http://127.0.0.1:1"
        async with ready_everywhere(fleet, "gated", "--reconnect-for", "1", hives=hives) as (
            process,
            out,
            err,
        ):
            ids = job_ids(err.data, list(NAMES))
            beta = fleet.hives["beta"]
            beta.process.kill()
            await beta.process.wait()
            (tmp_path / "gate").touch()
        stderr = err.data.decode()
        assert process.returncode == 125, stderr[-3000:]
        assert re.search(r"^\[beta\] keeper: lost: .*gave up reconnecting", stderr, re.M)
        assert re.search(r"^\[127.0.0.1:1\] keeper: unreachable: cannot reach", stderr, re.M)
        for name in ("alpha", "gamma"):
            assert f"[{name}] after the gate 100\n".encode() in out.data
            assert re.search(rf"^\[{name}\] keeper: job \w+ succeeded; .*\(exit 0\)$", stderr, re.M)
        # What the killed hive left is killed by the next hive on its state dir.
        site = fleet.sites["beta"]
        async with running_hive(
            tmp_path / "beta",
            catalog=fleet.catalog,
            bind=site.bind,
            wrapper=site.wrapper,
            extra=site.extra,
        ) as again:
            async with again.client() as client:
                job = (await client.get(f"/v1/jobs/{ids['beta']}")).json()
            assert job["state"] == "interrupted"
        assert job_processes(ids["beta"]) == []


@pytest.mark.skipif(not ISOLATED, reason="network namespaces need root, ip and nsenter")
def test_no_namespace_or_link_of_this_run_is_left() -> None:
    assert leftovers() == []
