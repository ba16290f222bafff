"""keeper/api.py: the calls as data and what an answer means (pure, no hive needed).
Both of the keeper's transports read every answer through these functions."""

from __future__ import annotations

import json
from typing import TypeVar

import pytest

from hivewire import API_VERSION
from keeper import api
from keeper.address import Address, address
from keeper.errors import HiveError, Incompatible, NotFound, Refused, Unauthorized

URL = "http://h:1"
T = TypeVar("T")


def answer(call: api.Call[T], status: int, body: object, token: bool = True) -> T:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return api.answer(call, URL, status, content, token_sent=token)


def test_calls_are_what_the_api_documents() -> None:
    submit = api.submit("cbuild", force=True)
    assert (submit.method, submit.target) == ("POST", "/v1/jobs")
    assert json.loads(submit.content or b"") == {
        "operation": "worker_download",
        "worker": "cbuild",
        "force": True,
    }
    cancel = api.cancel("ab/../c", wait=True)
    assert cancel.target == "/v1/jobs/ab%2F..%2Fc?wait=true" and cancel.unbounded
    assert not api.jobs().unbounded and api.jobs().content is None
    assert api.stream_target("j", tail_lines=5) == "/v1/jobs/j/stream?tail_lines=5"
    assert api.log_target("j", "stderr") == "/v1/jobs/j/log?stream=stderr"
    with pytest.raises(Refused, match="invalid worker name"):
        api.catalog_entry("../etc")


def test_answers_and_errors() -> None:
    assert answer(api.jobs(), 200, {"jobs": [{"id": "a"}]}) == [{"id": "a"}]
    health = {"status": "ok", "api": API_VERSION, "version": "0.1.0"}
    assert answer(api.health(), 200, health) == health
    with pytest.raises(Incompatible, match=r"version 9 \(API 99\)"):
        answer(api.health(), 200, {"status": "ok", "api": 99, "version": "9"})
    with pytest.raises(HiveError, match="with nonsense"):
        answer(api.jobs(), 200, {"hello": "world"})
    with pytest.raises(HiveError, match="answered 200 without JSON: is it a hive"):
        answer(api.jobs(), 200, b"<html>")
    with pytest.raises(NotFound, match="no job x"):
        answer(api.job("x"), 404, {"error": "unknown_job", "message": "no job x"})
    with pytest.raises(Refused) as refused:
        answer(api.cancel("x"), 409, {"error": "ended", "message": "m", "state": "failed"})
    assert refused.value.status == 409 and refused.value.body["state"] == "failed"
    with pytest.raises(Unauthorized, match="needs a token"):
        answer(api.jobs(), 401, {"error": "x"}, token=False)
    with pytest.raises(Unauthorized, match="refused the token"):
        answer(api.jobs(), 401, {"error": "x"})
    with pytest.raises(HiveError, match="HTTP 503") as failed:
        answer(api.jobs(), 503, {})
    assert type(failed.value) is HiveError


def test_urls() -> None:
    assert address("https://u@h:1/base/") == Address(
        "https://u@h:1/base", "h", 1, "h:1", "/base", True
    )
    assert address("http://[::1]").port == 80 and address("http://[::1]").host == "::1"
    with pytest.raises(HiveError, match="must start with http"):
        address("ftp://h")
    for bad in ("http://h:port", "http://:1", "http://[::1"):
        with pytest.raises(HiveError, match="bad hive URL"):
            address(bad)
    assert api.websocket_url("https://h:1", "/p") == "wss://h:1/p"


def test_a_token_goes_out_as_one_header_line_or_not_at_all() -> None:
    assert ("Authorization", "Bearer t0k") in api.headers("t0k")
    for bad in ("t0k\n", "t0k\r\nX-Evil: 1", " t0k", "t\x00k"):
        with pytest.raises(HiveError, match="one line of printable"):
            api.headers(bad)
