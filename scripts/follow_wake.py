"""How long a line takes from a job log's append to a live follower, in-process.

    .venv/bin/python scripts/follow_wake.py [INLINE_WRITE]

One ``JobLog`` on a real file, one follower task; 3,000 short lines 1 ms apart.
``INLINE_WRITE`` 0 hands every write to a worker thread; the default is the
code's (small batches written on the event loop). Prints p50 and p99 in µs.
Used for BENCHMARKS.md (2026-11-30), where the end-to-end latency bench was too
noisy to show a difference of this size.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import trio

import hive.joblog as joblog
from hivewire.protocol import Stream

LINES = 3000


async def main(inline: int) -> None:
    joblog.INLINE_WRITE = inline
    log = joblog.JobLog(Path(tempfile.mkdtemp()) / "a.log")
    latencies: list[float] = []
    arrived = trio.Event()
    at = 0.0

    async def follower() -> None:
        nonlocal at
        async for _ in log.follow(0):
            at = time.perf_counter()
            arrived.set()

    async with log.writing(), trio.open_nursery() as nursery:
        nursery.start_soon(follower)
        for i in range(LINES):
            start = time.perf_counter()
            log.append_output(Stream.STDOUT, b"tick %d some line of output\n" % i)
            await arrived.wait()
            arrived = trio.Event()
            latencies.append((at - start) * 1e6)
            await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    latencies.sort()
    p50, p99 = latencies[LINES // 2], latencies[int(LINES * 0.99)]
    print(f"INLINE_WRITE={inline}: p50 {p50:.0f} us, p99 {p99:.0f} us")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else joblog.INLINE_WRITE)
