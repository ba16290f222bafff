"""Which token the keeper sends: one it was given, or a local hive's own.

Order: ``--token`` / ``$HIVE_TOKEN``; else, for a hive on a loopback address,
the token file of the local state dir (``$HIVE_STATE_DIR``, else
``$XDG_STATE_HOME/hive``, else ``~/.local/state/hive``), the same place
``hive serve`` puts it.

A token found on disk is sent only to a listener that belongs to this user:
on a shared machine another user could listen on the hive's port while the
hive is down, and collect the token of every keeper that connects. On Linux
the owner of a listening socket is in ``/proc/net/tcp{,6}``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from hivewire.tokenfile import (
    TokenFileError,
    default_state_dir,
    is_loopback_host,
    read_token,
    token_path,
)

from .config import HiveTarget
from .errors import ExitCode, HiveError

#: TCP state of a listening socket in /proc/net/tcp.
TCP_LISTEN = "0A"


class TokenProblem(HiveError):
    """The local token file exists but cannot be used."""

    exit_code = ExitCode.AUTH


@dataclass(frozen=True)
class Discovered:
    token: str | None
    #: Where it came from, for messages: "--token", a file path, or None.
    source: str | None


@dataclass(frozen=True)
class Credentials:
    """Everything a client needs to talk to one hive."""

    url: str
    token: str | None
    cacert: str | None


def credentials(target: HiveTarget, token: str | None, cacert: str | None) -> Credentials:
    """The URL, token and CA file for ``target``: ``token`` and ``cacert`` (the command
    line's) where given, else the target's own, else a local hive's token file."""
    found = discover_token(target.url, token or target.token)
    ca = cacert or (str(target.cacert) if target.cacert else None)
    return Credentials(target.url, found.token, ca)


def local_token_file() -> Path:
    state = os.environ.get("HIVE_STATE_DIR")
    return token_path(Path(state) if state else default_state_dir())


def discover_token(url: str, explicit: str | None) -> Discovered:
    """The token to send to the hive at ``url`` (see the module docstring)."""
    if explicit:
        return Discovered(explicit, "--token")
    parts = urlsplit(url)
    if not parts.hostname or not is_loopback_host(parts.hostname):
        return Discovered(None, None)
    path = local_token_file()
    try:
        token = read_token(path)
    except FileNotFoundError:
        return Discovered(None, None)
    except (TokenFileError, OSError) as exc:
        raise TokenProblem(f"cannot use the token file: {exc}") from None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return Discovered(None, None)  # the client reports the bad URL
    owners = listener_owners(port)
    if owners and owners != {os.getuid()}:
        raise TokenProblem(
            f"port {port} is not served by a process of yours; not sending it the token "
            f"from {path} (pass --token to insist)"
        )
    return Discovered(token, str(path))


def listener_owners(port: int, proc_net: Path = Path("/proc/net")) -> set[int] | None:
    """UIDs owning listening TCP sockets on ``port``; None where /proc cannot tell."""
    owners: set[int] = set()
    readable = False
    for name in ("tcp", "tcp6"):
        try:
            text = (proc_net / name).read_text()
        except OSError:
            continue
        readable = True
        owners |= parse_listeners(text, port)
    return owners if readable else None


def parse_listeners(proc_net_tcp: str, port: int) -> set[int]:
    """UIDs of the LISTEN sockets on ``port`` in the text of ``/proc/net/tcp``."""
    owners: set[int] = set()
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[3] != TCP_LISTEN:
            continue
        _, _, local_port = fields[1].rpartition(":")
        try:
            if int(local_port, 16) == port:
                owners.add(int(fields[7]))
        except ValueError:
            continue
    return owners
