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

from hivewire.names import MAX_NAME_LENGTH, WORKER_NAME, check_worker_name

from . import version
from .pkgbuild import (
    Recipe,
    RecipeError,
    RecipeTimeout,
    empty_metadata,
    missing_dependencies,
    read_recipe,
)

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


async def load_recipe(folder: str, directory: Path) -> Recipe:
    """Read the recipe in catalog folder ``folder`` (at ``directory``), and
    apply :func:`check_recipe`."""
    return check_recipe(folder, await read_recipe(directory))


def check_recipe(folder: str, recipe: Recipe) -> Recipe:
    """The catalog's own rules on top of makepkg's: the ``pkgbase`` (for a
    single package, its ``pkgname``) must be the folder's name, and every
    package name must be a valid worker name (lowercase: makepkg allows
    capitals), because a worker is asked for by one and installed under the
    other. Raises :class:`RecipeError`."""
    if recipe.pkgbase != folder:
        raise RecipeError(
            f"pkgbase {recipe.pkgbase!r} does not match its catalog folder {folder!r}"
        )
    for name in recipe.names:
        if len(name) > MAX_NAME_LENGTH or not WORKER_NAME.match(name):
            raise RecipeError(
                f"pkgname {name!r} is not a valid worker name (lowercase letters, digits and @._+-)"
            )
    return recipe


