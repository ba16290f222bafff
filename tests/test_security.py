"""Who gets in: the token, Host and Origin checks, the browser session, TLS,
loopback-only binding, the keeper's token discovery and its error exit codes,
and what a job's processes inherit. All against real hives and keepers."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from hive.jobsandbox import ENV_ALLOW
from hivewire import API_VERSION
from hivewire.tokenfile import TokenFileError, load_or_create_token, read_token
from keeper.auth import parse_listeners
from keeper.errors import ExitCode

from .api_table import Operation, app_operations, operations
from .rawhttp import Answer, probe
from .support import (
    ROOT,
    Hive,
    KeeperRun,
    job_processes,
    keeper,
    keeper_at,
    keeper_process,
    running_hive,
)

UNAUTHORIZED = {"error": "unauthorized", "message": "missing or invalid token"}
JSON = {"Content-Type": "application/json"}
FORBIDDEN_HOST = "this hive does not answer to that Host (see --allow-host)"
FORBIDDEN_ORIGIN = "cross-origin requests are refused (see --allow-origin)"
PROTECTED = [op for op in operations() if not op.public]


def body_for(op: Operation) -> bytes:
    """A body that is valid but touches nothing (an unknown worker)."""
    if op.method == "POST" and op.template == "/v1/jobs":
        return b'{"operation": "worker_download", "worker": "no-such-worker"}'
    return b""


async def call(
    hive: Hive, op: Operation, headers: dict[str, str] | None = None, **kwargs: object
) -> Answer:
    body = body_for(op)
    if body:
        headers = {"Content-Type": "application/json", **(headers or {})}
    return await probe(hive.url, op.method, op.path(), headers, body, **kwargs)  # type: ignore[arg-type]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_one_line(result: KeeperRun) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("keeper: "), result.stderr


# -- the token file ---------------------------------------------------------------


async def test_token_file_is_private_created_once_and_never_logged(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with running_hive(state) as hive:
        first = hive.token
        info = (state / "token").stat()
        assert stat.S_IMODE(info.st_mode) == 0o600
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", first)
        assert sorted(p.name for p in state.iterdir() if "token" in p.name) == ["token"]
        log = hive.log
    assert first not in log and str(state / "token") in log
    async with running_hive(state) as again:
        assert again.token == first


def test_token_file_refused_when_others_can_read_it(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path)
    assert read_token(tmp_path / "token") == token
    os.chmod(tmp_path / "token", 0o640)
    with pytest.raises(TokenFileError, match="chmod 600"):
        read_token(tmp_path / "token")
    os.chmod(tmp_path / "token", 0o600)
    (tmp_path / "token").write_text("")
    with pytest.raises(TokenFileError, match="does not hold a token"):
        load_or_create_token(tmp_path)
    (tmp_path / "token").unlink()
    (tmp_path / "token").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        read_token(tmp_path / "token")


async def test_hive_with_an_unsafe_token_file_does_not_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "token").write_text("x" * 43 + "\n")
    os.chmod(state / "token", 0o644)
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-m", "hive", "serve", "--bind", "127.0.0.1:0", "--state-dir", state],
            capture_stderr=True,
            check=False,
            cwd=ROOT,
        )
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert "chmod 600" in stderr and "Traceback" not in stderr


# -- every endpoint needs the token ------------------------------------------------


def test_the_openapi_document_lists_exactly_the_apps_routes(tmp_path: Path) -> None:
    """So that "every endpoint" in these tests really is every endpoint."""
    assert sorted(map(str, operations())) == sorted(map(str, app_operations(tmp_path)))
    assert set(operations()) == set(app_operations(tmp_path))


async def test_every_endpoint_refuses_a_missing_or_wrong_token(hive: Hive) -> None:
    wrong = "A" * len(hive.token)
    attempts: list[dict[str, str]] = [
        {},
        bearer(wrong),
        bearer(hive.token[:-1]),
        bearer(hive.token + "x"),
        {"Authorization": f"Basic {hive.token}"},
        {"Authorization": hive.token},
        {"Authorization": "Bearer"},
        {"Cookie": f"hive_session={hive.token}"},  # the cookie is not the token
        {"Authorization": "Bearer " + "é" * 43},
    ]
    for op in PROTECTED:
        for headers in attempts:
            answer = await call(hive, op, headers)
            if op.websocket:  # refused after the handshake, where browsers see it
                assert answer.close == (4401, UNAUTHORIZED["message"]), (op, headers, answer)
                continue
            assert answer.status == 401, (op, headers, answer)
            assert answer.json() == UNAUTHORIZED
            assert answer.header("WWW-Authenticate") == "Bearer"
        # ...and the right token gets past the guard.
        answer = await call(hive, op, bearer(hive.token))
        assert answer.refused() not in (401, 403), (op, answer)
    refused = [line for line in hive.log_lines if "-> 401 unauthorized" in line]
    assert hive.token not in hive.log and wrong not in hive.log
    assert refused, "refusals are logged"


async def test_unauthenticated_requests_do_not_reach_routes(hive: Hive) -> None:
    """No job may be started, listed or cancelled without the token."""
    async with httpx.AsyncClient(base_url=hive.url) as anonymous:
        submit = await anonymous.post(
            "/v1/jobs", json={"operation": "worker_download", "worker": "chatty"}
        )
        assert submit.status_code == 401
        assert (await anonymous.get("/v1/nothing")).status_code == 401  # routes are not probed
    assert await hive.job_ids() == []


# -- Host and Origin ------------------------------------------------------------------


async def test_foreign_host_is_refused_everywhere(hive: Hive) -> None:
    port = hive.url.rsplit(":", 1)[1]
    for op in operations():
        for host in ("evil.example", f"evil.example:{port}", f"localhost.evil.example:{port}", ""):
            answer = await call(hive, op, bearer(hive.token), host=host)
            if op.websocket:
                assert answer.close is not None and answer.close[0] == 4403, (op, host, answer)
                assert answer.close[1] == FORBIDDEN_HOST
                continue
            assert answer.status == 403, (op, host, answer)
            assert answer.json()["error"] == "forbidden_host"
            assert answer.json()["message"] == FORBIDDEN_HOST
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
            answer = await call(hive, op, bearer(hive.token), host=host)
            assert answer.refused() != 403, (op, host, answer)


async def test_websocket_origin_must_be_the_hives_own(hive: Hive) -> None:
    stream = next(op for op in operations() if op.template.endswith("/stream"))
    port = hive.url.rsplit(":", 1)[1]
    refused = [
        "http://evil.example",
        f"http://127.0.0.1:{int(port) + 1}",  # same host, another port: another origin
        f"https://127.0.0.1:{port}",
        "null",
        "file://",
    ]
    for origin in refused:
        answer = await call(hive, stream, {**bearer(hive.token), "Origin": origin})
        assert answer.status == 101, (origin, answer)  # refused where a browser sees it:
        assert answer.close == (4403, FORBIDDEN_ORIGIN), (origin, answer)
    for headers in ({}, {"Origin": hive.url}):
        answer = await call(hive, stream, {**bearer(hive.token), **headers})
        assert answer.status == 101, (headers, answer)
        assert answer.refused() == 404, (headers, answer)  # the sample job does not exist


async def test_allow_host_and_allow_origin(tmp_path: Path) -> None:
    extra = ["--allow-host", "hive.example", "--allow-origin", "https://ui.example:8443"]
    async with running_hive(tmp_path / "state", extra=extra) as hive:
        ops = operations()
        stream = next(op for op in ops if op.template.endswith("/stream"))
        health = next(op for op in ops if op.template == "/v1/health")
        assert (await call(hive, health, bearer(hive.token), host="hive.example")).status == 200
        assert (await call(hive, health, bearer(hive.token), host="other.example")).status == 403
        ok = {**bearer(hive.token), "Origin": "https://ui.example:8443"}
        assert (await call(hive, stream, ok)).refused() == 404  # past the checks: no such job
        other = {**bearer(hive.token), "Origin": "https://ui.example"}
        assert (await call(hive, stream, other)).refused() == 403


async def test_no_cors_headers(hive: Hive) -> None:
    preflight = {
        "Origin": "http://evil.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    answers = [
        await probe(hive.url, "OPTIONS", "/v1/jobs", preflight),
        await probe(hive.url, "GET", "/v1/jobs", {**bearer(hive.token), "Origin": hive.url}),
        await probe(hive.url, "GET", "/v1/jobs", bearer(hive.token)),
    ]
    for answer in answers:
        assert not [name for name in answer.headers if name.startswith("access-control-")]
    assert answers[0].status == 403


# -- the browser session ---------------------------------------------------------------


async def test_browser_session_cookie(hive: Hive) -> None:
    ops = operations()
    stream = next(op for op in ops if op.template.endswith("/stream"))
    jobs = next(op for op in ops if op.template == "/v1/jobs" and op.method == "GET")

    wrong = await probe(hive.url, "POST", "/v1/session", JSON, b'{"token": "nope"}')
    assert wrong.status == 401 and wrong.header("set-cookie") is None

    login = await probe(
        hive.url, "POST", "/v1/session", JSON, json.dumps({"token": hive.token}).encode()
    )
    assert login.status == 200, login
    cookie_header = login.header("set-cookie") or ""
    attributes = {part.strip().split("=")[0].lower() for part in cookie_header.split(";")}
    assert {"httponly", "samesite", "path"} <= attributes
    assert "SameSite=Strict" in cookie_header
    assert hive.token not in cookie_header  # the cookie is derived, not the token
    cookie = cookie_header.split(";")[0]

    assert (await call(hive, jobs, {"Cookie": cookie})).status == 200
    assert (await call(hive, stream, {"Cookie": cookie})).refused() == 404  # no such job
    same_origin = {"Cookie": cookie, "Origin": hive.url}
    assert (await call(hive, stream, same_origin)).refused() == 404
    # A page of another origin never gets to use the cookie, whatever the browser does.
    for op in (jobs, stream):
        cross = {"Cookie": cookie, "Origin": "http://evil.example"}
        assert (await call(hive, op, cross)).refused() == 403
    cross_login = await probe(
        hive.url,
        "POST",
        "/v1/session",
        {"Origin": "http://evil.example", **JSON},
        json.dumps({"token": hive.token}).encode(),
    )
    assert cross_login.status == 403

    logout = await probe(hive.url, "DELETE", "/v1/session", {"Cookie": cookie})
    assert logout.status == 200
    assert re.search(
        r"hive_session=;.*(Max-Age=0|Expires=Thu, 01 Jan 1970)", logout.header("set-cookie") or ""
    )


# -- binding and TLS ------------------------------------------------------------------------


async def run_hive_briefly(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [sys.executable, "-m", "hive", "serve", *map(str, args)],
            capture_stderr=True,
            check=False,
            cwd=ROOT,
        )


async def test_non_loopback_bind_needs_allow_remote(tmp_path: Path) -> None:
    for bind in ("0.0.0.0:0", "[::]:0", "hive.example:0"):
        done = await run_hive_briefly("--bind", bind, "--state-dir", tmp_path / "state")
        stderr = done.stderr.decode()
        assert done.returncode == 2, stderr
        assert "--allow-remote" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "state").exists()
    # With the flag it starts, and says what that means. Only loopback is talked to.
    async with running_hive(
        tmp_path / "state", extra=["--bind", "0.0.0.0:0", "--allow-remote"]
    ) as hive:
        assert "the token is the only guard" in hive.log and "clear text" in hive.log
        port = hive.url.rsplit(":", 1)[1]
        local = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=local, headers=hive.auth_headers()) as client:
            assert (await client.get("/v1/health")).status_code == 200
        async with httpx.AsyncClient(base_url=local) as client:
            assert (await client.get("/v1/health")).status_code == 401


async def test_malformed_allow_host_or_origin_is_a_usage_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cases = [
        ("--allow-origin", "bogus", "Error: not an origin (scheme://host[:port]): 'bogus'"),
        ("--allow-host", "a/b", "Error: not a host name: 'a/b'"),
    ]
    for option, value, message in cases:
        done = await run_hive_briefly("--bind", "127.0.0.1:0", "--state-dir", state, option, value)
        stderr = done.stderr.decode()
        assert done.returncode == 2, stderr
        assert message in stderr and "Traceback" not in stderr


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=hive test", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_hive_and_keeper(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    extra = ["--certfile", str(cert), "--keyfile", str(key)]
    async with running_hive(tmp_path / "state", extra=extra) as hive:
        assert hive.url.startswith("https://127.0.0.1:")
        hive.cacert = cert
        # https for the API, wss for the stream, both verified against --cacert.
        result = await keeper(hive, "download", "chatty", "--follow")
        assert result.returncode == 0, result.stderr
        assert b"out line 2000" in result.stdout
        login = await probe(
            hive.url,
            "POST",
            "/v1/session",
            JSON,
            json.dumps({"token": hive.token}).encode(),
            ssl_context=hive.ssl_context(),
        )
        assert "Secure" in (login.header("set-cookie") or "")
        # Without the CA: refused, in one line.
        untrusted = {k: v for k, v in hive.keeper_env().items() if k != "HIVE_CACERT"}
        result = await keeper(hive, "jobs", env=untrusted)
        assert result.returncode == ExitCode.HIVE_ERROR
        assert_one_line(result)
        assert "certificate verify failed" in result.stderr
        # Plain http to the TLS port: one line too.
        plain = hive.url.replace("https://", "http://")
        result = await keeper(hive, "--hive", plain, "jobs")
        assert result.returncode == ExitCode.HIVE_ERROR
        assert_one_line(result)
        # A missing CA file is a usage error, not a traceback.
        result = await keeper(hive, "--cacert", str(tmp_path / "nope.pem"), "jobs")
        assert result.returncode == ExitCode.USAGE and "Traceback" not in result.stderr


# -- the keeper: token discovery and errors ---------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HIVE_TOKEN", "HIVE_STATE_DIR", "HIVE_URL", "HIVE_CACERT", "XDG_STATE_HOME")
    }
    return {**env, **extra}


async def test_keeper_finds_a_local_hives_token(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    async with running_hive(xdg / "hive") as hive:
        # The default state dir, as `hive serve` computes it.
        found = await keeper(hive, "jobs", env=clean_env(XDG_STATE_HOME=str(xdg)))
        assert found.returncode == 0, found.stderr
        # $HIVE_STATE_DIR wins over the XDG default.
        elsewhere = clean_env(XDG_STATE_HOME=str(tmp_path), HIVE_STATE_DIR=str(xdg / "hive"))
        assert (await keeper(hive, "jobs", env=elsewhere)).returncode == 0
        # localhost is loopback too.
        by_name = hive.url.replace("127.0.0.1", "localhost")
        result = await keeper(
            hive, "--hive", by_name, "jobs", env=clean_env(XDG_STATE_HOME=str(xdg))
        )
        assert result.returncode == 0, result.stderr
        # An explicit token wins over the file: a wrong one is refused.
        wrong = await keeper(
            hive, "--token", "wrong", "jobs", env=clean_env(XDG_STATE_HOME=str(xdg))
        )
        assert wrong.returncode == ExitCode.AUTH
        assert_one_line(wrong)
        assert "refused the token" in wrong.stderr
        # No token anywhere.
        none = await keeper(hive, "jobs", env=clean_env(XDG_STATE_HOME=str(tmp_path / "empty")))
        assert none.returncode == ExitCode.AUTH
        assert_one_line(none)
        assert "needs a token" in none.stderr and "HIVE_TOKEN" in none.stderr
        # $HIVE_TOKEN works as --token does; a wrong one fails the stream the same way.
        env = clean_env(HIVE_TOKEN="wrong", XDG_STATE_HOME=str(tmp_path / "empty"))
        for args in (("jobs",), ("follow", "0123456789ab"), ("download", "chatty", "--follow")):
            result = await keeper(hive, *args, env=env)
            assert result.returncode == ExitCode.AUTH, (args, result.stderr)
            assert_one_line(result)
        # An unsafe token file is reported, not used.
        os.chmod(hive.state_dir / "token", 0o644)
        try:
            unsafe = await keeper(hive, "jobs", env=clean_env(XDG_STATE_HOME=str(xdg)))
        finally:
            os.chmod(hive.state_dir / "token", 0o600)
        assert unsafe.returncode == ExitCode.AUTH
        assert_one_line(unsafe)
        assert "chmod 600" in unsafe.stderr


@asynccontextmanager
async def canned_server(answer: Callable[[bytes], bytes]) -> AsyncIterator[str]:
    """A TCP server on loopback that answers every request with ``answer(request)``."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            with trio.move_on_after(10):
                while b"\r\n\r\n" not in data:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    data += chunk
                await stream.send_all(answer(data))

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


