"""The build driver, hive/makepkg.sh, run as the job engine runs it.

Every test builds in its own tmp_path; each run gets its own process group,
which is killed afterwards so that no test can leave a process behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from hive import procfs

from .support import recipe, sha256, tarball

ROOT = Path(__file__).resolve().parent.parent
MAKEPKG = ROOT / "hive" / "makepkg.sh"
BUNDLED = ROOT / "hive" / "recipes"
RUN_TIMEOUT = 60.0
STAGE = re.compile(r"^==> (.*)$", re.MULTILINE)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    build_dir: Path

    @property
    def stages(self) -> list[str]:
        """The '==> ' announcements on stdout, in order."""
        return STAGE.findall(self.stdout)

    @property
    def pkgdir(self) -> Path:
        return self.build_dir / "pkg"


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _group_members(pgid: int) -> list[procfs.ProcStat]:
    """Live members of a process group, judged from /proc: a zombie that waits
    for PID 1 to reap it is not alive, although ``killpg(pgid, 0)`` says so."""
    return [stat for stat in procfs.snapshot().values() if stat.pgid == pgid and not stat.dead]


def _group_alive(pgid: int) -> bool:
    return bool(_group_members(pgid))


def job_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "HIVE_SKIP_CHECK")}
    env["HIVE_JOB_ID"] = "test-job"
    env.update(extra)
    return env


def makepkg(recipe_dir: Path, build_dir: Path, timeout: float = RUN_TIMEOUT, **env: str) -> Run:
    """Run the driver to completion in its own process group."""
    build_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        ["bash", str(MAKEPKG), str(recipe_dir), str(build_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=job_env(**env),
        cwd=build_dir,
        start_new_session=True,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        _kill_group(process.pid)
        process.wait()
    return Run(process.returncode, stdout, stderr, build_dir)


def snapshot(directory: Path) -> dict[str, tuple[int, str]]:
    """Mode and content hash of every file: to prove a recipe is untouched."""
    return {
        str(p.relative_to(directory)): (p.stat().st_mode, sha256(p.read_bytes()))
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------- hello


def test_hello_builds(tmp_path: Path) -> None:
    before = snapshot(BUNDLED / "hello")
    run = makepkg(BUNDLED / "hello", tmp_path / "build")
    assert run.returncode == 0, run.stderr
    assert run.stages == [
        "Fetching sources",
        "Verifying checksums",
        "Extracting sources",
        "Starting build()",
        "Starting check()",
        "Starting package()",
        "Finished: hello 1.0-1",
    ]
    assert run.stderr == ""
    binary = run.pkgdir / "hello" / "bin" / "hello"
    assert os.access(binary, os.X_OK)
    result = subprocess.run([binary, "tests"], capture_output=True, text=True, check=True)
    assert result.stdout == "hello from tests\n"
    assert (run.build_dir / "startdir" / "PKGBUILD").is_file()
    assert (run.build_dir / "src" / "hello.sh").is_file()
    assert snapshot(BUNDLED / "hello") == before


def test_skip_check(tmp_path: Path) -> None:
    run = makepkg(BUNDLED / "hello", tmp_path / "build", HIVE_SKIP_CHECK="1")
    assert run.returncode == 0, run.stderr
    assert "Skipping check()" in run.stages
    assert "Starting check()" not in run.stages


def test_prebuilt_extracts_bundledtarball(tmp_path: Path) -> None:
    run = makepkg(BUNDLED / "prebuilt", tmp_path / "build")
    assert run.returncode == 0, run.stderr
    assert "Starting build()" not in run.stages
    assert "Extracting prebuilt-1.0.tar.gz" in run.stdout
    tool = run.pkgdir / "prebuilt" / "bin" / "prebuilt"
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout == "prebuilt 1.0\n"


# ------------------------------------------------------- environment, stages


def test_environment_and_working_directory(tmp_path: Path) -> None:
    report = tmp_path / "report"
    recipe_dir = recipe(
        tmp_path / "recipe",
        f"""\
        pkgname=envcheck
        pkgver=2.0
        pkgrel=3
        arch=(any)
        source=()
        sha256sums=()
        prepare() {{ echo "prepare $PWD" >> '{report}'; }}
        build() {{ echo "build $PWD" >> '{report}'; }}
        check() {{ echo "check $PWD" >> '{report}'; }}
        package() {{
            echo "package $PWD" >> '{report}'
            bash -c 'echo "exported $startdir $srcdir $pkgdir $CARCH $HIVE_JOB_ID"' >> '{report}'
            [[ $- == *e* ]] && echo "errexit on" >> '{report}'
        }}
        """,
    )
    build = tmp_path / "build"
    run = makepkg(recipe_dir, build)
    assert run.returncode == 0, run.stderr
    assert run.stages[3:] == [
        "Starting prepare()",
        "Starting build()",
        "Starting check()",
        "Starting package()",
        "Finished: envcheck 2.0-3",
    ]
    src = build / "src"
    assert report.read_text().splitlines() == [
        f"prepare {src}",
        f"build {src}",
        f"check {src}",
        f"package {src}",
        f"exported {build}/startdir {src} {build}/pkg/envcheck {os.uname().machine} test-job",
        "errexit on",
    ]


def test_failing_command_stops_the_function(tmp_path: Path) -> None:
    marker = tmp_path / "after-false"
    recipe_dir = recipe(
        tmp_path / "recipe",
        f"""\
        pkgname=failing
        pkgver=1
        pkgrel=1
        arch=(any)
        build() {{
            echo building
            grep -q nothing /dev/null
            touch '{marker}'
        }}
        package() {{ :; }}
        """,
    )
    run = makepkg(recipe_dir, tmp_path / "build")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == "==> ERROR: A failure occurred in build()."
    assert "Starting package()" not in run.stages
    assert not marker.exists()


def test_function_exit_status_is_passed_on(tmp_path: Path) -> None:
    recipe_dir = recipe(
        tmp_path / "recipe",
        """\
        pkgname=seven
        pkgver=1
        pkgrel=1
        arch=(any)
        prepare() { (exit 7); }
        package() { :; }
        """,
    )
    run = makepkg(recipe_dir, tmp_path / "build")
    assert run.returncode == 7
    # Reported once, although the failure happened in a subshell.
    assert run.stderr == "==> ERROR: A failure occurred in prepare().\n"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            "pkgname=x\npkgver=1\npkgrel=1\narch=(any)\npackage() {\n  echo\n}\n}\n",
            "PKGBUILD: line 8: syntax error near unexpected token `}'",
        ),
        ("pkgname=x\npkgver=1\npkgrel=1\narch=(any)\n", "PKGBUILD has no package() function"),
        ("pkgname=x\npkgrel=1\narch=(any)\npackage() { :; }\n", "pkgver is not set in PKGBUILD"),
        (
            "pkgname=x\npkgver=1\npkgrel=1\narch=(armv7h)\npackage() { :; }\n",
            "x is not available for the '{machine}' architecture",
        ),
        (
            "pkgname=x\npkgver=1\npkgrel=1\narch=(any)\nsource=(a b)\nsha256sums=(SKIP)\n"
            "package() { :; }\n",
            "sha256sums has 1 entries but source has 2",
        ),
        (
            "pkgname=x\npkgver=1\npkgrel=1\narch=(any)\nsource=(nothere.txt)\n"
            "sha256sums=(SKIP)\npackage() { :; }\n",
            "source file not found: nothere.txt",
        ),
    ],
    ids=["syntax", "no-package", "no-pkgver", "arch", "sums-length", "no-local-file"],
)
def test_bad_recipes(tmp_path: Path, body: str, error: str) -> None:
    run = makepkg(recipe(tmp_path / "recipe", body), tmp_path / "build")
    assert run.returncode == 1
    assert run.stderr == f"==> ERROR: {error.replace('{machine}', os.uname().machine)}\n"
    assert not any(stage.startswith("Starting") for stage in run.stages)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("pkgname=../escape", "invalid pkgname: ../escape"),
        ("pkgname=Upper", "invalid pkgname: Upper"),
        ("pkgver=1-2", "pkgver must not contain hyphens, colons, slashes or whitespace: 1-2"),
        ("pkgrel=1a", "invalid pkgrel: 1a"),
        ("arch=()", "arch is not set in PKGBUILD"),
    ],
)
def test_bad_metadata(tmp_path: Path, line: str, error: str) -> None:
    body = f"pkgname=ok\npkgver=1\npkgrel=1\narch=(any)\n{line}\npackage() {{ :; }}\n"
    run = makepkg(recipe(tmp_path / "recipe", body), tmp_path / "build")
    assert run.returncode == 1
    assert run.stderr == f"==> ERROR: {error}\n"
    assert not (tmp_path / "build" / "pkg").exists()


def test_missing_dependencies(tmp_path: Path) -> None:
    recipe_dir = recipe(
        tmp_path / "recipe",
        """\
        pkgname=needy
        pkgver=1
        pkgrel=1
        arch=(any)
        depends=('sh' 'hive-no-such-tool>=1.2')
        makedepends=('bash' 'hive-no-such-compiler')
        package() { :; }
        """,
    )
    run = makepkg(recipe_dir, tmp_path / "build")
    assert run.returncode == 1
    assert run.stderr == (
        "==> ERROR: missing dependencies: hive-no-such-tool, hive-no-such-compiler\n"
    )
    assert run.stages == []


def test_build_dir_must_be_fresh(tmp_path: Path) -> None:
    build = tmp_path / "build"
    (build / "src").mkdir(parents=True)
    run = makepkg(BUNDLED / "hello", build)
    assert run.returncode == 1
    assert "build directory is not fresh" in run.stderr


def test_sigterm_to_the_group_ends_the_build(tmp_path: Path) -> None:
    """What the hive does on cancel: signal the whole process group."""
    recipe_dir = recipe(
        tmp_path / "recipe",
        """\
        pkgname=slow
        pkgver=1
        pkgrel=1
        arch=(any)
        build() { echo started; sleep 300; }
        package() { :; }
        """,
    )
    build = tmp_path / "build"
    build.mkdir()
    process = subprocess.Popen(
        ["bash", str(MAKEPKG), str(recipe_dir), str(build)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=job_env(),
        start_new_session=True,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line == "started\n":
                break
        # Kill only once `sleep` exists: a group signalled while bash is still
        # forking can gain a member after the signal (the hive re-scans for
        # that; this test is about the driver's own trap).
        deadline = time.monotonic() + 10
        while not any(m.ppid != 1 and m.pid != process.pid for m in _group_members(process.pid)):
            assert time.monotonic() < deadline, "sleep never started"
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
        deadline = time.monotonic() + 5
        while _group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        left_behind = _group_alive(process.pid)
    finally:
        _kill_group(process.pid)
        process.wait()
    assert process.returncode == 143
    assert "==> ERROR: Aborted by SIGTERM" in stderr
    assert not left_behind


# -------------------------------------------------------------------- sources


def test_checksum_mismatch_fails_before_build(tmp_path: Path) -> None:
    marker = tmp_path / "built"
    recipe_dir = recipe(
        tmp_path / "recipe",
        f"""\
        pkgname=tampered
        pkgver=1
        pkgrel=1
        arch=(any)
        source=(good.txt data.txt)
        sha256sums=('{sha256(b"good")}' '{sha256(b"expected")}')
        prepare() {{ touch '{marker}'; }}
        build() {{ touch '{marker}'; }}
        package() {{ touch '{marker}'; }}
        """,
        {"good.txt": b"good", "data.txt": b"tampered"},
    )
    run = makepkg(recipe_dir, tmp_path / "build")
    assert run.returncode == 1
    assert run.stderr == "==> ERROR: checksum mismatch for data.txt\n"
    assert run.stages == ["Fetching sources", "Verifying checksums"]
    assert not marker.exists()


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_archives_are_extracted_unless_noextract(tmp_path: Path) -> None:
    tgz = tarball({"proj-1/README": b"from tar\n"})
    zipped = _zip({"zipped/NOTES": b"from zip\n"})
    kept = tarball({"kept/FILE": b"never extracted\n"})
    recipe_dir = recipe(
        tmp_path / "recipe",
        f"""\
        pkgname=archives
        pkgver=1
        pkgrel=1
        arch=(any)
        source=(proj-1.tar.gz extra.zip kept.tgz)
        noextract=(kept.tgz)
        sha256sums=('{sha256(tgz)}' '{sha256(zipped)}' '{sha256(kept)}')
        package() {{
            install -Dm644 proj-1/README "$pkgdir/README"
            install -Dm644 zipped/NOTES "$pkgdir/NOTES"
            test ! -e kept
        }}
        """,
        {"proj-1.tar.gz": tgz, "extra.zip": zipped, "kept.tgz": kept},
    )
    run = makepkg(recipe_dir, tmp_path / "build")
    assert run.returncode == 0, run.stderr
    assert (run.pkgdir / "archives" / "README").read_text() == "from tar\n"
    assert (run.pkgdir / "archives" / "NOTES").read_text() == "from zip\n"


def test_file_url_and_rename(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "upstream-data.bin"
    outside.parent.mkdir()
    outside.write_bytes(b"file url payload")
    recipe_dir = recipe(
        tmp_path / "recipe",
        f"""\
        pkgname=fileurl
        pkgver=1
        pkgrel=1
        arch=(any)
        source=("payload.bin::file://{outside}" "renamed.txt::local.txt")
        sha256sums=('{sha256(b"file url payload")}' SKIP)
        package() {{
            install -Dm644 payload.bin "$pkgdir/payload.bin"
            install -Dm644 renamed.txt "$pkgdir/renamed.txt"
        }}
        """,
        {"local.txt": b"local"},
    )
    run = makepkg(recipe_dir, tmp_path / "build")
    assert run.returncode == 0, run.stderr
    assert (run.pkgdir / "fileurl" / "payload.bin").read_bytes() == b"file url payload"
    assert (run.pkgdir / "fileurl" / "renamed.txt").read_bytes() == b"local"


def test_http_source(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    root, base = http_root
    tgz = tarball({"web-2/VERSION": b"2\n"})
    (root / "web-2.tar.gz").write_bytes(tgz)
    (root / "notes.txt").write_bytes(b"downloaded")
    recipe_dir = recipe(
        tmp_path / "recipe",
        f"""\
        pkgname=web
        pkgver=2
        pkgrel=1
        arch=(any)
        source=("{base}/web-$pkgver.tar.gz" "readme.txt::{base}/notes.txt")
        sha256sums=('{sha256(tgz)}' '{sha256(b"downloaded")}')
        package() {{
            install -Dm644 web-$pkgver/VERSION "$pkgdir/VERSION"
            install -Dm644 readme.txt "$pkgdir/readme.txt"
        }}
        """,
    )
    run = makepkg(recipe_dir, tmp_path / "build")
    assert run.returncode == 0, run.stderr
    assert (run.pkgdir / "web" / "VERSION").read_text() == "2\n"
    assert (run.pkgdir / "web" / "readme.txt").read_text() == "downloaded"
    assert not (tmp_path / "recipe" / "readme.txt").exists()


def test_http_source_not_found(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    _, base = http_root
    recipe_dir = recipe(
        tmp_path / "recipe",
        f"""\
        pkgname=web
        pkgver=1
        pkgrel=1
        arch=(any)
        source=("{base}/missing.tar.gz")
        sha256sums=(SKIP)
        package() {{ :; }}
        """,
    )
    run = makepkg(recipe_dir, tmp_path / "build")
    assert run.returncode == 1
    assert run.stderr.endswith(f"==> ERROR: failed to download {base}/missing.tar.gz\n")
    assert run.stages == ["Fetching sources"]


def test_http_source_without_curl(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    """Where curl is missing the driver downloads with python3."""
    root, base = http_root
    (root / "data.txt").write_bytes(b"via python")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = bin_dir / entry.name
            if entry.name != "curl" and not target.exists() and os.access(entry.path, os.X_OK):
                target.symlink_to(entry.path)
    recipe_dir = recipe(
        tmp_path / "recipe",
        f"""\
        pkgname=nocurl
        pkgver=1
        pkgrel=1
        arch=(any)
        source=("{base}/data.txt" "{base}/absent.txt")
        sha256sums=('{sha256(b"via python")}' SKIP)
        package() {{ :; }}
        """,
    )
    run = makepkg(recipe_dir, tmp_path / "build", PATH=str(bin_dir))
    assert run.returncode == 1
    assert (tmp_path / "build" / "src" / "data.txt").read_bytes() == b"via python"
    assert run.stderr == (
        "python download: HTTP Error 404: File not found\n"
        f"==> ERROR: failed to download {base}/absent.txt\n"
    )


@pytest.mark.parametrize(
    ("fragment", "expected"),
    [("#tag=v1", "1"), ("#branch=next", "3"), ("", "2"), ("#commit={first}", "1")],
)
def test_git_source(
    tmp_path: Path, upstream_repo: tuple[Path, str], fragment: str, expected: str
) -> None:
    repo, first = upstream_repo
    url = f"git+file://{repo}{fragment.format(first=first)}"
    recipe_dir = recipe(
        tmp_path / "recipe",
        f"""\
        pkgname=fromgit
        pkgver=1
        pkgrel=1
        arch=(any)
        source=("{url}")
        sha256sums=(SKIP)
        package() {{
            install -Dm644 upstream/VERSION "$pkgdir/VERSION"
        }}
        """,
    )
    run = makepkg(recipe_dir, tmp_path / "build")
    assert run.returncode == 0, run.stderr
    assert (run.pkgdir / "fromgit" / "VERSION").read_text() == f"{expected}\n"


def test_git_source_unknown_tag(tmp_path: Path, upstream_repo: tuple[Path, str]) -> None:
    repo, _ = upstream_repo
    recipe_dir = recipe(
        tmp_path / "recipe",
        f"""\
        pkgname=fromgit
        pkgver=1
        pkgrel=1
        arch=(any)
        source=("src::git+file://{repo}#tag=v9")
        sha256sums=(SKIP)
        package() {{ :; }}
        """,
    )
    run = makepkg(recipe_dir, tmp_path / "build")
    assert run.returncode == 1
    assert run.stderr.endswith(f"==> ERROR: git checkout failed for git+file://{repo}#tag=v9\n")


# ------------------------------------------------------------ slow, full builds


@pytest.mark.slow
def test_cbuild_full_build(tmp_path: Path) -> None:
    run = makepkg(BUNDLED / "cbuild", tmp_path / "build", timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stages[-1] == "Finished: cbuild 1.2.0-1"
    assert len(re.findall(r"^cc .* -c unit_\d+\.c", run.stdout, re.MULTILINE)) == 80
    binary = run.pkgdir / "cbuild" / "bin" / "cbuild"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout == "cbuild 1.2.0\n"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed")
def test_rustworker_full_build(tmp_path: Path) -> None:
    run = makepkg(BUNDLED / "rustworker", tmp_path / "build", timeout=600)
    assert run.returncode == 0, run.stderr
    assert "test result: ok" in run.stdout
    binary = run.pkgdir / "rustworker" / "bin" / "rustworker"
    out = subprocess.run([binary, "6 * 7"], capture_output=True, text=True, check=True)
    assert out.stdout == "6 * 7 = 42\n"
