"""Recipe metadata: what a PKGBUILD declares, without building anything.

A PKGBUILD is a bash script, so the only faithful way to learn its variables is
to let bash evaluate it.  That part is kept as thin as possible
(:func:`read_recipe`): bash sources the file in a scrubbed environment and
prints the variables we care about in a NUL-separated dump.  Everything else is
pure and easy to test: :func:`parse_dump` turns the dump into a dict and
:func:`validate` applies makepkg's rules and builds a :class:`Recipe`.

Sourcing runs a PKGBUILD's top-level code (as makepkg itself does), but never
its ``prepare``/``build``/``check``/``package`` functions: those only run inside
a job, under ``makepkg.sh``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

#: Functions a recipe may define; ``package`` is mandatory.
KNOWN_FUNCTIONS = ("prepare", "build", "check", "package")

#: Variables dumped as they are, and those that also have a ``<name>_<machine>``
#: variant which makepkg appends to the generic list.
PLAIN_VARIABLES = ("pkgname", "pkgver", "pkgrel", "pkgdesc", "arch", "url", "license")
ARCH_VARIABLES = ("source", "sha256sums", "depends", "makedepends")

#: Pseudo-variable names in the dump; the parentheses make them impossible
#: bash variable names, so they can never collide with a PKGBUILD's own.
FUNCTIONS_KEY = "(functions)"
END_KEY = "(end)"

#: How long bash may take to evaluate a PKGBUILD before we give up on it.
READ_TIMEOUT = 10.0

PKGNAME_RE = re.compile(r"^[a-z0-9@._+-]+$")
PKGREL_RE = re.compile(r"^[0-9]+(\.[0-9]+)?$")
SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
MACHINE_RE = re.compile(r"^[A-Za-z0-9_]+$")
CONSTRAINT_RE = re.compile(r"[<>=].*$")

#: Sources the PKGBUILD and dumps variables as ``name NUL count NUL item...``
#: records on fd 3.  The PKGBUILD's own stdout is sent to stderr so that an
#: ``echo`` at top level cannot corrupt the dump.  Helpers are defined only
#: after sourcing, so a PKGBUILD cannot replace them.
_DUMP_SCRIPT = r"""
exec 3>&1 1>&2
__hive_machine=$1
source ./PKGBUILD || {
    __hive_status=$?
    echo "sourcing PKGBUILD failed with status $__hive_status" >&2
    exit 3
}
__hive_dump() {
    local -n __hive_ref=$1
    printf '%s\0%d\0' "$1" "${#__hive_ref[@]}" >&3
    if (( ${#__hive_ref[@]} )); then printf '%s\0' "${__hive_ref[@]}" >&3; fi
}
for __hive_name in PLAIN_VARIABLES; do
    __hive_dump "$__hive_name"
done
for __hive_name in ARCH_VARIABLES; do
    __hive_dump "$__hive_name"
    __hive_dump "${__hive_name}_$__hive_machine"
done
__hive_functions=()
for __hive_name in KNOWN_FUNCTIONS; do
    if declare -F "$__hive_name" >/dev/null; then __hive_functions+=("$__hive_name"); fi
done
printf '%s\0%d\0' 'FUNCTIONS_KEY' "${#__hive_functions[@]}" >&3
if (( ${#__hive_functions[@]} )); then printf '%s\0' "${__hive_functions[@]}" >&3; fi
printf '%s\0%d\0' 'END_KEY' 0 >&3
"""
DUMP_SCRIPT = (
    _DUMP_SCRIPT.replace("PLAIN_VARIABLES", " ".join(PLAIN_VARIABLES))
    .replace("ARCH_VARIABLES", " ".join(ARCH_VARIABLES))
    .replace("KNOWN_FUNCTIONS", " ".join(KNOWN_FUNCTIONS))
    .replace("FUNCTIONS_KEY", FUNCTIONS_KEY)
    .replace("END_KEY", END_KEY)
)


class RecipeError(Exception):
    """A recipe that cannot be used, with every problem found in it.

    All problems are collected rather than stopping at the first, so a recipe
    author can fix them in one go; ``str()`` is a single line for logs and API
    error messages.
    """

    def __init__(self, problems: Sequence[str] | str) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class RecipeTimeout(RecipeError):
    """Reading took too long: possibly a loaded machine, so not a verdict on the
    recipe that a cache should keep."""


@dataclass(frozen=True)
class Recipe:
    """The validated metadata of one PKGBUILD, for one machine architecture."""

    name: str
    version: str
    release: str
    description: str
    arch: tuple[str, ...]
    url: str
    license: tuple[str, ...]
    sources: tuple[str, ...]
    sha256sums: tuple[str, ...]
    depends: tuple[str, ...]
    makedepends: tuple[str, ...]
    functions: frozenset[str]

    @property
    def full_version(self) -> str:
        """``pkgver-pkgrel``: what identifies an installed build of a worker."""
        return f"{self.version}-{self.release}"

    def to_json(self) -> dict[str, object]:
        """A JSON-ready description for the API (lists, not tuples or sets)."""
        return {
            "name": self.name,
            "version": self.version,
            "release": self.release,
            "full_version": self.full_version,
            "description": self.description,
            "arch": list(self.arch),
            "url": self.url,
            "license": list(self.license),
            "sources": list(self.sources),
            "sha256sums": list(self.sha256sums),
            "depends": list(self.depends),
            "makedepends": list(self.makedepends),
            "functions": sorted(self.functions),
        }


def parse_dump(data: bytes) -> dict[str, list[str]]:
    """Parse ``name NUL count NUL item NUL ...`` records into a dict.

    NUL is the one byte a bash string cannot contain, so no quoting is needed.
    Raises :class:`RecipeError` for a truncated or malformed dump.
    """
    fields = data.split(b"\0")
    if fields[-1] != b"":
        raise RecipeError("malformed metadata dump: missing final NUL")
    fields.pop()
    result: dict[str, list[str]] = {}
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
        result[name] = [
            item.decode("utf-8", errors="replace") for item in fields[start : start + count]
        ]
        pos = start + count
    return result


def _single(raw: dict[str, list[str]], name: str, problems: list[str]) -> str:
    """The value of a scalar variable; records a problem if it is an array."""
    values = raw.get(name, [])
    if len(values) > 1:
        problems.append(f"{name} must be a single value, not an array")
    return values[0] if values else ""


def _check_pkgname(names: list[str], problems: list[str]) -> str:
    if not names or not names[0]:
        problems.append("pkgname is required")
        return ""
    if len(names) > 1:
        problems.append(f"split packages are not supported (pkgname has {len(names)} entries)")
    name = names[0]
    if name.startswith(("-", ".")):
        problems.append(f"pkgname {name!r} must not start with a hyphen or a dot")
    if not PKGNAME_RE.match(name):
        problems.append(f"pkgname {name!r} may only contain lowercase letters, digits and @._+-")
    return name


def _check_pkgver(version: str, problems: list[str]) -> None:
    if not version:
        problems.append("pkgver is required")
    elif re.search(r"[\s:/-]", version) or not version.isascii():
        problems.append(
            f"pkgver {version!r} must not contain hyphens, colons, slashes or whitespace"
        )


def _check_pkgrel(release: str, problems: list[str]) -> None:
    if not release:
        problems.append("pkgrel is required")
    elif not PKGREL_RE.match(release):
        problems.append(f"pkgrel {release!r} must look like 'integer' or 'integer.integer'")


def _check_arch(arch: list[str], name: str, machine: str, problems: list[str]) -> None:
    if not arch:
        problems.append("arch is required")
    elif "any" in arch:
        if len(arch) > 1:
            problems.append("arch 'any' cannot be combined with other architectures")
    elif machine not in arch:
        problems.append(f"{name or 'recipe'} is not available for the {machine!r} architecture")


def _check_sums(sources: list[str], sums: list[str], problems: list[str]) -> None:
    if len(sums) != len(sources):
        problems.append(
            f"sha256sums has {len(sums)} entries but source has {len(sources)} "
            "(each source needs a checksum or SKIP)"
        )
    for index, value in enumerate(sums):
        if value != "SKIP" and not SHA256_RE.match(value):
            problems.append(f"sha256sums[{index}] is not 64 hex digits or SKIP: {value!r}")


def validate(raw: dict[str, list[str]], machine: str) -> Recipe:
    """Check dumped PKGBUILD variables against makepkg's rules.

    ``machine`` is the architecture the recipe will be built for (``uname -m``);
    it selects the ``source_<machine>``-style variants and decides whether the
    recipe's ``arch`` allows building here.  Raises :class:`RecipeError` listing
    every problem found.
    """
    problems: list[str] = []
    name = _check_pkgname(raw.get("pkgname", []), problems)
    version = _single(raw, "pkgver", problems)
    _check_pkgver(version, problems)
    release = _single(raw, "pkgrel", problems)
    _check_pkgrel(release, problems)
    description = _single(raw, "pkgdesc", problems)
    url = _single(raw, "url", problems)
    arch = raw.get("arch", [])
    _check_arch(arch, name, machine, problems)

    def combined(variable: str) -> list[str]:
        return raw.get(variable, []) + raw.get(f"{variable}_{machine}", [])

    sources = combined("source")
    sums = combined("sha256sums")
    _check_sums(sources, sums, problems)
    functions = frozenset(raw.get(FUNCTIONS_KEY, []))
    if "package" not in functions:
        problems.append("package() function is required")
    if problems:
        raise RecipeError(problems)
    return Recipe(
        name=name,
        version=version,
        release=release,
        description=description,
        arch=tuple(arch),
        url=url,
        license=tuple(raw.get("license", [])),
        sources=tuple(sources),
        sha256sums=tuple(s if s == "SKIP" else s.lower() for s in sums),
        depends=tuple(combined("depends")),
        makedepends=tuple(combined("makedepends")),
        functions=functions,
    )


def missing_dependencies(
    recipe: Recipe, which: Callable[[str], str | None] = shutil.which
) -> list[str]:
    """Commands named in ``depends``/``makedepends`` that cannot be found.

    Dependencies are commands, not packages: the hive does not install them,
    it only reports early what the build would fail on.  Version constraints
    (``gcc>=12``) are ignored.  ``which`` is injectable for tests.
    """
    missing: list[str] = []
    for entry in (*recipe.depends, *recipe.makedepends):
        command = CONSTRAINT_RE.sub("", entry)
        if command and command not in missing and which(command) is None:
            missing.append(command)
    return missing


def _first_line(text: bytes) -> str:
    lines = text.decode("utf-8", errors="replace").strip().splitlines()
    return lines[0].strip() if lines else ""


def _last_line(text: bytes) -> str:
    lines = text.decode("utf-8", errors="replace").strip().splitlines()
    return lines[-1].strip() if lines else ""


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


async def _run_bash(args: list[str], cwd: Path, env: dict[str, str]) -> _Finished:
    """Run bash, capture its output, and leave no process of it behind.

    A PKGBUILD's top-level code may start background processes that would
    outlive bash and hold its pipes open.  bash therefore gets a session (and
    process group) of its own, and the whole group is killed as soon as bash
    exits, or when we are cancelled (e.g. by the read timeout).
    """
    bash = shutil.which("bash") or "/bin/bash"
    process = await trio.lowlevel.open_process(
        [bash, *args],
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
    finally:
        _kill_group(process.pid)
        with trio.CancelScope(shield=True):
            returncode = await process.wait()
    return _Finished(returncode, b"".join(out), b"".join(err))


async def read_recipe(recipe_dir: Path, *, machine: str | None = None) -> Recipe:
    """Read and validate the PKGBUILD in ``recipe_dir`` without building it.

    Runs ``bash -n`` first so that a syntax error is reported as bash states
    it, then evaluates the file in a clean environment (only PATH and CARCH)
    so that the hive's environment cannot change what a recipe declares.
    Raises :class:`RecipeError` for any unreadable or invalid recipe.
    """
    machine = machine or platform.machine()
    if not MACHINE_RE.match(machine):
        raise RecipeError(f"invalid machine architecture name: {machine!r}")
    if not (recipe_dir / "PKGBUILD").is_file():
        raise RecipeError(f"no PKGBUILD in {recipe_dir}")
    env = {"PATH": "/usr/bin:/bin", "CARCH": machine}
    try:
        with trio.fail_after(READ_TIMEOUT):
            syntax = await _run_bash(["-n", "PKGBUILD"], recipe_dir, env)
            if syntax.returncode != 0:
                raise RecipeError(_first_line(syntax.stderr) or "PKGBUILD: syntax error")
            dump = await _run_bash(
                ["-c", DUMP_SCRIPT, "hive-read-recipe", machine], recipe_dir, env
            )
    except trio.TooSlowError:
        raise RecipeTimeout(f"reading PKGBUILD took longer than {READ_TIMEOUT:g} s") from None
    if dump.returncode != 0:
        reason = _last_line(dump.stderr) or f"bash exited with status {dump.returncode}"
        raise RecipeError(f"cannot read PKGBUILD: {reason}")
    raw = parse_dump(dump.stdout)
    if END_KEY not in raw:
        raise RecipeError("cannot read PKGBUILD: it exited while being sourced")
    return validate(raw, machine)
