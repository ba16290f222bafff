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

Recipe code never runs as root: a root hive builds as its build user (see
:mod:`hive.jobsandbox`), in a build dir that user owns under a build root
outside the (private) state dir; the finished package is then *copied* into
``workers/`` by the hive, so installed workers are the hive's files, and
nothing the build left (a symlink, a hard link) is followed or kept as it is.
The recipe's checksum in the manifest is taken before the build runs.

One install per worker at a time: :class:`Installer` refuses a second one while
the first is queued or running (:class:`InstallInProgress`), so two builds of a
worker can never interleave their install steps.

A recipe with split packages (``pkgname=(a b)``) is built once, and each of its
``package_NAME()`` functions makes a worker of its own name; installing any of
them installs all (and claims all), and each can be removed on its own.
Versions compare as pacman compares them (:mod:`hive.version`), and a
``pkgver()`` function may change the version during the build: what is
installed is the version the build reports.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import trio

from hivewire.names import WORKER_DOWNLOAD, check_worker_name
from hivewire.protocol import Stream

from . import faults, version
from .catalog import Catalog, load_recipe
from .jobs import Job, JobEngine, JobFailure, JobSpec
from .jobsandbox import BuildUser, job_environment, which_for
from .logfile import LogCorrupt, log_path, scan_log
from .pkgbuild import Recipe, RecipeError, missing_dependencies
from .store import JobState
from .swap import MANIFEST, TRASH, Swap, commit, settle, stage, trash_paths
from .swap import recover as recover_swaps

log = logging.getLogger("hive.install")

