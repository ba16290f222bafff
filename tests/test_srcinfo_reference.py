"""The hive reads recipes as makepkg does: compared with makepkg itself.

For every recipe in the repository (the bundled catalog and the corpus in
tests/recipes/corpus, written for this purpose), the hive's .SRCINFO must be
byte for byte what ``makepkg --printsrcinfo`` prints, and a recipe makepkg
refuses must be refused with makepkg's messages, in makepkg's order. Where all
sources are local files, ``makepkg --verifysource`` is the reference for what a
build would refuse (architecture, checksum counts, the checksums themselves).

makepkg refuses to run as root: a root test run starts it as ``nobody`` (with
setpriv, in a directory that user owns), and always without network (a network
namespace of its own). Debian ships it (``makepkg`` and
``pacman-package-manager``); ``make test`` installs both when it runs as root.
"""

from __future__ import annotations

import os
import platform
import pwd
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from hive.catalog import Catalog
from hive.pkgbuild import Recipe, RecipeError, read_recipe

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "hive" / "recipes"
CORPUS = ROOT / "tests" / "recipes" / "corpus"
MACHINE = platform.machine()
ERROR_LINE = re.compile(r"^==> ERROR: (.*)$", re.MULTILINE)
REFERENCE_TIMEOUT = 60

RECIPES = sorted(
    [p for p in BUNDLED.iterdir() if (p / "PKGBUILD").is_file()]
    + [p for p in CORPUS.iterdir() if (p / "PKGBUILD").is_file()],
    key=lambda p: (p.parent.name, p.name),
)


def _why_no_makepkg() -> str | None:
    if shutil.which("makepkg") is None or shutil.which("pacman") is None:
        return (
            "makepkg is not installed (Debian: apt-get install makepkg "
            "pacman-package-manager; `make test` does it as root)"
        )
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "makepkg refuses root, and setpriv (util-linux) is missing to drop to nobody"
    return None


pytestmark = pytest.mark.skipif(_why_no_makepkg() is not None, reason=_why_no_makepkg() or "")


@dataclass(frozen=True)
class Reference:
    returncode: int
    stdout: str
    errors: list[str]


def makepkg(recipe_dir: Path, *args: str) -> Reference:
    """Run makepkg on a copy of ``recipe_dir``, unprivileged and offline."""
    work = Path(tempfile.mkdtemp(prefix="hive-makepkg-"))
    try:
        copy = work / "recipe"
        shutil.copytree(recipe_dir, copy, symlinks=True)
        argv = ["makepkg", *args]
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            for path in [work, *work.rglob("*")]:
                os.chown(path, nobody.pw_uid, nobody.pw_gid, follow_symlinks=False)
            argv = [
                "setpriv",
                f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}",
                "--clear-groups",
                *argv,
            ]
        done = subprocess.run(
            ["unshare", "--net", *argv] if os.geteuid() == 0 else argv,
            cwd=copy,
            env={"PATH": "/usr/bin:/bin", "HOME": str(work), "LC_ALL": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=REFERENCE_TIMEOUT,
            check=False,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # makepkg names the PKGBUILD by its absolute path; the hive reads a copy.
    stderr = done.stderr.replace(f"{copy}/", "")
    return Reference(done.returncode, done.stdout, ERROR_LINE.findall(stderr))


async def hive_read(recipe_dir: Path) -> tuple[Recipe | None, list[str]]:
    try:
        return await read_recipe(recipe_dir, machine=MACHINE), []
    except RecipeError as exc:
        return None, exc.problems


def only_local_sources(recipe: Recipe) -> bool:
    sources = recipe.for_machine(None, "source")
    return all("://" not in entry for entry in sources)


@pytest.mark.slow
@pytest.mark.parametrize("recipe_dir", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
async def test_srcinfo_and_refusals_match_makepkg(recipe_dir: Path) -> None:
    reference = makepkg(recipe_dir, "--printsrcinfo")
    recipe, problems = await hive_read(recipe_dir)
    assert problems == reference.errors
    if reference.returncode == 0:
        assert recipe is not None
        assert recipe.srcinfo == reference.stdout
    else:
        assert reference.errors, f"makepkg failed without saying why: {reference}"
        assert recipe is None


@pytest.mark.slow
@pytest.mark.parametrize("recipe_dir", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
async def test_build_refusals_match_makepkg_verifysource(recipe_dir: Path) -> None:
    recipe, _ = await hive_read(recipe_dir)
    if recipe is None:
        pytest.skip("makepkg refuses to read it (compared above)")
    if not only_local_sources(recipe):
        pytest.skip("its sources need the network")
    reference = makepkg(recipe_dir, "--verifysource")
    assert list(recipe.problems) == reference.errors
    assert (reference.returncode == 0) == (recipe.problems == ())


def test_corpus_covers_the_features() -> None:
    """At least 40 recipes, written for this test, refusals among them."""
    corpus = [p for p in CORPUS.iterdir() if (p / "PKGBUILD").is_file()]
    assert len(corpus) >= 40
    text = "\n".join((p / "PKGBUILD").read_bytes().decode(errors="replace") for p in corpus)
    for feature in (
        "epoch=",
        "pkgbase=",
        "package_",
        "checkdepends=",
        "optdepends=",
        "provides=",
        "conflicts=",
        "replaces=",
        "backup=",
        "options=",
        "groups=",
        "validpgpkeys=",
        "noextract=",
        "::",
        "#tag=",
        "source_x86_64=",
        "depends_x86_64=",
        "pkgver()",
        *(f"{kind}sums=" for kind in ("ck", "md5", "sha1", "sha224", "sha256", "sha384")),
        "sha512sums=",
        "b2sums=",
        "SKIP",
    ):
        assert feature in text, feature


async def test_catalog_lists_refused_recipes_as_broken_with_makepkgs_reason() -> None:
    entries = {entry.directory.name: entry for entry in await Catalog(CORPUS).entries()}
    for folder in ("bad-pkgver", "no-package", "syntax-error", "crlf", "split-missing"):
        reference = makepkg(CORPUS / folder, "--printsrcinfo")
        entry = entries[folder]
        assert entry.broken and entry.problem is not None
        assert entry.problem.startswith("; ".join(reference.errors))
    assert entries["sums-count-mismatch"].problem == (
        "Integrity checks (sha256) differ in size from the source array."
    )
    assert entries["uppercase"].broken  # makepkg allows it; a worker name cannot be
    split = [e for e in entries.values() if e.directory.name == "split"]
    assert not split or not split[0].broken
