"""Reading and validating PKGBUILD metadata (hive.pkgbuild)."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path

import pytest
import trio

from hive.pkgbuild import (
    END_KEY,
    FUNCTIONS_KEY,
    Recipe,
    RecipeError,
    missing_dependencies,
    parse_dump,
    read_recipe,
    validate,
)

BUNDLED = Path(__file__).resolve().parent.parent / "hive" / "recipes"
SUM = "ab" * 32

GOOD: dict[str, list[str]] = {
    "pkgname": ["demo"],
    "pkgver": ["1.2.3"],
    "pkgrel": ["1"],
    "pkgdesc": ["a demo"],
    "arch": ["x86_64", "aarch64"],
    "url": ["https://example.invalid"],
    "license": ["MIT"],
    "source": ["a.tar.gz"],
    "sha256sums": [SUM],
    "depends": ["sh"],
    "makedepends": ["gcc>=12", "make"],
    FUNCTIONS_KEY: ["build", "package"],
}


def with_changes(**changes: list[str] | None) -> dict[str, list[str]]:
    """GOOD with some variables replaced (or removed, for None)."""
    raw = {key: list(value) for key, value in GOOD.items()}
    for key, value in changes.items():
        key = FUNCTIONS_KEY if key == "functions" else key
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def write_pkgbuild(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "PKGBUILD").write_text(textwrap.dedent(text))
    return directory


# ------------------------------------------------------------------ validate


def test_validate_good() -> None:
    recipe = validate(GOOD, "x86_64")
    assert recipe.name == "demo"
    assert recipe.full_version == "1.2.3-1"
    assert recipe.functions == frozenset({"build", "package"})
    assert recipe.makedepends == ("gcc>=12", "make")
    assert recipe.to_json()["functions"] == ["build", "package"]
    assert recipe.to_json()["full_version"] == "1.2.3-1"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"pkgname": None}, "pkgname is required"),
        ({"pkgname": ["Demo"]}, "may only contain lowercase"),
        ({"pkgname": ["de mo"]}, "may only contain lowercase"),
        ({"pkgname": ["-demo"]}, "must not start with a hyphen or a dot"),
        ({"pkgname": [".demo"]}, "must not start with a hyphen or a dot"),
        ({"pkgname": ["a", "b"]}, "split packages are not supported"),
        ({"pkgver": None}, "pkgver is required"),
        ({"pkgver": ["1.0-2"]}, "must not contain hyphens"),
        ({"pkgver": ["1 0"]}, "must not contain hyphens"),
        ({"pkgver": ["1:0"]}, "must not contain hyphens"),
        ({"pkgver": ["1/0"]}, "must not contain hyphens"),
        ({"pkgver": ["1", "2"]}, "pkgver must be a single value"),
        ({"pkgrel": None}, "pkgrel is required"),
        ({"pkgrel": ["1a"]}, "pkgrel '1a' must look like"),
        ({"pkgrel": ["1.2.3"]}, "pkgrel '1.2.3' must look like"),
        ({"arch": None}, "arch is required"),
        ({"arch": ["armv7h"]}, "demo is not available for the 'x86_64' architecture"),
        ({"arch": ["any", "x86_64"]}, "'any' cannot be combined"),
        ({"sha256sums": []}, "sha256sums has 0 entries but source has 1"),
        ({"sha256sums": [SUM, "SKIP"]}, "sha256sums has 2 entries but source has 1"),
        ({"sha256sums": ["abc"]}, "sha256sums[0] is not 64 hex digits or SKIP"),
        ({"sha256sums": ["g" * 64]}, "sha256sums[0] is not 64 hex digits or SKIP"),
        ({"functions": ["build"]}, "package() function is required"),
    ],
)
def test_validate_rejects(changes: dict[str, list[str] | None], expected: str) -> None:
    with pytest.raises(RecipeError) as info:
        validate(with_changes(**changes), "x86_64")
    assert expected in str(info.value)


def test_validate_collects_every_problem_on_one_line() -> None:
    raw = with_changes(pkgver=None, pkgrel=["x"], functions=[])
    with pytest.raises(RecipeError) as info:
        validate(raw, "x86_64")
    assert len(info.value.problems) == 3
    assert "\n" not in str(info.value)
    assert str(info.value) == "; ".join(info.value.problems)


def test_validate_accepts_skip_any_and_uppercase_hex() -> None:
    raw = with_changes(arch=["any"], source=["x", "y"], sha256sums=["SKIP", SUM.upper()])
    recipe = validate(raw, "riscv64")
    assert recipe.sha256sums == ("SKIP", SUM)


def test_validate_combines_machine_specific_arrays() -> None:
    raw = with_changes(
        source_x86_64=["fast.bin"],
        sha256sums_x86_64=["SKIP"],
        source_aarch64=["arm.bin"],
        sha256sums_aarch64=["SKIP"],
        depends_x86_64=["cpuid"],
    )
    recipe = validate(raw, "x86_64")
    assert recipe.sources == ("a.tar.gz", "fast.bin")
    assert recipe.sha256sums == (SUM, "SKIP")
    assert recipe.depends == ("sh", "cpuid")
    assert validate(raw, "aarch64").sources == ("a.tar.gz", "arm.bin")


def test_validate_machine_specific_sum_missing() -> None:
    raw = with_changes(source_x86_64=["fast.bin"])
    with pytest.raises(RecipeError, match="sha256sums has 1 entries but source has 2"):
        validate(raw, "x86_64")


# ---------------------------------------------------------------- parse_dump


def test_parse_dump() -> None:
    data = b"pkgname\x001\x00demo\x00arch\x002\x00x86_64\x00any\x00empty\x000\x00"
    assert parse_dump(data) == {"pkgname": ["demo"], "arch": ["x86_64", "any"], "empty": []}
    assert parse_dump(b"") == {}


def test_parse_dump_keeps_odd_values() -> None:
    data = b"pkgdesc\x001\x00two\nlines ; $(no) \xff\x00"
    assert parse_dump(data) == {"pkgdesc": ["two\nlines ; $(no) \ufffd"]}


@pytest.mark.parametrize(
    "data",
    [b"pkgname\x001\x00demo", b"pkgname\x00", b"pkgname\x00x\x00", b"pkgname\x003\x00a\x00"],
)
def test_parse_dump_rejects_malformed(data: bytes) -> None:
    with pytest.raises(RecipeError, match="malformed metadata dump"):
        parse_dump(data)


# ------------------------------------------------------ missing_dependencies


def test_missing_dependencies_strips_constraints_and_dedupes() -> None:
    recipe = validate(
        with_changes(depends=["sh", "zlib>=1.2", "awk"], makedepends=["zlib", "gcc<=99"]),
        "x86_64",
    )
    present = {"sh", "gcc"}
    seen: list[str] = []

    def which(name: str) -> str | None:
        seen.append(name)
        return f"/usr/bin/{name}" if name in present else None

    assert missing_dependencies(recipe, which) == ["zlib", "awk"]
    assert "zlib>=1.2" not in seen


def test_missing_dependencies_uses_path() -> None:
    recipe = validate(with_changes(depends=["sh"], makedepends=["no-such-tool-hive"]), "x86_64")
    assert missing_dependencies(recipe) == ["no-such-tool-hive"]


# --------------------------------------------------------------- read_recipe


@pytest.mark.parametrize("name", sorted(p.name for p in BUNDLED.iterdir() if p.is_dir()))
async def test_bundled_recipes_read_and_validate(name: str) -> None:
    for machine in ("x86_64", "aarch64"):
        recipe = await read_recipe(BUNDLED / name, machine=machine)
        assert isinstance(recipe, Recipe)
        assert recipe.name == name
        assert "package" in recipe.functions
        assert recipe.description and recipe.url and recipe.license
        assert all(s != "SKIP" for s in recipe.sha256sums)


def test_bundled_catalog_has_the_expected_workers() -> None:
    names = {p.name for p in BUNDLED.iterdir() if p.is_dir()}
    assert {"hello", "cbuild", "rustworker", "prebuilt"} <= names


async def test_read_recipe_syntax_error(tmp_path: Path) -> None:
    write_pkgbuild(
        tmp_path,
        """\
        pkgname=broken
        pkgver=1
        pkgrel=1
        arch=(any)
        package() {
            echo hi
        }
        }
        """,
    )
    with pytest.raises(RecipeError) as info:
        await read_recipe(tmp_path)
    assert str(info.value) == "PKGBUILD: line 8: syntax error near unexpected token `}'"


async def test_read_recipe_never_runs_functions(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    recipe_dir = write_pkgbuild(
        tmp_path / "recipe",
        f"""\
        pkgname=sneaky
        pkgver=1
        pkgrel=1
        arch=(any)
        prepare() {{ touch '{marker}'; }}
        build() {{ touch '{marker}'; }}
        check() {{ touch '{marker}'; }}
        package() {{ touch '{marker}'; }}
        """,
    )
    recipe = await read_recipe(recipe_dir)
    assert recipe.functions == frozenset({"prepare", "build", "check", "package"})
    assert not marker.exists()


async def test_read_recipe_clean_env_and_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hive's environment must not leak into what a recipe declares."""
    monkeypatch.setenv("HIVE_TEST_LEAK", "leaked")
    write_pkgbuild(
        tmp_path,
        """\
        pkgname=envy
        pkgver=1
        pkgrel=1
        pkgdesc="leak=${HIVE_TEST_LEAK:-none} carch=$CARCH"
        arch=(x86_64 aarch64)
        source_aarch64=(arm.bin)
        sha256sums_aarch64=(SKIP)
        echo "top-level chatter on stdout"
        package() { :; }
        """,
    )
    recipe = await read_recipe(tmp_path, machine="aarch64")
    assert recipe.description == "leak=none carch=aarch64"
    assert recipe.sources == ("arm.bin",)


