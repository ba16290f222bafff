"""contrib/: the systemd units and Kubernetes manifests pass their own validators,
the DaemonSet's readiness probe works against a real hive, and a hive in a
delegated cgroup (what ``Delegate=yes`` gives it) uses the cgroup layer
without being root."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from .support import ROOT, START_TIMEOUT, STOP_TIMEOUT, running_hive

CONTRIB = ROOT / "contrib"
UNITS = {
    "system": (CONTRIB / "systemd" / "hive.service", "/usr/local/bin/hive"),
    "user": (CONTRIB / "systemd" / "user" / "hive.service", "%h/.local/bin/hive"),
}
MANIFESTS = sorted((CONTRIB / "kubernetes").glob("*.yaml"))
#: The oldest Kubernetes with ``securityContext.appArmorProfile``, and the newest bundled.
KUBERNETES_VERSIONS = ("1.30.0", None)
VENV_BIN = Path(sys.executable).parent


# --- systemd ---------------------------------------------------------------


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip(
            "systemd-analyze is not installed "
            "(Debian package: systemd; `make test` installs it when run as root)"
        )
    return found


def verify_unit(unit_text: str, mode: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` on a unit. It works without systemd as PID 1,
    but checks that ExecStart's binary exists, so the unit's own path is
    replaced by this venv's ``hive`` (which must then be in the unit)."""
    unit_path, binary = UNITS[mode]
    assert f"ExecStart={binary} serve " in unit_text, "the unit's ExecStart has moved"
    folder = tmp_path / mode
    folder.mkdir()
    unit = folder / unit_path.name
    unit.write_text(unit_text.replace(f"ExecStart={binary} ", f"ExecStart={VENV_BIN / 'hive'} "))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    # --user needs a runtime dir; --man=no: no man pages to look up on this machine.
    argv = [
        systemd_analyze(),
        *(["--user"] if mode == "user" else []),
        "verify",
        "--man=no",
        str(unit),
    ]
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("mode", sorted(UNITS))
def test_systemd_unit_verifies(mode: str, tmp_path: Path) -> None:
    result = verify_unit(UNITS[mode][0].read_text(), mode, tmp_path)
    # verify exits 0 on unknown keys and bad values ("ignoring"): any output is a failure.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("mode", sorted(UNITS))
def test_systemd_unit_keeps_what_the_hive_needs(mode: str) -> None:
    """The settings the hive depends on, and the ones that would switch a layer off."""
    settings = [line.strip() for line in UNITS[mode][0].read_text().splitlines()]
    for needed in ("Delegate=yes", "KillMode=mixed", "Restart=on-failure", "StateDirectory=hive"):
        assert needed in settings
    for breaks in ("RestrictNamespaces=", "PrivateUsers=", "ProtectControlGroups=", "ProtectProc="):
        assert not any(line.startswith(breaks) for line in settings), breaks


