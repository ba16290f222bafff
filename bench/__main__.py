"""``python -m bench [--quick] [NAME ...]``: run the benchmarks, write the report."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import trio

from . import cancel, events, fanout, idle, latency, scale, startup, stream
from .harness import Context, Figure
from .report import Run, write_results

Benchmark = Callable[[Context], Awaitable[list[Figure]]]

#: In the order they run; the names select them on the command line.
BENCHMARKS: dict[str, Benchmark] = {
    "bulk": stream.bulk,
    "lines": stream.lines,
    "cbuild": stream.cbuild,
    "latency": latency.latency,
    "cancel": cancel.cancel,
    "scale": scale.scale,
    "idle": idle.idle,
    "fanout": fanout.fanout,
    "events": events.events,
    "startup": startup.startup,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark hive + keeper against the limit and a peer, in one run. "
        "Writes bench/results/*.json; a run of every benchmark also writes BENCHMARKS.md.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions and shorter idle windows"
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    return args


def log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


async def run_all(names: list[str], quick: bool) -> Run:
    run = Run.start(argv=sys.argv[1:], quick=quick, names=names)
    with tempfile.TemporaryDirectory(prefix="hive-bench-") as tmp:
        ctx = Context(quick=quick, tmp=Path(tmp), log=log)
        for name in names:
            log(f"{name}: start")
            started = time.perf_counter()
            figures = await BENCHMARKS[name](ctx)
            run.add(name, figures, time.perf_counter() - started)
            log(f"{name}: done in {time.perf_counter() - started:.1f} s")
    run.finish()
    return run


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    names = args.names or list(BENCHMARKS)
    run = trio.run(partial(run_all, names, args.quick))
    for path in write_results(run, complete=names == list(BENCHMARKS)):
        log(f"wrote {path}")


if __name__ == "__main__":
    main()
