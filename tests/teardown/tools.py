"""Tools for the adversarial teardown tests: submit, watch, look at /proc, clean up.

The checks here read ``/proc`` themselves rather than through the hive's code,
so that a bug in the hive's scanning cannot hide itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from hivewire.protocol import ControlEvent, OutputChunk, Stream, decode_frame

from ..support import Hive, job_processes

RECIPES = Path(__file__).resolve().parent / "recipes"
CGROUP2 = Path("/sys/fs/cgroup/unified")
PID_LINE = re.compile(rb"^pid (\d+)$", re.MULTILINE)


def stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state first), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


@dataclass(frozen=True)
class Proc:
    """A process named by pid and start time, so that a reused pid is not it."""

    pid: int
    start_time: int

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        fields = stat_fields(pid) if pid > 0 else None
        return cls(pid, int(fields[19])) if fields else None

    def _state(self) -> str | None:
        fields = stat_fields(self.pid)
        return fields[0] if fields is not None and int(fields[19]) == self.start_time else None

    def alive(self) -> bool:
        return self._state() not in (None, "Z")

    def zombie(self) -> bool:
        return self._state() == "Z"


def job_namespace(leader: int, job_id: str) -> int | None:
    """The PID namespace of a job, if it is not ours: that of the leader's
    children, or (once the leader is gone) of a process with the job's marker;
    None if the job has none."""
    ours = os.stat("/proc/self/ns/pid").st_ino
    paths = [f"/proc/{leader}/ns/pid_for_children"]
    paths += [f"/proc/{pid}/ns/pid" for pid in job_processes(job_id)]
    for path in paths:
        try:
            theirs = os.stat(path).st_ino
        except OSError:
            continue
        return None if theirs == ours else theirs
    return None


def host_pid(pid: int, namespace: int | None) -> int:
    """The pid, as we see it, of the process that calls itself ``pid`` inside
    ``namespace`` (a recipe prints the pids it sees); -1 if there is none."""
    if namespace is None:
        return pid
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/pid").st_ino != namespace:
                continue
            with open(f"/proc/{entry.name}/status") as f:
                status = f.read()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and int(line.split()[-1]) == pid:
                return int(entry.name)
    return -1


def all_stats() -> dict[int, list[str]]:
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := stat_fields(int(entry.name))):
            stats[int(entry.name)] = fields
    return stats


def session_processes(pgid: int) -> list[int]:
    """Live processes in process group or session ``pgid``."""
    return [
        pid
        for pid, f in all_stats().items()
        if f[0] != "Z" and (int(f[2]) == pgid or int(f[3]) == pgid)
    ]


def zombies(*, parent: int | None = None, session: int | None = None) -> list[int]:
    """Zombies that are children of ``parent`` or in session/group ``session``."""
    return [
        pid
        for pid, f in all_stats().items()
        if f[0] == "Z"
        and ((parent is not None and int(f[1]) == parent) or session in (int(f[2]), int(f[3])))
    ]


def v1_counterparts(hive_cgroup: Path) -> list[Path]:
    """The hive's parent cgroups in the v1 pids and memory hierarchies (same name)."""
    found = []
    cgroup = Path("/proc/self/cgroup").read_text()
    for controller in ("pids", "memory"):
        for line in cgroup.splitlines():
            _, names, path = line.split(":", 2)
            if controller in names.split(","):
                found.append(
                    Path("/sys/fs/cgroup") / controller / path.strip("/") / hive_cgroup.name
                )
    return found


def hive_cgroup(hive: Hive) -> Path | None:
    """The hive's parent cgroup directory (whether or not it exists)."""
    from hive.cgroups import own_cgroup, state_dir_tag

    try:
        own = own_cgroup(Path(f"/proc/{hive.process.pid}/cgroup").read_text())
    except FileNotFoundError:
        own = own_cgroup(Path("/proc/self/cgroup").read_text())
    if own is None:
        return None
    return CGROUP2 / own.strip("/") / f"hive-{state_dir_tag(hive.state_dir)}"


async def submit(hive: Hive, worker: str) -> dict[str, Any]:
    """Start a build of ``worker``: forced, since an earlier cycle that the
    cancel reached too late may have installed it (then a download is a no-op)."""
    async with hive.client() as client:
        response = await client.post(
            "/v1/jobs", json={"operation": "worker_download", "worker": worker, "force": True}
        )
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


async def cancel(hive: Hive, job_id: str) -> tuple[int, dict[str, Any]]:
    """DELETE ?wait=true: the answer comes once the teardown is verified."""
    async with hive.client() as client:
        response = await client.delete(f"/v1/jobs/{job_id}?wait=true")
    return response.status_code, response.json()


