"""cgroup v2 containment: one cgroup per job, killed and emptied as a whole.

A cgroup holds every process forked inside it, whatever it does to its
session, process group, parent or environment; ``cgroup.kill`` kills all of
them in one step, forks racing the kill included; ``cgroup.events`` says when
none is left. It needs a cgroup v2 hierarchy where the hive may create child
cgroups (root, or a delegated subtree), so it is detected at run time and the
hive falls back to the other layers where there is none.

Layout: ``<own cgroup>/hive-<hash of the state dir>/job-<job id>``. The parent
is named after the state dir so that the next hive on the same state dir finds
what its predecessor left there.

A job's leader must be in its cgroup before it can fork: it is started through
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
from dataclasses import dataclass
from pathlib import Path

import trio

#: Set to 1 to run without cgroups even where they are available (tests of the
#: fallback, or an operator who manages cgroups otherwise).
DISABLE_VARIABLE = "HIVE_DISABLE_CGROUPS"

JOB_PREFIX = "job-"

#: $0 is the cgroup.procs file, "$@" the command.
_ENTER_SCRIPT = (
    'echo $$ 2>/dev/null > "$0" || { echo "hive: cannot enter cgroup: $0" >&2; exit 125; }; '
    'exec "$@"'
)

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


@dataclass(frozen=True)
class JobCgroup:
    """One job's cgroup directory."""

    path: Path

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def enter_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv``, started so that it runs in this cgroup from its first instruction,
        with the environment it is given and nothing the shell adds (``env -u``)."""
        shell = shutil.which("sh") or "/bin/sh"
        env = shutil.which("env") or "/usr/bin/env"
        unset = [arg for name in _SHELL_VARIABLES for arg in ("-u", name)]
        return [shell, "-c", _ENTER_SCRIPT, str(self.procs_file), env, *unset, *argv]

    def create(self) -> None:
        self.path.mkdir(exist_ok=True)

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
        """Remove the (empty) cgroup; a one-line reason if that failed."""
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"cgroup {self.path} not removed: {exc.strerror}"
        return None


@dataclass(frozen=True)
class HiveCgroups:
    """The hive's parent cgroup, under which each job gets its own."""

    path: Path
    #: The same path as the kernel names it in ``/proc/PID/cgroup``.
    relative: str

    def job(self, job_id: str) -> JobCgroup:
        """The cgroup for ``job_id`` (not yet created)."""
        return JobCgroup(self.path / f"{JOB_PREFIX}{job_id}")

    def jobs(self) -> dict[str, JobCgroup]:
        """The job cgroups that exist, by job id (what a previous hive may have left)."""
        found: dict[str, JobCgroup] = {}
        for entry in sorted(self.path.iterdir()):
            if entry.is_dir() and entry.name.startswith(JOB_PREFIX):
                found[entry.name.removeprefix(JOB_PREFIX)] = JobCgroup(entry)
        return found

    def holds(self, pid: int) -> bool:
        """Whether ``pid`` (zombies too) is in one of the job cgroups."""
        path = cgroup_of(pid)
        return path is not None and path.startswith(f"{self.relative}/{JOB_PREFIX}")

    def remove(self) -> None:
        """Remove the parent cgroup if no job cgroup is left in it."""
        with contextlib.suppress(OSError):
            self.path.rmdir()


def state_dir_tag(state_dir: Path) -> str:
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]


async def detect(state_dir: Path) -> tuple[HiveCgroups | None, str]:
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
    return hive, f"cgroup v2 at {hive.path}"
