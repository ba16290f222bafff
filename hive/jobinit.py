"""The first process of a job: it makes the job a PID namespace, and is its init.

Run as a script (``python -I -S jobinit.py [options] -- COMMAND...``), started by
the hive as a job's leader. It

1. ``unshare``s a new PID namespace and mount namespace (and, when the hive is
   not root, a user namespace that maps the hive's own uid and gid to
   themselves, which is what lets an unprivileged user make the other two);
2. forks the namespace's **init** (PID 1 inside, its own ``/proc`` mounted),
   and writes the init's pid (as the hive sees it) to ``--pid-fd``;
3. the init forks the **command**, which drops to the build user (a root hive
   passes ``--uid/--gid``; ``no_new_privs`` keeps set-uid programs from giving
   root back), gets ``RLIMIT_NPROC`` (``--nproc``) and the default signal
   dispositions, and is exec'd;
4. the init reaps every process of the namespace, reports the command's exit
   status to this process (which then exits with that very status, so the
   hive sees the command's exit as the leader's, as before), and stays until
   it has no child left: until every process of the namespace is gone.

Why the init outlives the command: the kernel kills every process of a PID
namespace with SIGKILL when its init exits. An init that exited with the
command would take the command's stragglers with it before the hive could
send them SIGTERM and give them the grace period; this one lets the hive tear
them down as it does any job, and then SIGKILL of the init (from outside: the
kernel drops every other signal an init has no handler for, and this one has
none) is the last word. The init is reaped only once the kernel has removed
every other process of the namespace, so an exited init is the kernel's proof
that nothing of the job is left.

Why this script, not util-linux ``unshare --pid --fork --kill-child``: that
init is the command itself, so the namespace ends (SIGKILL for everyone) the
moment the command exits, and the hive could no longer tear down stragglers
gently nor tell a signal death from an exit status; and from a trio-spawned
process it printed "sigprocmask unblock failed: Invalid argument" into every
job's stderr. Python 3.11 has no ``os.unshare``, so ``unshare(2)`` and
``mount(2)`` are called through ctypes. The script imports only the standard
library and runs with ``-I -S``: it costs one interpreter start per job, and
one small idle process per running job.

Exit status 125 and one line on stderr: the namespace could not be made.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import struct
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_NO_NEW_PRIVS = 38
PR_SET_NAME = 15

#: Exit status when the namespace cannot be made (as ``env``/``docker`` use 125).
CANNOT = 125

#: Signals Python sets to "ignore", which an exec'd program would inherit.
_IGNORED_BY_PYTHON = (signal.SIGPIPE, signal.SIGXFSZ)


def _fail(what: str, err: int) -> None:
    os.write(2, f"hive-jobinit: {what}: {os.strerror(err)}\n".encode())
    os._exit(CANNOT)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _parse(argv: list[str]) -> tuple[dict[str, int], bool, list[str]]:
    options: dict[str, int] = {}
    user_namespace = False
    i = 0
    while i < len(argv) and argv[i] != "--":
        name = argv[i]
        if name == "--user-namespace":
            user_namespace = True
            i += 1
            continue
        options[name.lstrip("-")] = int(argv[i + 1])
        i += 2
    return options, user_namespace, argv[i + 1 :]


def _exec_command(command: list[str], options: dict[str, int]) -> None:
    """In the command's process: drop what the build must not have, then exec."""
    for sig in _IGNORED_BY_PYTHON:
        signal.signal(sig, signal.SIG_DFL)
    try:
        if "nproc" in options:
            resource.setrlimit(resource.RLIMIT_NPROC, (options["nproc"], options["nproc"]))
        if "gid" in options:
            os.setgroups([])
            os.setgid(options["gid"])
        if "uid" in options:
            os.setuid(options["uid"])
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        _execvp(command)
    except OSError as exc:
        os.write(2, f"hive-jobinit: cannot run {command[0]}: {exc}\n".encode())
    os._exit(127)


def _execvp(command: list[str]) -> None:
    """``execvp`` without ``os.execvp``, which imports modules ``-S`` may lack."""
    if "/" in command[0]:
        os.execv(command[0], command)
    error: OSError = FileNotFoundError(2, "not found in PATH", command[0])
    for directory in os.environ.get("PATH", os.defpath).split(":"):
        try:
            os.execv(os.path.join(directory or ".", command[0]), command)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except PermissionError as exc:
            error = exc
    raise error


def _init(command: list[str], options: dict[str, int], status_fd: int) -> None:
    """PID 1 of the job's namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        _fail("cannot make the mount namespace private", ctypes.get_errno())
    if libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None) != 0:
        _fail("cannot mount /proc for the PID namespace", ctypes.get_errno())
    libc.prctl(PR_SET_NAME, b"hive-jobinit", 0, 0, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # an init ignores what it does not handle
    child = os.fork()
    if child == 0:
        os.close(status_fd)
        _exec_command(command, options)
    # The init holds no pipe of the job: a follower sees EOF when the job's
    # processes are gone, not when the init is.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)  # no child left: every process of the namespace is gone
        if pid == child:
            os.write(status_fd, struct.pack("=i", status))
            os.close(status_fd)


def _exit_like(status: int) -> None:
    """Exit as the command did: same exit code, or killed by the same signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # a signal that does not kill by default
    os._exit(os.WEXITSTATUS(status))


def main(argv: list[str]) -> None:
    options, user_namespace, command = _parse(argv)
    if not command:
        os.write(2, b"usage: jobinit.py [--pid-fd N] [--uid N --gid N] [--nproc N] -- CMD...\n")
        os._exit(2)
    pid_fd = options.pop("pid-fd", -1)
    if options.pop("namespace", 1) == 0:
        # The namespace layer is off: only drop privileges, in this very process.
        if pid_fd >= 0:
            os.close(pid_fd)
        _exec_command(command, options)
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWPID | CLONE_NEWNS | (CLONE_NEWUSER if user_namespace else 0)
    if libc.unshare(flags) != 0:
        _fail("cannot create a PID namespace", ctypes.get_errno())
    if user_namespace:
        try:
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{uid} {uid} 1")
            _write("/proc/self/gid_map", f"{gid} {gid} 1")
        except OSError as exc:
            _fail("cannot map the user namespace", exc.errno or 0)
    status_read, status_write = os.pipe()
    init = os.fork()
    if init == 0:
        os.close(status_read)
        if pid_fd >= 0:
            os.close(pid_fd)
        _init(command, options, status_write)
    os.close(status_write)
    if pid_fd >= 0:
        os.write(pid_fd, f"{init}\n".encode())
        os.close(pid_fd)
    # The command's status decides ours: SIGTERM for the job reaches the
    # command (and the init ignores it), so wait for what the command does.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    data = b""
    while len(data) < 4:
        chunk = os.read(status_read, 4 - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) == 4:
        _exit_like(struct.unpack("=i", data)[0])
    # The init died before the command did: SIGKILL from the hive.
    _exit_like(signal.SIGKILL)  # WIFSIGNALED for a raw status equal to the signal number


if __name__ == "__main__":
    main(sys.argv[1:])
