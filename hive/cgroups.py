"""cgroup containment: one cgroup per job, killed and emptied as a whole,
limited (``pids.max``, optionally a memory limit) and measured (CPU seconds,
peak memory, peak task count).

A cgroup holds every process forked inside it, whatever it does to its
session, process group, parent or environment; ``cgroup.kill`` kills all of
them in one step, forks racing the kill included; ``cgroup.events`` says when
none is left. It needs a cgroup v2 hierarchy where the hive may create child
cgroups (root, or a delegated subtree), so it is detected at run time and the
hive falls back to the other layers where there is none.

Layout: ``<own cgroup>/hive-<hash of the state dir>/job-<job id>``. The parent
is named after the state dir so that the next hive on the same state dir finds
what its predecessor left there.

Limits and accounting use what the machine has, detected at run time: the
``pids`` and ``memory`` controllers of the v2 hierarchy when it has them (a
full v2 machine), else their cgroup v1 hierarchies (the hybrid layout of these
machines, where the v2 tree carries neither). The job's leader then enters one
cgroup per hierarchy; the v2 cgroup stays the one that finds and kills. CPU
time comes from the v2 cgroup's ``cpu.stat``, which every v2 cgroup has.

A job's leader must be in its cgroups before it can fork: it is started through
a tiny ``sh`` that writes its own pid into ``cgroup.procs`` and then ``exec``s
the real command (same pid, same process). A ``preexec_fn`` would do the same
in Python, but it is unsafe in a process with threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio

#: Set to 1 to run without cgroups even where they are available (tests of the
#: fallback, or an operator who manages cgroups otherwise).
DISABLE_VARIABLE = "HIVE_DISABLE_CGROUPS"

JOB_PREFIX = "job-"

#: $0 is the number of cgroup.procs files, then the files, then the command.
_ENTER_SCRIPT = (
    "n=$0; while [ $n -gt 0 ]; do "
    'echo $$ 2>/dev/null > "$1" || { echo "hive: cannot enter cgroup: $1" >&2; exit 125; }; '
    'n=$((n - 1)); shift; done; exec "$@"'
)

#: Default ``pids.max`` of a job (and ``RLIMIT_NPROC`` of its build where no
#: pids controller is writable): a parallel build of a big project uses a few
#: hundred; a fork bomb stops here instead of at the machine's limit.
DEFAULT_MAX_PIDS = 4096

PIDS = "pids"
MEMORY = "memory"

#: What the shell of :data:`_ENTER_SCRIPT` exports on its own (dash: PWD; bash:
#: SHLVL and _). The hive never passes these to a job.
_SHELL_VARIABLES = ("PWD", "OLDPWD", "SHLVL", "_")


def find_cgroup2_mount(mountinfo: str) -> Path | None:
    """The mount point of the cgroup v2 hierarchy, from ``/proc/self/mountinfo``."""
    for line in mountinfo.splitlines():
        fields, sep, rest = line.partition(" - ")
        if sep and rest.split()[:1] == ["cgroup2"]:
            mount_point = fields.split()[4]
            # mountinfo escapes space, tab, newline and backslash as octal.
            return Path(mount_point.encode().decode("unicode_escape"))
    return None


def own_cgroup(proc_cgroup: str) -> str | None:
    """This process's cgroup v2 path (``0::/path``), from ``/proc/self/cgroup``."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def cgroup_of(pid: int) -> str | None:
    """The cgroup v2 path of ``pid`` (zombies keep theirs), or None."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return own_cgroup(f.read())
    except (FileNotFoundError, ProcessLookupError):
        return None


def find_v1_mounts(mountinfo: str) -> dict[str, tuple[Path, str]]:
    """cgroup v1 hierarchies by controller: mount point and the mount's root."""
    found: dict[str, tuple[Path, str]] = {}
    for line in mountinfo.splitlines():
        fields, sep, rest = line.partition(" - ")
        parts = rest.split()
        if not sep or parts[:1] != ["cgroup"] or len(parts) < 3:
            continue
        mount_point = Path(fields.split()[4].encode().decode("unicode_escape"))
        for option in parts[2].split(","):
            found.setdefault(option, (mount_point, fields.split()[3]))
    return found


def own_v1_cgroup(proc_cgroup: str, controller: str) -> str | None:
    """This process's path in the v1 hierarchy of ``controller`` (``N:a,b:/path``)."""
    for line in proc_cgroup.splitlines():
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if controller in controllers.split(","):
            return path
    return None


def own_v1_dir(v1: dict[str, tuple[Path, str]], proc_cgroup: str, controller: str) -> Path | None:
    """This process's cgroup directory in the v1 hierarchy of ``controller``
    (``v1`` as :func:`find_v1_mounts` reads it), if it has one."""
    own = own_v1_cgroup(proc_cgroup, controller)
    if controller not in v1 or own is None:
        return None
    mount, root = v1[controller]
    relative = own if root == "/" else own.removeprefix(root)
    return mount / relative.strip("/")


