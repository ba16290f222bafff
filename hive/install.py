"""The ``worker_download`` operation: build a recipe and install the worker.

The whole build — fetching, checksums, ``prepare/build/check/package`` — runs in
one job process tree (``makepkg.sh``), so cancelling the job covers every stage.
Only after that tree exited successfully and is gone does the hive install the
result: the package dir is moved into place with ``rename``, so a cancelled or
failed build never leaves a half-installed worker, and the version installed
before stays until the new one is in place.

The recipe is copied into the build dir before it is read, and the build uses
that copy: what was validated is what is built, even if the catalog changes (or
a remote catalog is refreshed) while the job waits for a slot.

One install per worker at a time: :class:`Installer` refuses a second one while
the first is queued or running (:class:`InstallInProgress`), so two builds of a
worker can never interleave their install steps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import trio

from hivewire.names import WORKER_DOWNLOAD, check_worker_name
from hivewire.protocol import Stream

from .catalog import Catalog, load_recipe
from .jobs import Job, JobEngine, JobFailure, JobSpec
from .jobsandbox import job_environment
from .pkgbuild import Recipe, RecipeError, missing_dependencies

log = logging.getLogger("hive.install")

OPERATION = WORKER_DOWNLOAD
MANIFEST = ".hive-manifest.json"

#: Prefix of directories under ``workers/`` that are on their way out; names
#: of workers cannot start with a dot, so these never look like workers.
_TRASH = ".trash-"


class RecipeBroken(ValueError):
    """The recipe cannot be built as it is: bad syntax or bad metadata."""


class InstallInProgress(Exception):
    """Another install of the same worker is queued or running."""

    def __init__(self, worker: str, job_id: str | None) -> None:
        which = f": job {job_id}" if job_id else " (being prepared)"
        super().__init__(f"an install of {worker!r} is already in progress{which}")
        self.worker, self.job_id = worker, job_id


class MissingDependencies(Exception):
    """Commands the recipe needs are not on this machine's PATH."""

    def __init__(self, worker: str, missing: list[str]) -> None:
        super().__init__(f"cannot install {worker!r}: missing dependencies: {', '.join(missing)}")
        self.missing = missing


class NotInstalled(LookupError):
    def __init__(self, worker: str) -> None:
        super().__init__(f"worker {worker!r} is not installed")


def makepkg_script() -> Path:
    return Path(str(resources.files("hive") / "makepkg.sh"))


@dataclass(frozen=True)
class InstalledWorker:
    name: str
    version: str
    path: Path
    manifest: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        files = self.manifest.get("files")
        return {
            "name": self.name,
            "version": self.version,
            "path": str(self.path),
            "installed_at": self.manifest.get("installed_at"),
            "files": len(files) if isinstance(files, dict) else 0,
            "recipe_sha256": self.manifest.get("recipe_sha256"),
            "job_id": self.manifest.get("job_id"),
        }


