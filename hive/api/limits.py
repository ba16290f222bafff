"""A cap on open websockets: the excess is refused with 503, not left to run
the hive out of file descriptors.

Each websocket holds a socket for as long as its follower stays, and a follower
may stay for hours; HTTP requests come and go. Left uncapped, followers took
every descriptor and the hive could neither accept a request nor open what a
job's teardown needs (see :mod:`hive.fdlimit`). The cap is checked before the
app sees the handshake, and the refusal is a plain HTTP answer: load shedding
should cost the hive as little as possible, ``Retry-After`` is what HTTP
clients already honour, and a browser that cannot see the status retries with
backoff anyway, which is what a 503 asks of it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .errors import one_line

log = logging.getLogger("hive.api")

#: Seconds a refused client is asked to wait before trying again.
RETRY_AFTER = 1

ASGIApp = Any  # (scope, receive, send) -> Awaitable[None]; hypercorn's types are untyped


class WebsocketLimit:
    """Counts the app's open websockets and refuses those beyond ``maximum``."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.open = 0

    def wrap(self, asgi_app: ASGIApp) -> ASGIApp:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "websocket":
                await asgi_app(scope, receive, send)
                return
            if self.open >= self.maximum:
                await self._refuse(scope, send)
                return
            self.open += 1
            try:
                await asgi_app(scope, receive, send)
            finally:
                self.open -= 1

        return app

    async def _refuse(self, scope: Any, send: Any) -> None:
        message = (
            f"the hive has {self.open} websockets open, its limit (see --max-websockets); "
            f"retry in {RETRY_AFTER} s"
        )
        client = (scope.get("client") or ("?",))[0]
        log.info(
            "WEBSOCKET %s from %s -> 503 too_many_websockets: %s",
            one_line(scope["path"], 200),
            client,
            message,
        )
        body = json.dumps({"error": "too_many_websockets", "message": message}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(RETRY_AFTER).encode()),
        ]
        await send({"type": "websocket.http.response.start", "status": 503, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
