"""The TLS context of both clients for an ``https://`` hive: the system's CAs, or
those of a PEM file (``--cacert``, a hive's ``cacert`` in the config).

A module of its own because :mod:`ssl` costs a third of bare Python's start:
the blocking client imports this only for an ``https://`` hive.
"""

from __future__ import annotations

import ssl

from .errors import HiveError, reason


def client_context(cacert: str | None) -> ssl.SSLContext:
    """:class:`HiveError` (one line) for a CA file that cannot be used."""
    try:
        return ssl.create_default_context(cafile=cacert)
    except (OSError, ssl.SSLError) as exc:
        raise HiveError(f"cannot use CA file {cacert}: {reason(exc)}") from None