def test_systemd_verify_catches_a_typo(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is reported."""
    text = UNITS["system"][0].read_text().replace("Delegate=yes", "Delegat=yes")
    result = verify_unit(text, "system", tmp_path)
    assert "Unknown key 'Delegat'" in result.stderr


# --- Kubernetes --------------------------------------------------------------


def kubernetes_validate() -> str:
    found = VENV_BIN / "kubernetes-validate"
    if not found.exists():
        pytest.skip("kubernetes-validate is not installed (dev extra: pip install -e '.[dev]')")
    return str(found)


def validate(paths: list[Path], version: str | None) -> subprocess.CompletedProcess[str]:
    """kubernetes-validate, offline against its bundled schemas, rejecting unknown fields."""
    argv = [kubernetes_validate(), "--strict", *(["-k", version] if version else [])]
    return subprocess.run([*argv, *map(str, paths)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS, ids=["1.30", "latest"])
def test_kubernetes_manifests_validate(version: str | None) -> None:
    assert {p.name for p in MANIFESTS} >= {"daemonset.yaml", "service.yaml", "namespace.yaml"}
    result = validate(MANIFESTS, version)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(MANIFESTS), result.stdout


def test_kubernetes_validate_catches_a_typo(tmp_path: Path) -> None:
    text = (CONTRIB / "kubernetes" / "daemonset.yaml").read_text()
    broken = tmp_path / "daemonset.yaml"
    broken.write_text(text.replace("readinessProbe:", "readynessProbe:"))
    result = validate([broken], None)
    assert result.returncode != 0 and "readynessProbe" in result.stdout + result.stderr


def daemonset_container() -> dict[str, Any]:
    daemonset = yaml.safe_load((CONTRIB / "kubernetes" / "daemonset.yaml").read_text())
    container: dict[str, Any] = daemonset["spec"]["template"]["spec"]["containers"][0]
    return container


def test_daemonset_privileges() -> None:
    """Not privileged; every capability dropped but CAP_SYS_ADMIN and what running
    builds as the build user takes; seccomp kept."""
    context = daemonset_container()["securityContext"]
    assert "privileged" not in context
    assert context["capabilities"] == {
        "drop": ["ALL"],
        "add": ["SYS_ADMIN", "SETUID", "SETGID", "CHOWN", "KILL", "DAC_OVERRIDE", "FOWNER"],
    }
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.fixture
def node_certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for a node name, as the DaemonSet's TLS Secret holds: not for 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=node-a", "-addext", "subjectAltName=DNS:node-a.example",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def run_probe(state_dir: Path, url: str) -> subprocess.CompletedProcess[bytes]:
    """The DaemonSet's readiness probe, as the kubelet runs it (its command, the
    container's environment), pointed at ``url``."""
    container = daemonset_container()
    command = container["readinessProbe"]["exec"]["command"]
    assert command[0] == "python3"
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env |= {"HIVE_STATE_DIR": str(state_dir), "HIVE_HEALTH_URL": f"{url}/v1/health"}
    with trio.fail_after(START_TIMEOUT):
        return await trio.run_process(
            [sys.executable, *command[1:]], env=env, capture_stderr=True, check=False
        )


async def test_readiness_probe(tmp_path: Path, node_certificate: tuple[Path, Path]) -> None:
    cert, key = node_certificate
    extra = ["--certfile", str(cert), "--keyfile", str(key)]
    async with running_hive(tmp_path / "state", extra=extra) as hive:
        assert hive.url.startswith("https://")
        ready = await run_probe(hive.state_dir, hive.url)
        assert ready.returncode == 0, ready.stderr.decode()
        # A token the hive does not hold: 401, not ready.
        other = tmp_path / "other"
        other.mkdir(mode=0o700)
        (other / "token").write_text("not-the-token\n")
        refused = await run_probe(other, hive.url)
        assert refused.returncode != 0 and b"401" in refused.stderr
        await hive.stop()
    gone = await run_probe(hive.state_dir, hive.url)
    assert gone.returncode != 0 and b"Connection refused" in gone.stderr


# --- the hive in a delegated cgroup --------------------------------------------

CGROUP_FILES_DELEGATED = ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control")


def cgroup2_mount() -> Path:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields, _, rest = line.partition(" - ")
            if rest.startswith("cgroup2 "):
                return Path(fields.split()[4])
    pytest.skip("no cgroup v2 hierarchy is mounted")


@pytest.fixture
def unit_cgroup() -> Iterator[Path]:
    """A fresh cgroup standing for a service's own (``/system.slice/hive.service``)."""
    if os.geteuid() != 0:
        pytest.skip("creating and delegating a cgroup needs root")
    path = cgroup2_mount() / f"hive-test-unit-{os.getpid()}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup here: {exc.strerror}")
    try:
        yield path
    finally:
        for child in sorted(path.glob("**/"), key=lambda p: len(p.parts), reverse=True):
            if child != path:
                child.rmdir()
        path.rmdir()


@pytest.mark.parametrize("delegated", [True, False], ids=["delegated", "not-delegated"])
async def test_hive_uses_a_delegated_cgroup_without_root(
    unit_cgroup: Path, delegated: bool
) -> None:
    """What ``Delegate=yes`` does for a ``User=`` service: the unit's cgroup and its
    ``cgroup.procs``, ``cgroup.threads`` and ``cgroup.subtree_control`` belong to
    that user. A hive started there as ``nobody`` finds its own cgroup in
    /proc/self/cgroup and runs the cgroup layer below it; without the delegation
    it falls back. The hive keeps CAP_DAC_READ_SEARCH only to read this venv
    under /root: it lets nobody write a cgroup file it does not own."""
    nobody = pwd.getpwnam("nobody")
    if delegated:
        for target in (unit_cgroup, *(unit_cgroup / name for name in CGROUP_FILES_DELEGATED)):
            os.chown(target, nobody.pw_uid, nobody.pw_gid)
    state_dir = Path(tempfile.mkdtemp(prefix="hive-delegated-"))
    os.chown(state_dir, nobody.pw_uid, nobody.pw_gid)
    enter = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
    argv = [
        "sh", "-c", enter, str(unit_cgroup),
        "setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
        "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
        sys.executable, "-m", "hive", "serve",
        "--bind", "127.0.0.1:0", "--state-dir", str(state_dir),
    ]  # fmt: skip
    env = {
        k: v for k, v in os.environ.items() if k not in ("HIVE_DISABLE_CGROUPS", "HIVE_STATE_DIR")
    }
    try:
        process = await trio.lowlevel.open_process(
            argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=ROOT, env=env
        )
        log = b""
        try:
            assert process.stderr is not None
            with trio.fail_after(START_TIMEOUT):
                while b" ready on " not in log:
                    chunk = await process.stderr.receive_some(65536)
                    assert chunk, log.decode()
                    log += chunk
        finally:
            process.terminate()
            with trio.fail_after(STOP_TIMEOUT):
                await process.wait()
    finally:
        shutil.rmtree(state_dir)
    text = log.decode()
    if delegated:
        assert f"cgroups: cgroup v2 at {unit_cgroup}/hive-" in text, text
        assert "teardown layers: " in text and ", cgroup," in text, text
    else:
        assert f"cannot create {unit_cgroup}/hive-" in text, text
        assert ", cgroup," not in text, text


