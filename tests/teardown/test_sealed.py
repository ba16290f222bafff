"""Sealed jobs, tried as an attacker would: recipe code never runs as root, a
job is a PID namespace, a fork bomb hits the job's limit, and the report tells
the truth about a process whose main thread has exited.

Each test builds its own little catalog, so that a recipe can name a binary
compiled for the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from ..support import Hive, job_processes, running_hive
from .conftest import GRACE, NO_CGROUPS, NO_PIDNS, teardown_hive
from .tools import CGROUP2, Leftovers, cancel, hive_cgroup, submit, wait_until, watching

ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0, reason="a hive runs recipe code as another user only when it is root"
)

#: A child that calls setsid(), ignores SIGTERM, starts a thread and then
#: pthread_exit()s its main thread: /proc/PID/stat says Z while the other
#: thread runs on. The parent exits once the child is in that state.
ZOMBIE_LEADER_C = r"""
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
static int ready[2];
static void *run(void *arg) {
    (void)arg;
    write(ready[1], "x", 1);
    for (;;) pause();
    return 0;
}
int main(void) {
    char c;
    pipe(ready);
    if (fork() != 0) { close(ready[1]); return read(ready[0], &c, 1) == 1 ? 0 : 1; }
    close(ready[0]);
    setsid();
    signal(SIGTERM, SIG_IGN);
    printf("pid %d\n", getpid());
    fflush(stdout);
    pthread_t thread;
    pthread_create(&thread, 0, run, 0);
    pthread_exit(0);
}
"""


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory every user can read (the build user runs what is in it)."""
    path = Path(tempfile.mkdtemp(prefix="hive-sealed-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def recipe(catalog: Path, name: str, build: str) -> None:
    folder = catalog / name
    folder.mkdir(parents=True)
    body = textwrap.indent(textwrap.dedent(build).strip(), "\t")
    (folder / "PKGBUILD").write_text(
        f"pkgname={name}\npkgver=1\npkgrel=1\narch=(any)\nsource=()\nsha256sums=()\n\n"
        f"build() {{\n{body}\n}}\n\n"
        'package() {\n\tmkdir -p "$pkgdir"\n\techo hello > "$pkgdir/hello"\n}\n'
    )


@asynccontextmanager
async def hive_on(
    catalog: Path,
    state_dir: Path,
    leftovers: Leftovers,
    *,
    cgroups: bool = True,
    pidns: bool = True,
    extra: tuple[str, ...] = (),
) -> AsyncIterator[Hive]:
    env = {**({} if cgroups else NO_CGROUPS), **({} if pidns else NO_PIDNS)}
    async with running_hive(state_dir, catalog=catalog, grace=GRACE, extra=extra, env=env) as hive:
        if (cgroup := hive_cgroup(hive)) is not None:
            leftovers.cgroups.append(cgroup)
        async with hive.client() as client:
            layers = (await client.get("/v1/health")).json()["teardown_layers"]
        if pidns and "pid-namespace" not in layers:
            pytest.skip("this machine lets the hive make no PID namespace")
        if cgroups and "cgroup" not in layers:
            pytest.skip("no writable cgroup v2 hierarchy on this machine")
        assert pidns == ("pid-namespace" in layers), layers
        yield hive


def threads_alive(pid: int) -> bool:
    """Whether any thread of ``pid`` runs (the main thread's state is not enough)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                if f.read().rpartition(")")[2].split()[0] not in ("Z", "X"):
                    return True
        except OSError:
            continue
    return False


@ROOT_ONLY
async def test_a_root_hive_builds_as_the_build_user_and_installs_as_itself(
    tmp_path: Path, shared: Path, leftovers: Leftovers
) -> None:
    recipe(shared, "whoami", 'echo "uid $(id -u) gid $(id -g)"; touch "$srcdir/built"')
    async with hive_on(shared, tmp_path / "state", leftovers) as hive:
        job_id = leftovers.job(await submit(hive, "whoami"))
        async with watching(hive, job_id) as watch:
            end = await watch.ended()
    assert end["state"] == "succeeded", (end, watch.stdout)
    assert b"uid 65534 gid 65534" in watch.stdout  # nobody:nogroup, never root
    # Accounting from the job's cgroups, compared with what the kernel's own
    # cgroup files can hold: a positive CPU time, a peak of at least the
    # build's bash, and tasks (makepkg.sh, its subshells, id).
    usage = end["teardown"]["usage"]
    assert isinstance(usage["cpu_seconds"], float) and usage["cpu_seconds"] > 0, usage
    assert usage["memory_peak"] is None or usage["memory_peak"] > 1024 * 1024, usage
    assert usage["tasks_peak"] is None or usage["tasks_peak"] >= 2, usage
    [hello] = (tmp_path / "state" / "workers" / "whoami").glob("*/hello")
    # The installed worker is the hive's: a copy, not the build user's files.
    assert hello.stat().st_uid == os.geteuid()
    assert hello.parent.stat().st_uid == os.geteuid()
    assert hello.read_text() == "hello\n"


@ROOT_ONLY
@pytest.mark.parametrize(
    ("user", "message"),
    [("root", "the build user must not be root"), ("no-such-user-x", "no such user")],
)
async def test_a_build_user_that_cannot_be_is_refused(
    tmp_path: Path, shared: Path, user: str, message: str
) -> None:
    recipe(shared, "whoami", "true")
    argv = ["serve", "--bind", "127.0.0.1:0", "--state-dir", str(tmp_path / "state")]
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "hive", *argv, "--catalog", str(shared), "--build-user", user],
            capture_stderr=True,
            stdout=subprocess.DEVNULL,
            check=False,
        )
    stderr = done.stderr.decode()
    assert done.returncode == 2 and message in stderr, stderr
    assert "Traceback" not in stderr


@ROOT_ONLY
@pytest.mark.parametrize("pidns", [True, False], ids=["pidns", "no-pidns"])
async def test_leaving_the_cgroup_does_not_leave_the_job(
    tmp_path: Path, shared: Path, leftovers: Leftovers, pidns: bool
) -> None:
    """The attack of a root build: write your pid into the root cgroup's
    cgroup.procs, then `env -i setsid` a double-forked daemon. The build user
    may not write there; the test, as root, then moves the escapee out of the
    job's cgroup itself. Only the PID namespace still holds it."""
    recipe(
        shared,
        "escape",
        """
        cg=$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)
        (
            if echo $BASHPID 2>/dev/null > "$cg/cgroup.procs"; then
                echo "left the cgroup"
            else
                echo "cgroup escape refused"
            fi
            exec env -i setsid bash -c '(exec -a ESC sleep 300) & echo "pid $!"'
        ) &
        wait
        echo "escape ready"
        sleep 300
        """,
    )
    async with hive_on(shared, tmp_path / "state", leftovers, pidns=pidns) as hive:
        job_id = leftovers.job(await submit(hive, "escape"))
        async with watching(hive, job_id) as watch:
            [escapee] = await watch.ready(b"escape ready", 1)
            leftovers.add([escapee])
            assert b"cgroup escape refused" in watch.stdout
            # What a root build would have done: out of the job's cgroup.
            (CGROUP2 / "cgroup.procs").write_text(str(escapee.pid))
            status, job = await cancel(hive, job_id)
            survived = escapee.alive()
    assert status == 200 and job["state"] == "cancelled"
    report = job["teardown"]
    if pidns:
        assert not survived and report["namespace_empty"] is True
        assert report["left"] == 0 and report["verified"], report
    else:
        # Cleared environment, own session, orphaned, out of the cgroup: the
        # stated limit of a job without a namespace.
        assert survived
        assert any("no PID namespace" in limit for limit in report["limits"])


@pytest.mark.parametrize(
    ("cgroups", "pidns"),
    [(True, True), (False, False)],
    ids=["every-layer", "no-cgroup-no-pidns"],
)
async def test_a_process_whose_main_thread_exited_is_alive_until_killed(
    tmp_path: Path, shared: Path, leftovers: Leftovers, cgroups: bool, pidns: bool
) -> None:
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler")
    source = shared / "zombie_leader.c"
    source.write_text(ZOMBIE_LEADER_C)
    binary = shared / "zombie-leader"
    subprocess.run(["cc", "-O", "-pthread", "-o", binary, source], check=True)
    binary.chmod(0o755)
    recipe(shared, "zleader", f'"{binary}"\necho "zleader ready"\nsleep 300')
    async with hive_on(shared, tmp_path / "state", leftovers, cgroups=cgroups, pidns=pidns) as hive:
        job_id = leftovers.job(await submit(hive, "zleader"))
        async with watching(hive, job_id) as watch:
            [leader] = await watch.ready(b"zleader ready", 1)
            leftovers.add([leader])
            await wait_until(lambda: leader.zombie() and threads_alive(leader.pid))
            status, job = await cancel(hive, job_id)
            survived = threads_alive(leader.pid)
    assert status == 200 and job["state"] == "cancelled"
    assert not survived
    report = job["teardown"]
    assert report["left"] == 0 and report["errors"] == [] and report["verified"], report
    # It ignored SIGTERM, so it took SIGKILL: counted, not taken for dead.
    assert report["sigkill"] >= 1


@pytest.mark.parametrize("cgroups", [True, False], ids=["pids.max", "RLIMIT_NPROC"])
async def test_a_fork_bomb_stops_at_the_job_limit(
    tmp_path: Path, shared: Path, leftovers: Leftovers, cgroups: bool
) -> None:
    if not cgroups and os.geteuid() != 0:
        pytest.skip("RLIMIT_NPROC of a build user needs a root hive")
    limit = 48
    recipe(
        shared,
        "bomb",
        """
        bomb() { bomb | bomb & }
        bomb 2>/dev/null
        echo "bomb ready"
        sleep 300
        """,
    )
    counts: list[int] = []

    def crowded() -> bool:
        counts.append(len(job_processes(job_id)))
        return counts[-1] >= limit // 2

    async with hive_on(
        shared,
        tmp_path / "state",
        leftovers,
        cgroups=cgroups,
        extra=("--max-pids", str(limit)),
    ) as hive:
        job_id = leftovers.job(await submit(hive, "bomb"))
        async with watching(hive, job_id) as watch:
            await watch.ready(b"bomb ready", 0)
            await wait_until(crowded)
            for _ in range(20):  # it keeps trying: look a few more times
                counts.append(len(job_processes(job_id)))
            status, job = await cancel(hive, job_id)
    assert status == 200 and job["state"] == "cancelled"
    # The launcher (outside the namespace) and its init come on top of the limit
    # only in the RLIMIT_NPROC case, where they are not the build user's.
    assert max(counts) <= limit + 2, counts
    report = job["teardown"]
    assert report["left"] == 0 and report["verified"], report
    assert job_processes(job_id) == []
    if cgroups and report["usage"]["tasks_peak"] is not None:
        assert report["usage"]["tasks_peak"] <= limit


async def test_only_the_namespace_finds_an_env_cleared_orphan_without_cgroups(
    tmp_path: Path, leftovers: Leftovers
) -> None:
    """The stated limit of a job without cgroups (test_limits.py) is gone with
    a namespace: the orphan is in it, and dies with its init."""
    async with teardown_hive(tmp_path / "state", leftovers, cgroups=False, pidns=True) as hive:
        job_id = leftovers.job(await submit(hive, "envclear"))
        async with watching(hive, job_id) as watch:
            [escapee] = await watch.ready(b"envclear ready", 1)
            leftovers.add([escapee])
            status, job = await cancel(hive, job_id)
            survived = escapee.alive()
    assert status == 200 and job["state"] == "cancelled" and not survived
    report = job["teardown"]
    assert report["left"] == 0 and report["namespace_empty"] is True
    assert report["by_layer"]["pid-namespace"]["found"] >= 1


def test_the_job_init_runs_as_an_unprivileged_user_with_a_user_namespace(
    shared: Path,
) -> None:
    """What a hive that is not root does: a user namespace that maps only its
    own uid (never root), a PID namespace, and an init that outlives the
    command for its stragglers."""
    python = "/usr/bin/python3"
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None or not os.access(python, os.X_OK):
        pytest.skip("needs root (to become nobody), setpriv and /usr/bin/python3")
    jobinit = shared / "jobinit.py"
    shutil.copy(Path(__file__).parents[2] / "hive" / "jobinit.py", jobinit)
    jobinit.chmod(0o644)
    script = 'echo "$$ $(id -u) $(cat /proc/self/uid_map)"; exit 7'
    done = subprocess.run(
        [
            *(setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"),
            *(python, "-I", "-S", str(jobinit), "--user-namespace", "--", "sh", "-c", script),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 7, done.stderr
    pid, uid, *mapping = done.stdout.decode().split()
    # The command is PID 2 (the init is 1); not root inside, nor outside.
    assert pid == "2" and uid == "65534" and mapping == ["65534", "65534", "1"]
