"""Readers of ``/proc``: the facts teardown judges by, and nothing else.

Everything here reads (``stat``, ``children``, ``environ``, ``task/``) and
parses; nothing signals, waits or decides. Policy — which processes belong to
a job, when a job is gone — lives in :mod:`hive.proctree`, which takes these
readers as arguments where tests need to replace them. This module imports
only the standard library, so that tools (``bench/``) and every layer of the
hive can use it without pulling in the engine.

Every reader returns None (or an empty result) for a process that is gone or
not ours, rather than raising: a process can exit between any two reads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")

#: The environment variable that marks a job's processes.
JOB_ID_VARIABLE = "HIVE_JOB_ID"


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` that teardown needs."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    start_time: int  # clock ticks since boot; with pid, names a process uniquely
    #: Live threads (``num_threads``): whether ``task/PID/children`` alone lists
    #: every child. Not part of the process's identity.
    threads: int = field(default=1, compare=False)

    @property
    def dead(self) -> bool:
        """Whether the process has exited and only waits to be reaped.

        The state is the main thread's: a process whose main thread called
        ``pthread_exit`` shows ``Z`` while its other threads run on. The kernel
        keeps such a leader (a zombie) in the thread count until the last
        thread exits, so a zombie that counts more than one thread is alive.
        """
        return self.state in ("Z", "X", "x") and self.threads <= 1


def parse_stat(text: str | bytes) -> ProcStat:
    """Parse the contents of ``/proc/PID/stat``.

    The command name is in parentheses and may itself contain spaces and
    parentheses (any bytes, not always UTF-8), so the fields are counted from
    the *last* ``)``. Bytes are parsed as they are: decoding costs as much as
    the rest of the parse, and teardown parses every member several times.
    """
    data = text.encode() if isinstance(text, str) else text
    head, _, tail = data.rpartition(b")")
    # fields[0] is field 3 of proc(5): state; ppid=4, pgrp=5, session=6,
    # num_threads=20, starttime=22
    fields = tail.split(None, 20)
    return ProcStat(
        int(head.split(b"(", 1)[0]),
        int(fields[1]),
        int(fields[2]),
        int(fields[3]),
        fields[0].decode(),
        int(fields[19]),
        int(fields[17]),
    )


def read_stat(pid: int) -> ProcStat | None:
    data = read_proc_file(f"/proc/{pid}/stat")
    return None if data is None else parse_stat(data)


def snapshot() -> dict[int, ProcStat]:
    """Every process on the machine, by pid."""
    procs: dict[int, ProcStat] = {}
    for entry in os.scandir(PROC):
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                procs[stat.pid] = stat
    return procs


def job_marker(job_id: str) -> bytes:
    """The ``NAME=value`` entry that a job's processes carry in their environment."""
    return f"{JOB_ID_VARIABLE}={job_id}".encode()


def environ_has(environ: bytes, marker: bytes) -> bool:
    """Whether a NUL-separated environment block contains ``marker`` as an entry."""
    return b"\0" + marker + b"\0" in b"\0" + environ + b"\0"


def marked_pids(pids: Iterable[int], marker: bytes) -> set[int]:
    """Those of ``pids`` whose environment carries ``marker``.

    Processes of another user cannot be read (unless we are root) and are
    skipped: we could not signal them either.
    """
    return {pid for pid in pids if has_marker(pid, marker)}


def has_marker(pid: int, marker: bytes) -> bool:
    """Whether the environment of ``pid`` carries ``marker`` (False if unreadable)."""
    environ = read_proc_file(f"/proc/{pid}/environ")
    if not environ and (stat := read_stat(pid)) is not None and stat.state == "Z":
        # A process whose main thread has exited has no environment of its own
        # to show (ESRCH): its live threads share it.
        environ = _threads_environ(pid)
    return environ is not None and environ_has(environ, marker)


def _threads_environ(pid: int) -> bytes | None:
    try:
        tids = [tid for tid in os.listdir(f"/proc/{pid}/task") if tid != str(pid)]
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
    for tid in tids:
        environ = read_proc_file(f"/proc/{pid}/task/{tid}/environ")
        if environ:
            return environ
    return None


def read_proc_file(path: str, size: int = 64 * 1024) -> bytes | None:
    """The contents of a /proc file, read ``size`` bytes at a time; None if it
    cannot be read (the process is gone, or not ours).

    ``os.open``/``os.read``: a Python file object costs as much again as the
    kernel's own work, and teardown reads a few files of every member.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
    try:
        chunks = [os.read(fd, size)]
        while len(chunks[-1]) == size:  # a large environment or many children
            chunks.append(os.read(fd, size))
    except (ProcessLookupError, PermissionError):
        return None
    finally:
        os.close(fd)
    return b"".join(chunks)


def parse_children(text: bytes) -> list[int]:
    """The pids listed in ``/proc/PID/task/TID/children``."""
    return [int(pid) for pid in text.split()]


#: Whether the kernel has ``/proc/PID/task/TID/children`` (CONFIG_PROC_CHILDREN).
HAS_CHILDREN_FILE = (PROC / str(os.getpid()) / "task" / str(os.getpid()) / "children").exists()


def children_of(pid: int, stat: ProcStat | None = None) -> list[int]:
    """The children of every thread of ``pid``.

    A child is listed under the thread that forked it (or, once that thread is
    gone, under another live thread), so a process with threads needs each
    thread's file. The main thread comes last: when a thread exits its
    children move to a live thread, in practice the main one, and reading that
    last means a child that moves while we read is still seen once.

    The kernel documents this list as exact only for a process that does not
    fork or reap while it is read (a child reaped mid-read can make it skip a
    sibling). Teardown therefore uses it to find members quickly, never to
    conclude that a job is gone: that verdict comes from a full scan
    (see :meth:`TreeKiller._phase`).
    """
    if stat is not None and stat.threads == 1 and not stat.dead:
        tids = [pid]  # one live thread, the main one: it has every child
    else:
        try:
            tids = sorted((int(tid) for tid in os.listdir(f"/proc/{pid}/task")), key=pid.__eq__)
        except (FileNotFoundError, ProcessLookupError):
            return []
    found: list[int] = []
    for tid in tids:
        data = read_proc_file(f"/proc/{pid}/task/{tid}/children", 4096)
        if data is not None:
            found += parse_children(data)
    return found


def own_children() -> list[int]:
    """The children of this process (every thread's)."""
    return children_of(os.getpid())


def pid_namespace(pid: int) -> int | None:
    """The inode of the PID namespace ``pid`` is in (None if it is gone or not ours).

    ``stat`` of ``/proc/PID/ns/pid`` needs no file descriptor, so it works
    even when the hive has none left.
    """
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