OPERATION = WORKER_DOWNLOAD


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

    def __init__(
        self,
        catalog: Catalog,
        state_dir: Path,
        engine: JobEngine,
        *,
        build_user: BuildUser | None = None,
    ) -> None:
        self.catalog = catalog
        self.engine = engine
        self.build_user = build_user
        #: The build user must reach its build dir, and the state dir is the
        #: hive's alone (0700): builds of another user live elsewhere.
        self.builds = build_root(state_dir, shared=build_user is not None)
        #: Where builds of the hive's own user were (a hive restarted with another
        #: build user may find leftovers there).
        self._private_builds = build_root(state_dir, shared=False)
        self.workers = state_dir / "workers"
        #: worker -> its install job; None while the request is being prepared.
        self._active: dict[str, Job | None] = {}

    def recover(self) -> int:
        """Finish or roll back the installs a hive that died mid-install left
        (:func:`hive.swap.recover`, by what each job's log records), and remove
        its build dirs (in either build root) and what was on its way out. Call
        before any job runs. Returns how many installs were settled and
        directories removed."""
        settled = recover_swaps(self.workers, self._succeeded)
        for swap, outcome in settled:
            log.info("install of %s by job %s: %s", swap.name, swap.job_id, outcome)
        leftovers = [
            path
            for root in dict.fromkeys([self.builds, self._private_builds])
            if root.is_dir()
            for path in root.iterdir()
        ]
        leftovers += trash_paths(self.workers)
        for path in leftovers:
            _remove_tree(path)
        return len(settled) + len(leftovers)

    def _succeeded(self, job_id: str) -> bool:
        """Whether the job's log ends with its ``end`` event, saying "succeeded"."""
        try:
            end = scan_log(log_path(self.engine.log_dir, job_id)).last_control or {}
        except (OSError, LogCorrupt):
            return False
        return end.get("type") == "end" and end.get("state") == JobState.SUCCEEDED.value

    def active(self, worker: str) -> Job | None:
        """The queued or running install job of ``worker``, if any."""
        return self._active.get(worker)

    async def install(self, worker: str, *, force: bool = False, skip_check: bool = False) -> Job:
        """Submit a job that installs ``worker``, after the checks that can fail fast.

        Raises UnknownWorker/InvalidWorkerName, :class:`RecipeBroken`,
        :class:`MissingDependencies` or :class:`InstallInProgress` before any
        job exists. If that version is installed already (and not ``force``),
        the job does nothing and succeeds at once. The packages of a split
        recipe are installed together, and claimed together.
        """
        entry = await self.catalog.entry(worker)
        names = entry.recipe.names if entry.recipe is not None else (worker,)
        await self._after_settling(names)
        for name in names:
            if name in self._active:
                job = self._active[name]
                raise InstallInProgress(worker, job.id if job else None)
        for name in names:  # claimed: a second request is refused from now on
            self._active[name] = None
        job = None
        try:
            job = await self._submit(worker, entry.directory, force=force, skip_check=skip_check)
        finally:
            for name in names:
                if job is None:
                    del self._active[name]
                else:
                    self._active[name] = job
        return job

    async def _submit(self, worker: str, source: Path, *, force: bool, skip_check: bool) -> Job:
        build_dir = Path(
            await trio.to_thread.run_sync(_make_build_dir, self.builds, worker, self.build_user)
        )
        try:
            recipe_dir = build_dir / "recipe"
            await trio.to_thread.run_sync(_copy_recipe, source, recipe_dir)
            recipe_sha256 = await trio.to_thread.run_sync(_sha256, recipe_dir / "PKGBUILD")
            try:
                recipe = await load_recipe(source.name, recipe_dir)
            except RecipeError as exc:
                raise RecipeBroken(f"recipe {worker!r} is broken: {exc}") from None
            if recipe.problems:
                raise RecipeBroken(
                    f"recipe {worker!r} cannot be built here: {'; '.join(recipe.problems)}"
                )
            if not force and self._all_installed(recipe):
                await trio.to_thread.run_sync(_remove_tree, build_dir)
                return self.engine.submit(self._already_installed(recipe))
            # As the build will look for them: a root hive's build user cannot
            # run what is installed in root's home.
            missing = missing_dependencies(recipe, worker, which=which_for(self.build_user))
            if missing:
                raise MissingDependencies(worker, missing)
            env = job_environment(self.build_user, home=build_dir)
            if skip_check:
                env["HIVE_SKIP_CHECK"] = "1"
            spec = JobSpec(
                operation=OPERATION,
                worker=worker,
                argv=["bash", str(makepkg_script()), str(recipe_dir), str(build_dir)],
                env=env,
                cwd=build_dir,
                finish=lambda job: self._finish(job, recipe, recipe_sha256, build_dir),
                cleanup=lambda job: self._cleanup(job, build_dir),
                settled=lambda job: self._settle(
                    job, [Swap(self.workers, name, job.id) for name in recipe.names]
                ),
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_remove_tree, build_dir)
            raise
        return self.engine.submit(spec)

    def _all_installed(self, recipe: Recipe) -> bool:
        """Every package of ``recipe`` is installed at its version (as pacman
        compares versions: ``1.0`` and ``1.00`` are the same)."""
        for name in recipe.names:
            versions = [w.version for w in self.installed(name)]
            if not any(version.vercmp(v, recipe.full_version) == 0 for v in versions):
                return False
        return True

    def _already_installed(self, recipe: Recipe) -> JobSpec:
        """A job that runs no process: that version is there already."""
        where = ", ".join(str(self.workers / name) for name in recipe.names)

        async def finish(job: Job) -> None:
            job.message(
                f"{' '.join(recipe.names)} {recipe.full_version} is already installed in {where}; "
                'nothing to do (rebuild it with --force, or "force": true)'
            )

        async def cleanup(job: Job) -> None:
            self._release(job)

        return JobSpec(
            operation=OPERATION,
            worker=recipe.names[0],
            argv=[],
            env={},
            finish=finish,
            cleanup=cleanup,
        )

    async def _after_settling(self, names: Sequence[str]) -> None:
        """Wait for the installs of ``names`` whose ``end`` event is logged.

        The outcome is logged before the swap is settled, so that a crash in
        between never contradicts what followers were shown; a client that read
        ``end`` may ask again at once, and would be refused as "in progress"
        while the settling (a few renames) is still under way."""
        for name in names:
            job = self._active.get(name)
            if job is not None and job.log.ends:
                await job.ended.wait()

    def _release(self, job: Job) -> None:
        for name in [name for name, active in self._active.items() if active is job]:
            del self._active[name]

    async def _cleanup(self, job: Job, build_dir: Path) -> None:
        """Whatever the outcome: no build dir left."""
        await trio.to_thread.run_sync(_remove_tree, build_dir)

    async def _settle(self, job: Job, swaps: list[Swap]) -> None:
        """Once the outcome is in the job's log: keep the new versions or roll
        them back (:func:`hive.swap.settle`); then the workers are free again."""
        try:
            for swap in swaps:
                if swap.path.exists():
                    await trio.to_thread.run_sync(settle, swap, job.state == JobState.SUCCEEDED)
        finally:
            self._release(job)

    async def _finish(self, job: Job, recipe: Recipe, recipe_sha256: str, build_dir: Path) -> None:
        built = _built_version(build_dir) or recipe.full_version
        if not _real_dir(build_dir / "pkg"):
            raise JobFailure(f"the build did not create {build_dir / 'pkg'}")
        for name in recipe.names:
            if not _real_dir(build_dir / "pkg" / name):
                raise JobFailure(f"the build did not create {build_dir / 'pkg' / name}")
        for name in recipe.names:
            package = build_dir / "pkg" / name
            target = self.workers / name / built
            _stage(job, f"Installing {name} into {target}")
            try:
                if self.build_user is not None:
                    # The build user's files become the hive's: a copy, made by the hive.
                    package = await trio.to_thread.run_sync(_copy_package, package, target.parent)
                await trio.to_thread.run_sync(
                    _write_manifest, recipe, name, built, recipe_sha256, package, job.id
                )
                swap = await trio.to_thread.run_sync(
                    stage, self.workers, name, built, package, job.id
                )
                replaced = await trio.to_thread.run_sync(commit, swap)
            except OSError as exc:
                raise JobFailure(f"installing into {target} failed: {exc}") from None
            for old in replaced:
                if old != built:
                    _stage(job, f"Removed previous version {old} of {name}")
            job.message(f"installed {name} {built} into {target}")
        faults.point("install:finished")

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
        # By name, then oldest to newest version as pacman orders them.
        result.sort(key=lambda w: version.sort_key(w.version))
        result.sort(key=lambda w: w.name)
        return result

    async def remove(self, worker: str) -> list[str]:
        """Uninstall every version of ``worker``; returns the versions removed.

        The worker's directory disappears with one rename, then is deleted.
        Raises :class:`NotInstalled` and :class:`InstallInProgress`.
        """
        folder = self.workers / check_worker_name(worker)
        await self._after_settling([worker])
        if worker in self._active:
            job = self._active[worker]
            raise InstallInProgress(worker, job.id if job else None)
        if not folder.is_dir():
            raise NotInstalled(worker)
        versions = [installed.version for installed in self.installed(worker)]
        trash = self.workers / f"{TRASH}{worker}-{secrets.token_hex(4)}"
        os.rename(folder, trash)
        await trio.to_thread.run_sync(_remove_tree, trash)
        return versions