# --- the DaemonSet's container, imitated ------------------------------------------

#: What a container runtime gives the DaemonSet's container, made here with
#: util-linux: its own cgroup (``$0``) seen through a cgroup namespace and mounted
#: read-only at /sys/fs/cgroup (no other cgroup mount), its own PID namespace (the
#: hive ends up PID 1), network namespace and /proc, a writable /var/lib/hive (the
#: hostPath), the Secrets at /run/secrets (``$1``), an emptyDir on /tmp, a read-only
#: root filesystem, and only the capabilities in ``$3`` (the manifest's, as
#: ``,+sys_admin,+setuid...``, or nothing). The project (``$4``: the venv's
#: hive runs from it) stays visible, also when it lives under /tmp, as a clone
#: may. The rest is the container's command and args.
POD = r"""
set -e
echo $$ > "$0/cgroup.procs"
exec unshare --mount --cgroup --pid --net --fork --propagation private sh -ec '
ip link set lo up
mount -t proc proc /proc
if mountpoint -q /sys/fs/cgroup; then umount -R /sys/fs/cgroup; fi
mount -t cgroup2 -o ro,nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=0755 tmpfs /var/lib
mkdir /var/lib/hive
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir /run/secrets
mount --bind "$0" /run/secrets
mkdir /run/project
mount --bind "$3" /run/project
mount -t tmpfs tmpfs /tmp
mkdir -p "$3"
mount --bind /run/project "$3"
mount -o remount,bind,ro /
export PATH="$1:$PATH"
keep=$2
shift 3
exec setpriv --bounding-set="-all$keep" --inh-caps=-all "$@"
' "$@"
"""


def secret_volume(folder: Path, files: dict[str, bytes]) -> None:
    """A Secret volume as the kubelet writes it: files in ``..data/``, symlinks to them."""
    data = folder / "..data"
    data.mkdir(parents=True)
    for name, content in files.items():
        (data / name).write_bytes(content)
        (data / name).chmod(0o400)
        (folder / name).symlink_to(Path("..data") / name)


def child_of(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return None
    return int(children[0]) if children else None


@pytest.mark.parametrize("capability", ["manifest", None], ids=["manifest-caps", "no-capability"])
async def test_daemonset_container(
    unit_cgroup: Path, tmp_path: Path, node_certificate: tuple[Path, Path], capability: str | None
) -> None:
    """The DaemonSet's own command and readiness probe, in a container made of the
    namespaces a runtime would give it: with the manifest's capabilities the hive remounts
    its cgroup tree and runs the cgroup layer; without it, it runs the other layers
    and says so. Both are ready."""
    for tool in ("unshare", "nsenter", "setpriv", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    container = daemonset_container()
    cert, key = node_certificate
    secrets = tmp_path / "secrets"
    secret_volume(secrets / "hive-token", {"token": b"k8s-secret-token-0123456789\n"})
    secret_volume(secrets / "hive-tls", {"tls.crt": cert.read_bytes(), "tls.key": key.read_bytes()})
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env |= {"NODE_NAME": "node-a.example", "PATH": os.environ["PATH"]}
    added = container["securityContext"]["capabilities"]["add"] if capability else []
    keep = "".join(f",+{name.lower()}" for name in added)
    argv = [
        "sh", "-c", POD, str(unit_cgroup), str(secrets), str(VENV_BIN), keep, str(ROOT),
        *container["command"], *container["args"],
    ]  # fmt: skip
    process = await trio.lowlevel.open_process(
        argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env
    )
    log = b""
    probe = None
    try:
        assert process.stderr is not None
        with trio.fail_after(START_TIMEOUT):
            while b" ready on " not in log:
                chunk = await process.stderr.receive_some(65536)
                assert chunk, log.decode()
                log += chunk
        hive_pid = child_of(process.pid)
        assert hive_pid is not None
        # The kubelet runs the probe inside the container: its namespaces, its env.
        command = container["readinessProbe"]["exec"]["command"]
        enter = ["nsenter", f"--target={hive_pid}", "--mount", "--net", "--pid"]
        with trio.fail_after(START_TIMEOUT):
            probe = await trio.run_process(
                [*enter, sys.executable, *command[1:]], env=env, capture_stderr=True, check=False
            )
        os.kill(hive_pid, signal.SIGTERM)
        with trio.fail_after(STOP_TIMEOUT):
            await process.wait()
        while chunk := await process.stderr.receive_some(65536):
            log += chunk
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = log.decode()
    assert probe is not None and probe.returncode == 0, probe.stderr.decode() + text
    assert "ready on https://0.0.0.0:7835" in text and "Traceback" not in text, text
    layers = text.partition("teardown layers: ")[2].partition(")")[0].split(", ")
    if capability:
        assert "cgroups: cgroup v2 at /sys/fs/cgroup/hive-" in text, text
        assert "cgroup" in layers, text
    else:
        assert "stays read-only: no cgroup layer" in text, text
        assert "cgroup" not in layers and "Read-only file system" in text, text
    assert "received SIGTERM" in text, text
