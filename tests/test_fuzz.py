"""Property-based fuzzing of the API against a real hive.

The invariant, whatever is sent: no 5xx, no hang (every answer within a
timeout), and the hive still healthy afterwards with nothing unexpected in its
log. Two fuzzers:

* schemathesis, driven by docs/openapi.yaml: valid and invalid requests for
  every operation, stateful sequences, and its conformance checks (status
  codes, content types, response schemas, auth enforced, 405 with Allow);
* hypothesis, with raw requests no schema describes: odd methods, paths, query
  strings, headers and bodies, websocket handshakes included.

The default run is small and quick; set ``HIVE_FUZZ_EXAMPLES`` for more
(schemathesis: per operation; hypothesis: 6x that in total) and
``HIVE_FUZZ_SEED`` for other examples than the fixed default ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import string
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from hive.catalog import bundled_catalog

from .api_table import SAMPLE_JOB_ID, SPEC_PATH
from .rawhttp import Answer, probe
from .support import Hive, running_hive

EXAMPLES = int(os.environ.get("HIVE_FUZZ_EXAMPLES", "50"))
SEED = int(os.environ.get("HIVE_FUZZ_SEED", "20261125"))
REQUEST_TIMEOUT = 10.0

#: GET /v1/catalog/refresh is the detail of a worker named "refresh" (GET
#: /v1/catalog/{name}), so the hive rightly lists GET in the Allow header of
#: that path; OpenAPI, where a concrete path hides a template, cannot say so.
SCHEMATHESIS_CONFIG = """
[[operations]]
include-path = "/v1/catalog/refresh"
checks.allow_header_conformance.enabled = false
"""


@asynccontextmanager
async def fuzz_hive(tmp_path: Path) -> AsyncIterator[Hive]:
    """A hive whose catalog holds only the quick ``hello`` recipe (the schema's example)."""
    catalog = tmp_path / "catalog"
    shutil.copytree(bundled_catalog() / "hello", catalog / "hello")
    async with running_hive(tmp_path / "state", catalog=catalog) as hive:
        yield hive
        async with hive.client() as client:
            health = await client.get("/v1/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert "internal error" not in hive.log and "Traceback" not in hive.log, hive.log[-3000:]
        assert "Error in ASGI Framework" not in hive.log


async def test_schemathesis_against_a_real_hive(tmp_path: Path) -> None:
    pytest.importorskip("schemathesis")
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    async with fuzz_hive(tmp_path) as hive:
        argv = [
            sys.executable,
            "-c",
            "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
            "--config-file",
            str(config),
            "run",
            str(SPEC_PATH),
            "--url",
            hive.url,
            "--header",
            f"Authorization: Bearer {hive.token}",
            "--exclude-path-regex",
            "^(/v1/jobs/[^/]+/stream|/v1/events)$",  # websockets: fuzzed below
            # Every check runs (the default; `--checks all` would also override
            # SCHEMATHESIS_CONFIG), but: DELETE cancels a job; the record stays
            # (it is not a deletion).
            "--exclude-checks",
            "use_after_free",
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            str(SEED),
            # One worker: with threads, CPython 3.11's ast.parse (used by hypothesis
            # to describe lambdas) fails now and then with a SystemError.
            "--workers",
            "1",
            "--request-timeout",
            str(REQUEST_TIMEOUT),
            "--no-color",
        ]
        with trio.fail_after(600):
            done = await trio.run_process(
                argv, capture_stdout=True, capture_stderr=True, check=False, cwd=tmp_path
            )
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    generated = re.search(r"(\d+) generated", output)
    print(f"schemathesis: {generated.group(0) if generated else '?'} test cases")
    assert done.returncode == 0, output[-6000:]
    assert generated and int(generated.group(1)) > 0, output[-2000:]


# -- hypothesis: raw requests ---------------------------------------------------------------

TEMPLATES = [
    "/v1/health",
    "/v1/jobs",
    "/v1/jobs/{}",
    "/v1/jobs/{}/stream",
    "/v1/jobs/{}/log",
    "/v1/events",
    "/v1/catalog",
    "/v1/catalog/{}",
    "/v1/catalog/refresh",
    "/v1/workers",
    "/v1/workers/{}",
    "/v1/session",
    "/ui/{}",
    "/{}",
    "/v1/{}",
    "/v1/jobs/{}/{}",
]
NASTY = ["..", ".", "%00", "%2f", "%2e%2e", "%0a", "%ff", "%", "//", "", "~"]
NASTY += [SAMPLE_JOB_ID, "hello"]  # a job id's shape; the fuzz catalog's one worker
QUERY_NAMES = ["wait", "since", "tail_lines", "format", "stream", "token", "x", ""]
QUERY_VALUES = ["true", "false", "0", "-1", "json", "binary", "latest", "stderr", "9" * 20]
URL_SAFE = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%/"


def encoded(text: str) -> str:
    return "".join(c if c in URL_SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


segments = st.one_of(st.sampled_from(NASTY), st.text(max_size=30).map(encoded))
paths = st.builds(
    lambda template, parts: template.format(*parts),
    st.sampled_from(TEMPLATES),
    st.lists(segments, min_size=2, max_size=2),
)
queries = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(QUERY_NAMES), st.text(max_size=10).map(encoded)),
        st.one_of(
            st.sampled_from(QUERY_VALUES),
            st.text(max_size=20).map(encoded),
        ),
    ),
    max_size=4,
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=60,
).map(str.strip)
headers = st.dictionaries(
    st.sampled_from(["Origin", "Content-Type", "Cookie", "X-Anything", "Accept", "Expect"]),
    header_values,
    max_size=3,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=2000),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries(
        {"operation": st.sampled_from(["worker_download", "x"]), "worker": json_values}
    ).map(lambda value: json.dumps(value).encode()),
)
methods = st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD", "WEBSOCKET"])


async def test_hypothesis_raw_requests(tmp_path: Path) -> None:
    """Random requests, with and without the token: never a 5xx, never a hang."""
    seen: list[int] = []
    async with fuzz_hive(tmp_path) as hive:
        token_headers = hive.auth_headers()

        @seed(SEED)
        @settings(
            max_examples=EXAMPLES * 6,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(
            method=methods,
            path=paths,
            query=queries,
            extra=headers,
            body=bodies,
            authenticated=st.booleans(),
        )
        def one_request(
            method: str,
            path: str,
            query: str,
            extra: dict[str, str],
            body: bytes,
            authenticated: bool,
        ) -> None:
            target = path + (f"?{query}" if query else "")
            sent = {**extra, **(token_headers if authenticated else {})}
            answer = trio.from_thread.run(fuzz_probe, hive.url, method, target, sent, body)
            seen.append(answer.status)
            assert answer.status < 500, (method, target, sent, body[:200], answer)

        await trio.to_thread.run_sync(one_request)
    print(f"hypothesis: {len(seen)} requests, statuses {sorted(set(seen))}")
    assert len(seen) >= EXAMPLES


async def fuzz_probe(
    url: str, method: str, target: str, headers: dict[str, str], body: bytes
) -> Answer:
    with trio.fail_after(REQUEST_TIMEOUT):
        return await probe(url, method, target, headers, b"" if method == "WEBSOCKET" else body)
