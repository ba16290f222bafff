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
import socket
import struct
from pathlib import Path
from typing import NamedTuple

from hivewire.tokenfile import (
    TokenFileError,
    default_state_dir,
    is_loopback_host,
    read_token,
    token_path,
)

from .address import address
from .config import HiveTarget
from .errors import ExitCode, HiveError

#: TCP state of a listening socket in /proc/net/tcp.
TCP_LISTEN = "0A"

# sock_diag (linux/sock_diag.h, linux/inet_diag.h), as ``ss`` uses it.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
TCP_LISTEN_STATE = 10
DIAG_READ_SIZE = 64 * 1024
#: struct nlmsghdr: length, type, flags, sequence, port id.
NL_HEADER = struct.Struct("=IHHII")
#: struct inet_diag_req_v2: family, protocol, extensions, pad, states; any socket id.
DIAG_REQUEST = struct.Struct("=BBBBI48x")
#: struct inet_diag_msg up to its uid: the socket id starts with the local port
#: (big-endian); after the id come expires, rqueue, wqueue, then the uid.
DIAG_MESSAGE = struct.Struct("=4x2s58xI")


class TokenProblem(HiveError):
    """The local token file exists but cannot be used."""

    exit_code = ExitCode.AUTH


class Discovered(NamedTuple):
    token: str | None
    #: Where it came from, for messages: "--token", a file path, or None.
    source: str | None


class Credentials(NamedTuple):
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
    hive = address(url)
    if not is_loopback_host(hive.host):
        return Discovered(None, None)
    path = local_token_file()
    try:
        token = read_token(path)
    except FileNotFoundError:
        return Discovered(None, None)
    except (TokenFileError, OSError) as exc:
        raise TokenProblem(f"cannot use the token file: {exc}") from None
    owners = listener_owners(hive.port)
    if owners and owners != {os.getuid()}:
        raise TokenProblem(
            f"port {hive.port} is not served by a process of yours; not sending it the token "
            f"from {path} (pass --token to insist)"
        )
    return Discovered(token, str(path))


def listener_owners(port: int, proc_net: Path = Path("/proc/net")) -> set[int] | None:
    """UIDs owning listening TCP sockets on ``port``; None where the kernel cannot tell.

    Asked as ``ss -ltn`` asks, over sock_diag: the kernel sends the listening
    sockets alone. ``/proc/net/tcp`` lists every socket of the machine, thousands
    on a busy one, which cost a keeper more than its whole start; it is read only
    where sock_diag is not available."""
    owners = diag_listener_owners(port)
    return owners if owners is not None else proc_listener_owners(port, proc_net)


def diag_listener_owners(port: int) -> set[int] | None:
    """:func:`listener_owners` over netlink's sock_diag; None if it is refused."""
    owners: set[int] = set()
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
            for family in (socket.AF_INET, socket.AF_INET6):
                request = DIAG_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN_STATE)
                flags = NLM_F_REQUEST | NLM_F_DUMP
                header = NL_HEADER.pack(
                    NL_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, flags, family, 0
                )
                sock.sendall(header + request)
                owners |= _diag_owners(sock, port)
    except OSError:
        return None
    return owners


def _diag_owners(sock: socket.socket, port: int) -> set[int]:
    """The owners on ``port`` in one sock_diag dump (``inet_diag_msg``s until DONE)."""
    owners: set[int] = set()
    while True:
        data = sock.recv(DIAG_READ_SIZE)
        if not data:
            raise OSError("sock_diag: the dump ended without NLMSG_DONE")
        offset = 0
        while offset + NL_HEADER.size <= len(data):
            length, kind, _, _, _ = NL_HEADER.unpack_from(data, offset)
            if kind == NLMSG_DONE:
                return owners
            if kind == NLMSG_ERROR or length < NL_HEADER.size + DIAG_MESSAGE.size:
                raise OSError("sock_diag refused the dump")
            sport, uid = DIAG_MESSAGE.unpack_from(data, offset + NL_HEADER.size)
            if int.from_bytes(sport, "big") == port:
                owners.add(uid)
            offset += (length + 3) & ~3


def proc_listener_owners(port: int, proc_net: Path = Path("/proc/net")) -> set[int] | None:
    """:func:`listener_owners` from ``/proc/net/tcp{,6}``; None where it is unreadable."""
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
