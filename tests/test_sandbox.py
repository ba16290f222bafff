"""hive.sandbox: what a sealed command can and cannot do, tried for real."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hive import sandbox

from .support import running_hive

CAPS = sandbox.detect()
needs_namespaces = pytest.mark.skipif(
    not CAPS.namespaces, reason=f"no namespaces here: {CAPS.describe()}"
)


def sealed(script: str, seal: sandbox.Seal | None = None) -> subprocess.CompletedProcess[str]:
    argv = sandbox.command(["bash", "-c", script], seal or sandbox.Seal())
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        start_new_session=True,
        cwd="/",
    )


def test_detect_is_cached_and_describes_itself() -> None:
    assert sandbox.detect() is CAPS
    assert "\n" not in CAPS.describe()
    if CAPS.namespaces:
        assert "pid-namespace" in CAPS.layers


def test_without_namespaces_the_command_only_drops_privileges() -> None:
    caps = sandbox.Capabilities(root=True, namespaces=False, user_namespace=False, setpriv=True)
    argv = sandbox.command(["true"], caps=caps)
    assert argv[0].endswith("setpriv") and argv[-1] == "true"
    as_user = sandbox.Capabilities(root=False, namespaces=False, user_namespace=False, setpriv=True)
    assert sandbox.command(["true"], caps=as_user) == ["true"]


@needs_namespaces
def test_sealed_command_is_pid_1_unprivileged_and_offline() -> None:
    done = sealed(
        "echo ppid=$PPID; id -u; tail -n +3 /proc/net/dev | cut -d: -f1; ps -e --no-headers | wc -l"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert lines[0] == "ppid=1"  # its parent is the namespace's init
    if CAPS.root:
        assert lines[1] != "0"
    assert lines[2:-1] == ["lo"]  # no interface but a (down) loopback
    assert int(lines[-1]) <= 5  # init, bash, ps, wc: the host's processes are not visible


@needs_namespaces
def test_writes_land_only_in_writable_paths(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    os.chmod(tmp_path, 0o777)
    os.chmod(allowed, 0o777)
    marker = f"hive-sandbox-{os.getpid()}"
    done = sealed(
        f"touch {allowed}/yes; touch {tmp_path}/no 2>/dev/null; touch /tmp/{marker}; "
        f"ls /tmp; echo ok",
        sandbox.Seal(writable=(allowed,)),
    )
    assert done.returncode == 0, done.stderr
    assert (allowed / "yes").exists()
    assert not (tmp_path / "no").exists()
    assert not Path(f"/tmp/{marker}").exists()  # its /tmp was a private tmpfs
    # Its /tmp held its own file, and the way to the writable path, nothing else.
    skeleton = allowed.relative_to("/tmp").parts[0] if allowed.is_relative_to("/tmp") else None
    assert set(done.stdout.split()) - {skeleton} == {marker, "ok"}


@needs_namespaces
def test_killing_the_sealed_process_kills_everything_it_started() -> None:
    marker = f"hive-sandbox-escape-{os.getpid()}-{time.monotonic_ns()}"
    argv = sandbox.command(
        [
            "bash",
            "-c",
            f"setsid bash -c 'trap \"\" TERM; exec -a {marker} sleep 300' & echo started; wait",
        ]
    )
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, text=True, start_new_session=True, stderr=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "started\n"
        deadline = time.monotonic() + 10
        while not _with_marker(marker):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # unshare dies; --kill-child kills the init
        process.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _with_marker(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        left = _with_marker(marker)
    finally:
        for pid in _with_marker(marker):  # pragma: no cover - cleanup before failing
            os.kill(pid, signal.SIGKILL)
        if process.poll() is None:  # pragma: no cover
            process.kill()
            process.wait()
    assert left == []


def _with_marker(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state not in ("Z", "X"):
            found.append(int(entry))
    return found


@needs_namespaces
def test_host_mounts_under_tmp_do_not_break_the_seal(tmp_path: Path) -> None:
    """Another mount under /tmp (a test's small tmpfs, say) is hidden by the
    private /tmp; remounting it read-only must not be attempted (it was seen
    to fail every sealed command while such a mount existed)."""
    point = tmp_path / "mounted"
    point.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        done = sealed("echo sealed")
    finally:
        subprocess.run(["umount", str(point)], check=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "sealed\n"


async def test_health_names_the_readers_layers(tmp_path: Path) -> None:
    """``/v1/health`` says what seals the reading of recipes, as it says what
    tears jobs down; the switch that turns the reader's namespaces off shows."""
    found = {}
    for name, env in [("on", {}), ("off", {"HIVE_DISABLE_NAMESPACES": "1"})]:
        async with running_hive(tmp_path / name, env=env) as hive, hive.client() as client:
            health = (await client.get("/v1/health")).json()
        assert "pid-namespace" in health["teardown_layers"] or not CAPS.namespaces
        found[name] = health["reader_layers"]
    root = os.geteuid() == 0
    dropped = ["unprivileged-user"] if root and shutil.which("setpriv") else []
    assert found["off"] == dropped
    if CAPS.namespaces:
        sealed = ["pid-namespace", "mount-namespace", "net-namespace"]
        assert found["on"] == sealed + ([] if root else ["user-namespace"]) + dropped
    else:
        assert found["on"] == dropped
