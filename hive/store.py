"""Job records in SQLite: what the hive knows about its jobs across restarts.

One table, one row per job, in ``<state>/jobs.db`` (stdlib ``sqlite3``, WAL,
``synchronous=FULL``). The output itself is not here but in the job's log file
(:mod:`hive.logfile`); a record only remembers the log's ``last_seq``.

Every SQLite call runs in a worker thread, one at a time (a
``CapacityLimiter(1)`` guards the single connection), so the event loop never
waits for the disk. Writes are queued: :meth:`JobStore.put` is synchronous and
cheap, so the engine can record a state change from anywhere, and a writer
task commits whatever is queued in one transaction. :meth:`JobStore.save`
additionally waits until the record is committed — the engine does that when a
job ends.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio

log = logging.getLogger("hive.store")

T = TypeVar("T")

SCHEMA_VERSION = 1


class JobState(enum.StrEnum):
    """The states a job (and so its record) can be in."""

    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: The hive stopped (crash, kill -9, power loss) while the job was not final.
    INTERRUPTED = "interrupted"

    @property
    def final(self) -> bool:
        return self in (
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.INTERRUPTED,
        )


def now() -> str:
    """A record's timestamp: UTC, milliseconds, ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    worker TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    ended_at TEXT,
    exit_code INTEGER,
    error TEXT,
    pid INTEGER,
    grace REAL NOT NULL,
    cancel_requested_by TEXT,
    teardown TEXT,
    last_seq INTEGER NOT NULL,
    log_complete INTEGER NOT NULL
)
"""


@dataclass(frozen=True)
class JobRecord:
    """A job as stored: plain values, no live objects."""

    id: str
    operation: str
    worker: str
    state: str
    created_at: str
    started_at: str | None
    ended_at: str | None
    exit_code: int | None
    error: str | None
    pid: int | None
    grace: float
    cancel_requested_by: str | None
    teardown: dict[str, Any] | None
    last_seq: int
    #: The log file holds every event up to and including ``end``, synced.
    log_complete: bool


_COLUMNS = [f.name for f in fields(JobRecord)]
_UPSERT = (
    f"INSERT OR REPLACE INTO jobs ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM jobs ORDER BY created_at, rowid"


def _to_row(record: JobRecord) -> tuple[Any, ...]:
    row = list(astuple(record))
    row[_COLUMNS.index("teardown")] = (
        json.dumps(record.teardown) if record.teardown is not None else None
    )
    row[_COLUMNS.index("log_complete")] = int(record.log_complete)
    return tuple(row)


def _from_row(row: tuple[Any, ...]) -> JobRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["teardown"] = json.loads(values["teardown"]) if values["teardown"] else None
    values["log_complete"] = bool(values["log_complete"])
    return JobRecord(**values)


def _connect(path: Path) -> sqlite3.Connection:
    # Created 0600 here: SQLite gives its -wal and -shm files the database's mode.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"{path} has schema version {version}; this hive knows {SCHEMA_VERSION}"
            )
        conn.execute(_SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        conn.close()
        raise
    return conn


def _upsert(conn: sqlite3.Connection, records: list[JobRecord]) -> None:
    with conn:
        conn.execute("BEGIN")
        conn.executemany(_UPSERT, [_to_row(r) for r in records])


def _delete(conn: sqlite3.Connection, ids: list[str]) -> None:
    with conn:
        conn.execute("BEGIN")
        conn.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in ids])


def _load(conn: sqlite3.Connection) -> list[JobRecord]:
    return [_from_row(row) for row in conn.execute(_SELECT)]


class JobStore:
    """The job table. Open with ``async with JobStore.open(path) as store``."""

    def __init__(self, conn: sqlite3.Connection, queue: trio.MemorySendChannel[_Item]) -> None:
        self._conn = conn
        self._queue = queue
        self._limiter = trio.CapacityLimiter(1)
        #: The last error of a queued write (it is logged; the hive goes on).
        self.error: sqlite3.Error | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path) -> AsyncIterator[JobStore]:
        """Open (creating) the database; on the way out, commit what is queued."""
        conn = await trio.to_thread.run_sync(_connect, path)
        send, receive = trio.open_memory_channel[_Item](math.inf)
        store = cls(conn, send)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store._write_queued, receive)
                try:
                    yield store
                finally:
                    send.close()  # the writer commits what is left, then returns
        finally:
            with trio.CancelScope(shield=True):
                await store._run(conn.close)

    def put(self, record: JobRecord) -> None:
        """Queue ``record`` to be written (replacing the row of the same id)."""
        self._queue.send_nowait(record)

    async def save(self, *records: JobRecord) -> None:
        """Write ``records`` and wait until they (and all queued before) are committed."""
        for record in records:
            self.put(record)
        done = trio.Event()
        self._queue.send_nowait(done)
        await done.wait()

    async def load_all(self) -> list[JobRecord]:
        """Every job, oldest first."""
        return await self._run(partial(_load, self._conn))

    async def delete(self, ids: Iterable[str]) -> None:
        await self._run(partial(_delete, self._conn, list(ids)))

    async def _run(self, call: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def _write_queued(self, queue: trio.MemoryReceiveChannel[_Item]) -> None:
        async with queue:
            async for item in queue:
                batch = [item]
                while True:
                    try:
                        batch.append(queue.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                # The newest snapshot of each job wins; one transaction for all.
                records = {r.id: r for r in batch if isinstance(r, JobRecord)}
                if records:
                    try:
                        await self._run(partial(_upsert, self._conn, list(records.values())))
                    except sqlite3.Error as exc:
                        log.error("cannot save job records: %s", exc)
                        self.error = exc
                for waiter in batch:
                    if isinstance(waiter, trio.Event):
                        waiter.set()


_Item = JobRecord | trio.Event
