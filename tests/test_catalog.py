"""The catalog (hive.catalog), remote index format (hive.remote) and the
install step's file moves (hive.install), without a running hive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hive.catalog import Catalog, UnknownWorker, bundled_catalog
from hive.remote import BadIndex, build_index, parse_index
from hivewire.names import InvalidWorkerName

from .support import recipe, sha256

SUM = "ab" * 32
INDEX_URL = "http://example.invalid/catalog/index.json"


def good_recipe(directory: Path, name: str, *, version: str = "1", extra: str = "") -> Path:
    return recipe(
        directory / name,
        f"""\
        pkgname={name}
        pkgver={version}
        pkgrel=1
        arch=(any)
        {extra}
        package() {{ :; }}
        """,
    )


# ------------------------------------------------------------------- Catalog


async def test_entries_list_broken_recipes_beside_good_ones(tmp_path: Path) -> None:
    good_recipe(tmp_path, "good")
    good_recipe(tmp_path, "needs", extra="makedepends=('sh' 'no-such-tool-hive-test>=2')")
    recipe(tmp_path / "syntax", "pkgname=syntax\nbuild() {\n")
    recipe(
        tmp_path / "badver", "pkgname=badver\npkgver=1-2\npkgrel=1\narch=(any)\npackage() { :; }\n"
    )
    good_recipe(tmp_path, "other").joinpath("PKGBUILD").write_text(
        "pkgname=renamed\npkgver=1\npkgrel=1\narch=(any)\npackage() { :; }\n"
    )
    (tmp_path / "no-pkgbuild").mkdir()
    (tmp_path / ".hidden").mkdir()
    catalog = Catalog(tmp_path)
    entries = {entry.name: entry for entry in await catalog.entries()}
    assert sorted(entries) == ["badver", "good", "needs", "other", "syntax"]
    assert not entries["good"].broken and entries["good"].problem is None
    assert entries["syntax"].broken
    assert "syntax error" in (entries["syntax"].problem or "")
    assert "pkgver '1-2' must not contain hyphens" in (entries["badver"].problem or "")
    assert entries["other"].problem == "pkgname 'renamed' does not match its catalog folder 'other'"
    row = entries["needs"].to_json(installed=["0.9-1"])
    assert row["missing"] == ["no-such-tool-hive-test"]
    assert row["installed"] == ["0.9-1"] and row["broken"] is False
    broken = entries["syntax"].to_json(installed=[], detail=True)
    assert broken["broken"] is True and broken["version"] is None and broken["sources"] == []
    # Every row has the same keys, broken or not: tables and scripts can rely on them.
    assert set(row) == set(entries["syntax"].to_json(installed=[]))


async def test_metadata_is_cached_until_the_pkgbuild_changes(tmp_path: Path) -> None:
    """Top-level code runs once per read: count the reads."""
    reads = tmp_path / "reads"
    directory = good_recipe(tmp_path / "catalog", "counted", extra=f"echo read >> '{reads}'")
    catalog = Catalog(tmp_path / "catalog")
    first = await catalog.entries()
    again = await catalog.entries()
    assert first == again
    assert reads.read_text().count("read") == 1
    pkgbuild = directory / "PKGBUILD"
    pkgbuild.write_text(pkgbuild.read_text().replace("pkgver=1", "pkgver=2"))
    (changed,) = await catalog.entries()
    assert changed.recipe is not None and changed.recipe.version == "2"
    assert reads.read_text().count("read") == 2
    await catalog.refresh()  # a local refresh forgets the cache
    await catalog.entry("counted")
    assert reads.read_text().count("read") == 3


async def test_entry_rejects_bad_and_unknown_names(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    with pytest.raises(InvalidWorkerName):
        await catalog.entry("../etc")
    with pytest.raises(UnknownWorker):
        await catalog.entry("absent")


async def test_bundled_catalog_is_all_good() -> None:
    entries = await Catalog(bundled_catalog()).entries()
    assert [e.name for e in entries if e.broken] == []
    assert {"hello", "cbuild", "rustworker", "prebuilt"} <= {e.name for e in entries}


# ------------------------------------------------------------- remote index


def index(*workers: dict[str, Any], version: object = 1) -> bytes:
    return json.dumps({"version": version, "workers": list(workers)}).encode()


def worker(name: str = "hello", **changes: Any) -> dict[str, Any]:
    files: list[dict[str, Any]] = [
        {"path": "PKGBUILD", "url": f"{name}/PKGBUILD", "sha256": SUM},
        {"path": "hello.sh", "url": f"{name}/hello.sh", "sha256": SUM, "executable": True},
    ]
    return {"name": name, "files": files, **changes}


def file(path: str, **changes: Any) -> dict[str, Any]:
    return {"path": path, "url": path, "sha256": SUM, **changes}


def test_parse_index_resolves_urls() -> None:
    absolute = worker("abs", files=[file("PKGBUILD", url="https://cdn.example.invalid/x/PKGBUILD")])
    hello, other = parse_index(index(worker(), absolute), INDEX_URL)
    assert hello.name == "hello"
    assert [f.url for f in hello.files] == [
        "http://example.invalid/catalog/hello/PKGBUILD",
        "http://example.invalid/catalog/hello/hello.sh",
    ]
    assert [f.executable for f in hello.files] == [False, True]
    assert other.files[0].url == "https://cdn.example.invalid/x/PKGBUILD"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"{nope", "not JSON"),
        (b"[]", "must be a JSON object"),
        (index(version=2), "unsupported index version 2"),
        (b'{"version": 1, "workers": {}}', "workers must be a list"),
        (index("hello"), "workers[0] must be an object"),  # type: ignore[arg-type]
        (index(worker("../up")), "invalid worker name '../up'"),
        (index(worker(extra=1)), "unknown field(s) extra"),
        (index(worker(files=[])), "files must be a non-empty list"),
        (index(worker(files=[file("/etc/passwd")])), "must be relative"),
        (index(worker(files=[file("a/../../x")])), "must be relative"),
        (index(worker(files=[file("PKGBUILD", sha256="00")])), "sha256 must be 64 hex digits"),
        (index(worker(files=[file("PKGBUILD", url="file:///etc/passwd")])), "is not http(s)"),
        (index(worker(files=[file("PKGBUILD", executable="yes")])), "executable must be"),
        (index(worker(files=[file("PKGBUILD"), file("PKGBUILD")])), "listed twice"),
        (index(worker(files=[file("a"), file("a/b"), file("PKGBUILD")])), "file and a dir"),
        (index(worker(files=[file("hello.sh")])), "no PKGBUILD among its files"),
        (index(worker(), worker()), "a worker is listed twice"),
    ],
)
def test_parse_index_rejects(data: bytes, error: str) -> None:
    with pytest.raises(BadIndex) as caught:
        parse_index(data, INDEX_URL)
    assert error in str(caught.value)
    assert "\n" not in str(caught.value)


def test_build_index_round_trips(tmp_path: Path) -> None:
    directory = recipe(tmp_path / "hello", "pkgname=hello\n", {"run.sh": b"#!/bin/sh\n"})
    (directory / "run.sh").chmod(0o755)
    (directory / "sub").mkdir()
    (directory / "sub" / "data").write_bytes(b"data")
    (tmp_path / "not-a-worker").mkdir()
    built = build_index(tmp_path)
    (hello,) = parse_index(json.dumps(built).encode(), "http://h/c/index.json")
    assert hello.name == "hello"
    files = {f.path: f for f in hello.files}
    assert sorted(files) == ["PKGBUILD", "run.sh", "sub/data"]
    assert files["sub/data"].url == "http://h/c/hello/sub/data"
    assert files["sub/data"].sha256 == sha256(b"data")
    assert files["run.sh"].executable and not files["PKGBUILD"].executable
