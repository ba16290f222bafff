"""Remote catalogs: an index over HTTP(S), materialised into a local directory.

``hive serve --catalog https://host/catalog/index.json`` fetches the index, then
every file it lists, checks each against the index's sha256, and writes the
whole catalog into a fresh directory under ``<state>/catalog-cache/trees/``.
Only a complete, verified tree becomes the catalog (one attribute swap), so
the rest of the hive reads a plain directory and never sees a half-fetched
catalog. If the remote is unreachable at start, the last good tree is used
with a warning; with no such tree the hive refuses to start.

The index format (version 1), with URLs relative to the index's own URL::

    {"version": 1,
     "workers": [
       {"name": "hello",
        "files": [
          {"path": "PKGBUILD", "url": "hello/PKGBUILD", "sha256": "<64 hex>"},
          {"path": "hello.sh", "url": "hello/hello.sh", "sha256": "<64 hex>",
           "executable": true}],
        "srcinfo": "pkgbase = hello\n\tpkgver = 1.0\n..."}]}

A worker's optional ``srcinfo`` is its .SRCINFO (``makepkg --printsrcinfo``):
with it, listing the catalog reads metadata from the index and runs no recipe
code at all (the build re-reads the real PKGBUILD, sealed).

The file hashes protect the files only as well as the index is protected: a
plain-http index is refused unless the operator opts in
(``--allow-insecure-catalog``) or pins the index by its own sha256
(``--catalog-sha256``), which also makes http safe.

:func:`parse_index` (pure) validates it; :func:`build_index` writes one for a
catalog directory (``hive catalog-index DIR``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx
import trio

from hivewire.names import InvalidWorkerName, check_worker_name

from . import __version__
from .catalog import Catalog, CatalogUnavailable, check_recipe
from .pkgbuild import Recipe, RecipeError, parse_srcinfo, recipe_from_srcinfo

log = logging.getLogger("hive.catalog")

INDEX_VERSION = 1
MAX_INDEX_BYTES = 4 * 1024 * 1024
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_WORKERS = 1000
MAX_FILES = 1000

#: Files downloaded at the same time, and the bounds on one refresh.
FETCH_PARALLEL = 4
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
REFRESH_TIMEOUT = 300.0

STATE_FILE = "state.json"
INDEX_FILE = "index.json"
TREES = "trees"

_SHA256_HEX = frozenset("0123456789abcdef")


class BadIndex(ValueError):
    """The index does not follow the format; ``str()`` is one line."""


@dataclass(frozen=True)
class IndexFile:
    path: str
    url: str
    sha256: str
    executable: bool = False


@dataclass(frozen=True)
class IndexWorker:
    name: str
    files: tuple[IndexFile, ...]
    srcinfo: str | None = None


def _check_path(path: object, where: str) -> str:
    if not isinstance(path, str) or not path:
        raise BadIndex(f"{where}: path must be a non-empty string")
    pure = PurePosixPath(path)
    if (
        pure.is_absolute()
        or "\\" in path
        or "\0" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise BadIndex(f"{where}: path {path!r} must be relative, without '.' or '..' parts")
    return path


def _check_sha256(value: object, where: str) -> str:
    if not isinstance(value, str) or len(value) != 64 or not set(value.lower()) <= _SHA256_HEX:
        raise BadIndex(f"{where}: sha256 must be 64 hex digits")
    return value.lower()


def _check_url(value: object, base: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadIndex(f"{where}: url must be a non-empty string")
    url = urljoin(base, value)
    if urlsplit(url).scheme not in ("http", "https"):
        raise BadIndex(f"{where}: url {value!r} is not http(s)")
    return url


def _parse_file(raw: object, base: str, where: str) -> IndexFile:
    if not isinstance(raw, dict):
        raise BadIndex(f"{where}: each file must be an object")
    unknown = set(raw) - {"path", "url", "sha256", "executable"}
    if unknown:
        raise BadIndex(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    path = _check_path(raw.get("path"), where)
    where = f"{where} ({path})"
    executable = raw.get("executable", False)
    if not isinstance(executable, bool):
        raise BadIndex(f"{where}: executable must be true or false")
    return IndexFile(
        path=path,
        url=_check_url(raw.get("url"), base, where),
        sha256=_check_sha256(raw.get("sha256"), where),
        executable=executable,
    )


def _parse_worker(raw: object, base: str, position: int) -> IndexWorker:
    where = f"workers[{position}]"
    if not isinstance(raw, dict):
        raise BadIndex(f"{where} must be an object")
    unknown = set(raw) - {"name", "files", "srcinfo"}
    if unknown:
        raise BadIndex(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    name = raw.get("name")
    if not isinstance(name, str):
        raise BadIndex(f"{where}: name must be a string")
    try:
        check_worker_name(name)
    except InvalidWorkerName as exc:
        raise BadIndex(f"{where}: {exc}") from None
    where = f"worker {name!r}"
    files_raw = raw.get("files")
    if not isinstance(files_raw, list) or not files_raw:
        raise BadIndex(f"{where}: files must be a non-empty list")
    if len(files_raw) > MAX_FILES:
        raise BadIndex(f"{where}: more than {MAX_FILES} files")
    files = tuple(_parse_file(item, base, f"{where} file {i}") for i, item in enumerate(files_raw))
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths):
        raise BadIndex(f"{where}: a path is listed twice")
    # One file may not be another's directory ("a" and "a/b").
    prefixes = {str(parent) for p in paths for parent in PurePosixPath(p).parents}
    if prefixes & set(paths):
        raise BadIndex(f"{where}: a path is both a file and a directory")
    if "PKGBUILD" not in paths:
        raise BadIndex(f"{where}: no PKGBUILD among its files")
    srcinfo = raw.get("srcinfo")
    if srcinfo is not None:
        if not isinstance(srcinfo, str):
            raise BadIndex(f"{where}: srcinfo must be a string")
        try:
            parse_srcinfo(srcinfo)
        except RecipeError as exc:
            raise BadIndex(f"{where}: bad srcinfo: {exc}") from None
    return IndexWorker(name, files, srcinfo)


def parse_index(data: bytes, index_url: str) -> list[IndexWorker]:
    """Validate an index; relative URLs are resolved against ``index_url``."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadIndex(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BadIndex("the index must be a JSON object")
    if raw.get("version") != INDEX_VERSION:
        raise BadIndex(f"unsupported index version {raw.get('version')!r} (want {INDEX_VERSION})")
    workers_raw = raw.get("workers")
    if not isinstance(workers_raw, list):
        raise BadIndex("workers must be a list")
    if len(workers_raw) > MAX_WORKERS:
        raise BadIndex(f"more than {MAX_WORKERS} workers")
    workers = [_parse_worker(item, index_url, i) for i, item in enumerate(workers_raw)]
    names = [w.name for w in workers]
    if len(set(names)) != len(names):
        raise BadIndex("a worker is listed twice")
    return workers


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def build_index(directory: Path, srcinfo: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The index of a catalog directory, with URLs relative to the directory:
    serve ``directory`` over HTTP with the index as ``index.json`` at its top.
    ``srcinfo`` maps recipe folders to their .SRCINFO (see :func:`read_srcinfo`)."""
    workers = []
    for name in Catalog(directory).folders():
        folder = directory / name
        files = []
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            relative = path.relative_to(folder).as_posix()
            entry: dict[str, Any] = {
                "path": relative,
                "url": quote(f"{name}/{relative}"),
                "sha256": _sha256_file(path),
            }
            if os.access(path, os.X_OK):
                entry["executable"] = True
            files.append(entry)
        worker: dict[str, Any] = {"name": name, "files": files}
        if srcinfo and name in srcinfo:
            worker["srcinfo"] = srcinfo[name]
        workers.append(worker)
    return {"version": INDEX_VERSION, "workers": workers}


async def read_srcinfo(directory: Path) -> dict[str, str]:
    """The .SRCINFO of every readable recipe of a catalog directory (read sealed)."""
    catalog = Catalog(directory)
    result: dict[str, str] = {}
    for entry in await catalog.entries():
        if entry.recipe is not None:
            result[entry.recipe.pkgbase] = entry.recipe.srcinfo
    return result


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def insecure_message(url: str) -> str:
    return (
        f"refusing the catalog index {url}: over plain http anyone on the way can change it "
        "and the checksums in it; use https, pin it with --catalog-sha256, or pass "
        "--allow-insecure-catalog"
    )


async def _fetch(
    client: httpx.AsyncClient, url: str, limit: int, sink: Callable[[bytes], object]
) -> str:
    """GET ``url`` into ``sink`` chunk by chunk, refusing more than ``limit`` bytes.
    Returns the URL the body came from (after redirects)."""
    size = 0
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise CatalogUnavailable(f"cannot fetch {url}: HTTP {response.status_code}")
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise CatalogUnavailable(f"{url} is larger than {limit} bytes")
                sink(chunk)
            return str(response.url)
    except httpx.HTTPError as exc:
        raise CatalogUnavailable(f"cannot fetch {url}: {_reason(exc)}") from None


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class RemoteCatalog(Catalog):
    """A catalog fetched from an index URL and cached under ``cache_dir``."""

    kind = "remote"

    def __init__(
        self, url: str, cache_dir: Path, *, allow_insecure: bool = False, pin: str | None = None
    ) -> None:
        if urlsplit(url).scheme != "https" and not allow_insecure and pin is None:
            raise CatalogUnavailable(insecure_message(url))
        self.url = url
        self.pin = pin.lower() if pin else None
        self.allow_insecure = allow_insecure
        #: recipe folder -> its .SRCINFO from the index in use.
        self._srcinfo: dict[str, str] = {}
        self.cache_dir = cache_dir
        self.trees = cache_dir / TREES
        super().__init__(self.trees / "(none)", location=url)
        self.fetched_at: str | None = None
        #: True while the catalog in use is an old copy because the last fetch failed.
        self.stale = False
        self.last_error: str | None = None
        self._lock = trio.Lock()

    async def open(self) -> None:
        """Fetch the catalog; if that fails, fall back to the cached copy.

        Raises :class:`CatalogUnavailable` when there is neither.
        """
        try:
            await self.refresh()
        except CatalogUnavailable as exc:
            state = self._cached_state()
            if state is None:
                raise CatalogUnavailable(
                    f"{exc}, and there is no cached copy of the catalog {self.url} "
                    f"in {self.cache_dir}"
                ) from None
            self.root = self.cache_dir / state["tree"]
            self._srcinfo = self._cached_srcinfo()
            self.fetched_at = state.get("fetched_at")
            self.stale = True
            log.warning(
                "catalog %s is unreachable (%s); using the cached copy fetched at %s",
                self.url,
                exc,
                self.fetched_at,
            )

    def _cached_state(self) -> dict[str, Any] | None:
        """The last good fetch of *this* URL, if its tree is still there."""
        try:
            state = json.loads((self.cache_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(state, dict) or state.get("url") != self.url:
            return None
        tree = state.get("tree")
        if not isinstance(tree, str) or not (self.cache_dir / tree).is_dir():
            return None
        return state

    def _cached_srcinfo(self) -> dict[str, str]:
        try:
            workers = parse_index((self.cache_dir / INDEX_FILE).read_bytes(), self.url)
        except (OSError, BadIndex):
            return {}
        return {w.name: w.srcinfo for w in workers if w.srcinfo is not None}

    async def load(self, folder: str, directory: Path) -> Recipe:
        """From the index's .SRCINFO when it has one: no recipe code runs."""
        text = self._srcinfo.get(folder)
        if text is None:
            return await super().load(folder, directory)
        return check_recipe(folder, recipe_from_srcinfo(text))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "pinned": self.pin is not None,
            "fetched_at": self.fetched_at,
            "stale": self.stale,
            "error": self.last_error,
        }

    async def refresh(self) -> dict[str, Any]:
        """Fetch the index and its files; switch to the new tree only when all
        of it arrived and matched its checksums. Raises :class:`CatalogUnavailable`
        and keeps the current catalog on any failure."""
        async with self._lock:
            try:
                with trio.fail_after(REFRESH_TIMEOUT):
                    tree, index, srcinfo = await self._fetch_tree()
            except trio.TooSlowError:
                reason = f"fetching {self.url} took longer than {REFRESH_TIMEOUT:g} s"
                self._failed(reason)
                raise CatalogUnavailable(reason) from None
            except CatalogUnavailable as exc:
                self._failed(str(exc))
                raise
            previous, changed = self.root, tree != self.root
            self.fetched_at = _now()
            state = {"url": self.url, "tree": f"{TREES}/{tree.name}", "fetched_at": self.fetched_at}
            _write_atomically(self.cache_dir / INDEX_FILE, index)
            _write_atomically(self.cache_dir / STATE_FILE, json.dumps(state).encode())
            self.root, self.stale, self.last_error = tree, False, None
            self._srcinfo = srcinfo
            if changed:
                self.forget()
            # Keep the previous tree: a listing that started before the swap may still read it.
            await trio.to_thread.run_sync(self._prune, {tree, previous})
            log.info(
                "catalog %s fetched: %d worker(s)%s",
                self.url,
                len(self.folders()),
                "" if changed else ", unchanged",
            )
            return {**self.describe(), "workers": len(self.folders()), "changed": changed}

    def _failed(self, reason: str) -> None:
        """The catalog in use (if any) is now known to be out of date."""
        self.last_error = reason
        self.stale = self.fetched_at is not None

    async def _fetch_tree(self) -> tuple[Path, bytes, dict[str, str]]:
        async with httpx.AsyncClient(
            timeout=HTTP_TIMEOUT,
            follow_redirects=True,
            headers={"User-Agent": f"hive/{__version__}"},
        ) as client:
            chunks: list[bytes] = []
            final_url = await _fetch(client, self.url, MAX_INDEX_BYTES, chunks.append)
            if urlsplit(final_url).scheme != "https" and not self.allow_insecure and not self.pin:
                raise CatalogUnavailable(insecure_message(final_url))
            index = b"".join(chunks)
            digest = hashlib.sha256(index).hexdigest()
            if self.pin is not None and digest != self.pin:
                raise CatalogUnavailable(
                    f"catalog index {self.url} has sha256 {digest}, not the pinned {self.pin}"
                )
            try:
                workers = parse_index(index, self.url)
            except BadIndex as exc:
                raise CatalogUnavailable(f"bad catalog index {self.url}: {exc}") from None
            srcinfo = {w.name: w.srcinfo for w in workers if w.srcinfo is not None}
            # Trees are named by the index's hash: an unchanged index reuses its tree.
            tree = self.trees / digest[:16]
            if tree.is_dir():
                return tree, index, srcinfo
            self.trees.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self.trees))
            try:
                await self._download_all(client, workers, staging)
                os.rename(staging, tree)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_remove, staging)
                raise
            return tree, index, srcinfo

    async def _download_all(
        self, client: httpx.AsyncClient, workers: list[IndexWorker], staging: Path
    ) -> None:
        """Every file, a few at a time; the first failure stops the rest."""
        slots = trio.CapacityLimiter(FETCH_PARALLEL)
        errors: list[CatalogUnavailable] = []

        async def one(worker: str, file: IndexFile, nursery: trio.Nursery) -> None:
            async with slots:
                try:
                    await _download(client, worker, file, staging / worker / file.path)
                except CatalogUnavailable as exc:
                    errors.append(exc)
                    nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            for worker in workers:
                for file in worker.files:
                    nursery.start_soon(one, worker.name, file, nursery)
        if errors:
            raise errors[0]

    def _prune(self, keep: set[Path]) -> None:
        """Trees no longer in use, and staging dirs of fetches that never finished."""
        if not self.trees.is_dir():
            return
        for entry in self.trees.iterdir():
            if entry not in keep:
                _remove(entry)


async def _download(client: httpx.AsyncClient, worker: str, file: IndexFile, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with dest.open("xb") as out:

        def sink(chunk: bytes) -> None:
            digest.update(chunk)
            out.write(chunk)

        await _fetch(client, file.url, MAX_FILE_BYTES, sink)
    if digest.hexdigest() != file.sha256:
        raise CatalogUnavailable(f"checksum mismatch for {worker}/{file.path} from {file.url}")
    dest.chmod(0o755 if file.executable else 0o644)


async def open_catalog(
    location: Path | str,
    state_dir: Path,
    *,
    allow_insecure: bool = False,
    pin: str | None = None,
) -> Catalog:
    """The catalog at ``location``: a directory, or an http(s) URL of an index."""
    if isinstance(location, str):
        catalog = RemoteCatalog(
            location, state_dir / "catalog-cache", allow_insecure=allow_insecure, pin=pin
        )
        await catalog.open()
        return catalog
    return Catalog(location)
