"""What recipe code runs inside: its environment, its user, its PID namespace.

A build is started through :mod:`hive.jobinit` (see there why a script of our
own and not util-linux ``unshare``), which makes the job a PID namespace and
runs the recipe's code as the build user. This module decides how: it builds
the command-line prefix and the environment, and probes at start-up whether
this machine lets the hive make namespaces at all.

- A hive running as root runs recipe code as an unprivileged **build user**
  (``--build-user``, default ``nobody``, which every Debian has), with
  ``no_new_privs``: recipe code never runs as root, as makepkg demands.
- A hive running as another user runs it as itself; a user namespace that maps
  only that uid (never root) is what allows the PID namespace there.
- ``RLIMIT_NPROC`` of the build bounds a fork bomb where no ``pids`` cgroup
  controller is writable.

Set :data:`DISABLE_VARIABLE` to 1 to run without the namespace layer (the
other teardown layers then do all the work; the build user still applies).

Imports only the standard library: ``bench/`` uses it to run a build the way
the hive does, without the engine.

:mod:`hive.sandbox` (the sealed reading of recipes) seals a command whose exit
ends its namespace (util-linux ``unshare``, the init exits with the command),
which is right for reading metadata; a build needs an init that outlives its
command (see :mod:`hive.jobinit`). What the two share lives here, once: who
runs recipe code (:class:`BuildUser`), when a user namespace is needed
(:func:`needs_user_namespace`), and how a probe of the machine is run and its
failure told (:func:`probe`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: The part of the hive's environment a build may see. Everything else (tokens,
#: the operator's credentials) stays out of job processes.
ENV_ALLOW = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TERM", "USER", "LOGNAME", "TMPDIR")

#: Set to 1 to run jobs without a PID namespace of their own.
DISABLE_VARIABLE = "HIVE_DISABLE_PIDNS"

#: Who runs recipe code when the hive is root: exists on a fresh Debian (65534).
DEFAULT_BUILD_USER = "nobody"

#: How long the start-up probe may take.
PROBE_TIMEOUT = 10.0

JOBINIT = Path(__file__).with_name("jobinit.py")


class BuildUserError(ValueError):
    """The build user cannot be used; ``str()`` says why, in one line."""


@dataclass(frozen=True)
class BuildUser:
    name: str
    uid: int
    gid: int

    @classmethod
    def lookup(cls, name: str) -> BuildUser:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise BuildUserError(f"no such user: {name!r} (--build-user)") from None
        if entry.pw_uid == 0 or entry.pw_gid == 0:
            raise BuildUserError(f"the build user must not be root: {name!r} (--build-user)")
        return cls(name, entry.pw_uid, entry.pw_gid)


def usable_by(path: Path, user: BuildUser) -> bool:
    """Whether ``user`` can reach and run ``path`` (by its permission bits: every
    directory on the way searchable, the file executable); a toolchain in
    root's home (``/root/.cargo/bin``) is not, for ``nobody``."""

    def allowed(mode: int, uid: int, gid: int, bit: int) -> bool:
        if uid == user.uid:
            return bool(mode & (bit << 6))
        if gid == user.gid:
            return bool(mode & (bit << 3))
        return bool(mode & bit)

    try:
        target = path.resolve(strict=True)
        for directory in reversed(target.parents):
            info = directory.stat()
            if not allowed(info.st_mode, info.st_uid, info.st_gid, 1):
                return False
        info = target.stat()
    except OSError:
        return False
    return allowed(info.st_mode, info.st_uid, info.st_gid, 1)


def which_for(user: BuildUser | None) -> Callable[[str], str | None]:
    """``shutil.which``, as ``user`` would find it (None: as the hive)."""
    if user is None:
        return shutil.which

    def which(command: str) -> str | None:
        # As the user's shell searches: a directory it cannot reach (a toolchain
        # in /root) is passed over, and the search goes on along PATH.
        for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
            found = shutil.which(command, path=directory)
            if found is not None and usable_by(Path(found), user):
                return found
        return None

    return which


def job_environment(user: BuildUser | None = None, home: Path | None = None) -> dict[str, str]:
    """The environment of a build: the allowed part of the hive's own; for a
    build user, its own name and ``home`` (the hive's HOME is not its to use)."""
    env = {name: os.environ[name] for name in ENV_ALLOW if name in os.environ}
    if user is not None:
        env["USER"] = env["LOGNAME"] = user.name
        if home is not None:
            env["HOME"] = str(home)
        env.pop("TMPDIR", None)
    return env


def needs_user_namespace() -> bool:
    """Whether a namespace needs a user namespace to be made: for a hive that
    is not root (one that maps only the hive's own uid, never host root)."""
    return os.geteuid() != 0


def probe(argv: Sequence[str], *, noise: Sequence[str] = ()) -> str | None:
    """Run ``argv``, a try of something this machine may refuse; None when it
    worked, else why not in one line: the last line of its stderr that
    contains none of ``noise``, or its exit status."""
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {Path(argv[0]).name}: {str(exc).splitlines()[0]}"
    if done.returncode == 0:
        return None
    lines = [
        line.strip()
        for line in done.stderr.decode(errors="replace").splitlines()
        if line.strip() and not any(text in line for text in noise)
    ]
    return lines[-1] if lines else f"{Path(argv[0]).name} exited {done.returncode}"


@dataclass(frozen=True)
class JobSandbox:
    """How this hive starts recipe code."""

    #: The PID namespace layer is on.
    namespace: bool = False
    #: Recipe code runs as this user (a root hive); None: as the hive itself.
    user: BuildUser | None = None
    #: ``RLIMIT_NPROC`` of the build (None: unchanged).
    nproc: int | None = None

    @property
    def user_namespace(self) -> bool:
        """A hive that is not root needs a user namespace to make a PID namespace."""
        return self.namespace and needs_user_namespace()

    def wrap(self, argv: list[str], *, pid_fd: int | None = None) -> list[str]:
        """``argv`` started through :mod:`hive.jobinit`; ``pid_fd`` (inherited
        by the child) receives the pid of the namespace's init."""
        if not self.namespace and self.user is None and self.nproc is None:
            return list(argv)
        options: list[str] = []
        if not self.namespace:
            options += ["--namespace", "0"]
        elif self.user_namespace:
            options.append("--user-namespace")
        if pid_fd is not None and self.namespace:
            options += ["--pid-fd", str(pid_fd)]
        if self.user is not None:
            options += ["--uid", str(self.user.uid), "--gid", str(self.user.gid)]
        if self.nproc is not None:
            options += ["--nproc", str(self.nproc)]
        return [sys.executable, "-I", "-S", str(JOBINIT), *options, "--", *argv]


def probe_namespace() -> tuple[bool, str]:
    """Whether this machine lets the hive make a job's PID namespace (a real
    one is made, with ``true`` as its command); and one line for the log."""
    if os.environ.get(DISABLE_VARIABLE) == "1":
        return False, f"disabled by {DISABLE_VARIABLE}=1"
    sandbox = JobSandbox(namespace=True)
    failure = probe(sandbox.wrap(["true"]))
    if failure is not None:
        return False, failure
    kind = "with a user namespace" if sandbox.user_namespace else "as root"
    return True, f"a PID namespace per job ({kind})"
