"""Which ended jobs to forget: keep the last N jobs, N days, N bytes of logs.

The policy (:meth:`Retention.expired`) is pure; the engine applies it in a
background task, deleting the records it chooses, and this module's I/O
(:func:`survey_logs`, :func:`remove_logs`, in worker threads) measures and
removes the log files.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import trio

from .logfile import log_path

DEFAULT_KEEP_JOBS = 1000
DEFAULT_KEEP_DAYS = 30.0
DEFAULT_KEEP_BYTES = 2 * 1024**3


@dataclass(frozen=True, slots=True)
class RetainedJob:
    id: str
    ended_at: datetime | None  # None while the job has not ended: never removed
    log_bytes: int


@dataclass(frozen=True)
class Retention:
    keep_jobs: int = DEFAULT_KEEP_JOBS
    keep_days: float = DEFAULT_KEEP_DAYS
    keep_bytes: int = DEFAULT_KEEP_BYTES

    def expired(self, jobs: Sequence[RetainedJob], now: datetime) -> list[str]:
        """Ids of the ended jobs to remove; ``jobs`` are oldest first.

        Jobs that have not ended are never removed, but they count towards the
        number of jobs and the bytes of logs. Beyond that, the oldest ended jobs
        go first, until every limit holds.
        """
        cutoff = now - timedelta(days=self.keep_days)
        doomed = {j.id for j in jobs if j.ended_at is not None and j.ended_at < cutoff}
        count = len(jobs) - len(doomed)
        size = sum(j.log_bytes for j in jobs if j.id not in doomed)
        for job in jobs:
            if count <= self.keep_jobs and size <= self.keep_bytes:
                break
            if job.ended_at is None or job.id in doomed:
                continue
            doomed.add(job.id)
            count -= 1
            size -= job.log_bytes
        return [j.id for j in jobs if j.id in doomed]


def parse_size(text: str) -> int:
    """``"2G"``, ``"500MiB"``, ``"1048576"`` → bytes (binary multiples)."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = 1
    for suffix, power in (("K", 1), ("M", 2), ("G", 3), ("T", 4)):
        if value.endswith(suffix):
            value, factor = value[:-1], 1024**power
            break
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (try 2G, 500M, or a number of bytes)") from None
    if number < 0 or not number < float("inf"):
        raise ValueError(f"not a size: {text!r}")
    return int(number * factor)


async def survey_logs(log_dir: Path, job_ids: Sequence[str]) -> tuple[list[str], list[int]]:
    """The names of the files in ``log_dir``, and the size of each job's log (0 if none)."""
    names = await trio.to_thread.run_sync(os.listdir, log_dir)
    sizes = await trio.to_thread.run_sync(_file_sizes, [log_path(log_dir, i) for i in job_ids])
    return names, sizes


async def remove_logs(
    log_dir: Path, names: Collection[str], *, doomed: Collection[str], known: Collection[str]
) -> None:
    """Remove the logs of the ``doomed`` jobs, and of the files among ``names``
    those that belong to no ``known`` job (left by a crash, or by an older hive)."""
    files = [log_path(log_dir, job_id) for job_id in doomed]
    files += [log_dir / name for name in names if name.split(".")[0] not in known]
    await trio.to_thread.run_sync(partial(_remove_files, files))


def _file_sizes(paths: list[Path]) -> list[int]:
    sizes = []
    for path in paths:
        try:
            sizes.append(path.stat().st_size)
        except FileNotFoundError:
            sizes.append(0)
    return sizes


def _remove_files(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