async def get_job(hive: Hive, job_id: str) -> dict[str, Any]:
    async with hive.client() as client:
        job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
    return job


async def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``check`` with a deadline (for facts about /proc, which sends no events)."""
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.02)


@dataclass
class Watch:
    """A live follower of one job's stream."""

    stdout: bytes = b""
    events: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    _changed: trio.Event = field(default_factory=trio.Event)
    _stop: trio.CancelScope = field(default_factory=trio.CancelScope)
    _job: tuple[Hive, str] | None = None

    async def run(self, hive: Hive, job_id: str) -> None:
        self._job = (hive, job_id)
        url = hive.ws_url(f"/v1/jobs/{job_id}/stream")
        with self._stop, contextlib.suppress(ConnectionClosed):
            async with open_websocket_url(url, extra_headers=hive.ws_headers()) as ws:
                while self.end is None:
                    self._take(decode_frame(await ws.get_message()))
        self._wake()

    def _take(self, event: OutputChunk | ControlEvent) -> None:
        if isinstance(event, OutputChunk):
            if event.stream == Stream.STDOUT:
                self.stdout += event.data
        else:
            self.events.append(event.body)
            if event.type == "end":
                self.end = event.body
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        with trio.fail_after(timeout):
            while not check():
                assert self.end is None, f"job ended before {what}: {self.end}\n{self.stdout!r}"
                await self._changed.wait()

    async def ready(self, marker: bytes, pids: int) -> list[Proc]:
        """Wait for ``marker`` and ``pids`` "pid N" lines; the processes they name."""
        await self.wait_for(
            lambda: marker in self.stdout and len(PID_LINE.findall(self.stdout)) >= pids,
            f"{marker!r} and {pids} pid line(s)",
        )
        namespace = None
        if self._job is not None:
            job = await get_job(*self._job)
            namespace = job_namespace(job["pgid"], job["id"]) if job["pgid"] else None
        found = [Proc.of(host_pid(int(pid), namespace)) for pid in PID_LINE.findall(self.stdout)]
        return [proc for proc in found if proc is not None]

    def cancel(self) -> None:
        """Stop following (the job goes on)."""
        self._stop.cancel()

    async def ended(self, timeout: float = 30.0) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while self.end is None:
                await self._changed.wait()
        assert self.end is not None
        return self.end

    def messages(self) -> list[str]:
        return [e["text"] for e in self.events if e.get("type") == "message"]


@contextlib.asynccontextmanager
async def watching(hive: Hive, job_id: str) -> AsyncIterator[Watch]:
    """Follow the job while the block runs; after it, wait for the ``end`` event."""
    watch = Watch()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.run, hive, job_id)
        try:
            yield watch
            if not watch._stop.cancel_called:
                await watch.ended()
        finally:
            nursery.cancel_scope.cancel()


def _events(cgroup: Path) -> str:
    try:
        return (cgroup / "cgroup.events").read_text()
    except FileNotFoundError:
        return "populated 0"


@dataclass
class Leftovers:
    """Whatever a test's jobs may leave behind, killed after the test even if it failed."""

    job_ids: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    cgroups: list[Path] = field(default_factory=list)

    def job(self, job: dict[str, Any]) -> str:
        self.job_ids.append(job["id"])
        return str(job["id"])

    def add(self, procs: Iterable[Proc]) -> None:
        self.procs.extend(procs)

    async def cleanup(self) -> list[int]:
        """SIGKILL every survivor; remove leftover cgroups; the pids that were killed."""
        survivors = {proc.pid for proc in self.procs if proc.alive()}
        for job_id in self.job_ids:
            survivors.update(job_processes(job_id))
        for pid in survivors:
            with contextlib.suppress(ProcessLookupError):
                pidfd = os.pidfd_open(pid)
                try:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    # Until it is dead, the v1 cgroups it is in cannot be removed.
                    with trio.fail_after(20):
                        await trio.lowlevel.wait_readable(pidfd)
                finally:
                    os.close(pidfd)
        for path in self.cgroups:
            for v1 in v1_counterparts(path):  # pids and memory limits (the processes are dead)
                for child in [*v1.glob("job-*"), v1]:
                    await wait_until(lambda c=child: _removed(c))
            if path.is_dir():
                for child in path.glob("job-*"):
                    with contextlib.suppress(OSError):
                        (child / "cgroup.kill").write_text("1")
                    await wait_until(lambda c=child: "populated 0" in _events(c))
                    with contextlib.suppress(OSError):
                        child.rmdir()
                with contextlib.suppress(OSError):
                    path.rmdir()
        return sorted(survivors)


def _removed(cgroup: Path) -> bool:
    """Remove an empty cgroup: whether it is gone (a dead member may take a
    moment to leave a v1 hierarchy)."""
    try:
        cgroup.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
