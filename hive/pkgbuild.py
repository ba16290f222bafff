"""Recipe metadata: what makepkg sees in a PKGBUILD, without building anything.

A PKGBUILD is a bash script: the only faithful way to learn its variables is to
let bash evaluate it, as makepkg does. That part is kept thin and sealed:
:func:`read_recipe` runs ``srcinfo.sh`` under :mod:`hive.sandbox` (a PID
namespace of its own, no network, a read-only view of the host, an unprivileged
user, a few seconds), which prints the attributes ``makepkg --printsrcinfo``
would print, section by section, and makepkg's lint errors. Everything else is
pure and easy to test: :func:`parse_dump` turns the dump into records,
:func:`sections_from_records` into :class:`Section` objects, :func:`srcinfo_text`
into the .SRCINFO text, and :func:`build_problems` applies the checks makepkg
makes before a build (architecture, checksums).

Sourcing runs a PKGBUILD's top level, never its ``pkgver``/``prepare``/``build``/
``check``/``package`` functions: those only run inside a job, under ``makepkg.sh``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import trio

from . import sandbox
from .version import full_version

#: Checksum kinds makepkg knows, in its order; ``<kind>sums`` are the arrays.
ALGORITHMS = ("ck", "md5", "sha1", "sha224", "sha256", "sha384", "sha512", "b2")
SUM_ATTRS = tuple(f"{kind}sums" for kind in ALGORITHMS)
#: Hex digits of each digest (``ck`` is POSIX cksum's decimal CRC).
DIGEST_HEX = {
    "md5": 32,
    "sha1": 40,
    "sha224": 56,
    "sha256": 64,
    "sha384": 96,
    "sha512": 128,
    "b2": 128,
}

#: Attributes that have ``<attr>_<arch>`` variants.
ARCH_ATTRS = (
    "source",
    "provides",
    "conflicts",
    "depends",
    "replaces",
    "optdepends",
    "makedepends",
    "checkdepends",
    *SUM_ATTRS,
)
#: Attributes of the whole recipe that a package_NAME() cannot override.
BASE_ONLY = ("pkgver", "pkgrel", "epoch", "makedepends", "noextract", "source", "validpgpkeys")
#: Scalars (one value) among the attributes; the rest are arrays.
SCALARS = frozenset(
    {"pkgbase", "pkgdesc", "pkgver", "pkgrel", "epoch", "url", "install", "changelog"}
)
#: Attributes a package section shows on its own, with the base's value as default.
PACKAGE_ATTRS = (
    "pkgdesc",
    "url",
    "install",
    "changelog",
    "arch",
    "groups",
    "license",
    "checkdepends",
    "depends",
    "optdepends",
    "provides",
    "conflicts",
    "replaces",
    "options",
    "backup",
)

#: Functions makepkg runs, besides package_NAME().
KNOWN_FUNCTIONS = ("pkgver", "prepare", "build", "check", "package")

#: Pseudo-tags of the dump: the parentheses make them impossible attribute names.
ERROR_KEY = "(error)"
SECTION_KEY = "(section)"
FUNCTIONS_KEY = "(functions)"
END_KEY = "(end)"

#: How long reading a PKGBUILD may take before we give up on it.
READ_TIMEOUT = 5.0
#: How long the reader's pipes are drained once it has exited.
DRAIN_TIMEOUT = 1.0
#: Files of a recipe copied for the reader (bigger ones become empty stand-ins:
#: makepkg's lint only checks that install/changelog files exist).
COPY_LIMIT = 1 << 20
MAX_FILES = 1000

MACHINE_RE = re.compile(r"^[A-Za-z0-9_]+$")
CONSTRAINT_RE = re.compile(r"[<>=].*$")
_SPACE_RUN = re.compile(r"[ \t\n\r\v\f]+")


class RecipeError(Exception):
    """A recipe that cannot be used, with every problem found in it.

    ``problems`` are makepkg's own messages where makepkg rejects the recipe;
    ``detail`` (bash's error, for instance) adds context. ``str()`` is a single
    line for logs and API error messages.
    """

    def __init__(self, problems: Sequence[str] | str, detail: str = "") -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        self.detail = detail
        text = "; ".join(self.problems)
        super().__init__(f"{text} ({detail})" if detail else text)


class RecipeTimeout(RecipeError):
    """Reading took too long: possibly a loaded machine, so not a verdict on the
    recipe that a cache should keep."""


class ReaderUnavailable(RecipeTimeout):
    """The sealed reader could not be set up (the machine, not the recipe): not
    a verdict either."""


def normalize(value: str) -> str:
    """A value as .SRCINFO writes it: whitespace runs become one space, and a
    leading and a trailing space go (srcinfo_write_attr)."""
    value = _SPACE_RUN.sub(" ", value)
    value = value.removeprefix(" ")
    return value.removesuffix(" ")


@dataclass(frozen=True)
class Section:
    """One section of .SRCINFO: ``pkgbase`` or a ``pkgname``, with the attributes
    it lists (normalized), in order. A package section lists only what its
    package_NAME() overrides, with the value makepkg evaluates for it."""

    kind: str
    name: str
    attrs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def get(self, attr: str) -> tuple[str, ...] | None:
        return self.attrs.get(attr)

    def scalar(self, attr: str) -> str:
        values = self.attrs.get(attr)
        return values[0] if values else ""


Record = tuple[str, list[str]]


def parse_dump(data: bytes) -> list[Record]:
    """Parse ``tag NUL count NUL item NUL ...`` records, in order.

    NUL is the one byte a bash string cannot contain, so no quoting is needed.
    Raises :class:`RecipeError` for a truncated or malformed dump.
    """
    fields = data.split(b"\0")
    if fields[-1] != b"":
        raise RecipeError("malformed metadata dump: missing final NUL")
    fields.pop()
    records: list[Record] = []
    pos = 0
    while pos < len(fields):
        if pos + 1 >= len(fields):
            raise RecipeError("malformed metadata dump: record without a count")
        name = fields[pos].decode("utf-8", errors="replace")
        try:
            count = int(fields[pos + 1])
        except ValueError:
            raise RecipeError(f"malformed metadata dump: bad count for {name}") from None
        start = pos + 2
        if count < 0 or start + count > len(fields):
            raise RecipeError(f"malformed metadata dump: truncated record for {name}")
        items = [item.decode("utf-8", errors="replace") for item in fields[start : start + count]]
        records.append((name, items))
        pos = start + count
    return records


def sections_from_records(records: Sequence[Record]) -> list[Section]:
    """The .SRCINFO sections a dump describes (attribute records follow their
    ``(section)`` record)."""
    sections: list[Section] = []
    attrs: dict[str, tuple[str, ...]] = {}
    for tag, items in records:
        if tag == SECTION_KEY:
            if len(items) != 2:
                raise RecipeError("malformed metadata dump: bad section record")
            attrs = {}
            sections.append(Section(items[0], items[1], attrs))
        elif not tag.startswith("("):
            if not sections:
                raise RecipeError("malformed metadata dump: attribute before any section")
            attrs[tag] = tuple(normalize(item) for item in items)
    return sections


def srcinfo_text(sections: Sequence[Section]) -> str:
    """The .SRCINFO text of ``sections``, as ``makepkg --printsrcinfo`` writes it."""
    lines: list[str] = []
    for index, section in enumerate(sections):
        if index:
            lines.append("")
        lines.append(f"{section.kind} = {section.name}")
        for attr, values in section.attrs.items():
            # printf with no argument still prints the format once.
            lines.extend(f"\t{attr} = {value}" for value in values or ("",))
    return "\n".join(lines) + "\n"


def parse_srcinfo(text: str) -> list[Section]:
    """The sections of a .SRCINFO text (comments and blank lines skipped).

    An attribute written with an empty value (``depends = ``) is an empty list,
    as an override like ``depends=()`` prints it. Raises :class:`RecipeError`.
    """
    sections: list[Section] = []
    attrs: dict[str, list[str]] = {}
    collected: list[tuple[str, str, dict[str, list[str]]]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(" = ")
        if not sep:
            key, sep, value = line.partition(" =")
        if not sep or not key or " " in key:
            raise RecipeError(f".SRCINFO line {number}: expected 'key = value'")
        if key in ("pkgbase", "pkgname") and not raw.startswith(("\t", " ")):
            if (key == "pkgbase") != (not collected):
                raise RecipeError(f".SRCINFO line {number}: {key} section out of place")
            attrs = {}
            collected.append((key, value, attrs))
            continue
        if not collected:
            raise RecipeError(f".SRCINFO line {number}: attribute before pkgbase")
        attrs.setdefault(key, []).extend([value] if value else [])
    for kind, name, values in collected:
        sections.append(Section(kind, name, {k: tuple(v) for k, v in values.items()}))
    if not sections:
        raise RecipeError(".SRCINFO has no pkgbase section")
    return sections


def recipe_from_srcinfo(text: str, machine: str | None = None) -> Recipe:
    """A recipe from its .SRCINFO alone (which functions it has is not known)."""
    machine = machine or platform.machine()
    base, *packages = parse_srcinfo(text)
    recipe = Recipe(base, tuple(packages), frozenset(), machine)
    problems = build_problems(recipe, machine)
    return Recipe(base, tuple(packages), frozenset(), machine, tuple(problems))


def split_optdepend(entry: str) -> dict[str, str]:
    """``name: description`` as makepkg writes an optdepend."""
    name, sep, description = entry.partition(":")
    if not sep:
        return {"name": entry, "description": ""}
    return {"name": name, "description": description.strip()}


@dataclass(frozen=True)
class Recipe:
    """A PKGBUILD as makepkg reads it, for one machine architecture.

    ``problems`` say why it cannot be built on ``machine`` (empty: it can); the
    metadata is there either way.
    """

    base: Section
    packages: tuple[Section, ...]
    functions: frozenset[str]
    machine: str
    problems: tuple[str, ...] = ()

    @property
    def pkgbase(self) -> str:
        return self.base.name

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(package.name for package in self.packages)

    @property
    def pkgver(self) -> str:
        return self.base.scalar("pkgver")

    @property
    def pkgrel(self) -> str:
        return self.base.scalar("pkgrel")

    @property
    def epoch(self) -> str:
        return self.base.scalar("epoch")

    @property
    def full_version(self) -> str:
        """``[epoch:]pkgver-pkgrel``: what identifies an installed build of a worker."""
        return full_version(self.pkgver, self.pkgrel, self.epoch)

    @property
    def srcinfo(self) -> str:
        return srcinfo_text((self.base, *self.packages))

    @property
    def split(self) -> bool:
        return len(self.packages) > 1

    def package(self, name: str) -> Section:
        for package in self.packages:
            if package.name == name:
                return package
        raise KeyError(name)

    def value(self, name: str | None, attr: str) -> tuple[str, ...]:
        """``attr`` of package ``name`` (its override, else the base's), or of the base."""
        if name is not None and attr not in BASE_ONLY:
            override = self.package(name).get(attr)
            if override is not None:
                return override
        return self.base.get(attr) or ()

    def arch(self, name: str | None = None) -> tuple[str, ...]:
        return self.value(name, "arch")

    def for_machine(self, name: str | None, attr: str, machine: str | None = None) -> list[str]:
        """``attr`` and its ``attr_<machine>`` variant together, as makepkg merges them."""
        machine = machine or self.machine
        values = list(self.value(name, attr))
        if attr in ARCH_ATTRS and machine in self.arch(name):
            values += self.value(name, f"{attr}_{machine}")
        return values

    def checksums(self, machine: str | None = None) -> dict[str, list[str]]:
        """Each checksum kind the recipe uses, for ``machine``'s sources."""
        result = {}
        for kind, attr in zip(ALGORITHMS, SUM_ATTRS, strict=True):
            values = self.for_machine(None, attr, machine)
            if values:
                result[kind] = values
        return result

    def arch_specific(self, name: str | None) -> dict[str, dict[str, list[str]]]:
        """The ``<attr>_<arch>`` values, by architecture."""
        result: dict[str, dict[str, list[str]]] = {}
        for arch in self.arch(name):
            for attr in ARCH_ATTRS:
                values = self.value(name, f"{attr}_{arch}")
                if values:
                    result.setdefault(arch, {})[attr] = list(values)
        return result

    def to_json(self, name: str) -> dict[str, Any]:
        """Package ``name``'s metadata, every .SRCINFO field, for the API."""

        def one(attr: str) -> str:
            values = self.value(name, attr)
            return values[0] if values else ""

        def many(attr: str) -> list[str]:
            return self.for_machine(name, attr)

        checksums = self.checksums()
        return {
            "name": name,
            "pkgbase": self.pkgbase,
            "packages": list(self.names),
            "version": self.pkgver,
            "release": self.pkgrel,
            "epoch": self.epoch or None,
            "full_version": self.full_version,
            "description": one("pkgdesc"),
            "url": one("url"),
            "arch": list(self.arch(name)),
            "license": list(self.value(name, "license")),
            "groups": list(self.value(name, "groups")),
            "depends": many("depends"),
            "makedepends": many("makedepends"),
            "checkdepends": many("checkdepends"),
            "optdepends": [split_optdepend(entry) for entry in many("optdepends")],
            "provides": many("provides"),
            "conflicts": many("conflicts"),
            "replaces": many("replaces"),
            "backup": list(self.value(name, "backup")),
            "options": list(self.value(name, "options")),
            "install": one("install") or None,
            "changelog": one("changelog") or None,
            "noextract": list(self.value(None, "noextract")),
            "sources": many("source"),
            "checksums": checksums,
            "sha256sums": checksums.get("sha256", []),
            "validpgpkeys": list(self.value(None, "validpgpkeys")),
            "arch_specific": self.arch_specific(name),
            "functions": sorted(self.functions),
        }


def empty_metadata() -> dict[str, Any]:
    """The keys of :meth:`Recipe.to_json` with empty values: a broken recipe's
    row has the same shape as any other."""
    blank = Recipe(Section("pkgbase", ""), (Section("pkgname", ""),), frozenset(), "")
    return {
        key: [] if isinstance(value, list) else {} if isinstance(value, dict) else None
        for key, value in blank.to_json("").items()
    }


def recipe_from_records(records: Sequence[Record], machine: str) -> Recipe:
    """The recipe a dump describes; raises :class:`RecipeError` with makepkg's
    lint errors when makepkg would refuse it."""
    errors = [items[0] for tag, items in records if tag == ERROR_KEY and items]
    if errors:
        raise RecipeError(errors)
    if not any(tag == END_KEY for tag, _ in records):
        raise RecipeError("cannot read PKGBUILD: it exited while being sourced")
    sections = sections_from_records(records)
    if not sections or sections[0].kind != "pkgbase":
        raise RecipeError("malformed metadata dump: no pkgbase section")
    functions = frozenset(name for tag, items in records if tag == FUNCTIONS_KEY for name in items)
    recipe = Recipe(sections[0], tuple(sections[1:]), functions, machine)
    problems = build_problems(recipe, machine)
    if problems:
        recipe = Recipe(recipe.base, recipe.packages, functions, machine, tuple(problems))
    return recipe


def build_problems(recipe: Recipe, machine: str) -> list[str]:
    """Why makepkg would refuse to build ``recipe`` on ``machine`` (its messages),
    plus checksums that cannot possibly match (caught here, before a download).

    makepkg checks the architecture first (its lint, with ``IGNOREARCH`` off)
    and stops there; then, for each checksum kind in order, that a list that is
    there has as many entries as the sources, stopping at the first that does
    not; then that every source array has some checksum kind.
    """
    arch = recipe.arch()
    if "any" in arch:
        pass
    elif machine not in arch:
        return [f"{recipe.pkgbase} is not available for the '{machine}' architecture."]
    else:
        wrong = [
            f"{package.name} is not available for the '{machine}' architecture."
            for package in recipe.packages
            if (own := package.get("arch")) and own[0] != "any" and machine not in own
        ]
        if wrong:
            return wrong
    problems: list[str] = []
    variants = {"source": ""}
    if recipe.value(None, f"source_{machine}"):
        variants[f"source_{machine}"] = f"_{machine}"
    unverified = [name for name in variants if recipe.value(None, name)]
    for kind, attr in zip(ALGORITHMS, SUM_ATTRS, strict=True):
        for source_attr, suffix in variants.items():
            sums = recipe.value(None, f"{attr}{suffix}")
            sources = recipe.value(None, source_attr)
            if not sums:
                continue
            if len(sums) != len(sources):
                return [f"Integrity checks ({kind}) differ in size from the source array."]
            if source_attr in unverified:
                unverified.remove(source_attr)
            problems += _bad_sums(kind, f"{attr}{suffix}", sums)
    if unverified:
        problems.append(f"Integrity checks are missing for: {' '.join(unverified)}")
    return problems


def _bad_sums(kind: str, attr: str, sums: Sequence[str]) -> list[str]:
    """Entries that are neither SKIP nor a digest of the right shape."""
    problems = []
    for index, value in enumerate(sums):
        if value == "SKIP":
            continue
        if kind == "ck":
            ok = value.isascii() and value.isdigit()
        else:
            ok = len(value) == DIGEST_HEX[kind] and all(
                c in "0123456789abcdefABCDEF" for c in value
            )
        if not ok:
            problems.append(f"{attr}[{index}] is not a {kind} checksum or SKIP: {value!r}")
    return problems


def missing_dependencies(
    recipe: Recipe, name: str | None = None, which: Callable[[str], str | None] = shutil.which
) -> list[str]:
    """Commands named in ``depends``/``makedepends`` that cannot be found.

    Dependencies are commands, not packages: the hive does not install them,
    it only reports early what the build would fail on.  Version constraints
    (``gcc>=12``) are ignored.  ``which`` is injectable for tests.
    """
    missing: list[str] = []
    entries = [*recipe.for_machine(name, "depends"), *recipe.for_machine(None, "makedepends")]
    for entry in entries:
        command = CONSTRAINT_RE.sub("", entry)
        if command and command not in missing and which(command) is None:
            missing.append(command)
    return missing


def reader_script() -> str:
    return (resources.files("hive") / "srcinfo.sh").read_text()


@dataclass(frozen=True)
class _Finished:
    returncode: int
    stdout: bytes
    stderr: bytes


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


async def _read_all(stream: trio.abc.ReceiveStream | None, chunks: list[bytes]) -> None:
    if stream is None:
        return
    async with stream:
        while chunk := await stream.receive_some():
            chunks.append(bytes(chunk))


async def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> _Finished:
    """Run ``argv``, capture its output, and leave no process of it behind.

    Sealed, the command is the init of a PID namespace: when it exits, the
    kernel kills what it started, and SIGKILL of ``unshare`` kills the init.
    The process also leads a session of its own, killed as a group as soon as
    it exits or we are cancelled (e.g. by the read timeout): that is all there
    is where namespaces are unavailable.
    """
    process = await trio.lowlevel.open_process(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    out: list[bytes] = []
    err: list[bytes] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_all, process.stdout, out)
            nursery.start_soon(_read_all, process.stderr, err)
            await process.wait()
            _kill_group(process.pid)
            # What it wrote is in the pipes by now; a process that escaped the
            # group (possible only without a PID namespace) may hold them open.
            nursery.cancel_scope.deadline = trio.current_time() + DRAIN_TIMEOUT
    finally:
        _kill_group(process.pid)
        with trio.CancelScope(shield=True):
            returncode = await process.wait()
    return _Finished(returncode, b"".join(out), b"".join(err))


def _stage(recipe_dir: Path, owner: tuple[int, int] | None) -> Path:
    """A copy of the recipe for the reader: only the reader's user may read it,
    nobody may write it, and it does not depend on who can reach ``recipe_dir``."""
    stage = Path(tempfile.mkdtemp(prefix="hive-recipe-"))
    try:
        for count, path in enumerate(sorted(recipe_dir.rglob("*"))):
            if count >= MAX_FILES:
                break
            relative = path.relative_to(recipe_dir)
            target = stage / relative
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode):
                target.mkdir(exist_ok=True)
            elif stat.S_ISREG(info.st_mode):
                target.parent.mkdir(parents=True, exist_ok=True)
                if info.st_size <= COPY_LIMIT or relative == Path("PKGBUILD"):
                    shutil.copyfile(path, target)
                else:
                    target.touch()
        for path in [stage, *stage.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
            if owner is not None:
                os.chown(path, *owner)
    except BaseException:
        _remove_stage(stage)
        raise
    return stage


def _remove_stage(stage: Path) -> None:
    for path in [stage, *stage.rglob("*")]:
        if path.is_dir():
            with contextlib.suppress(OSError):
                path.chmod(0o700)
    shutil.rmtree(stage, ignore_errors=True)


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1].strip() if lines else ""


def _bash_error(stderr: str) -> str:
    """bash's own complaint about the PKGBUILD (a syntax error, say), if any."""
    for line in stderr.splitlines():
        if "PKGBUILD: line" in line:
            return line[line.index("PKGBUILD: line") :].strip()
    return ""


async def read_recipe(recipe_dir: Path, *, machine: str | None = None) -> Recipe:
    """Read the PKGBUILD in ``recipe_dir`` as makepkg does, without building it.

    The reader runs sealed (see :mod:`hive.sandbox`) on a copy of the recipe,
    in a clean environment (PATH and CARCH only), so that neither the hive's
    environment nor the host can change what a recipe declares, and the recipe
    cannot change the host. Raises :class:`RecipeError` for a recipe makepkg
    would refuse, with makepkg's messages.
    """
    machine = machine or platform.machine()
    if not MACHINE_RE.match(machine):
        raise RecipeError(f"invalid machine architecture name: {machine!r}")
    if not (recipe_dir / "PKGBUILD").is_file():
        raise RecipeError(f"no PKGBUILD in {recipe_dir}")
    seal = sandbox.Seal()
    caps = await trio.to_thread.run_sync(sandbox.detect)  # probes once, then cached
    try:
        stage = await trio.to_thread.run_sync(_stage, recipe_dir, sandbox.readable_by(seal, caps))
    except OSError as exc:  # e.g. a root hive without CAP_CHOWN cannot hand it to the reader
        raise ReaderUnavailable(
            f"cannot read PKGBUILD: cannot stage it for the sandbox: {exc.strerror or exc}"
        ) from None
    env = {"PATH": "/usr/bin:/bin", "CARCH": machine, "LC_ALL": "C.UTF-8", "HOME": "/tmp"}
    bash = shutil.which("bash") or "/bin/bash"
    argv = sandbox.command([bash, "-c", reader_script(), "hive-srcinfo", machine], seal, caps)
    try:
        with trio.fail_after(READ_TIMEOUT):
            done = await _run(argv, stage, env)
    except trio.TooSlowError:
        raise RecipeTimeout(f"reading PKGBUILD took longer than {READ_TIMEOUT:g} s") from None
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_remove_stage, stage)
    stderr = sandbox.clean_stderr(done.stderr.decode("utf-8", errors="replace"))
    if done.returncode == sandbox.SETUP_FAILED and not done.stdout:
        lines = [line for line in stderr.splitlines() if line.strip()]
        raise ReaderUnavailable(
            f"cannot read PKGBUILD: {lines[0].strip() if lines else 'the sandbox failed'}"
        )
    try:
        records = parse_dump(done.stdout)
    except RecipeError:
        reason = _last_line(stderr) or f"exit status {done.returncode}"
        raise RecipeError(f"cannot read PKGBUILD: {reason}") from None
    if done.returncode != 0 and not any(tag == END_KEY for tag, _ in records):
        reason = _last_line(stderr) or f"exit status {done.returncode}"
        raise RecipeError(f"cannot read PKGBUILD: {reason}")
    try:
        return recipe_from_records(records, machine)
    except RecipeError as exc:
        detail = _bash_error(stderr)
        if detail and not exc.detail:
            raise RecipeError(exc.problems, detail) from None
        raise
