"""The worker catalog: a directory with one folder per worker recipe.

Each folder holds a ``PKGBUILD`` and the local files it names. Worker names
are checked against makepkg's rules for ``pkgname`` before they are ever joined
to a path, so a name can never point outside the catalog.

A remote catalog (:mod:`hive.remote`) materialises into such a directory, so
everything here — and everything that reads recipes — works on directories
only.

Reading a recipe's metadata runs bash, so :class:`Catalog` reads recipes
concurrently (bounded) and caches each result under the PKGBUILD's identity
(path, mtime, size, inode): listing an unchanged catalog runs no bash at all.
A recipe that cannot be read is an entry with a ``problem``, never an error of
the listing.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import trio

from hivewire.names import WORKER_NAME, check_worker_name

from .pkgbuild import Recipe, RecipeError, RecipeTimeout, missing_dependencies, read_recipe

#: How many PKGBUILDs are read (one bash each) at the same time.
READ_PARALLEL = max(2, os.cpu_count() or 2)


class UnknownWorker(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no worker named {name!r} in the catalog")
        self.name = name


class CatalogUnavailable(Exception):
    """The catalog cannot be used at all (e.g. a remote one that was never fetched)."""


def bundled_catalog() -> Path:
    """The catalog shipped inside the package."""
    return Path(str(resources.files("hive") / "recipes"))


async def load_recipe(name: str, directory: Path) -> Recipe:
    """Read the recipe of worker ``name`` from ``directory``.

    On top of :func:`read_recipe`'s checks, the catalog's own rule: the
    ``pkgname`` must be the folder's name, because the worker is asked for by
    one and installed under the other.
    """
    recipe = await read_recipe(directory)
    if recipe.name != name:
        raise RecipeError(f"pkgname {recipe.name!r} does not match its catalog folder {name!r}")
    return recipe


@dataclass(frozen=True)
class CatalogEntry:
    """One worker of the catalog: its recipe, or why it is broken."""

    name: str
    directory: Path
    recipe: Recipe | None
    problem: str | None = None

    @property
    def broken(self) -> bool:
        return self.recipe is None

    def to_json(
        self,
        *,
        installed: list[str],
        installing: str | None = None,
        detail: bool = False,
    ) -> dict[str, Any]:
        """The API's view. Missing dependencies are computed now, not cached:
        installing a tool must show up without touching the recipe."""
        recipe = self.recipe
        row: dict[str, Any] = {
            "name": self.name,
            "version": recipe.version if recipe else None,
            "release": recipe.release if recipe else None,
            "full_version": recipe.full_version if recipe else None,
            "description": recipe.description if recipe else None,
            "arch": list(recipe.arch) if recipe else [],
            "depends": list(recipe.depends) if recipe else [],
            "makedepends": list(recipe.makedepends) if recipe else [],
            "missing": missing_dependencies(recipe) if recipe else [],
            "installed": installed,
            "installing": installing,
            "broken": self.broken,
            "reason": self.problem,
        }
        if detail:
            row.update(
                {
                    "url": recipe.url if recipe else None,
                    "license": list(recipe.license) if recipe else [],
                    "sources": list(recipe.sources) if recipe else [],
                    "sha256sums": list(recipe.sha256sums) if recipe else [],
                    "functions": sorted(recipe.functions) if recipe else [],
                    "files": _recipe_files(self.directory),
                }
            )
        return row


def _recipe_files(directory: Path) -> list[str]:
    """The files of a recipe folder, relative, sorted."""
    try:
        return sorted(
            str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file()
        )
    except OSError:
        return []


#: What identifies one version of a PKGBUILD on disk.
_FileKey = tuple[int, int, int]


def _fingerprint(root: Path) -> frozenset[tuple[str, _FileKey]]:
    """Every file of the catalog directory with its identity: what a refresh
    compares to tell whether the catalog changed."""
    found = set()
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            key = _file_key(path)
            if key is not None:
                found.add((str(path.relative_to(root)), key))
    return frozenset(found)


def _file_key(path: Path) -> _FileKey | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class Catalog:
    """A local catalog directory, with a metadata cache.

    ``location`` is what the operator named (a directory, or a URL for a
    remote catalog); ``root`` is the directory actually read.
    """

    kind = "directory"

    def __init__(self, root: Path, *, location: str | None = None) -> None:
        self.root = root
        self.location = location or str(root)
        self._cache: dict[Path, tuple[_FileKey, CatalogEntry]] = {}
        self._readers = trio.CapacityLimiter(READ_PARALLEL)
        self._fingerprint = _fingerprint(root)

    def names(self) -> list[str]:
        """Worker names, sorted; folders without a PKGBUILD are not workers."""
        root = self.root
        if not root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in root.iterdir()
            if WORKER_NAME.match(entry.name) and (entry / "PKGBUILD").is_file()
        )

    def recipe_dir(self, name: str) -> Path:
        """The folder of worker ``name``; raises :class:`UnknownWorker`."""
        folder = self.root / check_worker_name(name)
        if not (folder / "PKGBUILD").is_file():
            raise UnknownWorker(name)
        return folder

    async def entry(self, name: str) -> CatalogEntry:
        """Worker ``name``'s entry, read or from the cache.

        Raises :class:`UnknownWorker`/:class:`InvalidWorkerName`; a broken
        recipe is an entry, not an error.
        """
        directory = self.recipe_dir(name)
        key = _file_key(directory / "PKGBUILD")
        cached = self._cache.get(directory)
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        async with self._readers:
            try:
                entry = CatalogEntry(name, directory, await load_recipe(name, directory))
            except RecipeTimeout as exc:
                return CatalogEntry(name, directory, None, str(exc))  # not a verdict: no cache
            except RecipeError as exc:
                entry = CatalogEntry(name, directory, None, str(exc))
        if key is not None and key == _file_key(directory / "PKGBUILD"):
            self._cache[directory] = (key, entry)
        return entry

    async def entries(self) -> list[CatalogEntry]:
        """Every worker, sorted by name; reads run concurrently, up to a bound."""
        names = self.names()
        found: dict[str, CatalogEntry] = {}

        async def read(name: str) -> None:
            with contextlib.suppress(UnknownWorker):  # removed while we were listing
                found[name] = await self.entry(name)

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(read, name)
        # Forget recipes that left the catalog, so the cache stays its size.
        current = {entry.directory for entry in found.values()}
        for stale in set(self._cache) - current:
            del self._cache[stale]
        return [found[name] for name in names if name in found]

    def describe(self) -> dict[str, Any]:
        """Where the catalog comes from, for the API."""
        return {"kind": self.kind, "location": self.location}

    async def refresh(self) -> dict[str, Any]:
        """Re-read everything on the next listing. A remote catalog also re-fetches."""
        self._cache.clear()
        fingerprint = await trio.to_thread.run_sync(_fingerprint, self.root)
        changed, self._fingerprint = fingerprint != self._fingerprint, fingerprint
        return {**self.describe(), "workers": len(self.names()), "changed": changed}

    def forget(self) -> None:
        """Drop cached metadata: the directory was replaced."""
        self._cache.clear()
