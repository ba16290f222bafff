"""The ``worker_download`` operation: build a recipe and install the worker.

The whole build — fetching, checksums, ``prepare/build/check/package`` — runs in
one job process tree (``makepkg.sh``), so cancelling the job covers every stage.
Only after that tree exited successfully and is gone does the hive install the
result: the package dir is moved into place in one ``rename``, so a cancelled or
failed build never leaves a half-installed worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import trio

from .catalog import Catalog
from .jobs import Job, JobFailure, JobSpec
from .pkgbuild import Recipe, RecipeError, read_recipe

OPERATION = "worker_download"

#: The part of the hive's environment a build may see. Everything else (tokens,
#: the operator's credentials) stays out of job processes.
ENV_ALLOW = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TERM", "USER", "LOGNAME", "TMPDIR")


class RecipeBroken(ValueError):
    """The recipe cannot be built as it is: bad syntax or bad metadata."""


def makepkg_script() -> Path:
    return Path(str(resources.files("hive") / "makepkg.sh"))


def job_environment() -> dict[str, str]:
    return {name: os.environ[name] for name in ENV_ALLOW if name in os.environ}


@dataclass(frozen=True)
class InstalledWorker:
    name: str
    version: str
    path: Path
    manifest: dict[str, Any]


class Installer:
    """Turns "install worker X" into a job, and owns ``<state>/workers``."""

    def __init__(self, catalog: Catalog, state_dir: Path) -> None:
        self.catalog = catalog
        self.builds = state_dir / "builds"
        self.workers = state_dir / "workers"
        #: Two builds of one worker may finish together; their moves into
        #: place must not interleave (rmtree of one while the other renames).
        self._placing = trio.Lock()

    async def plan(self, worker: str) -> JobSpec:
        """A job spec that installs ``worker``.

        Raises UnknownWorker/InvalidWorkerName for a bad name and
        :class:`RecipeBroken` for a recipe that cannot be read, before any job
        exists.
        """
        recipe_dir = self.catalog.recipe_dir(worker)
        try:
            recipe = await read_recipe(recipe_dir)
        except RecipeError as exc:
            raise RecipeBroken(f"recipe {worker!r} is broken: {exc}") from None
        self.builds.mkdir(parents=True, exist_ok=True)
        build_dir = Path(await trio.to_thread.run_sync(_make_temp_dir, self.builds, worker))
        return JobSpec(
            operation=OPERATION,
            worker=worker,
            argv=["bash", str(makepkg_script()), str(recipe_dir), str(build_dir)],
            env=job_environment(),
            cwd=build_dir,
            finish=lambda job: self._install(job, recipe, recipe_dir, build_dir),
            cleanup=lambda job: trio.to_thread.run_sync(_remove_tree, build_dir),
        )

    async def _install(self, job: Job, recipe: Recipe, recipe_dir: Path, build_dir: Path) -> None:
        package = build_dir / "pkg" / recipe.name
        if not package.is_dir():
            raise JobFailure(f"package() did not create {package}")
        target = self.workers / recipe.name / recipe.full_version
        await trio.to_thread.run_sync(_write_manifest, recipe, recipe_dir, package, job.id)
        async with self._placing:
            await trio.to_thread.run_sync(_move_into_place, package, target)
        job.message(f"installed {recipe.name} {recipe.full_version} into {target}")

    def installed(self) -> list[InstalledWorker]:
        result: list[InstalledWorker] = []
        if not self.workers.is_dir():
            return result
        for manifest_path in sorted(self.workers.glob("*/*/.hive-manifest.json")):
            manifest = json.loads(manifest_path.read_text())
            result.append(
                InstalledWorker(
                    manifest["name"], manifest["version"], manifest_path.parent, manifest
                )
            )
        return result


def _make_temp_dir(parent: Path, worker: str) -> str:
    return tempfile.mkdtemp(prefix=f"{worker}-", dir=parent)


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
    (package / ".hive-manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _move_into_place(package: Path, target: Path) -> None:
    """Install ``package`` as ``target`` with one rename: all or nothing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.rename(package, target)
