"""Test support: a real `hive serve` on a real socket, a real `keeper`, and a
check that no process of a job is left behind."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import re
import signal
import ssl
import subprocess
import sys
import tarfile
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

from hive.cgroups import (
    find_cgroup2_mount,
    find_v1_mounts,
    own_cgroup,
    own_v1_dir,
    state_dir_tag,
)

ROOT = Path(__file__).resolve().parent.parent
TEST_RECIPES = Path(__file__).resolve().parent / "recipes"
READY = re.compile(r"ready on (https?://\S+)")

#: Generous bounds for a loaded 2-core CI machine; waits end on events, these
#: only keep a broken test from hanging.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0


def job_processes(job_id: str) -> list[int]:
    """Live (non-zombie) processes whose environment names ``job_id``."""
    needle = f"HIVE_JOB_ID={job_id}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{entry.name}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if needle in environ and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@dataclass
class Hive:
    """A running `hive serve` subprocess, and how to talk to it: its token
    (read from ``<state_dir>/token`` once it is ready) and, for a TLS hive, the
    CA file to trust (set ``cacert``)."""

    process: trio.Process
    url: str
    state_dir: Path
    log_lines: list[str] = field(default_factory=list)
    exited: trio.Event = field(default_factory=trio.Event)
    token: str = ""
    cacert: Path | None = None

    @property
    def log(self) -> str:
        return "\n".join(self.log_lines)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cacert)

    def client(self) -> httpx.AsyncClient:
        """An HTTP client that sends the token."""
        return httpx.AsyncClient(
            base_url=self.url, timeout=30, headers=self.auth_headers(), verify=self.ssl_context()
        )

    def ws_url(self, path: str) -> str:
        return self.url.replace("https://", "wss://").replace("http://", "ws://") + path

    def ws_headers(self) -> list[tuple[bytes, bytes]]:
        """``extra_headers`` for ``open_websocket_url``: the token."""
        return [(k.lower().encode(), v.encode()) for k, v in self.auth_headers().items()]

    def keeper_env(self) -> dict[str, str]:
        """The environment for a keeper talking to this hive (token, CA file)."""
        env = {**os.environ, "HIVE_STATE_DIR": str(self.state_dir)}
        env.pop("HIVE_TOKEN", None)
        if self.token:
            env["HIVE_TOKEN"] = self.token
        if self.cacert is not None:
            env["HIVE_CACERT"] = str(self.cacert)
        return env

    async def job_ids(self) -> list[str]:
        async with self.client() as client:
            response = await client.get("/v1/jobs")
            return [job["id"] for job in response.json()["jobs"]]

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.returncode is None:
            self.process.send_signal(sig)
        with trio.fail_after(STOP_TIMEOUT):
            return await self.process.wait()


#: The state dirs of the hives started by the running test: after it, none may
#: have left a cgroup (conftest's ``no_cgroup_left_behind``).
STATE_DIRS: set[Path] = set()


def cgroups_left(state_dir: Path) -> list[Path]:
    """The cgroup directories a hive on ``state_dir`` made that still exist:
    its parent in the v2 hierarchy and in each v1 one (they are this process's
    cgroups, as a test's hive is its child)."""
    name = f"hive-{state_dir_tag(state_dir)}"
    with open("/proc/self/mountinfo") as f, open("/proc/self/cgroup") as g:
        mountinfo, proc_cgroup = f.read(), g.read()
    dirs: list[Path] = []
    mount, own = find_cgroup2_mount(mountinfo), own_cgroup(proc_cgroup)
    if mount is not None and own is not None:
        dirs.append(mount / own.strip("/") / name)
    v1 = find_v1_mounts(mountinfo)
    for controller in v1:
        if (parent := own_v1_dir(v1, proc_cgroup, controller)) is not None:
            dirs.append(parent / name)
    return sorted({d for d in dirs if d.is_dir()})


async def _pump_lines(
    stream: trio.abc.ReceiveStream, lines: list[str], ready: trio.Event, found: list[str]
) -> None:
    buffer = b""
    async with stream:
        while chunk := await stream.receive_some(65536):
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace")
                lines.append(line)
                if not ready.is_set() and (match := READY.search(line)):
                    found.append(match.group(1))
                    ready.set()
    ready.set()  # EOF before ready: the caller sees no URL


@asynccontextmanager
async def running_hive(
    state_dir: Path,
    *,
    catalog: Path | str = TEST_RECIPES,
    grace: float = 1.0,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    bind: str = "127.0.0.1:0",
    wrapper: Sequence[str] = (),
) -> AsyncIterator[Hive]:
    """Start `hive serve` on a free port; stop it and check for leftovers after.

    ``env`` is added to the hive's environment; ``wrapper`` runs it and must exec
    it, so the pid stays the hive's (e.g. ``prlimit --nofile=128``, or
    ``nsenter --net=...`` for a network namespace); ``bind`` is its address."""
    argv = [
        *wrapper,
        sys.executable,
        "-m",
        "hive",
        "serve",
        "--bind",
        bind,
        "--state-dir",
        str(state_dir),
        "--catalog",
        str(catalog),
        "--grace",
        str(grace),
        *extra,
    ]
    process = await trio.lowlevel.open_process(
        argv,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    STATE_DIRS.add(state_dir)
    lines: list[str] = []
    ready = trio.Event()
    found: list[str] = []
    async with trio.open_nursery() as nursery:
        assert process.stderr is not None
        nursery.start_soon(_pump_lines, process.stderr, lines, ready, found)
        try:
            with trio.fail_after(START_TIMEOUT):
                await ready.wait()
            assert found, "hive exited before it was ready:\n" + "\n".join(lines)
            hive = Hive(process, found[0], state_dir, lines)
            hive.token = (state_dir / "token").read_text().strip()
            ids: list[str] = []
            try:
                yield hive
            finally:
                if process.returncode is None:
                    with trio.CancelScope(shield=True), trio.move_on_after(5):
                        ids = await hive.job_ids()
                    await hive.stop()
            left = {job_id: job_processes(job_id) for job_id in ids}
            assert not any(left.values()), f"processes left behind: {left}"
            assert "Traceback" not in hive.log, hive.log
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


@dataclass
class KeeperRun:
    returncode: int
    stdout: bytes
    stderr: str


async def keeper(
    hive: Hive, *args: str, timeout: float = 60.0, env: Mapping[str, str] | None = None
) -> KeeperRun:
    """Run `keeper --hive URL ARGS...` to completion, with the hive's token
    (or in ``env`` instead of :meth:`Hive.keeper_env`)."""
    return await keeper_at(
        hive.url, *args, timeout=timeout, env=hive.keeper_env() if env is None else env
    )


async def keeper_at(
    url: str, *args: str, env: Mapping[str, str], timeout: float = 60.0
) -> KeeperRun:
    """Run `keeper --hive URL ARGS...` in ``env`` to completion."""
    return await keeper_in(env, "--hive", url, *args, timeout=timeout)


async def keeper_in(env: Mapping[str, str], *args: str, timeout: float = 60.0) -> KeeperRun:
    """Run `keeper ARGS...` in ``env`` to completion (the hive as they or ``env`` say)."""
    with trio.fail_after(timeout):
        done = await trio.run_process(
            [sys.executable, "-m", "keeper", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
            env=env,
        )
    return KeeperRun(done.returncode, done.stdout, done.stderr.decode(errors="replace"))


class LineWatcher:
    """Collects a pipe's output and lets a test wait for a substring."""

    def __init__(self) -> None:
        self.data = b""
        self._grown = trio.Event()
        self.eof = False

    async def pump(self, stream: trio.abc.ReceiveStream) -> None:
        async with stream:
            while chunk := await stream.receive_some(65536):
                self.data += chunk
                self._grown.set()
                self._grown = trio.Event()
        self.eof = True
        self._grown.set()

    async def wait_for(self, needle: bytes, timeout: float = 30.0) -> None:
        with trio.fail_after(timeout):
            while needle not in self.data:
                assert not self.eof, f"EOF before {needle!r}; got {self.data[-2000:]!r}"
                await self._grown.wait()


@asynccontextmanager
async def keeper_process(
    hive: Hive, *args: str
) -> AsyncIterator[tuple[trio.Process, LineWatcher, LineWatcher]]:
    """A keeper of ``hive`` running in the background, its stdout and stderr watched."""
    async with keeper_running(
        "--hive", hive.url, *args, env=hive.keeper_env(), timeout=60
    ) as running:
        yield running


@asynccontextmanager
async def keeper_running(
    *args: str, env: Mapping[str, str], timeout: float
) -> AsyncIterator[tuple[trio.Process, LineWatcher, LineWatcher]]:
    """`keeper ARGS...` running in the background in ``env``, its stdout and stderr
    watched; it must exit within ``timeout`` s of the body's end."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "keeper", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    out, err = LineWatcher(), LineWatcher()
    try:
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None and process.stderr is not None
            nursery.start_soon(out.pump, process.stdout)
            nursery.start_soon(err.pump, process.stderr)
            yield process, out, err
            with trio.fail_after(timeout):
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# ------------------------------------------------------------ recipes, sources


def recipe(directory: Path, body: str, files: dict[str, bytes] | None = None) -> Path:
    """Write a recipe: PKGBUILD (dedented) plus local files."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in (files or {}).items():
        (directory / name).write_bytes(content)
    (directory / "PKGBUILD").write_text(textwrap.dedent(body))
    return directory


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tarball(files: dict[str, bytes]) -> bytes:
    """A .tar.gz holding ``files`` (name -> content)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1 (random port) from a thread; yields
    the base URL. The hive under test is another process, so a plain blocking
    server in a thread is the simplest real server."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def make_upstream_repo(repo: Path) -> str:
    """A git repo: VERSION=1 tagged v1, then VERSION=2 on main and 3 on 'next'.
    Returns the first commit."""
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "VERSION").write_text("1\n")
    git(repo, "add", "VERSION")
    git(repo, "commit", "-q", "-m", "one")
    git(repo, "tag", "v1")
    first = git(repo, "rev-parse", "HEAD")
    (repo / "VERSION").write_text("2\n")
    git(repo, "commit", "-q", "-am", "two")
    git(repo, "checkout", "-q", "-b", "next")
    (repo / "VERSION").write_text("3\n")
    git(repo, "commit", "-q", "-am", "three")
    git(repo, "checkout", "-q", "main")
    return first