@dataclass(frozen=True)
class Controller:
    """Where the hive's job cgroups for one resource live: ``parent`` is the
    hive's directory in that hierarchy (v1), or None for the v2 hierarchy."""

    name: str
    parent: Path | None = None


@dataclass(frozen=True)
class JobCgroup:
    """One job's cgroup directory, and its cgroups in v1 hierarchies (limits)."""

    path: Path
    #: Directories in cgroup v1 hierarchies, by controller name.
    v1: tuple[tuple[str, Path], ...] = ()
    max_pids: int | None = None
    max_memory: int | None = None

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def _dir(self, controller: str) -> Path:
        """The directory whose files ``controller`` has, for this job."""
        return dict(self.v1).get(controller, self.path)

    def enter_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv``, started so that it runs in these cgroups from its first instruction,
        with the environment it is given and nothing the shell adds (``env -u``)."""
        shell = shutil.which("sh") or "/bin/sh"
        env = shutil.which("env") or "/usr/bin/env"
        unset = [arg for name in _SHELL_VARIABLES for arg in ("-u", name)]
        files = [str(self.procs_file), *(str(path / "cgroup.procs") for _, path in self.v1)]
        return [shell, "-c", _ENTER_SCRIPT, str(len(files)), *files, env, *unset, *argv]

    def create(self) -> None:
        """Make the directories and set the limits (before any process enters)."""
        self.path.mkdir(exist_ok=True)
        for _, path in self.v1:
            path.mkdir(exist_ok=True)
        if self.max_pids is not None:
            (self._dir(PIDS) / "pids.max").write_text(str(self.max_pids))
        if self.max_memory is not None:
            memory = self._dir(MEMORY)
            name = "memory.limit_in_bytes" if dict(self.v1).get(MEMORY) else "memory.max"
            (memory / name).write_text(str(self.max_memory))

    def usage(self) -> dict[str, Any]:
        """CPU seconds, peak memory (bytes) and peak task count; None where unknown.
        Read after the teardown: the counters outlive the processes."""
        stat = _read_int_fields(self.path / "cpu.stat")
        cpu = stat.get("usage_usec")
        memory = self._dir(MEMORY)
        peak_memory = _read_int(memory / "memory.peak")
        if peak_memory is None:
            peak_memory = _read_int(memory / "memory.max_usage_in_bytes")
        return {
            "cpu_seconds": None if cpu is None else round(cpu / 1e6, 3),
            "memory_peak": peak_memory,
            "tasks_peak": _read_int(self._dir(PIDS) / "pids.peak"),
        }

    def pids(self) -> set[int]:
        try:
            return {int(line) for line in self.procs_file.read_text().split()}
        except FileNotFoundError:
            return set()

    def populated(self) -> bool:
        """Whether a live process is in the cgroup (zombies do not count)."""
        try:
            events = (self.path / "cgroup.events").read_text()
        except FileNotFoundError:
            return False
        return "populated 1" in events.splitlines()

    def kill(self) -> None:
        """SIGKILL everything in the cgroup, processes forked meanwhile included."""
        try:
            (self.path / "cgroup.kill").write_text("1")
            return
        except FileNotFoundError:
            if not self.path.is_dir():
                return
        # Kernels before 5.14 have no cgroup.kill: signal each member; the
        # caller re-scans until the cgroup is empty. A pid still listed after
        # its pidfd was opened names a member, recycled or not.
        pidfds: dict[int, int] = {}
        try:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    pidfds[pid] = os.pidfd_open(pid)
            still = self.pids()
            for pid, pidfd in pidfds.items():
                if pid in still:
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        finally:
            for pidfd in pidfds.values():
                os.close(pidfd)

    def remove(self) -> str | None:
        """Remove the (empty) cgroups; a one-line reason if that failed."""
        problems = []
        for path in (*(path for _, path in self.v1), self.path):
            try:
                path.rmdir()
            except FileNotFoundError:
                continue
            except OSError as exc:
                problems.append(f"cgroup {path} not removed: {exc.strerror}")
        return "; ".join(problems) or None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_int_fields(path: Path) -> dict[str, int]:
    try:
        text = path.read_text()
    except OSError:
        return {}
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if value.strip().isdigit():
            fields[name] = int(value)
    return fields


@dataclass(frozen=True)
class HiveCgroups:
    """The hive's parent cgroup, under which each job gets its own."""

    path: Path
    #: The same path as the kernel names it in ``/proc/PID/cgroup``.
    relative: str
    #: Where the pids and memory limits go (the v2 hierarchy or a v1 one).
    controllers: tuple[Controller, ...] = ()
    max_pids: int | None = None
    max_memory: int | None = None

    def has(self, controller: str) -> bool:
        return any(c.name == controller for c in self.controllers)

    def job(self, job_id: str) -> JobCgroup:
        """The cgroup for ``job_id`` (not yet created)."""
        name = f"{JOB_PREFIX}{job_id}"
        return JobCgroup(
            self.path / name,
            tuple((c.name, c.parent / name) for c in self.controllers if c.parent is not None),
            self.max_pids if self.has(PIDS) else None,
            self.max_memory if self.has(MEMORY) else None,
        )

    def jobs(self) -> dict[str, JobCgroup]:
        """The job cgroups that exist, by job id (what a previous hive may have
        left), in the v2 hierarchy or in any v1 one."""
        parents = [self.path, *(c.parent for c in self.controllers if c.parent is not None)]
        ids: set[str] = set()
        for parent in parents:
            with contextlib.suppress(FileNotFoundError):
                for entry in parent.iterdir():
                    if entry.is_dir() and entry.name.startswith(JOB_PREFIX):
                        ids.add(entry.name.removeprefix(JOB_PREFIX))
        return {job_id: self.job(job_id) for job_id in sorted(ids)}

    def holds(self, pid: int) -> bool:
        """Whether ``pid`` (zombies too) is in one of the job cgroups."""
        path = cgroup_of(pid)
        return path is not None and path.startswith(f"{self.relative}/{JOB_PREFIX}")

    def remove(self) -> None:
        """Remove the parent cgroups if no job cgroup is left in them."""
        for controller in self.controllers:
            if controller.parent is not None:
                with contextlib.suppress(OSError):
                    controller.parent.rmdir()
        with contextlib.suppress(OSError):
            self.path.rmdir()


