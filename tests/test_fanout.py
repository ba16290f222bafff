"""A crowd of followers on a real hive: each gets every byte once, in order,
batched by the follower budget (hive.api.pace), through the job's shared
encoding and its feed (hive.api.followers)."""

from __future__ import annotations

from pathlib import Path

import trio
from trio_websocket import open_websocket_url

from hive.api.pace import FREE_FOLLOWERS
from hivewire.protocol import ControlEvent, OutputChunk, ResumeCursor, Stream, decode_frame

from .support import Hive, recipe, running_hive
from .test_durable import get_log, submit

LINES = 40

#: Ten lines a second, a pause in which every follower has read everything and
#: waits for the job's next write, then more lines and an end on stderr.
TALKER = f"""\
pkgname=talker
pkgver=1
pkgrel=1
arch=(any)
build() {{
    for i in $(seq 1 {LINES // 2}); do echo "line $i of the talker"; sleep 0.1; done
    sleep 1.5
    for i in $(seq {LINES // 2 + 1} {LINES}); do echo "line $i of the talker"; sleep 0.1; done
    echo "done" >&2
}}
package() {{
    mkdir -p "$pkgdir"
}}
"""

CROWD = FREE_FOLLOWERS * 3

#: Messages a second for the whole crowd: each follower gets a turn every
#: CROWD / BUDGET = 0.48 s, about five of the job's lines.
BUDGET = 50


async def follow(
    hive: Hive, job_id: str, fmt: str, into: list[tuple[str, bytes, bytes, int]]
) -> None:
    url = hive.ws_url(f"/v1/jobs/{job_id}/stream?format={fmt}")
    cursor = ResumeCursor()
    out, err, outputs = b"", b"", 0
    async with open_websocket_url(url, extra_headers=hive.ws_headers()) as ws:
        while True:
            event = decode_frame(await ws.get_message())
            assert cursor.accept(event), event  # no gap, no repeat
            if isinstance(event, OutputChunk):
                outputs += 1
                if event.stream == Stream.STDOUT:
                    out += event.data
                else:
                    err += event.data
            elif isinstance(event, ControlEvent) and event.type == "end":
                break
    into.append((fmt, out, err, outputs))


async def test_a_crowd_gets_every_byte_batched(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    recipe(catalog / "talker", TALKER)
    async with running_hive(
        tmp_path / "state", catalog=catalog, extra=["--follower-messages", str(BUDGET)]
    ) as hive:
        job_id = await submit(hive, "talker")
        got: list[tuple[str, bytes, bytes, int]] = []
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for index in range(CROWD):
                    nursery.start_soon(follow, hive, job_id, "json" if index % 4 else "binary", got)
        stdout, stderr = await get_log(hive, job_id), await get_log(hive, job_id, "stderr")
    assert stdout.count(b"of the talker\n") == LINES
    assert len(got) == CROWD
    for _, out, err, _ in got:
        assert out == stdout and err == stderr
    # Binary followers get coalesced output: fewer messages than the job's
    # lines, because a crowd gets one batch a turn (JSON sends a message per
    # chunk however batched).
    binary = [outputs for fmt, _, _, outputs in got if fmt == "binary"]
    assert binary and max(binary) < LINES // 2, binary
