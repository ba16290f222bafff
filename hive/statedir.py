"""The state dir is private: the hive's user's alone, mode 0700, its files 0600.

It holds the token, the job records (``jobs.db``) and every job's output
(``logs/``), which may carry whatever a build printed. A state dir that
already exists is made private too, whoever created it with which umask: a
``mkdir`` of the operator's, or an older hive's, would otherwise leave
``jobs.db`` and the logs readable by every user of the machine. A state dir
owned by another user is refused rather than taken over: that user could read
or replace everything in it, the token included.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hivewire.tokenfile import TOKEN_NAME

#: Directories of the hive's own files whose files are made 0600 at start.
PRIVATE_FILE_DIRS = ("", "logs")


class StateDirError(ValueError):
    """The state dir cannot be used; ``str()`` says why, in one line."""


def prepare_state_dir(path: Path) -> None:
    """Create ``path`` (0700) or make an existing one private; refuse one that
    is not a directory or belongs to another user.

    Workers, build dirs and the catalog cache below it keep their modes (an
    installed worker's programs stay executable): the 0700 directory above them
    already keeps other users out.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise StateDirError(f"cannot create the state dir {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise StateDirError(f"the state dir {path} is not a directory")
    if info.st_uid != os.geteuid():
        raise StateDirError(
            f"the state dir {path} belongs to another user (uid {info.st_uid}); "
            "refusing to use it (use --state-dir, or chown it)"
        )
    try:
        os.chmod(path, 0o700)
        for name in PRIVATE_FILE_DIRS:
            directory = path / name
            if name:
                if not directory.is_dir() or directory.is_symlink():
                    continue
                os.chmod(directory, 0o700)
            for entry in os.scandir(directory):
                if not name and entry.name == TOKEN_NAME:
                    continue  # an exposed token is refused, not quietly hidden (tokenfile)
                if (
                    entry.is_file(follow_symlinks=False)
                    and stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode) & 0o077
                ):
                    os.chmod(entry.path, 0o600)
    except OSError as exc:
        raise StateDirError(f"cannot make the state dir {path} private: {exc}") from None
