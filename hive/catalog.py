"""The worker catalog: a directory with one folder per worker recipe.

Each folder holds a ``PKGBUILD`` and the local files it names. Worker names
are checked against makepkg's rules for ``pkgname`` before they are ever joined
to a path, so a name can never point outside the catalog.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

#: makepkg's rule for a pkgname; also what keeps "../x" or "/etc" out of paths.
WORKER_NAME = re.compile(r"^[a-z0-9@_+][a-z0-9@._+-]*\Z")  # \Z: "$" accepts a final "\n"
MAX_NAME_LENGTH = 127


class UnknownWorker(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no worker named {name!r} in the catalog")
        self.name = name


class InvalidWorkerName(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"invalid worker name {name!r}: use lowercase letters, digits and @._+- "
            "(not starting with . or -)"
        )


def bundled_catalog() -> Path:
    """The catalog shipped inside the package."""
    return Path(str(resources.files("hive") / "recipes"))


def check_worker_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or not WORKER_NAME.match(name):
        raise InvalidWorkerName(name)
    return name


class Catalog:
    """A local catalog directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> list[str]:
        """Worker names, sorted; folders without a PKGBUILD are not workers."""
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if WORKER_NAME.match(entry.name) and (entry / "PKGBUILD").is_file()
        )

    def recipe_dir(self, name: str) -> Path:
        """The folder of worker ``name``; raises :class:`UnknownWorker`."""
        folder = self.root / check_worker_name(name)
        if not (folder / "PKGBUILD").is_file():
            raise UnknownWorker(name)
        return folder