def state_dir_tag(state_dir: Path) -> str:
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]


def _controllers(
    hive: HiveCgroups, mountinfo: str, proc_cgroup: str, wanted: Sequence[str]
) -> tuple[list[Controller], list[str]]:
    """Where each wanted controller can be had: the v2 hierarchy if it carries
    it (enabled for the hive's job cgroups), else its v1 hierarchy; with one
    note per controller for the start-up log."""
    found: list[Controller] = []
    notes: list[str] = []
    try:
        available = (hive.path / "cgroup.controllers").read_text().split()
    except OSError:
        available = []
    v1 = find_v1_mounts(mountinfo)
    for name in wanted:
        if name in available:
            try:
                (hive.path / "cgroup.subtree_control").write_text(f"+{name}")
            except OSError as exc:
                notes.append(f"{name}: cannot enable in {hive.path}: {exc.strerror}")
            else:
                found.append(Controller(name))
                notes.append(f"{name}: cgroup v2")
                continue
        own = own_v1_dir(v1, proc_cgroup, name)
        if own is None:
            notes.append(f"{name}: no controller")
            continue
        parent = own / hive.path.name
        try:
            parent.mkdir(exist_ok=True)
        except OSError as exc:
            notes.append(f"{name}: cannot create {parent}: {exc.strerror}")
            continue
        found.append(Controller(name, parent))
        notes.append(f"{name}: cgroup v1 at {parent}")
    return found, notes


async def detect(
    state_dir: Path, *, max_pids: int | None = None, max_memory: int | None = None
) -> tuple[HiveCgroups | None, str]:
    """Set up the hive's parent cgroup if the machine allows it.

    Returns the cgroups (or None) and one line that says what was found, for
    the start-up log. The check is a real one: a probe process is started in a
    probe cgroup the way jobs will be.
    """
    if os.environ.get(DISABLE_VARIABLE) == "1":
        return None, f"disabled by {DISABLE_VARIABLE}=1"
    with open("/proc/self/mountinfo") as f:
        mount = find_cgroup2_mount(f.read())
    if mount is None:
        return None, "no cgroup v2 hierarchy is mounted"
    with open("/proc/self/cgroup") as f:
        own = own_cgroup(f.read())
    if own is None:
        return None, "this process is in no cgroup v2 hierarchy"
    relative = f"{own.rstrip('/')}/hive-{state_dir_tag(state_dir)}"
    hive = HiveCgroups(mount / relative.lstrip("/"), relative)
    try:
        hive.path.mkdir(exist_ok=True)
    except OSError as exc:
        return None, f"cannot create {hive.path}: {exc.strerror}"
    with open("/proc/self/mountinfo") as f, open("/proc/self/cgroup") as g:
        wanted = [PIDS, MEMORY]  # memory also without a limit: its peak is worth reporting
        controllers, notes = _controllers(hive, f.read(), g.read(), wanted)
    hive = replace(hive, controllers=tuple(controllers), max_pids=max_pids, max_memory=max_memory)
    probe = JobCgroup(hive.path / f"probe-{os.getpid()}")
    try:
        probe.path.mkdir(exist_ok=True)
        entered = await trio.run_process(
            probe.enter_argv(["true"]),
            stdin=subprocess.DEVNULL,
            capture_stderr=True,
            check=False,
        )
    except OSError as exc:
        hive.remove()
        return None, f"cannot use {hive.path}: {exc.strerror}"
    finally:
        probe.remove()
    if entered.returncode != 0:
        hive.remove()
        return None, f"cannot move a process into a cgroup under {hive.path}"
    return hive, f"cgroup v2 at {hive.path} ({'; '.join(notes)})"
