"""Remote catalogs through a real hive: an index served over HTTP by the test,
fetched and cached by the hive, and the cache used when the server is gone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import trio

from hive.remote import build_index

from .support import ROOT, keeper, recipe, running_hive, serve_directory, sha256
from .test_install import pkgbuild, run_install, submit


def publish(www: Path, version: str) -> None:
    """Write worker ``hello`` at ``version`` into ``www`` and regenerate the index."""
    recipe(
        www / "hello",
        pkgbuild(
            "hello",
            version,
            extra=f"source=(greeting.txt)\nsha256sums=({sha256(b'hi ' + version.encode())})",
            package='install -Dm644 greeting.txt "$pkgdir/greeting.txt"',
        ),
        {"greeting.txt": b"hi " + version.encode()},
    )
    (www / "index.json").write_text(json.dumps(build_index(www)))


INSECURE = ["--allow-insecure-catalog"]


async def start_fails(state: Path, catalog: str, *extra: str) -> tuple[int, str]:
    """Run `hive serve` that is expected to refuse to start."""
    argv = [sys.executable, "-m", "hive", "serve", "--bind", "127.0.0.1:0", *extra]
    with trio.fail_after(30):
        done = await trio.run_process(
            [*argv, "--state-dir", str(state), "--catalog", catalog],
            capture_stderr=True,
            stdout=subprocess.DEVNULL,
            check=False,
            cwd=ROOT,
        )
    return done.returncode, done.stderr.decode()


async def test_remote_catalog_install_refresh_and_cache_fallback(tmp_path: Path) -> None:
    www = tmp_path / "www"
    publish(www, "1")
    state = tmp_path / "state"
    with serve_directory(www) as base:
        url = f"{base}/index.json"
        async with (
            running_hive(state, catalog=url, extra=INSECURE) as hive,
            hive.client() as client,
        ):
            listing = (await client.get("/v1/catalog")).json()
            assert listing["catalog"]["kind"] == "remote"
            assert listing["catalog"]["location"] == url
            assert listing["catalog"]["stale"] is False
            assert [(w["name"], w["full_version"]) for w in listing["workers"]] == [
                ("hello", "1-1")
            ]
            job, _ = await run_install(hive, "hello")
            assert job["state"] == "succeeded"
            installed = state / "workers" / "hello" / "1-1" / "greeting.txt"
            assert installed.read_text() == "hi 1"

            publish(www, "2")
            refreshed = (await client.post("/v1/catalog/refresh")).json()
            assert refreshed["changed"] is True and refreshed["workers"] == 1
            assert (await client.get("/v1/catalog/hello")).json()["full_version"] == "2-1"
            assert (await client.post("/v1/catalog/refresh")).json()["changed"] is False

            # A new index whose file does not match it: the refresh fails, nothing changes.
            publish(www, "3")
            (www / "hello" / "greeting.txt").write_bytes(b"tampered")
            refused = await client.post("/v1/catalog/refresh")
            assert refused.status_code == 502
            assert refused.json()["error"] == "catalog_unavailable"
            assert "checksum mismatch for hello/greeting.txt" in refused.json()["message"]
            listing = (await client.get("/v1/catalog")).json()
            assert listing["catalog"]["stale"] is True
            assert listing["workers"][0]["full_version"] == "2-1"
            (www / "index.json").write_text('{"version": 1, "workers": [{"name": "../x"}]}')
            refused = await client.post("/v1/catalog/refresh")
            assert "bad catalog index" in refused.json()["message"]
            assert "invalid worker name" in refused.json()["message"]
            (www / "index.json").unlink()
            refused = await client.post("/v1/catalog/refresh")
            assert refused.status_code == 502 and "HTTP 404" in refused.json()["message"]
            stale = await keeper(hive, "catalog")
            assert stale.returncode == 0 and "could not be fetched" in stale.stderr
            assert b"2-1" in stale.stdout
            publish(www, "2")
            assert (await client.post("/v1/catalog/refresh")).status_code == 200
    # Only the catalog in use and the one before it are kept.
    assert len(list((state / "catalog-cache" / "trees").iterdir())) <= 2

    # The server is gone: the hive starts from its cache, with a warning.
    async with running_hive(state, catalog=url, extra=INSECURE) as hive, hive.client() as client:
        assert f"catalog {url} is unreachable" in hive.log
        listing = (await client.get("/v1/catalog")).json()
        assert listing["catalog"]["stale"] is True and listing["catalog"]["error"]
        assert listing["workers"][0]["full_version"] == "2-1"
        job, _ = await run_install(hive, "hello")
        assert job["state"] == "succeeded"
        assert (state / "workers" / "hello" / "2-1" / "greeting.txt").read_text() == "hi 2"
        refused = await client.post("/v1/catalog/refresh")
        assert refused.status_code == 502 and "cannot fetch" in refused.json()["message"]
        assert (await submit(client, "hello", force=True)).status_code == 201

    # Neither the remote nor a cache: a clear one-line refusal to start.
    code, stderr = await start_fails(tmp_path / "fresh", url, *INSECURE)
    assert code == 1
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot fetch {url}: ")
    assert line.endswith(
        f"no cached copy of the catalog {url} in {tmp_path / 'fresh'}/catalog-cache"
    )


async def test_remote_catalog_with_bad_files_never_becomes_the_catalog(tmp_path: Path) -> None:
    www = tmp_path / "www"
    publish(www, "1")
    (www / "hello" / "PKGBUILD").write_text("pkgname=evil\n")
    with serve_directory(www) as base:
        code, stderr = await start_fails(tmp_path / "state", f"{base}/index.json", *INSECURE)
        assert code == 1 and "checksum mismatch for hello/PKGBUILD" in stderr
    trees = tmp_path / "state" / "catalog-cache" / "trees"
    assert not trees.exists() or list(trees.iterdir()) == []
    code, stderr = await start_fails(tmp_path / "state", "ftp://example.invalid/index.json")
    assert code == 2 and "only http:// and https://" in stderr


async def test_plain_http_index_is_refused_unless_allowed_or_pinned(tmp_path: Path) -> None:
    www = tmp_path / "www"
    publish(www, "1")
    index = (www / "index.json").read_bytes()
    with serve_directory(www) as base:
        url = f"{base}/index.json"
        code, stderr = await start_fails(tmp_path / "state", url)
        assert code == 2 and "refusing the catalog index" in stderr
        assert "--allow-insecure-catalog" in stderr and "--catalog-sha256" in stderr
        code, stderr = await start_fails(tmp_path / "state", url, "--catalog-sha256", "0" * 64)
        assert code == 1 and f"not the pinned {'0' * 64}" in stderr
        pin = ["--catalog-sha256", sha256(index)]
        async with (
            running_hive(tmp_path / "state", catalog=url, extra=pin) as hive,
            hive.client() as client,
        ):
            listing = (await client.get("/v1/catalog")).json()
            assert listing["catalog"]["pinned"] is True
            assert [w["name"] for w in listing["workers"]] == ["hello"]
            publish(www, "2")  # the index changes: a pinned hive refuses it
            refused = await client.post("/v1/catalog/refresh")
            assert refused.status_code == 502 and "not the pinned" in refused.json()["message"]


async def test_index_srcinfo_lists_without_running_recipes(tmp_path: Path) -> None:
    """With .SRCINFO in the index the hive reads metadata from it: a PKGBUILD
    whose top level says otherwise (or would fail) is not run to list it."""
    www = tmp_path / "www"
    publish(www, "1")
    pkgbuild_path = www / "hello" / "PKGBUILD"
    pkgbuild_path.write_text(pkgbuild_path.read_text() + "\npkgdesc=from-pkgbuild\n")
    srcinfo = (
        "pkgbase = hello\n\tpkgdesc = from the index\n\tpkgver = 1\n\tpkgrel = 1\n"
        "\tarch = any\n\npkgname = hello\n"
    )
    (www / "index.json").write_text(json.dumps(build_index(www, {"hello": srcinfo})))
    with serve_directory(www) as base:
        url = f"{base}/index.json"
        async with running_hive(tmp_path / "state", catalog=url, extra=INSECURE) as hive:
            async with hive.client() as client:
                entry = (await client.get("/v1/catalog/hello")).json()
            assert entry["description"] == "from the index"
            assert entry["srcinfo"] == srcinfo
            shown = await keeper(hive, "info", "hello", "--srcinfo")
            assert shown.returncode == 0 and shown.stdout.decode() == srcinfo
    # The same catalog read from its files: what the PKGBUILD itself says.
    generated = subprocess.run(
        [sys.executable, "-m", "hive", "catalog-index", str(www)],
        capture_output=True,
        check=True,
        cwd=ROOT,
    )
    (worker,) = json.loads(generated.stdout)["workers"]
    assert "pkgdesc = from-pkgbuild" in worker["srcinfo"]
