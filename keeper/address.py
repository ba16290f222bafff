"""Where a hive listens, read from its URL once: the blocking client, the async
client and the token discovery check a URL the same way and fail alike."""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit

from .errors import HiveError


class Address(NamedTuple):
    #: The URL as given, without a trailing slash: what messages name.
    url: str
    host: str
    port: int
    #: ``host[:port]`` as written, without user info: the ``Host`` header.
    netloc: str
    #: The URL's path, put before every API path.
    prefix: str
    secure: bool


def address(url: str) -> Address:
    """:class:`HiveError` unless ``url`` is ``http(s)://HOST[:PORT][/PATH]``."""
    if not url.startswith(("http://", "https://")):
        raise HiveError(f"hive URL must start with http:// or https://, got {url!r}")
    url = url.rstrip("/")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise HiveError(f"bad hive URL {url!r}: {exc}") from None
    if not parts.hostname:
        raise HiveError(f"bad hive URL {url!r}: no host")
    secure = parts.scheme == "https"
    return Address(
        url=url,
        host=parts.hostname,
        port=port or (443 if secure else 80),
        netloc=parts.netloc.rpartition("@")[2],
        prefix=parts.path,
        secure=secure,
    )
