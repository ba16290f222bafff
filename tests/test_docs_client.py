"""A third party's client (tests/docs_client.py: docs/api.md and the
``websockets`` library, nothing of this project) against a real hive:
byte-exact output in both formats, resumes, the resume edges, message sizes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from .support import ROOT, Hive, recipe, running_hive
from .test_durable import get_log, jobs_by_id, submit
from .test_end_to_end import ws_events

CLIENT = Path(__file__).resolve().parent / "docs_client.py"

#: What the docs promise no message exceeds; also ``websockets``' default limit.
MAX_MESSAGE = 1024 * 1024

MIXED = """\
pkgname=mixed
pkgver=1
pkgrel=1
arch=(any)
build() {
    for i in $(seq 1 20); do
        seq -f "line $i.%g: text for a third-party client" 1 500
        echo "err $i" >&2
        printf 'raw \\xff\\xfe\\x00 %d\\n' "$i"
        head -c 300000 /dev/zero
        printf '\\n'
        sleep 0.02
    done
}
package() {
    mkdir -p "$pkgdir"
}
"""


async def run_client(
    hive: Hive, job_id: str, tmp_path: Path, *args: str
) -> tuple[dict[str, Any], bytes, bytes]:
    out, err = tmp_path / "out", tmp_path / "err"
    base = hive.url.replace("http://", "ws://")
    with trio.fail_after(120):
        done = await trio.run_process(
            [sys.executable, str(CLIENT), base, job_id, hive.token, str(out), str(err), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
        )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout), out.read_bytes(), err.read_bytes()


@pytest.fixture
async def mixed_hive(tmp_path: Path) -> Any:
    catalog = tmp_path / "catalog"
    recipe(catalog / "mixed", MIXED)
    async with running_hive(tmp_path / "state", catalog=catalog) as hive:
        yield hive


@pytest.mark.parametrize("fmt", ["binary", "json"])
async def test_a_client_from_the_docs_gets_every_byte_through_cuts(
    mixed_hive: Hive, tmp_path: Path, fmt: str
) -> None:
    hive = mixed_hive
    job_id = await submit(hive, "mixed")
    result, out, err = await run_client(
        hive, job_id, tmp_path, "--format", fmt, "--cut-every", str(700_000)
    )
    assert result["end"]["state"] == "succeeded"
    assert result["connections"] > 5  # it was cut, and resumed, many times
    assert out == await get_log(hive, job_id)
    assert err == await get_log(hive, job_id, "stderr")
    assert b"\x00" * 300_000 in out and b"raw \xff\xfe\x00 20\n" in out
    assert result["largest"] <= MAX_MESSAGE
    assert result["last"] == (await jobs_by_id(hive))[job_id]["last_seq"]


async def test_the_docs_resume_edges_for_a_third_party_client(
    mixed_hive: Hive, tmp_path: Path
) -> None:
    hive = mixed_hive
    job_id = await submit(hive, "mixed")
    await ws_events(hive, job_id)
    last_seq = (await jobs_by_id(hive))[job_id]["last_seq"]
    # Resuming right after the end event: nothing to send, a normal close.
    result, out, err = await run_client(hive, job_id, tmp_path, "--since", str(last_seq))
    assert (result["code"], result["end"], out, err) == (1000, None, b"", b"")
    assert result["last"] == last_seq
    # Beyond it: 4400, and the reason names the job's last seq.
    result, out, _ = await run_client(hive, job_id, tmp_path, "--since", str(last_seq + 1))
    assert result["code"] == 4400 and out == b""
    assert result["reason"] == f"since {last_seq + 1} is beyond the job's last seq {last_seq}"
    # Resuming in the middle, in JSON: the rest, exactly.
    half = last_seq // 2
    result, out, _ = await run_client(
        hive, job_id, tmp_path, "--since", str(half), "--format", "json"
    )
    stdout = await get_log(hive, job_id)
    assert result["end"]["state"] == "succeeded" and out and stdout.endswith(out)
