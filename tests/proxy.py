"""A small TCP proxy for tests: sits between a client and the hive, and breaks
things on purpose.

* ``cut_after``: connection number *i* is cut (both sockets closed, mid-frame
  if it happens so) once ``cut_after[i]`` bytes went from the hive to the
  client; ``None`` and connections beyond the list are left alone.
* ``slow``: while set, bytes towards the client are forwarded at about
  ``SLOW_CHUNK`` bytes per ``SLOW_INTERVAL``, like a reader on a bad line;
  :meth:`Proxy.go_fast` lifts that at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import trio

SLOW_CHUNK = 1024
SLOW_INTERVAL = 1.0


@dataclass
class Proxy:
    target_port: int
    cut_after: list[int | None] = field(default_factory=list)
    slow: bool = False
    port: int = 0
    connections: int = 0
    cuts: int = 0
    to_client: int = 0  # bytes forwarded towards clients, all connections
    _fast: trio.Event = field(default_factory=trio.Event)

    def go_fast(self) -> None:
        self.slow = False
        self._fast.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, client: trio.SocketStream) -> None:
        number = self.connections
        self.connections += 1
        budget = self.cut_after[number] if number < len(self.cut_after) else None
        try:
            hive = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await client.aclose()
            return
        async with client, hive, trio.open_nursery() as nursery:
            nursery.start_soon(self._upstream, client, hive)
            if await self._downstream(hive, client, budget):
                self.cuts += 1
            nursery.cancel_scope.cancel()

    async def _upstream(self, client: trio.SocketStream, hive: trio.SocketStream) -> None:
        try:
            while data := await client.receive_some(65536):
                await hive.send_all(data)
            await hive.send_eof()
        except trio.BrokenResourceError:
            pass

    async def _downstream(
        self, hive: trio.SocketStream, client: trio.SocketStream, budget: int | None
    ) -> bool:
        """Forward until EOF; or until ``budget`` bytes went through: then return
        True, and the caller cuts the connection."""
        try:
            while True:
                if self.slow:
                    with trio.move_on_after(SLOW_INTERVAL):
                        await self._fast.wait()
                size = SLOW_CHUNK if self.slow else 65536
                if budget is not None:
                    if budget == 0:
                        return True
                    size = min(size, budget)
                data = await hive.receive_some(size)
                if not data:
                    return False
                await client.send_all(data)
                self.to_client += len(data)
                if budget is not None:
                    budget -= len(data)
        except trio.BrokenResourceError:
            return False


@asynccontextmanager
async def running_proxy(
    target_port: int, *, cut_after: list[int | None] | None = None, slow: bool = False
) -> AsyncIterator[Proxy]:
    proxy = Proxy(target_port, cut_after=list(cut_after or []), slow=slow)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, proxy._handle, 0, host="127.0.0.1"))
        proxy.port = listeners[0].socket.getsockname()[1]
        yield proxy
        nursery.cancel_scope.cancel()