def http_response(status: str, content_type: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


async def run_keeper(url: str, *args: str, env: dict[str, str] | None = None) -> KeeperRun:
    return await keeper_at(url, *args, env=env if env is not None else clean_env(HIVE_TOKEN="t"))


async def test_keeper_against_things_that_are_not_this_hive(tmp_path: Path) -> None:
    page = http_response("200 OK", "text/html", b"<html><body>It works!</body></html>")
    async with canned_server(lambda _: page) as url:
        result = await run_keeper(url, "jobs")
        assert result.returncode == ExitCode.HIVE_ERROR
        assert_one_line(result)
        assert "is it a hive?" in result.stderr

    future = json.dumps({"status": "ok", "version": "9.0.0", "api": 99}).encode()
    async with canned_server(lambda _: http_response("200 OK", "application/json", future)) as url:
        for args in (("jobs",), ("download", "chatty", "--follow"), ("cancel", "0123456789ab")):
            result = await run_keeper(url, *args)
            assert result.returncode == ExitCode.INCOMPATIBLE, (args, result.stderr)
            assert_one_line(result)
            assert "version 9.0.0 (API 99)" in result.stderr

    other_json = json.dumps({"hello": "world"}).encode()
    async with canned_server(
        lambda _: http_response("200 OK", "application/json", other_json)
    ) as url:
        result = await run_keeper(url, "jobs")
        assert result.returncode == ExitCode.HIVE_ERROR
        assert_one_line(result)

    async with canned_server(lambda _: b"garbage\r\n\r\n") as url:
        result = await run_keeper(url, "jobs")
        assert result.returncode == ExitCode.HIVE_ERROR
        assert_one_line(result)

    for url in ("ftp://127.0.0.1:1", "http://127.0.0.1:notaport"):
        result = await run_keeper(url, "jobs")
        assert result.returncode == ExitCode.HIVE_ERROR, (url, result.stderr)
        assert_one_line(result)
    # Not a URL: the name of a hive (from keeper's config.toml), and none has it.
    no_config = clean_env(HIVE_TOKEN="t", KEEPER_CONFIG=str(tmp_path / "none.toml"))
    result = await run_keeper("nonsense", "jobs", env=no_config)
    assert result.returncode == 2, result.stderr  # click's usage error
    assert "Error: no hive named 'nonsense' (known: none configured)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("says_so", [True, False], ids=["connection-close", "silent-close"])
async def test_keeper_asks_again_when_a_server_closes_after_the_version_check(
    says_so: bool,
) -> None:
    """A one-shot command sends its question right behind the health check on one
    connection; a server that answers only the first request per connection (and
    closes, saying so or not) still gets asked, on a new connection."""
    health = json.dumps({"status": "ok", "version": "0.1.0", "api": API_VERSION}).encode()
    job = {"id": "j1", "state": "succeeded", "worker": "w", "exit_code": 0, "created_at": "t"}
    jobs = json.dumps({"jobs": [job]}).encode()
    seen: list[bytes] = []

    def answer(request: bytes) -> bytes:
        seen.append(request.split(b"\r\n", 1)[0])
        body = health if request.startswith(b"GET /v1/health ") else jobs
        response = http_response("200 OK", "application/json", body)
        return response if says_so else response.replace(b"Connection: close\r\n", b"")

    async with canned_server(answer) as url:
        result = await run_keeper(url, "jobs", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == "j1"
    assert seen == [b"GET /v1/health HTTP/1.1", b"GET /v1/jobs HTTP/1.1"]


SYSTEM_PYTHON = "/usr/bin/python3"
LISTEN = (
    "import socket, sys\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
    "print(s.getsockname()[1], flush=True); sys.stdin.read()\n"
)


async def test_keeper_does_not_give_the_local_token_to_another_users_port(tmp_path: Path) -> None:
    if os.getuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip("needs root and a system python to listen as another user")
    load_or_create_token(tmp_path)
    process = await trio.lowlevel.open_process(
        [SYSTEM_PYTHON, "-c", LISTEN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        user=65534,
        cwd="/",
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(10):
            port = int((await process.stdout.receive_some(100)).decode())
        result = await run_keeper(
            f"http://127.0.0.1:{port}", "jobs", env=clean_env(HIVE_STATE_DIR=str(tmp_path))
        )
        assert result.returncode == ExitCode.AUTH, result.stderr
        assert_one_line(result)
        assert "not served by a process of yours" in result.stderr
    finally:
        process.kill()
        await process.wait()


def test_parse_listeners() -> None:
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
        "   0: 0100007F:1E9B 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000\n"
        "   1: 0100007F:1E9B 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000\n"
        "   2: 00000000:1E9C 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0\n"
        "   3: garbage\n"
    )
    assert parse_listeners(text, 7835) == {1000}
    assert parse_listeners(text, 7836) == {0}
    assert parse_listeners(text, 80) == set()


# -- what jobs inherit ------------------------------------------------------------------------

SECRETS = {
    "HIVE_TOKEN": "env-token-must-not-leak",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-must-not-leak",
    "GITHUB_TOKEN": "gh-token-must-not-leak",
}


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


def umask_of(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^Umask:\s*(\d+)", status, re.M)
    assert match
    return match.group(1)


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.05)


async def test_jobs_inherit_no_secrets_and_run_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with running_hive(state, env={**SECRETS, "HIVE_STATE_DIR": str(state)}) as hive:
        leaks = [*SECRETS.values(), hive.token]
        # What a recipe sees (its `env` printed in build()).
        result = await keeper(hive, "download", "envdump", "--follow")
        assert result.returncode == 0, result.stderr
        output = result.stdout.decode()
        assert not [secret for secret in leaks if secret in output]
        assert "umask=0022" in output
        assert "builddir-mode=700" in output
        printed = re.findall(r"^([A-Za-z_]\w*)=", output.split("--- env ---")[1], re.M)
        assert "HIVE_JOB_ID" in printed
        assert not {*SECRETS, "HIVE_STATE_DIR"} & set(printed)

        # What the hive hands to the job's process: the allow-list, nothing else.
        async with keeper_process(hive, "download", "sleeper", "--follow") as (process, out, err):
            await out.wait_for(b"sleeper ready")
            job_id = re.search(rb"job ([0-9a-f]{12})", err.data).group(1).decode()  # type: ignore[union-attr]
            async with hive.client() as client:
                pid = (await client.get(f"/v1/jobs/{job_id}")).json()["pid"]
            leader = environ_of(pid)
            assert set(leader) <= {*ENV_ALLOW, "HIVE_JOB_ID"}, set(leader) - set(ENV_ALLOW)
            assert leader["HIVE_JOB_ID"] == job_id
            for member in job_processes(job_id):
                environ = environ_of(member)
                assert not [s for s in leaks if s in "\0".join(environ.values())]
            assert umask_of(pid) == "0022"
            async with hive.client() as client:
                await client.delete(f"/v1/jobs/{job_id}", params={"wait": "true"})
            with trio.fail_after(30):
                await process.wait()