class Installer:
    """Turns "install worker X" into a job, and owns ``<state>/workers``."""

    def __init__(self, catalog: Catalog, state_dir: Path, engine: JobEngine) -> None:
        self.catalog = catalog
        self.engine = engine
        self.builds = state_dir / "builds"
        self.workers = state_dir / "workers"
        #: worker -> its install job; None while the request is being prepared.
        self._active: dict[str, Job | None] = {}

    def recover(self) -> int:
        """Remove what a hive that died mid-install left: build dirs, and
        versions that were being replaced or removed. Call before any job runs.
        Returns how many directories were removed."""
        leftovers = list(self.builds.iterdir()) if self.builds.is_dir() else []
        if self.workers.is_dir():
            leftovers += self.workers.glob(f"{_TRASH}*")
            leftovers += self.workers.glob(f"*/{_TRASH}*")
        for path in leftovers:
            _remove_tree(path)
        return len(leftovers)

    def active(self, worker: str) -> Job | None:
        """The queued or running install job of ``worker``, if any."""
        return self._active.get(worker)

    async def install(self, worker: str, *, force: bool = False, skip_check: bool = False) -> Job:
        """Submit a job that installs ``worker``, after the checks that can fail fast.

        Raises UnknownWorker/InvalidWorkerName, :class:`RecipeBroken`,
        :class:`MissingDependencies` or :class:`InstallInProgress` before any
        job exists. If that version is installed already (and not ``force``),
        the job does nothing and succeeds at once.
        """
        source = self.catalog.recipe_dir(worker)
        if worker in self._active:
            job = self._active[worker]
            raise InstallInProgress(worker, job.id if job else None)
        self._active[worker] = None  # claimed: a second request is refused from now on
        job = None
        try:
            job = await self._submit(worker, source, force=force, skip_check=skip_check)
        finally:
            if job is None:
                del self._active[worker]
        return job

    async def _submit(self, worker: str, source: Path, *, force: bool, skip_check: bool) -> Job:
        self.builds.mkdir(parents=True, exist_ok=True)
        build_dir = Path(await trio.to_thread.run_sync(_make_temp_dir, self.builds, worker))
        try:
            recipe_dir = build_dir / "recipe"
            await trio.to_thread.run_sync(_copy_recipe, source, recipe_dir)
            try:
                recipe = await load_recipe(worker, recipe_dir)
            except RecipeError as exc:
                raise RecipeBroken(f"recipe {worker!r} is broken: {exc}") from None
            target = self.workers / recipe.name / recipe.full_version
            if not force and (target / MANIFEST).is_file():
                await trio.to_thread.run_sync(_remove_tree, build_dir)
                return self._start(worker, self._already_installed(recipe, target))
            missing = missing_dependencies(recipe)
            if missing:
                raise MissingDependencies(worker, missing)
            env = job_environment()
            if skip_check:
                env["HIVE_SKIP_CHECK"] = "1"
            spec = JobSpec(
                operation=OPERATION,
                worker=worker,
                argv=["bash", str(makepkg_script()), str(recipe_dir), str(build_dir)],
                env=env,
                cwd=build_dir,
                finish=lambda job: self._finish(job, recipe, recipe_dir, build_dir),
                cleanup=lambda job: self._cleanup(job, build_dir),
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_remove_tree, build_dir)
            raise
        return self._start(worker, spec)

    def _already_installed(self, recipe: Recipe, target: Path) -> JobSpec:
        """A job that runs no process: that version is there already."""

        async def finish(job: Job) -> None:
            job.message(
                f"{recipe.name} {recipe.full_version} is already installed in {target}; "
                'nothing to do (rebuild it with --force, or "force": true)'
            )

        async def cleanup(job: Job) -> None:
            self._release(job)

        return JobSpec(
            operation=OPERATION, worker=recipe.name, argv=[], env={}, finish=finish, cleanup=cleanup
        )

    def _start(self, worker: str, spec: JobSpec) -> Job:
        job = self.engine.submit(spec)
        self._active[worker] = job
        return job

    def _release(self, job: Job) -> None:
        if self._active.get(job.spec.worker) is job:
            del self._active[job.spec.worker]

    async def _cleanup(self, job: Job, build_dir: Path) -> None:
        """Whatever the outcome: no build dir left, and the worker free again."""
        try:
            await trio.to_thread.run_sync(_remove_tree, build_dir)
        finally:
            self._release(job)

    async def _finish(self, job: Job, recipe: Recipe, recipe_dir: Path, build_dir: Path) -> None:
        package = build_dir / "pkg" / recipe.name
        if not package.is_dir():
            raise JobFailure(f"package() did not create {package}")
        target = self.workers / recipe.name / recipe.full_version
        _stage(job, f"Installing into {target}")
        try:
            await trio.to_thread.run_sync(_write_manifest, recipe, recipe_dir, package, job.id)
            replaced = await trio.to_thread.run_sync(_move_into_place, package, target)
        except OSError as exc:
            raise JobFailure(f"installing into {target} failed: {exc}") from None
        for version in replaced:
            _stage(job, f"Removed previous version {version}")
        job.message(f"installed {recipe.name} {recipe.full_version} into {target}")

    def installed(self, worker: str | None = None) -> list[InstalledWorker]:
        """Installed workers (of ``worker`` only, if given), by name and version."""
        result: list[InstalledWorker] = []
        pattern = f"{check_worker_name(worker) if worker else '*'}/*/{MANIFEST}"
        if not self.workers.is_dir():
            return result
        for manifest_path in sorted(self.workers.glob(pattern)):
            if any(
                part.startswith(".")
                for part in manifest_path.parent.relative_to(self.workers).parts
            ):
                continue
            try:
                manifest = json.loads(manifest_path.read_text())
                result.append(
                    InstalledWorker(
                        manifest["name"], manifest["version"], manifest_path.parent, manifest
                    )
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable manifest %s: %s", manifest_path, exc)
        return result

    async def remove(self, worker: str) -> list[str]:
        """Uninstall every version of ``worker``; returns the versions removed.

        The worker's directory disappears with one rename, then is deleted.
        Raises :class:`NotInstalled` and :class:`InstallInProgress`.
        """
        folder = self.workers / check_worker_name(worker)
        if worker in self._active:
            job = self._active[worker]
            raise InstallInProgress(worker, job.id if job else None)
        if not folder.is_dir():
            raise NotInstalled(worker)
        versions = [installed.version for installed in self.installed(worker)]
        trash = self.workers / f"{_TRASH}{worker}-{secrets.token_hex(4)}"
        os.rename(folder, trash)
        await trio.to_thread.run_sync(_remove_tree, trash)
        return versions


def _stage(job: Job, text: str) -> None:
    """A stage line in the build's own output, in makepkg.sh's ``==>`` style."""
    job.log.append_output(Stream.STDOUT, f"==> {text}\n".encode())


def _make_temp_dir(parent: Path, worker: str) -> str:
    return tempfile.mkdtemp(prefix=f"{worker}-", dir=parent)


def _copy_recipe(source: Path, destination: Path) -> None:
    shutil.copytree(source, destination, symlinks=True)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(recipe: Recipe, recipe_dir: Path, package: Path, job_id: str) -> dict[str, Any]:
    files = {
        str(path.relative_to(package)): _sha256(path)
        for path in sorted(package.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }
    manifest: dict[str, Any] = {
        "name": recipe.name,
        "version": recipe.full_version,
        "installed_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "job_id": job_id,
        "recipe_sha256": _sha256(recipe_dir / "PKGBUILD"),
        "files": files,
    }
    (package / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _move_into_place(package: Path, target: Path) -> list[str]:
    """Install ``package`` as ``target``; returns the other versions it replaced.

    Renames only: a version being replaced is moved aside first, then the new
    one takes its name, and only then is anything deleted. At no moment is a
    partly written directory at ``target``.
    """
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    trash: list[Path] = []
    if target.exists():
        aside = parent / f"{_TRASH}{target.name}-{secrets.token_hex(4)}"
        os.rename(target, aside)
        trash.append(aside)
    os.rename(package, target)
    replaced = []
    for other in sorted(parent.iterdir()):
        if other != target and not other.name.startswith(".") and other.is_dir():
            aside = parent / f"{_TRASH}{other.name}-{secrets.token_hex(4)}"
            os.rename(other, aside)
            trash.append(aside)
            replaced.append(other.name)
    for path in trash:
        shutil.rmtree(path, ignore_errors=True)
    return replaced
