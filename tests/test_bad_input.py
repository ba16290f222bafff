"""Garbage in, a clear 4xx out, and the hive keeps serving.

One table of bad requests covers every endpoint of docs/openapi.yaml (which
test_security checks against the app's routes). Each refusal must be JSON
``{"error", "message"}`` with a one-line message, logged exactly once. Then:
requests that break HTTP itself, websocket abuse, idle and half-open
connections, and bad keeper arguments.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
from dataclasses import dataclass, field
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request, TextMessage

from hive.api import MAX_BODY
from hive.api.errors import MAX_MESSAGE

from .api_table import SAMPLE_JOB_ID, operations
from .rawhttp import Answer, AnswerReader, address, probe, read_answer
from .support import Hive, keeper, running_hive
from .teardown.tools import hive_cgroup

JOBS = "/v1/jobs"
JOB = f"/v1/jobs/{SAMPLE_JOB_ID}"
STREAM = f"/v1/jobs/{SAMPLE_JOB_ID}/stream"
LOG = f"/v1/jobs/{SAMPLE_JOB_ID}/log"
CATALOG = "/v1/catalog"
REFRESH = "/v1/catalog/refresh"
WORKERS = "/v1/workers"
EVENTS = "/v1/events"

#: Worker names that must never become paths (nor reach a shell), as URL path segments.
BAD_NAME_SEGMENTS = ("..", "CHATTY", ".hidden", "-rf", "ch%20atty", "chatty%0a", "%00", "a" * 128)


def submit(body: object) -> bytes:
    return json.dumps(body).encode()


def worker(name: object) -> bytes:
    return submit({"operation": "worker_download", "worker": name})


@dataclass(frozen=True)
class Case:
    """A bad request and the refusal it must get (``template`` = the endpoint)."""

    template: str
    method: str
    target: str
    status: int
    error: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.method} {self.target[:60]!r} {self.body[:40]!r}"


def cases() -> list[Case]:
    health, session = "/v1/health", "/v1/session"
    stream_t, job_t = "/v1/jobs/{job_id}/stream", "/v1/jobs/{job_id}"
    log_t, entry_t, worker_t = "/v1/jobs/{job_id}/log", "/v1/catalog/{name}", "/v1/workers/{name}"
    table = [
        # GET /v1/health
        Case(health, "GET", "/v1/health?verbose=1", 400, "bad_query"),
        Case(health, "GET", "/v1/health?=", 400, "bad_query"),
        Case(health, "GET", "/v1/health?%00=%00", 400, "bad_query"),
        Case(health, "PUT", "/v1/health", 405, "method_not_allowed"),
        # GET /v1/jobs
        Case(JOBS, "GET", "/v1/jobs?state=running", 400, "bad_query"),
        Case(JOBS, "GET", "/v1/jobs?" + "a=1&" * 500, 400, "bad_query"),
        Case(JOBS, "PATCH", JOBS, 405, "method_not_allowed"),
        # POST /v1/jobs: the body
        Case(JOBS, "POST", JOBS, 400, "bad_request"),
        Case(JOBS, "POST", JOBS, 400, "bad_request", b"not json"),
        Case(JOBS, "POST", JOBS, 400, "bad_request", b"\xff\xfe\xfd garbage"),
        Case(JOBS, "POST", JOBS, 400, "bad_request", b"[]"),
        Case(JOBS, "POST", JOBS, 400, "bad_request", b"null"),
        Case(JOBS, "POST", JOBS, 400, "bad_request", b'"worker_download"'),
        Case(JOBS, "POST", JOBS, 400, "bad_request", b"{}"),
        Case(JOBS, "POST", JOBS, 400, "bad_request", b'{"operation": "worker_download"'),
        Case(JOBS, "POST", JOBS, 400, "bad_request", b"[" * 60000),
        Case(JOBS, "POST", JOBS, 400, "bad_request", b'{"operation": ' + b"9" * 5000 + b"}"),
        Case(JOBS, "POST", JOBS, 400, "bad_request", b'{"operation": NaN}'),
        Case(JOBS, "POST", JOBS, 400, "bad_request", submit({"operation": "worker_download"})),
        Case(JOBS, "POST", JOBS, 400, "bad_request", submit({"worker": "chatty"})),
        Case(
            JOBS, "POST", JOBS, 400, "bad_request", submit({"operation": "rm -rf /", "worker": "x"})
        ),
        Case(JOBS, "POST", JOBS, 400, "bad_request", submit({"operation": ["worker_download"]})),
        Case(
            JOBS,
            "POST",
            JOBS,
            400,
            "bad_request",
            submit({"operation": "worker_download", "worker": "chatty", "extra": 1}),
        ),
        Case(JOBS, "POST", JOBS, 400, "bad_request", submit({"__proto__": {}, "worker": "x"})),
        # POST /v1/jobs: wrong types
        *[
            Case(JOBS, "POST", JOBS, 400, "bad_request", worker(value))
            for value in (123, None, True, 1.5, ["chatty"], {"name": "chatty"})
        ],
        # POST /v1/jobs: worker names that must never become paths
        *[
            Case(JOBS, "POST", JOBS, 400, "bad_worker_name", worker(name))
            for name in (
                "",
                "..",
                "../etc",
                "../../../../etc/passwd",
                "/etc/passwd",
                "chatty/../chatty",
                "chatty/",
                "a\0b",
                "chatty\n",
                "chatty\x00",
                "ch atty",
                "CHATTY",
                ".hidden",
                "-rf",
                "çhatty",
                "chatty;rm -rf ~",
                "$(reboot)",
                "a" * 128,
                "a" * 60000,
            )
        ],
        Case(JOBS, "POST", JOBS, 404, "unknown_worker", worker("no-such-worker")),
        Case(JOBS, "POST", JOBS, 413, "request_entity_too_large", b" " * (MAX_BODY + 1)),
        Case(JOBS, "POST", JOBS + "?wait=true", 400, "bad_query", worker("chatty")),
        # POST /v1/jobs: a body that does not say it is JSON
        *[
            Case(
                JOBS,
                "POST",
                JOBS,
                415,
                "unsupported_media_type",
                worker("chatty"),
                {"Content-Type": kind},
            )
            for kind in ("text/plain", "application/x-www-form-urlencoded", "", "application/jsonx")
        ],
        # POST /v1/jobs: the install flags are booleans
        *[
            Case(JOBS, "POST", JOBS, 400, "bad_request", submit({**install, flag: value}))
            for install in [{"operation": "worker_download", "worker": "chatty"}]
            for flag in ("force", "skip_check")
            for value in ("true", 1, None, [True])
        ],
        # GET /v1/jobs/{job_id}
        *[
            Case(job_t, "GET", f"/v1/jobs/{job_id}", 400, "bad_job_id")
            for job_id in (
                "nope",
                "0123456789AB",
                "0123456789abc",
                "0123456789a",
                "%00",
                "%2e%2e",
                "%0a",
                "f" * 10000,
                "%C3%BC" * 12,
                "0123456789ab%00",
            )
        ],
        Case(job_t, "GET", "/v1/jobs/..%2F..%2Fetc%2Fpasswd", 404, "not_found"),
        Case(job_t, "GET", JOB + "?follow=1", 400, "bad_query"),
        Case(job_t, "GET", JOB, 404, "unknown_job"),
        Case(job_t, "POST", JOB, 405, "method_not_allowed"),
        # DELETE /v1/jobs/{job_id}
        Case(job_t, "DELETE", "/v1/jobs/nope", 400, "bad_job_id"),
        Case(job_t, "DELETE", JOB, 404, "unknown_job"),
        *[
            Case(job_t, "DELETE", f"{JOB}?wait={value}", 400, "bad_request")
            for value in ("maybe", "TRUE", "", "%00", "1" * 1000)
        ],
        Case(job_t, "DELETE", f"{JOB}?wait=true&wait=false", 400, "bad_query"),
        Case(job_t, "DELETE", f"{JOB}?force=1", 400, "bad_query"),
        # GET /v1/jobs/{job_id}/log
        Case(log_t, "GET", "/v1/jobs/nope/log", 400, "bad_job_id"),
        Case(log_t, "GET", LOG, 404, "unknown_job"),
        *[
            Case(log_t, "GET", f"{LOG}?stream={value}", 400, "bad_request")
            for value in ("both", "STDOUT", "", "%00", "stdout%0a")
        ],
        Case(log_t, "GET", f"{LOG}?stream=stdout&stream=stderr", 400, "bad_query"),
        Case(log_t, "GET", f"{LOG}?since=0", 400, "bad_query"),
        Case(log_t, "DELETE", LOG, 405, "method_not_allowed"),
        # the stream, refused at the handshake
        Case(stream_t, "WEBSOCKET", STREAM + "?x=1", 400, "bad_query"),
        Case(stream_t, "WEBSOCKET", STREAM + "?since=1&since=2", 400, "bad_query"),
        Case(stream_t, "WEBSOCKET", STREAM + "?tail_lines=1&tail_lines=2", 400, "bad_query"),
        Case(stream_t, "GET", STREAM, 400, "bad_request"),  # not a websocket handshake
        # the job list's websocket
        Case(EVENTS, "WEBSOCKET", EVENTS + "?since=0", 400, "bad_query"),
        Case(EVENTS, "GET", EVENTS, 400, "bad_request"),  # not a websocket handshake
        # GET /v1/catalog
        Case(CATALOG, "GET", CATALOG + "?all=1", 400, "bad_query"),
        Case(CATALOG, "POST", CATALOG, 405, "method_not_allowed"),
        # GET /v1/catalog/{name}
        *[
            Case(entry_t, "GET", f"{CATALOG}/{name}", 400, "bad_worker_name")
            for name in BAD_NAME_SEGMENTS
        ],
        Case(entry_t, "GET", f"{CATALOG}/..%2F..%2Fetc", 404, "not_found"),
        Case(entry_t, "GET", f"{CATALOG}/no-such-worker", 404, "unknown_worker"),
        Case(entry_t, "GET", f"{CATALOG}/chatty?detail=1", 400, "bad_query"),
        Case(entry_t, "DELETE", f"{CATALOG}/chatty", 405, "method_not_allowed"),
        # POST /v1/catalog/refresh
        Case(REFRESH, "POST", REFRESH + "?force=1", 400, "bad_query"),
        Case(REFRESH, "POST", REFRESH, 413, "request_entity_too_large", b" " * (MAX_BODY + 1)),
        Case(REFRESH, "PUT", REFRESH, 405, "method_not_allowed"),
        Case(REFRESH, "POST", REFRESH, 400, "bad_request", submit({"force": True})),
        Case(REFRESH, "POST", REFRESH, 400, "bad_request", b"garbage"),
        Case(
            REFRESH,
            "POST",
            REFRESH,
            415,
            "unsupported_media_type",
            b"{}",
            {"Content-Type": "text/plain"},
        ),
        # a body where none is taken
        Case(job_t, "DELETE", JOB, 400, "bad_request", submit({"wait": True})),
        # a request head over 16 KiB (one read: past h11's own limit)
        Case(
            health,
            "GET",
            "/v1/health",
            431,
            "request_header_fields_too_large",
            headers={"X-Big": "a" * 17000},
        ),
        # GET /v1/workers
        Case(WORKERS, "GET", WORKERS + "?name=chatty", 400, "bad_query"),
        Case(WORKERS, "POST", WORKERS, 405, "method_not_allowed", worker("chatty")),
        # DELETE /v1/workers/{name}
        *[
            Case(worker_t, "DELETE", f"{WORKERS}/{name}", 400, "bad_worker_name")
            for name in BAD_NAME_SEGMENTS
        ],
        Case(worker_t, "DELETE", f"{WORKERS}/..%2F..%2Fetc", 404, "not_found"),
        Case(worker_t, "DELETE", f"{WORKERS}/chatty", 404, "not_installed"),
        Case(worker_t, "DELETE", f"{WORKERS}/chatty?version=1", 400, "bad_query"),
        Case(worker_t, "GET", f"{WORKERS}/chatty", 405, "method_not_allowed"),
        # the web page and its files (public, but they take no query either)
        Case("/", "GET", "/?token=x", 400, "bad_query"),
        Case("/", "POST", "/", 405, "method_not_allowed"),
        Case("/ui/{name}", "GET", "/ui/no-such-file.js", 404, "not_found"),
        Case("/ui/{name}", "GET", "/ui/..%2F..%2Fhive%2F__init__.py", 404, "not_found"),
        Case("/ui/{name}", "GET", "/ui/" + "a" * 300 + ".js", 404, "not_found"),  # no 500
        Case("/ui/{name}", "GET", "/ui/index.html", 404, "not_found"),  # that is "/"
        Case("/ui/{name}", "GET", "/ui/app.js?v=1", 400, "bad_query"),
        Case("/ui/{name}", "PUT", "/ui/app.js", 405, "method_not_allowed"),
        # POST/DELETE /v1/session
        Case(session, "POST", session, 400, "bad_request", b"token=abc"),
        Case(session, "POST", session, 400, "bad_request", submit({"token": 1})),
        Case(session, "POST", session, 400, "bad_request", submit({"token": None})),
        Case(session, "POST", session, 400, "bad_request", submit({"token": "x", "user": "x"})),
        Case(session, "POST", session, 401, "unauthorized", submit({"token": "wrong"})),
        Case(session, "POST", session + "?token=x", 400, "bad_query", submit({"token": "x"})),
        Case(session, "DELETE", session + "?all=1", 400, "bad_query"),
        Case(session, "PUT", session, 405, "method_not_allowed"),
        # no endpoint at all
        Case("", "GET", "/v1", 404, "not_found"),
        Case("", "GET", "/v2/jobs", 404, "not_found"),
        Case("", "GET", "/v1/jobs/", 404, "not_found"),
        Case("", "TRACE", JOBS, 405, "method_not_allowed"),
    ]
    return table


#: Websocket requests refused after the handshake: (target, close code).
STREAM_CASES = [
    ("/v1/jobs/nope/stream", 4400),
    ("/v1/jobs/%00/stream", 4400),
    ("/v1/jobs/" + "%C3%BC" * 40 + "/stream", 4400),
    (STREAM, 4404),
    *[
        (f"{STREAM}?since={since}", 4400)
        for since in ("-1", "abc", "1e3", "", "99999999999999999999", "%00", "1.0", "LATEST")
    ],
    *[(f"{STREAM}?tail_lines={lines}", 4400) for lines in ("-1", "x", "", "1e3", "%00")],
    (f"{STREAM}?since=3&tail_lines=2", 4400),
    (f"{STREAM}?since=latest&tail_lines=2", 4400),
    *[(f"{STREAM}?format={fmt}", 4400) for fmt in ("xml", "", "JSON", "binary%00")],
]


def test_the_table_covers_every_endpoint() -> None:
    covered = {(case.method, case.template) for case in cases()}
    covered |= {("WEBSOCKET", "/v1/jobs/{job_id}/stream")}  # STREAM_CASES
    for op in operations():
        assert (op.method, op.template) in covered, f"no bad-input case for {op}"


def check_refusal(answer: Answer, case: Case) -> None:
    if case.method == "WEBSOCKET":
        # Refused after the handshake, where every client can see it; the
        # error code is checked in the log (see below).
        assert answer.status == 101 and answer.close is not None, (str(case), answer)
        assert answer.close[0] == 4000 + case.status, (str(case), answer.close)
        message = answer.close[1]
        assert message and "\n" not in message and len(message.encode()) <= 123
        return
    assert answer.status == case.status, (str(case), answer)
    body = answer.json()
    assert body["error"] == case.error, (str(case), body)
    message = body["message"]
    assert isinstance(message, str) and message
    assert "\n" not in message and "\r" not in message and len(message) <= MAX_MESSAGE
    assert "Traceback" not in message


async def stream_close(hive: Hive, target: str) -> tuple[int | None, str]:
    """Open the stream and return the close code and reason the hive sends."""
    with trio.fail_after(15):
        async with open_websocket_url(hive.ws_url(target), extra_headers=hive.ws_headers()) as ws:
            try:
                await ws.get_message()
            except ConnectionClosed as exc:
                return exc.reason.code, exc.reason.reason or ""
    raise AssertionError(f"{target}: the hive sent a message instead of closing")


async def test_bad_requests_to_every_endpoint_get_one_logged_4xx(hive: Hive) -> None:
    auth = hive.auth_headers()
    start = len(hive.log_lines)
    table = cases()
    for case in table:
        json_body = {"Content-Type": "application/json"} if case.body else {}
        answer = await probe(
            hive.url, case.method, case.target, {**auth, **json_body, **case.headers}, case.body
        )
        check_refusal(answer, case)
        if case.status == 405:
            assert answer.header("Allow"), case
    for target, code in STREAM_CASES:
        close_code, reason = await stream_close(hive, target)
        assert close_code == code, (target, close_code, reason)
        assert len(reason.encode()) <= 123 and "\n" not in reason

    # Each refusal is logged exactly once, in order: wait for a sentinel, then count.
    sentinel = f"/sentinel-{secrets.token_hex(4)}"
    assert (await probe(hive.url, "GET", sentinel, auth)).status == 404
    with trio.fail_after(10):
        while not any(sentinel in line for line in hive.log_lines[start:]):
            await trio.sleep(0.01)
    logged = [line for line in hive.log_lines[start:] if re.search(r" -> \d{3} ", line)]
    expected = [f"-> {c.status} {c.error}:" for c in table]
    expected += [f"-> {code - 4000} " for _, code in STREAM_CASES] + ["-> 404 not_found:"]
    assert len(logged) == len(expected), "\n".join(logged)
    for line, want in zip(logged, expected, strict=True):
        assert want in line, (line, want)
        assert len(line) < 700
    assert "Traceback" not in hive.log and "internal error" not in hive.log

    async with hive.client() as client:
        health = await client.get("/v1/health")
    assert health.status_code == 200 and health.json()["jobs"]["total"] == 0


async def send_raw(hive: Hive, data: bytes) -> Answer:
    host, port = address(hive.url)
    with trio.fail_after(15):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(data)
            return await read_answer(stream)


async def test_broken_http_is_refused_and_the_hive_keeps_serving(hive: Hive) -> None:
    """Requests h11 itself refuses never reach the app; they get a 4xx and a close."""
    host = "Host: 127.0.0.1\r\n"
    broken = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /v1/health HTTP/1.1\r\n" + host.encode() + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n",
        b"POST /v1/jobs HTTP/1.1\r\n" + host.encode() + b"Content-Length: abc\r\n\r\n",
        b"POST /v1/jobs HTTP/1.1\r\n"
        + host.encode()
        + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET /v1/health HTTP/1.1\r\n" + host.encode() + b"Bad Header\r\n\r\n",
        b"GET /v1/health HTTP/1.1\r\n" + host.encode() + b"X: \x00\r\n\r\n",
    ]
    for data in broken:
        answer = await send_raw(hive, data)
        assert 400 <= answer.status < 500, (data[:60], answer)
    # HTTP/1.0 without a Host reaches the app, which refuses it like a foreign Host.
    answer = await send_raw(hive, b"GET /v1/health HTTP/1.0\r\n\r\n")
    assert answer.status == 403
    async with hive.client() as client:
        assert (await client.get("/v1/health")).status_code == 200


async def test_refused_requests_leave_the_connection_usable_or_closed(hive: Hive) -> None:
    """Found by fuzzing: a request answered before its body was read left the
    connection neither closed nor reusable, and the next request on it hung.
    Now the body is read first (so keep-alive goes on), and when it cannot be
    (too large) the connection is closed, never left hanging."""
    host, port = address(hive.url)
    auth = f"Authorization: Bearer {hive.token}\r\n"
    health = f"GET /v1/health HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n".encode()
    with trio.fail_after(15):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            refused = f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello"
            await stream.send_all(refused.encode() + health)  # no token, then pipelined
            answers = AnswerReader(stream)  # both may arrive in one read
            assert (await answers.next()).status == 401
            assert (await answers.next()).status == 200
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            big = f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\n{auth}"
            await stream.send_all(f"{big}Content-Length: {MAX_BODY + 1}\r\n\r\n".encode())
            answer = await read_answer(stream)
            assert answer.status == 413 and answer.header("connection") == "close"
            await stream.send_all(b"x" * 1000)
            while await stream.receive_some(65536):  # EOF: closed by the hive
                pass


async def raw_websocket(hive: Hive, target: str) -> tuple[trio.SocketStream, WSConnection]:
    """A websocket of our own making (wsproto over a socket), so that the test can
    drop it at any moment instead of waiting for a closing handshake."""
    host, port = address(hive.url)
    stream = await trio.open_tcp_stream(host, port)
    ws = WSConnection(ConnectionType.CLIENT)
    headers = [(b"authorization", f"Bearer {hive.token}".encode())]
    await stream.send_all(
        ws.send(Request(host=f"{host}:{port}", target=target, extra_headers=headers))
    )
    while True:
        ws.receive_data(await stream.receive_some(65536))
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                return stream, ws
            raise AssertionError(f"handshake refused: {event}")


async def test_websocket_abuse(hive: Hive) -> None:
    """Unexpected and oversized messages from a follower close only that follower."""
    submitted = await keeper(hive, "download", "sleeper")
    job_id = submitted.stdout.decode().strip()
    target = f"/v1/jobs/{job_id}/stream"
    with trio.fail_after(30):
        stream, ws = await raw_websocket(hive, target)
        async with stream:
            # The stream ignores what clients send...
            await stream.send_all(
                ws.send(TextMessage("hello?")) + ws.send(BytesMessage(b"\0" * 1000))
            )
            # ...up to the hive's 64 KiB message limit.
            await stream.send_all(ws.send(BytesMessage(b"x" * (128 * 1024))))
            closed = None
            while closed is None:
                data = await stream.receive_some(65536)
                assert data, "connection closed without a close frame"
                ws.receive_data(data)
                closed = next((e for e in ws.events() if isinstance(e, CloseConnection)), None)
            assert closed.code == 1009  # message too big
        # The job and the hive are fine; a new follower gets the history.
        async with open_websocket_url(
            hive.ws_url(target), extra_headers=hive.ws_headers()
        ) as follower:
            assert await follower.get_message()
    async with hive.client() as client:
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        assert job["state"] == "running"
        await client.delete(f"/v1/jobs/{job_id}", params={"wait": "true"})


async def test_followers_that_stop_reading_do_not_keep_the_hive_alive(tmp_path: Path) -> None:
    """A follower that never reads blocks hypercorn's (shielded, untimed) socket
    write for good; the hive still stops on SIGTERM, bounded, after its jobs."""
    async with running_hive(tmp_path / "state") as hive:
        async with hive.client() as client:
            job = (
                await client.post(JOBS, json={"operation": "worker_download", "worker": "flood"})
            ).json()
        streams = [(await raw_websocket(hive, f"/v1/jobs/{job['id']}/stream"))[0] for _ in range(2)]
        try:
            async with hive.client() as client:
                with trio.fail_after(60):
                    while (await client.get(f"/v1/jobs/{job['id']}")).json()[
                        "state"
                    ] != "succeeded":
                        await trio.sleep(0.1)
                assert (await client.get("/v1/health")).status_code == 200  # others are served
            assert await hive.stop(signal.SIGTERM) == 0
            assert "did not close" in hive.log
            cgroup = hive_cgroup(hive)  # removed although the hive left with os._exit
            assert cgroup is None or not cgroup.exists(), cgroup
        finally:
            for stream in streams:
                await stream.aclose()


IDLE = 200
SLOW = 50
SLOW_BODY = 10
HALF_OPEN = 20


async def test_idle_slow_and_half_open_connections_do_not_block_others(hive: Hive) -> None:
    """Hundreds of clients that connect and send nothing, trickle a request head or
    body, or open a websocket and never read: others are still served, and the
    silent ones are closed by the hive within its keep-alive or body timeout."""
    host, port = address(hive.url)
    streams: list[trio.SocketStream] = []
    try:
        with trio.fail_after(60):
            for _ in range(IDLE):
                streams.append(await trio.open_tcp_stream(host, port))
            for _ in range(SLOW):
                stream = await trio.open_tcp_stream(host, port)
                await stream.send_all(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                streams.append(stream)
            for _ in range(SLOW_BODY):
                stream = await trio.open_tcp_stream(host, port)
                head = f"POST /v1/session HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100\r\n\r\n"
                await stream.send_all(head.encode() + b'{"token": ')
                streams.append(stream)
            for _ in range(HALF_OPEN):
                stream = await trio.open_tcp_stream(host, port)
                handshake = (
                    f"GET /v1/jobs/{SAMPLE_JOB_ID}/stream HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    f"Authorization: Bearer {hive.token}\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                )
                await stream.send_all(handshake.encode())
                streams.append(stream)  # never read: the hive's close frame stays unread
        with trio.fail_after(10):
            async with hive.client() as client:
                for _ in range(5):
                    assert (await client.get("/v1/health")).status_code == 200
        # The silent ones are closed by the hive (keep-alive timeout, body timeout),
        # not kept forever.
        with trio.fail_after(30):
            for stream in streams[: IDLE + SLOW + SLOW_BODY]:
                while await stream.receive_some(65536):
                    pass
    finally:
        for stream in streams:
            await stream.aclose()
    async with hive.client() as client:
        assert (await client.get("/v1/health")).status_code == 200


# -- the keeper ------------------------------------------------------------------------

KEEPER_CASES: list[tuple[tuple[str, ...], int, str]] = [
    (("download", ""), 5, "invalid worker name"),
    (("download", "../etc/passwd"), 5, "invalid worker name"),
    (("download", "a" * 5000), 5, "invalid worker name"),
    (("download", "no-such-worker"), 4, "no worker named"),
    (("status", "nope"), 5, "malformed job id"),
    (("status", "../../v1/health"), 4, "no such endpoint"),
    (("status", "x?wait=true"), 5, "malformed job id"),
    (("status", "0123456789ab"), 4, "no job 0123456789ab"),
    (("follow", "nope"), 5, "malformed job id"),
    (("cancel", "nope"), 5, "malformed job id"),
    (("follow", "0123456789ab", "--since", "-1"), 2, ""),
    (("frobnicate",), 2, ""),
]


async def test_keeper_bad_arguments_one_line_each(hive: Hive) -> None:
    for args, code, text in KEEPER_CASES:
        result = await keeper(hive, *args)
        assert result.returncode == code, (args, result.stderr)
        assert "Traceback" not in result.stderr
        if code != 2:  # click's usage errors have their own few lines
            assert result.stderr.count("\n") == 1, (args, result.stderr)
            assert text in result.stderr and len(result.stderr) < 500, (args, result.stderr)
    async with hive.client() as client:
        assert (await client.get("/v1/health")).status_code == 200
