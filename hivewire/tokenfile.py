"""The hive's access token on disk: ``<state-dir>/token``, mode 0600.

The hive creates it at first start; the keeper reads it to talk to a local
hive without being told the token. It lives here, away from the server, so
that the keeper can import it without pulling in the web stack.

The file is written to a private temporary name (``O_EXCL``, mode 0600 from
the first byte) and then hard-linked into place, so that no reader ever sees
a partial token, two hives starting at once agree on one token, and the token
is never readable by anyone else, not even for an instant.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import stat
from pathlib import Path

TOKEN_NAME = "token"

#: Entropy of a new token: 32 bytes, 43 URL-safe characters.
TOKEN_BYTES = 32

#: A token file bigger than this is not a token.
MAX_TOKEN_FILE = 1024


class TokenFileError(RuntimeError):
    """The token file exists but cannot be used (unsafe mode, empty, unreadable)."""


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/hive``, else ``~/.local/state/hive``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hive"


def token_path(state_dir: Path) -> Path:
    return state_dir / TOKEN_NAME


def read_token(path: Path) -> str:
    """The token in ``path``; raises :class:`TokenFileError` if the file is unsafe
    (someone else's, or accessible by others) or holds no token, and
    ``FileNotFoundError`` if there is none."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise TokenFileError(f"{path} is not a regular file")
        if info.st_uid != os.getuid():
            raise TokenFileError(f"{path} belongs to another user (uid {info.st_uid})")
        if info.st_mode & 0o077:
            raise TokenFileError(
                f"{path} is accessible by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                "chmod 600 it, or delete it to get a new token"
            )
        data = f.read(MAX_TOKEN_FILE + 1)
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        token = ""
    if not token or len(data) > MAX_TOKEN_FILE or any(c.isspace() for c in token):
        raise TokenFileError(f"{path} does not hold a token; delete it to get a new one")
    return token


def load_or_create_token(state_dir: Path) -> str:
    """The hive's token, created on first use."""
    path = token_path(state_dir)
    try:
        return read_token(path)
    except FileNotFoundError:
        pass
    # secrets.token_urlsafe, spelled out: importing secrets (hashlib, hmac, random)
    # would cost every keeper start-up more than the rest of this module.
    token = base64.urlsafe_b64encode(os.urandom(TOKEN_BYTES)).rstrip(b"=").decode()
    temp = state_dir / f".{TOKEN_NAME}.{os.getpid()}.{os.urandom(4).hex()}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)  # exactly 0600, whatever the umask
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            return read_token(path)  # another hive won the race: use its token
    finally:
        os.unlink(temp)
    return token


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or IP literal, brackets allowed) is this machine only.

    Only ``localhost`` and loopback IP literals count: any other name may
    resolve elsewhere, now or later.
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
