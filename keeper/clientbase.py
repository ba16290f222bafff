"""What the keeper's two clients share: whom they talk to, and what a failure says.

:mod:`keeper.blocking` (sockets, for one-shot commands) and :mod:`keeper.client`
(httpx and trio-websocket, for streams and fan-out) differ in how they move
bytes, not in the hive's checked address, the fields every request carries, the
version check made before the first call, or how an answer or a lost connection
reads. Each sets up its transport when it first needs it.
"""

from __future__ import annotations

from typing import Self, TypeVar

from . import api
from .address import address
from .auth import Credentials
from .errors import HiveError, HiveUnreachable, reason

T = TypeVar("T")


class ClientBase:
    """``Client(url, token=T)``; ``cacert`` is a PEM file of CAs to trust for an
    ``https://`` hive instead of the system's."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        cacert: str | None = None,
        timeout: float = api.DEFAULT_TIMEOUT,
    ) -> None:
        self.address = address(url)
        self.url = self.address.url
        self.token = token
        self.headers = api.headers(token)
        self.cacert = cacert
        self.timeout = timeout
        #: Set once ``/v1/health`` said this is a hive of our API version.
        self.compatible = False

    @classmethod
    def of(cls, hive: Credentials, *, timeout: float = api.DEFAULT_TIMEOUT) -> Self:
        return cls(hive.url, token=hive.token, cacert=hive.cacert, timeout=timeout)

    def answer(self, call: api.Call[T], status: int, content: bytes) -> T:
        return api.answer(call, self.url, status, content, token_sent=self.token is not None)

    def refusal(self, status: int, content: bytes) -> HiveError:
        return api.refusal(self.url, status, content, token_sent=self.token is not None)

    def timed_out(self) -> HiveUnreachable:
        return HiveUnreachable(f"hive at {self.url} did not answer in time")

    def unreachable(self, exc: BaseException) -> HiveUnreachable:
        return HiveUnreachable(f"cannot reach the hive at {self.url}: {reason(exc)}")
