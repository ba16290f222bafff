"""Installing a worker version so that a crash at any instant leaves exactly one
complete version installed, with the manifest that belongs to it.

A worker lives in ``workers/NAME/``, which holds its installed version,
``VERSION-REL/``, with ``.hive-manifest.json`` naming the job that installed
it. An install by job J goes in three steps, each safe to be killed at:

1. **stage**: the built package is renamed (same filesystem) into
   ``workers/.swap-NAME-J/VERSION-REL/``, its manifest already inside. If the
   worker has no directory yet, an empty one is made (an empty directory is
   "nothing installed").
2. **commit**: one ``renameat2(RENAME_EXCHANGE)`` swaps ``workers/NAME`` and
   the swap directory. Before it, ``NAME`` is the old version; after it, the
   new one, and the swap directory holds the old. No instant has neither, or
   a half of either. (Renaming one directory over another needs the target
   gone first, which is the instant the previous code lost the worker in.)
3. **settle**, once the job's ``end`` event is in its log: if the job
   succeeded, the old version goes (renamed to a ``.trash-`` name, then
   deleted); if not, the exchange is undone first, so a job that did not
   succeed never leaves its version installed.

The swap directory is the journal: a hive that starts finds every
``.swap-NAME-J`` a dead predecessor left, knows whether step 2 happened from
the manifest now at ``workers/NAME`` (does it name J?), and settles it by the
outcome J's log records. So a kill before the job's end is in its log rolls
the install back, a kill after it finishes the install, and the worker's
manifest always names a job that succeeded.

What survives a kill of the hive is what the kernel did; for a machine crash
the directories and the manifest are fsynced at each step (the package's files
are not: a power loss between an install and the kernel's writeback can leave
their contents short).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import faults

MANIFEST = ".hive-manifest.json"
SWAP = ".swap-"
#: Directories on their way out; worker names never start with a dot.
TRASH = ".trash-"

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def exchange(a: Path, b: Path) -> None:
    """Swap two directory entries atomically (Linux ``renameat2``, 3.15+)."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE):
        code = ctypes.get_errno()
        raise OSError(
            code, f"{os.strerror(code)} (renameat2 RENAME_EXCHANGE)", str(a), None, str(b)
        )


@dataclass(frozen=True)
class Swap:
    """An install of worker ``name`` by job ``job_id`` under ``workers``."""

    workers: Path
    name: str
    job_id: str

    @property
    def path(self) -> Path:
        return self.workers / f"{SWAP}{self.name}-{self.job_id}"

    @property
    def target(self) -> Path:
        return self.workers / self.name

    def committed(self) -> bool:
        """Whether ``workers/NAME`` is this install's version (step 2 happened)."""
        return any(manifest_job(version) == self.job_id for version in _versions(self.target))

    @classmethod
    def parse(cls, path: Path) -> Swap | None:
        name, _, job_id = path.name.removeprefix(SWAP).rpartition("-")
        if not path.name.startswith(SWAP) or not name or not job_id:
            return None
        return cls(path.parent, name, job_id)


def manifest_job(version_dir: Path) -> str | None:
    try:
        job = json.loads((version_dir / MANIFEST).read_text()).get("job_id")
    except (OSError, ValueError, AttributeError):
        return None
    return job if isinstance(job, str) else None


def _versions(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())
    except FileNotFoundError:
        return []


def stage(workers: Path, name: str, version: str, package: Path, job_id: str) -> Swap:
    """Step 1: the package (with its manifest) into the swap directory."""
    swap = Swap(workers, name, job_id)
    workers.mkdir(parents=True, exist_ok=True)
    swap.path.mkdir()
    _fsync_file(package / MANIFEST)
    os.rename(package, swap.path / version)
    _fsync_dir(swap.path)
    swap.target.mkdir(exist_ok=True)  # nothing installed yet: something to exchange with
    _fsync_dir(workers)
    faults.point("install:staged")
    return swap


def commit(swap: Swap) -> list[str]:
    """Step 2: the one exchange; returns the versions it replaced (still on disk,
    in the swap directory, until :func:`settle`)."""
    exchange(swap.path, swap.target)
    faults.point("install:exchanged")
    _fsync_dir(swap.workers)
    return [p.name for p in _versions(swap.path)]


def settle(swap: Swap, succeeded: bool) -> str:
    """Step 3: keep the new version if the job succeeded, else roll back; the
    other one goes. Returns what was done ("finished", "rolled back", "discarded")."""
    faults.point("install:settling")
    committed = swap.committed()
    if committed and not succeeded:
        exchange(swap.path, swap.target)
        _fsync_dir(swap.workers)
        faults.point("install:rolled-back")
    _discard(swap.path)
    _rmdir_if_empty(swap.target)  # an empty worker directory: nothing is installed
    if committed:
        return "finished" if succeeded else "rolled back"
    return "discarded"


def recover(workers: Path, succeeded: Callable[[str], bool]) -> list[tuple[Swap, str]]:
    """Settle every install a dead hive left between steps 1 and 3, by whether
    its job's log records success; then delete what was on its way out."""
    if not workers.is_dir():
        return []
    settled = []
    for path in sorted(workers.glob(f"{SWAP}*")):
        swap = Swap.parse(path)
        if swap is not None:
            settled.append((swap, settle(swap, succeeded(swap.job_id))))
    for folder in workers.iterdir():
        if not folder.name.startswith(".") and folder.is_dir():
            _rmdir_if_empty(folder)  # made for a first install that never happened
    return settled


def trash_paths(workers: Path) -> list[Path]:
    """What is on its way out: deleted by :func:`recover`'s caller."""
    if not workers.is_dir():
        return []
    return [*workers.glob(f"{TRASH}*"), *workers.glob(f"*/{TRASH}*")]


def _discard(path: Path) -> None:
    if not path.exists():
        return
    trash = path.parent / f"{TRASH}{path.name.lstrip('.')}-{secrets.token_hex(4)}"
    os.rename(path, trash)
    faults.point("install:trashed")
    shutil.rmtree(trash, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
            raise