async def test_read_recipe_reports_validation_problems(tmp_path: Path) -> None:
    write_pkgbuild(
        tmp_path,
        """\
        pkgname=bad
        pkgver=1-1
        arch=(any)
        source=(a b)
        sha256sums=(SKIP)
        """,
    )
    with pytest.raises(RecipeError) as info:
        await read_recipe(tmp_path)
    message = str(info.value)
    for expected in ("pkgver '1-1'", "pkgrel is required", "sha256sums has 1", "package()"):
        assert expected in message


async def test_read_recipe_source_failure(tmp_path: Path) -> None:
    write_pkgbuild(tmp_path, "pkgname=x\necho 'no good' >&2\nfalse\n")
    with pytest.raises(RecipeError, match="cannot read PKGBUILD: sourcing PKGBUILD failed"):
        await read_recipe(tmp_path)


async def test_read_recipe_exit_while_sourcing(tmp_path: Path) -> None:
    write_pkgbuild(tmp_path, "pkgname=x\nexit 0\n")
    with pytest.raises(RecipeError, match="exited while being sourced"):
        await read_recipe(tmp_path)


async def test_read_recipe_missing_pkgbuild(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="no PKGBUILD"):
        await read_recipe(tmp_path)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


async def test_read_recipe_leaves_no_background_process(tmp_path: Path) -> None:
    """Top-level code that backgrounds a process must not outlive the read."""
    pidfile = tmp_path / "pid"
    write_pkgbuild(
        tmp_path / "recipe",
        f"""\
        pkgname=bg
        pkgver=1
        pkgrel=1
        arch=(any)
        sleep 300 &
        echo $! > '{pidfile}'
        package() {{ :; }}
        """,
    )
    started = time.monotonic()
    await read_recipe(tmp_path / "recipe")
    assert time.monotonic() - started < 5
    pid = int(pidfile.read_text())
    with trio.move_on_after(5):
        while _alive(pid):
            await trio.sleep(0.05)
    assert not _alive(pid)


async def test_read_recipe_timeout_kills_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hive.pkgbuild.READ_TIMEOUT", 0.5)
    pidfile = tmp_path / "pid"
    write_pkgbuild(
        tmp_path / "recipe",
        f"""\
        pkgname=slow
        sleep 300 &
        echo $! > '{pidfile}'
        wait
        """,
    )
    with pytest.raises(RecipeError, match=r"took longer than 0\.5 s"):
        await read_recipe(tmp_path / "recipe")
    pid = int(pidfile.read_text())
    with trio.move_on_after(5):
        while _alive(pid):
            await trio.sleep(0.05)
    if _alive(pid):  # pragma: no cover - cleanup before failing
        os.kill(pid, signal.SIGKILL)
    assert not _alive(pid)


def test_dump_keys_are_not_bash_names() -> None:
    assert not FUNCTIONS_KEY.isidentifier()
    assert not END_KEY.isidentifier()