@dataclass(frozen=True)
class CatalogEntry:
    """One worker of the catalog: a package of a recipe, or why it is broken.

    A recipe with split packages gives one entry per package, all with the same
    ``directory`` and ``recipe``; a recipe that cannot be read gives one broken
    entry named after its folder. A recipe that reads but cannot be built here
    (another architecture, checksums that do not add up) keeps its metadata.
    """

    name: str
    directory: Path
    recipe: Recipe | None
    problem: str | None = None

    @property
    def broken(self) -> bool:
        return self.problem is not None

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
        meta = recipe.to_json(self.name) if recipe else {}
        newest = version.newest(installed)
        row: dict[str, Any] = {
            "name": self.name,
            "pkgbase": recipe.pkgbase if recipe else None,
            "version": meta.get("version"),
            "release": meta.get("release"),
            "epoch": meta.get("epoch"),
            "full_version": meta.get("full_version"),
            "description": meta.get("description"),
            "arch": meta.get("arch", []),
            "depends": meta.get("depends", []),
            "makedepends": meta.get("makedepends", []),
            "missing": missing_dependencies(recipe, self.name) if recipe else [],
            "installed": sorted(installed, key=version.sort_key),
            "newer": bool(
                recipe and newest is not None and version.vercmp(recipe.full_version, newest) > 0
            ),
            "installing": installing,
            "broken": self.broken,
            "reason": self.problem,
        }
        if detail:
            row = {**empty_metadata(), **meta, **row}
            row["srcinfo"] = recipe.srcinfo if recipe else None
            row["files"] = _recipe_files(self.directory)
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
    remote catalog); ``root`` is the directory actually read. Each folder holds
    one recipe, named after its ``pkgbase``; a recipe with split packages gives
    a worker per package, so which folder holds a worker is known only once the
    folders are read (:meth:`entries` records it).
    """

    kind = "directory"

    def __init__(self, root: Path, *, location: str | None = None) -> None:
        self.root = root
        self.location = location or str(root)
        self._cache: dict[Path, tuple[_FileKey, list[CatalogEntry]]] = {}
        self._owner: dict[str, str] = {}
        self._reading: dict[Path, trio.Event] = {}
        self._readers = trio.CapacityLimiter(READ_PARALLEL)
        self._fingerprint = _fingerprint(root)

    def folders(self) -> list[str]:
        """Recipe folder names, sorted; folders without a PKGBUILD are not recipes."""
        root = self.root
        if not root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in root.iterdir()
            if WORKER_NAME.match(entry.name) and (entry / "PKGBUILD").is_file()
        )

    def recipe_dir(self, folder: str) -> Path:
        """The recipe folder ``folder``; raises :class:`UnknownWorker`."""
        directory = self.root / check_worker_name(folder)
        if not (directory / "PKGBUILD").is_file():
            raise UnknownWorker(folder)
        return directory

    async def read_folder(self, folder: str) -> list[CatalogEntry]:
        """The entries of one recipe folder, read or from the cache: one per
        package, or a single broken one. Raises :class:`UnknownWorker`."""
        directory = self.recipe_dir(folder)
        while True:
            key = _file_key(directory / "PKGBUILD")
            cached = self._cache.get(directory)
            if key is not None and cached is not None and cached[0] == key:
                return cached[1]
            # One read of a folder at a time: a listing during the warm-up (or
            # two listings at once) waits for the read in flight, then uses it.
            pending = self._reading.get(directory)
            if pending is None:
                break
            await pending.wait()
        done = self._reading[directory] = trio.Event()
        try:
            entries = await self._read(folder, directory)
        finally:
            del self._reading[directory]
            done.set()
        for entry in entries:
            self._owner.setdefault(entry.name, folder)
        return entries

    async def _read(self, folder: str, directory: Path) -> list[CatalogEntry]:
        key = _file_key(directory / "PKGBUILD")
        async with self._readers:
            try:
                recipe = await self.load(folder, directory)
            except RecipeTimeout as exc:
                return [CatalogEntry(folder, directory, None, str(exc))]  # not a verdict: no cache
            except RecipeError as exc:
                entries = [CatalogEntry(folder, directory, None, str(exc))]
            else:
                problem = "; ".join(recipe.problems) or None
                entries = [CatalogEntry(name, directory, recipe, problem) for name in recipe.names]
        if key is not None and key == _file_key(directory / "PKGBUILD"):
            self._cache[directory] = (key, entries)
        return entries

    async def load(self, folder: str, directory: Path) -> Recipe:
        """The recipe of one folder (uncached); a remote catalog may know it
        without reading the PKGBUILD."""
        return await load_recipe(folder, directory)

    async def entry(self, name: str) -> CatalogEntry:
        """Worker ``name``'s entry.

        Raises :class:`UnknownWorker`/:class:`InvalidWorkerName`; a broken
        recipe is an entry, not an error.
        """
        check_worker_name(name)
        for attempt in range(2):
            candidates = [name] if (self.root / name / "PKGBUILD").is_file() else []
            owner = self._owner.get(name)
            if owner is not None and owner not in candidates:
                candidates.append(owner)
            for folder in candidates:
                with contextlib.suppress(UnknownWorker):
                    for entry in await self.read_folder(folder):
                        if entry.name == name:
                            return entry
            if attempt == 0:
                await self.entries()  # learn which folder holds which package
        raise UnknownWorker(name)

    async def entries(self) -> list[CatalogEntry]:
        """Every worker, sorted by name; reads run concurrently, up to a bound.

        A package name claimed by two recipes goes to the folder of that name,
        else to the first folder in name order.
        """
        folders = self.folders()
        found: dict[str, list[CatalogEntry]] = {}

        async def read(folder: str) -> None:
            with contextlib.suppress(UnknownWorker):  # removed while we were listing
                found[folder] = await self.read_folder(folder)

        async with trio.open_nursery() as nursery:
            for folder in folders:
                nursery.start_soon(read, folder)
        # Forget recipes that left the catalog, so the cache stays its size.
        current = {self.root / folder for folder in found}
        for stale in set(self._cache) - current:
            del self._cache[stale]
        by_name: dict[str, CatalogEntry] = {}
        owner: dict[str, str] = {}
        for folder in sorted(found):
            for entry in found[folder]:
                if entry.name not in by_name or entry.name == folder:
                    by_name[entry.name] = entry
                    owner[entry.name] = folder
        self._owner = owner
        return [by_name[name] for name in sorted(by_name)]

    def describe(self) -> dict[str, Any]:
        """Where the catalog comes from, for the API."""
        return {"kind": self.kind, "location": self.location}

    async def refresh(self) -> dict[str, Any]:
        """Re-read everything on the next listing. A remote catalog also re-fetches."""
        self._cache.clear()
        fingerprint = await trio.to_thread.run_sync(_fingerprint, self.root)
        changed, self._fingerprint = fingerprint != self._fingerprint, fingerprint
        return {**self.describe(), "workers": len(self.folders()), "changed": changed}

    def forget(self) -> None:
        """Drop cached metadata: the directory was replaced."""
        self._cache.clear()
        self._owner.clear()
