"""Installing workers through a real hive: catalog API, install semantics,
installed workers, concurrency. Each test writes its own catalog."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from hive.install import build_root
from hive.jobsandbox import DEFAULT_BUILD_USER, BuildUser, which_for
from hivewire.protocol import ControlEvent, OutputChunk, Stream, decode_frame

from .support import (
    Hive,
    job_processes,
    keeper,
    keeper_process,
    make_upstream_repo,
    recipe,
    running_hive,
    sha256,
    tarball,
)
from .test_end_to_end import job_id_from, stdout_of, ws_events

BUNDLED = Path(__file__).resolve().parent.parent / "hive" / "recipes"


def pkgbuild(
    name: str,
    version: str = "1",
    *,
    build: str = ":",
    package: str | None = None,
    extra: str = "",
) -> str:
    """A small recipe; by default it installs ``bin/NAME`` holding its version."""
    package = package or f'mkdir -p "$pkgdir/bin"; echo {version} > "$pkgdir/bin/{name}"'
    return f"""\
pkgname={name}
pkgver={version}
pkgrel=1
pkgdesc="test worker {name}"
arch=(any)
{extra}
build() {{
{build}
}}
package() {{
{package}
}}
"""


def blocking(name: str, release: Path, version: str = "1") -> str:
    """A recipe whose build() announces itself, then waits for ``release`` to exist."""
    return pkgbuild(
        name,
        version,
        build=f"echo '{name} building'\nwhile [ ! -e '{release}' ]; do sleep 0.05; done",
    )


def write(catalog: Path, name: str, text: str, files: dict[str, bytes] | None = None) -> Path:
    return recipe(catalog / name, text, files)


async def submit(client: httpx.AsyncClient, worker: str, **flags: Any) -> httpx.Response:
    return await client.post(
        "/v1/jobs", json={"operation": "worker_download", "worker": worker, **flags}
    )


def stderr_of(events: list[OutputChunk | ControlEvent]) -> bytes:
    return b"".join(
        e.data for e in events if isinstance(e, OutputChunk) and e.stream == Stream.STDERR
    )


async def run_install(hive: Hive, worker: str, **flags: Any) -> tuple[dict[str, Any], bytes]:
    """Install ``worker`` and wait for the end; returns the final job and its
    output, stdout then stderr (where the driver's ``==>`` lines go)."""
    async with hive.client() as client:
        response = await submit(client, worker, **flags)
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        events = await ws_events(hive, job_id)
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert b"==> " not in stdout_of(events)  # stdout is the recipe's alone
    return job, stdout_of(events) + stderr_of(events)


async def wait_for_output(hive: Hive, job_id: str, needle: bytes) -> None:
    """Follow the job's stream until its stdout contains ``needle``."""
    url = hive.ws_url(f"/v1/jobs/{job_id}/stream")
    seen = b""
    with trio.fail_after(30):
        async with open_websocket_url(url, extra_headers=hive.ws_headers()) as ws:
            while needle not in seen:
                event = decode_frame(await ws.get_message())
                if isinstance(event, OutputChunk) and event.stream == Stream.STDOUT:
                    seen += event.data
                assert not (isinstance(event, ControlEvent) and event.type == "end"), seen
            await ws.aclose()


def installed_versions(hive: Hive, worker: str) -> list[str]:
    folder = hive.state_dir / "workers" / worker
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def builds_left(hive: Hive) -> list[str]:
    """Build dirs left, wherever builds happen (a root hive's build user's are
    outside the state dir)."""
    roots = [build_root(hive.state_dir, shared=shared) for shared in (False, True)]
    return [name for root in roots if root.is_dir() for name in os.listdir(root)]


# --------------------------------------------------------------------- catalog


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("chattr") is None,
    reason="needs root and chattr (an immutable directory refuses even root)",
)
async def test_an_install_the_sealed_reader_cannot_read_now_is_503_and_then_works(
    tmp_path: Path,
) -> None:
    # The reader's copy of the recipe goes to the hive's temporary directory:
    # while that refuses new entries (immutable, which stops root too), recipes
    # cannot be read sealed. The machine's fault, not the recipe's nor the
    # request's: 503, no job, and the same request works once it is lifted.
    # (The build dirs of a root hive live one level down, which stays writable.)
    catalog = tmp_path / "catalog"
    write(catalog, "quick", pkgbuild("quick"))
    write(catalog, "other", pkgbuild("other"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {"TMPDIR": str(scratch)}
    async with running_hive(tmp_path / "state", catalog=catalog, env=env) as hive:
        job, _ = await run_install(hive, "other")  # makes the build root, if in TMPDIR
        assert job["state"] == "succeeded", job
        subprocess.run(["chattr", "+i", str(scratch)], check=True)
        try:
            async with hive.client() as client:
                refused = await submit(client, "quick")
                jobs = (await client.get("/v1/jobs")).json()["jobs"]
        finally:
            subprocess.run(["chattr", "-i", str(scratch)], check=True)
        assert refused.status_code == 503, refused.text
        body = refused.json()
        assert body["error"] == "reader_unavailable"
        assert body["message"].startswith("cannot read the recipe of 'quick' here now: ")
        assert "Operation not permitted" in body["message"]
        assert [j["worker"] for j in jobs] == ["other"]  # no job for the refused request
        assert builds_left(hive) == []
        job, _ = await run_install(hive, "quick")
        assert job["state"] == "succeeded", job
        assert installed_versions(hive, "quick") == ["1-1"]


async def test_broken_recipes_are_listed_and_refused_the_rest_works(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    write(
        catalog,
        "quick",
        pkgbuild(
            "quick",
            extra=f"source=(note.txt)\nsha256sums=({sha256(b'note')})\n"
            "check() { echo checking; }",
        ),
        {"note.txt": b"note"},
    )
    write(catalog, "syntax", "pkgname=syntax\nbuild() {\n")
    write(catalog, "badmeta", pkgbuild("badmeta", version="1-2"))
    write(catalog, "needs", pkgbuild("needs", extra="makedepends=(sh no-such-tool-hive-test)"))
    async with running_hive(tmp_path / "state", catalog=catalog) as hive:
        async with hive.client() as client:
            listing = (await client.get("/v1/catalog")).json()
            rows = {row["name"]: row for row in listing["workers"]}
            assert listing["catalog"] == {"kind": "directory", "location": str(catalog)}
            assert sorted(rows) == ["badmeta", "needs", "quick", "syntax"]
            assert rows["quick"]["broken"] is False and rows["quick"]["full_version"] == "1-1"
            assert rows["syntax"]["broken"] is True and "syntax error" in rows["syntax"]["reason"]
            assert (
                "not allowed to contain colons, forward slashes, hyphens"
                in rows["badmeta"]["reason"]
            )
            assert rows["needs"]["missing"] == ["no-such-tool-hive-test"]

            detail = (await client.get("/v1/catalog/quick")).json()
            assert detail["sources"] == ["note.txt"]
            assert detail["sha256sums"] == [sha256(b"note")]
            assert detail["functions"] == ["build", "check", "package"]
            assert detail["files"] == ["PKGBUILD", "note.txt"]
            broken = await client.get("/v1/catalog/syntax")
            assert broken.status_code == 200 and broken.json()["broken"] is True
            assert (await client.get("/v1/catalog/nope")).status_code == 404
            assert (await client.get("/v1/catalog/Bad")).json()["error"] == "bad_worker_name"

            refused = await submit(client, "syntax")
            assert refused.status_code == 422 and refused.json()["error"] == "broken_recipe"
            assert "syntax error" in refused.json()["message"]
            missing = await submit(client, "needs")
            assert missing.status_code == 422
            assert missing.json()["missing"] == ["no-such-tool-hive-test"]
            for flags in ({"force": "yes"}, {"skip_check": 1}):
                assert (await submit(client, "quick", **flags)).status_code == 400
            assert (await client.get("/v1/jobs")).json()["jobs"] == []  # nothing was started

        table = await keeper(hive, "catalog")
        assert table.returncode == 0, table.stderr
        lines = table.stdout.decode().splitlines()
        assert lines[0].split() == ["NAME", "VERSION", "INSTALLED", "MISSING", "STATUS"]
        assert any(line.startswith("syntax") and "broken: " in line for line in lines)
        assert any("no-such-tool-hive-test" in line for line in lines)
        as_json = await keeper(hive, "catalog", "--json")
        assert [json.loads(line)["name"] for line in as_json.stdout.splitlines()] == sorted(rows)
        info = await keeper(hive, "info", "quick")
        assert info.returncode == 0 and b"functions:   build, check, package" in info.stdout
        bad_name = await keeper(hive, "info", "../etc")
        assert bad_name.returncode == 5 and "invalid worker name" in bad_name.stderr
        needs = await keeper(hive, "download", "needs")
        assert needs.returncode == 5
        assert needs.stderr.strip() == (
            "keeper: cannot install 'needs': missing dependencies: no-such-tool-hive-test"
        )

        # The rest of the catalog still installs.
        result = await keeper(hive, "download", "quick", "--follow")
        assert result.returncode == 0, result.stderr
        assert "==> Installing quick into " in result.stderr
        listed = json.loads((await keeper(hive, "info", "quick", "--json")).stdout)
        assert listed["installed"] == ["1-1"] and listed["sources"] == ["note.txt"]


# --------------------------------------------------------------------- sources


async def test_checksum_mismatch_fails_before_any_build_code(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    marker = tmp_path / "build-code-ran"
    write(
        catalog,
        "tampered",
        pkgbuild(
            "tampered",
            build=f"touch '{marker}'",
            package=f"touch '{marker}'",
            extra=f"source=(data.txt)\nsha256sums=({sha256(b'expected')})\n"
            f"prepare() {{ touch '{marker}'; }}",
        ),
        {"data.txt": b"tampered"},
    )
    async with running_hive(tmp_path / "state", catalog=catalog) as hive:
        result = await keeper(hive, "download", "tampered", "--follow")
        assert result.returncode == 1
        assert "==> ERROR: checksum mismatch for data.txt (sha256)" in result.stderr
        assert "Verifying checksums" in result.stderr and "Starting" not in result.stderr
        assert not marker.exists()
        assert installed_versions(hive, "tampered") == [] and builds_left(hive) == []


async def test_every_source_kind_through_the_hive(
    tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    www, base = http_root
    archive = tarball({"web-1/VERSION": b"from http\n"})
    (www / "web-1.tar.gz").write_bytes(archive)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"from file url")
    repo = tmp_path / "upstream"
    make_upstream_repo(repo)
    catalog = tmp_path / "catalog"
    write(
        catalog,
        "sources",
        pkgbuild(
            "sources",
            extra=f"""\
source=(local.txt "file://{payload}" "{base}/web-1.tar.gz" "git+file://{repo}#tag=v1")
sha256sums=({sha256(b"local")} {sha256(b"from file url")} {sha256(archive)} SKIP)""",
            package="""\
install -Dm644 local.txt "$pkgdir/local.txt"
install -Dm644 payload.bin "$pkgdir/file.txt"
install -Dm644 web-1/VERSION "$pkgdir/http.txt"
install -Dm644 upstream/VERSION "$pkgdir/git.txt"
""",
        ),
        {"local.txt": b"local"},
    )
    async with running_hive(tmp_path / "state", catalog=catalog) as hive:
        job, out = await run_install(hive, "sources")
        assert job["state"] == "succeeded", out.decode()
        assert b"Downloading web-1.tar.gz" in out and b"Cloning upstream" in out
        installed = hive.state_dir / "workers" / "sources" / "1-1"
        assert {p: (installed / p).read_bytes() for p in ("local.txt", "file.txt", "http.txt")} == {
            "local.txt": b"local",
            "file.txt": b"from file url",
            "http.txt": b"from http\n",
        }
        assert (installed / "git.txt").read_text() == "1\n"  # the tag, not main
        manifest = json.loads((installed / ".hive-manifest.json").read_text())
        assert sorted(manifest["files"]) == ["file.txt", "git.txt", "http.txt", "local.txt"]
        assert manifest["files"]["local.txt"] == sha256(b"local")


# ---------------------------------------------------------- install semantics


async def test_noop_reinstall_force_and_skip_check(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    write(catalog, "quick", pkgbuild("quick", extra="check() { echo 'check ran'; }"))
    async with running_hive(tmp_path / "state", catalog=catalog) as hive:
        first, out = await run_install(hive, "quick")
        assert first["state"] == "succeeded"
        assert b"==> Starting check()" in out and b"check ran" in out
        manifest_path = hive.state_dir / "workers" / "quick" / "1-1" / ".hive-manifest.json"
        manifest = json.loads(manifest_path.read_text())
        assert manifest["job_id"] == first["id"]

        again = await keeper(hive, "download", "quick", "--follow")
        assert again.returncode == 0, again.stderr
        assert "hive: quick 1-1 is already installed in" in again.stderr
        assert again.stdout == b""  # no build ran
        async with hive.client() as client:
            noop = (await client.get(f"/v1/jobs/{job_id_from(again.stderr)}")).json()
        assert noop["state"] == "succeeded" and noop["pid"] is None
        assert json.loads(manifest_path.read_text()) == manifest

        forced = await keeper(hive, "download", "quick", "--force", "--skip-check", "--follow")
        assert forced.returncode == 0, forced.stderr
        assert "==> Skipping check()" in forced.stderr and b"check ran" not in forced.stdout
        assert json.loads(manifest_path.read_text())["job_id"] == job_id_from(forced.stderr)
        assert installed_versions(hive, "quick") == ["1-1"] and builds_left(hive) == []


async def test_failed_upgrade_keeps_the_old_version_until_one_succeeds(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    write(catalog, "up", pkgbuild("up", "1"))
    half = 'mkdir -p "$pkgdir/bin"; echo partial > "$pkgdir/bin/up"; false'
    async with running_hive(tmp_path / "state", catalog=catalog) as hive:
        assert (await run_install(hive, "up"))[0]["state"] == "succeeded"
        old_binary = hive.state_dir / "workers" / "up" / "1-1" / "bin" / "up"
        assert old_binary.read_text() == "1\n"

        write(catalog, "up", pkgbuild("up", "2", package=half))
        failed, out = await run_install(hive, "up")
        assert failed["state"] == "failed" and b"Starting package()" in out
        assert installed_versions(hive, "up") == ["1-1"] and old_binary.read_text() == "1\n"
        assert builds_left(hive) == []

        release = tmp_path / "release"
        write(catalog, "up", blocking("up", release, "2"))
        async with hive.client() as client:
            job_id = (await submit(client, "up")).json()["id"]
            await wait_for_output(hive, job_id, b"up building")
            # Mid-build, the old version is still what is installed.
            workers = (await client.get("/v1/workers")).json()["workers"]
            assert [(w["name"], w["version"]) for w in workers] == [("up", "1-1")]
            release.touch()
            out = stderr_of(await ws_events(hive, job_id))
        assert (
            b"==> Installing up into " in out and b"==> Removed previous version 1-1 of up" in out
        )
        assert installed_versions(hive, "up") == ["2-1"]


async def test_cancelled_install_leaves_nothing_half_installed(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    write(catalog, "slow", pkgbuild("slow", "1"))
    async with running_hive(tmp_path / "state", catalog=catalog) as hive:
        assert (await run_install(hive, "slow"))[0]["state"] == "succeeded"
        stuck = (
            'mkdir -p "$pkgdir/bin"; echo partial > "$pkgdir/bin/slow"; echo packaging; sleep 300'
        )
        write(catalog, "slow", pkgbuild("slow", "2", package=stuck))
        async with keeper_process(hive, "download", "slow", "--follow") as (_, out, err):
            await out.wait_for(b"packaging")
            job_id = job_id_from(err.data)
            async with hive.client() as client:
                cancelled = (await client.delete(f"/v1/jobs/{job_id}?wait=true")).json()
        assert cancelled["state"] == "cancelled" and cancelled["teardown"]["left"] == 0
        assert job_processes(job_id) == []
        assert installed_versions(hive, "slow") == ["1-1"]
        assert (hive.state_dir / "workers" / "slow" / "1-1" / "bin" / "slow").read_text() == "1\n"
        assert builds_left(hive) == []
        # The log of the cancelled job is kept.
        assert b"packaging" in stdout_of(await ws_events(hive, job_id))


# ------------------------------------------------------------ installed workers


async def test_list_and_remove_workers_and_recover_leftovers(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    write(catalog, "quick", pkgbuild("quick"))
    state = tmp_path / "state"
    # What a hive killed mid-install leaves: a build dir and a version set aside.
    (state / "builds" / "quick-dead" / "src").mkdir(parents=True)
    (state / "workers" / "quick" / ".trash-1-1-dead").mkdir(parents=True)
    async with running_hive(state, catalog=catalog) as hive:
        assert "removed 2 leftover(s)" in hive.log
        assert builds_left(hive) == [] and installed_versions(hive, "quick") == []
        job, _ = await run_install(hive, "quick")
        async with hive.client() as client:
            (row,) = (await client.get("/v1/workers")).json()["workers"]
            assert row["name"] == "quick" and row["version"] == "1-1" and row["files"] == 1
            assert row["path"] == str(state / "workers" / "quick" / "1-1")
            assert row["job_id"] == job["id"] and row["installed_at"].endswith("Z")
            assert row["recipe_sha256"] == sha256((catalog / "quick" / "PKGBUILD").read_bytes())
            listed = await keeper(hive, "workers", "--json")
            assert [json.loads(line) for line in listed.stdout.splitlines()] == [row]
            table = (await keeper(hive, "workers")).stdout.decode().splitlines()
            assert table[0].split()[:3] == ["NAME", "VERSION", "FILES"]
            assert table[1].split()[:3] == ["quick", "1-1", "1"]

            removed = await client.delete("/v1/workers/quick")
            assert removed.status_code == 200
            assert removed.json() == {"name": "quick", "removed": ["1-1"]}
            assert os.listdir(state / "workers") == []
            gone = await client.delete("/v1/workers/quick")
            assert gone.status_code == 404 and gone.json()["error"] == "not_installed"
            assert (await client.delete("/v1/workers/.x")).json()["error"] == "bad_worker_name"
        assert (await keeper(hive, "remove", "quick")).returncode == 4
        await run_install(hive, "quick")
        result = await keeper(hive, "remove", "quick")
        assert result.returncode == 0 and "removed quick 1-1" in result.stderr


# ----------------------------------------------------------------- concurrency


async def test_same_worker_refused_others_in_parallel_up_to_the_limit(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    release = tmp_path / "release"
    for name in ("a", "b", "c"):
        write(catalog, name, blocking(name, release))
    async with (
        running_hive(tmp_path / "state", catalog=catalog, extra=["--max-parallel", "2"]) as hive,
        hive.client() as client,
    ):
        jobs = {name: (await submit(client, name)).json()["id"] for name in ("a", "b", "c")}
        again = await submit(client, "a")
        assert again.status_code == 409
        assert again.json()["error"] == "install_in_progress"
        assert again.json()["job_id"] == jobs["a"]
        refused = await keeper(hive, "download", "a")
        assert refused.returncode == 5 and f"already in progress: job {jobs['a']}" in refused.stderr
        await wait_for_output(hive, jobs["a"], b"a building")
        await wait_for_output(hive, jobs["b"], b"b building")
        # Two slots, both taken: c waits.
        assert (await client.get(f"/v1/jobs/{jobs['c']}")).json()["state"] == "queued"
        busy = await client.delete("/v1/workers/c")
        assert busy.status_code == 409 and busy.json()["job_id"] == jobs["c"]
        rows = {r["name"]: r for r in (await client.get("/v1/catalog")).json()["workers"]}
        assert {name: rows[name]["installing"] for name in rows} == jobs
        release.touch()
        for job_id in jobs.values():
            events = await ws_events(hive, job_id)
            assert isinstance(events[-1], ControlEvent) and events[-1].body["state"] == "succeeded"
        assert [installed_versions(hive, name) for name in "abc"] == [["1-1"]] * 3
        # Free again: the next request is the already-installed no-op.
        assert (await submit(client, "a")).status_code == 201


# ----------------------------------------------------------------- cargo build


def compiler_processes(job_id: str) -> list[tuple[int, str, bytes]]:
    """cargo/rustc processes of the job (by HIVE_JOB_ID), not zombies:
    (pid, comm, command line)."""
    found = []
    for pid in job_processes(job_id):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if comm in ("cargo", "rustc"):
            found.append((pid, comm, cmdline))
    return found


def compiling(job_id: str) -> bool:
    """rustc is compiling the crate (not just answering cargo's `rustc -vV`)."""
    return any(
        comm == "rustc" and b"--crate-name\0rustworker" in cmdline
        for _, comm, cmdline in compiler_processes(job_id)
    )


@pytest.mark.slow
@pytest.mark.skipif(
    which_for(BuildUser.lookup(DEFAULT_BUILD_USER) if os.geteuid() == 0 else None)("cargo") is None,
    reason="cargo is not installed where the build user can run it (a root hive builds as "
    "nobody, who cannot reach a toolchain in /root)",
)
async def test_cargo_build_cancelled_mid_compile_leaves_no_compiler(tmp_path: Path) -> None:
    async with running_hive(tmp_path / "state", catalog=BUNDLED) as hive, hive.client() as client:
        response = await submit(client, "rustworker")
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        with trio.fail_after(120):
            while not compiling(job_id):
                # Not ended: queued until its process is spawned, then running.
                state = (await client.get(f"/v1/jobs/{job_id}")).json()["state"]
                assert state in ("queued", "running"), state
                await trio.sleep(0.05)
        assert {comm for _, comm, _ in compiler_processes(job_id)} == {"cargo", "rustc"}
        cancelled = (await client.delete(f"/v1/jobs/{job_id}?wait=true")).json()
        assert compiler_processes(job_id) == [] and job_processes(job_id) == []
        assert cancelled["state"] == "cancelled" and cancelled["teardown"]["left"] == 0
        assert cancelled["teardown"]["found"] >= 3  # makepkg's bash, cargo, rustc at least
        assert installed_versions(hive, "rustworker") == [] and builds_left(hive) == []


# ------------------------------------------------- split, meta, pkgver(), epoch


async def test_split_recipe_builds_once_and_installs_each_package(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    write(
        catalog,
        "pair",
        """\
pkgbase=pair
pkgname=(pair-left pair-right)
pkgver=2
pkgrel=1
epoch=1
arch=(any)
build() { echo built; }
package_pair-left() {
    pkgdesc="left"
    mkdir -p "$pkgdir/bin"; echo "left $pkgname" > "$pkgdir/bin/left"
}
package_pair-right() {
    depends=(sh)
    mkdir -p "$pkgdir/bin"; echo "right $pkgname" > "$pkgdir/bin/right"
}
""",
    )
    write(catalog, "meta", "pkgname=meta\npkgver=1\npkgrel=1\narch=(any)\ndepends=(sh)\n")
    async with running_hive(tmp_path / "state", catalog=catalog) as hive:
        table = (await keeper(hive, "catalog")).stdout.decode()
        assert [line.split()[0] for line in table.splitlines()[1:]] == [
            "meta",
            "pair-left",
            "pair-right",
        ]
        job, out = await run_install(hive, "pair-right")
        assert job["state"] == "succeeded", out
        assert b"==> Starting package_pair-left()" in out
        assert b"==> Starting package_pair-right()" in out
        assert out.count(b"==> Starting build()") == 1  # one build for both
        assert out.startswith(b"built\n")  # stdout: what build() printed, once
        workers = hive.state_dir / "workers"
        assert (workers / "pair-left" / "1:2-1" / "bin" / "left").read_text() == "left pair-left\n"
        assert (workers / "pair-right" / "1:2-1" / "bin" / "right").read_text() == (
            "right pair-right\n"
        )
        again, _ = await run_install(hive, "pair-left")
        assert again["pid"] is None  # both are there: nothing to do
        result = await keeper(hive, "remove", "pair-left")
        assert result.returncode == 0
        assert installed_versions(hive, "pair-right") == ["1:2-1"]
        assert installed_versions(hive, "pair-left") == []

        job, _ = await run_install(hive, "meta")
        assert job["state"] == "succeeded"
        assert os.listdir(workers / "meta" / "1-1") == [".hive-manifest.json"]


async def test_pkgver_function_sets_the_installed_version(
    tmp_path: Path, upstream_repo: tuple[Path, str]
) -> None:
    repo, _ = upstream_repo
    catalog = tmp_path / "catalog"
    write(
        catalog,
        "vcs",
        f"""\
pkgname=vcs
pkgver=0
pkgrel=1
arch=(any)
source=("upstream::git+file://{repo}")
sha256sums=(SKIP)
pkgver() {{
    cd upstream
    printf 'r%s' "$(git rev-list --count HEAD)"
}}
package() {{ install -Dm644 upstream/VERSION "$pkgdir/VERSION"; }}
""",
    )
    async with running_hive(tmp_path / "state", catalog=catalog) as hive:
        job, out = await run_install(hive, "vcs")
        assert job["state"] == "succeeded", out
        count = subprocess.run(
            ["git", "-C", str(repo), "rev-list", "--count", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert installed_versions(hive, "vcs") == [f"r{count}-1"]
        assert f"Updated version: vcs r{count}-1".encode() in out
