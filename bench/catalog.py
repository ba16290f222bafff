"""Catalog listing and install latency on a real hive.

    python -m bench.catalog [--recipes 40] [--rounds 20]

Starts `hive serve` on a throw-away catalog (the bundled recipes plus N
generated ones) and measures, over HTTP:

- ``GET /v1/catalog`` with a cold metadata cache (bash reads every PKGBUILD),
  then warm (cached by path, mtime, size), then after every PKGBUILD changed;
- installing the bundled ``hello`` (POST until the ``end`` event), rebuilt with
  ``force``, and the already-installed no-op.

Prints medians and p90s; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import trio
from trio_websocket import open_websocket_url

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "hive" / "recipes"
READY = re.compile(r"ready on (http://\S+)")

RECIPE = """\
pkgname={name}
pkgver=1.{i}
pkgrel=1
pkgdesc="generated worker {i}"
arch=(any)
depends=(sh)
makedepends=(make)
source=()
sha256sums=()
build() {{ :; }}
package() {{ mkdir -p "$pkgdir"; }}
"""


def make_catalog(directory: Path, count: int) -> None:
    shutil.copytree(BUNDLED, directory)
    for i in range(count):
        folder = directory / f"gen{i:03d}"
        folder.mkdir()
        (folder / "PKGBUILD").write_text(RECIPE.format(name=folder.name, i=i))


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"median {statistics.median(ordered) * 1000:8.1f} ms   p90 {p90 * 1000:8.1f} ms"


async def timed(action: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await action()
    return time.perf_counter() - start


async def install(client: httpx.AsyncClient, url: str, worker: str, force: bool) -> None:
    body = {"operation": "worker_download", "worker": worker, "force": force}
    job = (await client.post("/v1/jobs", json=body)).json()
    ws = url.replace("http://", "ws://") + f"/v1/jobs/{job['id']}/stream?format=json"
    async with open_websocket_url(ws) as stream:
        while True:
            event = json.loads(await stream.get_message())
            if event["type"] == "end":
                assert event["state"] == "succeeded", event
                await stream.aclose()
                return


async def measure(url: str, catalog: Path, rounds: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def listing() -> None:
            response = await client.get("/v1/catalog")
            response.raise_for_status()

        cold = await timed(listing)
        warm = [await timed(listing) for _ in range(rounds)]
        changed = []
        for _ in range(3):
            for pkgbuild in catalog.glob("*/PKGBUILD"):
                os.utime(pkgbuild, ns=(time.time_ns(), time.time_ns()))
            changed.append(await timed(listing))
        workers = len((await client.get("/v1/catalog")).json()["workers"])
        first = await timed(lambda: install(client, url, "hello", False))
        forced = [await timed(lambda: install(client, url, "hello", True)) for _ in range(5)]
        noop = [await timed(lambda: install(client, url, "hello", False)) for _ in range(rounds)]
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    print(f"GET /v1/catalog, {workers} workers")
    print(f"  cold cache (first listing)   {cold * 1000:8.1f} ms")
    print(f"  warm cache ({rounds} runs)         {summary(warm)}")
    print(f"  every PKGBUILD touched (3)   {summary(changed)}")
    print("install hello (POST -> end event)")
    print(f"  first install                {first * 1000:8.1f} ms")
    print(f"  --force rebuild (5)          {summary(forced)}")
    print(f"  already installed ({rounds})     {summary(noop)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", type=int, default=40, help="generated recipes to add")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hive-bench-") as temp:
        catalog = Path(temp) / "catalog"
        make_catalog(catalog, args.recipes)
        argv = [sys.executable, "-m", "hive", "serve", "--bind", "127.0.0.1:0"]
        argv += ["--state-dir", f"{temp}/state", "--catalog", str(catalog)]
        log = Path(temp) / "hive.log"
        with log.open("w") as sink:
            hive = subprocess.Popen(argv, cwd=ROOT, stderr=sink)
        try:
            deadline = time.monotonic() + 30
            while not (match := READY.search(log.read_text())):
                if hive.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("hive did not start:\n" + log.read_text())
                time.sleep(0.05)
            trio.run(measure, match.group(1), catalog, args.rounds)
        finally:
            hive.terminate()
            hive.wait(timeout=30)


if __name__ == "__main__":
    main()