def _stage(job: Job, text: str) -> None:
    """A stage line on the job's stderr, in makepkg.sh's ``==>`` style: stdout
    is the recipe's alone."""
    job.log.append_output(Stream.STDERR, f"==> {text}\n".encode())


def _built_version(build_dir: Path) -> str | None:
    """The version makepkg.sh reports having built (after ``pkgver()``)."""
    try:
        text = (build_dir / "version").read_text().strip()
    except OSError:
        return None
    return text if text and "/" not in text and not text.startswith(".") else None


def build_root(state_dir: Path, *, shared: bool) -> Path:
    """Where builds happen: in the state dir, or (``shared``: a build user's)
    in the temporary directory, which every user can reach, under a name
    derived from the state dir."""
    if not shared:
        return state_dir / "builds"
    tag = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"hive-builds-{tag}"


def _make_build_dir(parent: Path, worker: str, user: BuildUser | None) -> str:
    """A fresh build dir; the build user's, if there is one (under a root that
    only the hive owns, which others may pass through but not list)."""
    if user is None:
        parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(prefix=f"{worker}-", dir=parent)
    with contextlib.suppress(FileExistsError):
        parent.mkdir(mode=0o711)
    info = parent.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise OSError(f"{parent} is not a directory of the hive's own")
    os.chmod(parent, 0o711)
    build_dir = tempfile.mkdtemp(prefix=f"{worker}-", dir=parent)
    os.chown(build_dir, user.uid, user.gid)
    return build_dir


def _copy_recipe(source: Path, destination: Path) -> None:
    """Copy the recipe, readable by a build user but not writable by it."""
    shutil.copytree(source, destination, symlinks=True)
    for path in [destination, *destination.rglob("*")]:
        if not path.is_symlink():
            mode = path.stat().st_mode
            os.chmod(path, (mode | 0o444 | (0o111 if path.is_dir() else 0)) & ~0o022)


def _real_dir(path: Path) -> bool:
    """A directory, and not through a symlink (which a build could plant)."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _copy_package(package: Path, parent: Path) -> Path:
    """Copy what a build user packaged into ``parent`` (a new hidden directory
    the hive owns); symlinks are copied as links, never followed."""
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f"{TRASH}incoming-{secrets.token_hex(4)}"
    try:
        shutil.copytree(package, staging, symlinks=True, copy_function=_copy_plain)
        for path in [staging, *staging.rglob("*")]:
            if not path.is_symlink():
                os.chmod(path, stat.S_IMODE(path.stat().st_mode) & 0o777)
    except (OSError, shutil.Error):
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _copy_plain(source: str, destination: str) -> str:
    """Contents and permission bits, without set-uid/set-gid: the copy is the hive's."""
    shutil.copyfile(source, destination, follow_symlinks=False)
    if not os.path.islink(destination):
        os.chmod(destination, stat.S_IMODE(os.lstat(source).st_mode) & 0o777)
    return destination


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(
    recipe: Recipe, name: str, built: str, recipe_sha256: str, package: Path, job_id: str
) -> dict[str, Any]:
    files = {
        str(path.relative_to(package)): _sha256(path)
        for path in sorted(package.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }
    manifest: dict[str, Any] = {
        "name": name,
        "version": built,
        "pkgbase": recipe.pkgbase,
        "packages": list(recipe.names),
        "installed_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "job_id": job_id,
        "recipe_sha256": recipe_sha256,
        "files": files,
    }
    (package / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
