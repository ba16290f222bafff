"""Sealing a command: its own PID namespace, no network, a read-only view, not root.

Recipe code (a PKGBUILD's top level when its metadata is read, and a build's
functions) must not be able to leave a process behind, write to the host, reach
the network, or run as root. The kernel gives all of that in one move: a new
PID namespace whose init is the sealed command. When that init dies, the kernel
kills every other process of the namespace, setsid or double-fork or not — no
``/proc`` scan can promise as much.

Python 3.11 has no ``os.unshare``, and ``unshare(2)`` of a PID namespace only
takes effect for the *children* of the caller, which a ctypes call in the hive
itself cannot arrange without forking by hand. util-linux ``unshare`` does the
fork (``--fork``), mounts the namespace's own ``/proc`` (``--mount-proc``) and
kills its child when it dies itself (``--kill-child``), so the hive only ever
owns one ordinary process: :func:`command` builds that argv.

Inside the new mount namespace a short setup script (:data:`SETUP_SCRIPT`), run
as (namespace) root, mounts a private ``/tmp`` and ``/dev/shm``, keeps the
requested paths writable, remounts every other mount read-only and then runs
the command as the unprivileged user (``setpriv``). The script itself stays the
namespace's init and exits with the command's status; when it exits, or is
killed, the kernel kills every process left in the namespace.

What a machine allows is probed once (:func:`detect`): a container's seccomp
profile or a kernel without unprivileged user namespaces may refuse. Then
:func:`command` degrades to what is left (for instance only ``setpriv``, or
nothing) and :attr:`Capabilities.layers` says which layers are active, so a
caller can report it honestly.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .jobsandbox import (
    DEFAULT_BUILD_USER,
    BuildUser,
    BuildUserError,
    needs_user_namespace,
    probe,
)

#: unshare(1) run from a process with blocked signals prints this harmless line,
#: and mount(8) adds a hint to its errors that says nothing.
UNSHARE_NOISE = ("sigprocmask unblock failed", "dmesg(1) may have more information")
#: The exit status of a sandbox that could not be set up: nothing of the
#: command ran, and it says nothing about the command.
SETUP_FAILED = 125

#: Run by bash as namespace root, with ``$1`` the user spec (``uid:gid``, or
#: ``-`` to stay as is), ``$2`` ``1`` for a read-only view, ``$3`` the number of
#: writable paths, then those paths, then the command.  Mount errors are fatal
#: (exit 126): a sandbox that half-formed must not run anything.
#:
#: Writable paths are set aside (bound under the fresh ``/dev/shm``) before
#: ``/tmp`` is replaced, then moved back to where they were: so a writable path
#: under ``/tmp`` survives the private ``/tmp``.  The command runs as a child of
#: this script, which stays the namespace's init: ``--kill-child`` delivers its
#: SIGKILL through the parent-death signal, which the kernel clears on a process
#: that changes its credentials (setpriv), so the init must not be that process.
SETUP_SCRIPT = r"""
set -e
trap 'echo "hive-sandbox: setting up the sandbox failed" >&2; exit 125' ERR
user=$1 ro=$2 count=$3
shift 3
writable=("${@:1:count}")
shift "$count"
mount -t tmpfs -o size=16m,mode=1777,nosuid,nodev tmpfs /dev/shm
mkdir /dev/shm/.hive-writable
for i in "${!writable[@]}"; do
    mkdir "/dev/shm/.hive-writable/$i"
    mount --bind -- "${writable[i]}" "/dev/shm/.hive-writable/$i"
done
mount -t tmpfs -o size=64m,mode=1777,nosuid,nodev tmpfs /tmp
for i in "${!writable[@]}"; do
    mkdir -p -- "${writable[i]}"
    mount --move -- "/dev/shm/.hive-writable/$i" "${writable[i]}"
    rmdir "/dev/shm/.hive-writable/$i"
done
rmdir /dev/shm/.hive-writable
if [[ $ro == 1 ]]; then
    while read -r _ _ _ _ point _; do
        printf -v point '%b' "$point"
        case $point in
            # Under the private /tmp and /dev/shm, the host's mounts are hidden.
            /proc | /proc/* | /sys | /sys/* | /dev | /dev/* | /tmp | /tmp/*) continue ;;
        esac
        # A mount point that a later mount hid is out of reach already.
        [[ -e $point ]] || continue
        for path in "${writable[@]}"; do
            [[ $point == "$path" ]] && continue 2
        done
        mount -o remount,bind,ro -- "$point"
    done < /proc/self/mountinfo
fi
set +e
trap - ERR
if [[ $user == - ]]; then
    "$@"
else
    setpriv --reuid="${user%%:*}" --regid="${user#*:}" --clear-groups --no-new-privs -- "$@"
fi
exit $?
"""


@dataclass(frozen=True)
class Seal:
    """What a sealed command may do.

    ``user`` is whom the command runs as when the hive is root (ignored
    otherwise: a non-root hive runs it as itself). ``writable`` paths stay
    writable (and must exist); everything else is read-only when ``readonly``.
    """

    user: str = DEFAULT_BUILD_USER
    network: bool = False
    readonly: bool = True
    writable: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Capabilities:
    """What this machine lets the hive do, found once by :func:`detect`."""

    #: The hive runs as root: sealed code must drop to another user.
    root: bool
    #: A PID namespace (with mount and network namespaces) can be created.
    namespaces: bool
    #: A user namespace is needed for that (the hive is not root).
    user_namespace: bool
    #: setpriv exists, so a root hive can drop to an unprivileged user.
    setpriv: bool
    #: Why a layer is missing, for the operator ("" when all are there).
    reason: str = ""

    @property
    def layers(self) -> list[str]:
        """The active layers, in words, for logs and health reports."""
        layers: list[str] = []
        if self.namespaces:
            layers += ["pid-namespace", "mount-namespace", "net-namespace"]
            if self.user_namespace:
                layers.append("user-namespace")
        if self.root and self.setpriv:
            layers.append("unprivileged-user")
        return layers

    def describe(self) -> str:
        """One line: which layers are active, and why others are not."""
        active = ", ".join(self.layers) or "none"
        return f"{active}{f' ({self.reason})' if self.reason else ''}"


def _namespace_args(user_namespace: bool, network: bool) -> list[str]:
    unshare = shutil.which("unshare") or "unshare"
    argv = [unshare]
    if user_namespace:
        argv += ["--user", "--map-root-user"]
    argv += ["--pid", "--fork", "--kill-child", "--mount-proc", "--mount"]
    argv += ["--propagation", "private"]
    if not network:
        argv.append("--net")
    return argv


@functools.cache
def detect() -> Capabilities:
    """Probe once what this machine allows (cached for the process's lifetime).

    ``HIVE_DISABLE_NAMESPACES=1`` turns the namespace layer off, to test the
    fallback or to run where probing itself misbehaves.
    """
    root = not needs_user_namespace()
    setpriv = shutil.which("setpriv") is not None
    reasons: list[str] = []
    namespaces = False
    user_namespace = not root
    if os.environ.get("HIVE_DISABLE_NAMESPACES") == "1":
        reasons.append("namespaces disabled by HIVE_DISABLE_NAMESPACES=1")
    elif shutil.which("unshare") is None or shutil.which("mount") is None:
        reasons.append("util-linux unshare or mount is not installed")
    else:
        bash = shutil.which("bash") or "/bin/bash"
        argv = _namespace_args(user_namespace, network=False)
        setup = [*argv, bash, "-c", SETUP_SCRIPT, "setup", "-", "1", "0", "true"]
        failure = probe(setup, noise=UNSHARE_NOISE)
        if failure is None:
            namespaces = True
        else:
            reasons.append(f"no namespaces: {failure}")
    if root and not setpriv:
        reasons.append("setpriv is not installed: sealed code would run as root")
    if root:
        try:
            BuildUser.lookup(DEFAULT_BUILD_USER)
        except BuildUserError as exc:
            reasons.append(str(exc))
    return Capabilities(
        root=root,
        namespaces=namespaces,
        user_namespace=user_namespace and namespaces,
        setpriv=setpriv,
        reason="; ".join(reasons),
    )


def _user_spec(name: str) -> str:
    """``uid:gid`` of ``name`` (numbers: setpriv needs no NSS lookup then)."""
    user = BuildUser.lookup(name)
    return f"{user.uid}:{user.gid}"


def command(
    argv: Sequence[str], seal: Seal = Seal(), caps: Capabilities | None = None
) -> list[str]:
    """The argv that runs ``argv`` sealed as far as this machine allows.

    With namespaces, ``argv`` becomes the init of a new PID namespace: kill the
    returned process (util-linux ``unshare``) with SIGKILL and the kernel kills
    everything the command started. Without them, the caller must still kill
    the command's process group itself (start it in a new session).
    Raises :class:`~hive.jobsandbox.BuildUserError` when ``seal.user`` cannot
    run it on a root hive (no such user, or root).
    """
    caps = caps or detect()
    user = _user_spec(seal.user) if caps.root and caps.setpriv else "-"
    if caps.namespaces:
        bash = shutil.which("bash") or "/bin/bash"
        writable = [str(path) for path in seal.writable]
        return [
            *_namespace_args(caps.user_namespace, seal.network),
            bash,
            "-c",
            SETUP_SCRIPT,
            "hive-sandbox",
            user,
            "1" if seal.readonly else "0",
            str(len(writable)),
            *writable,
            *argv,
        ]
    if user != "-":
        uid, gid = user.split(":")
        setpriv = shutil.which("setpriv") or "setpriv"
        return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]
    return list(argv)


def readable_by(seal: Seal, caps: Capabilities | None = None) -> tuple[int, int] | None:
    """The uid/gid sealed code runs as when that is not the hive's own, else None:
    what a caller must make its input readable for."""
    caps = caps or detect()
    if caps.root and caps.setpriv:
        user = BuildUser.lookup(seal.user)
        return (user.uid, user.gid)
    return None


def clean_stderr(text: str) -> str:
    """Drop util-linux's harmless noise (unshare's sigprocmask complaint, mount's hint)."""
    return "".join(
        line for line in text.splitlines(True) if not any(noise in line for noise in UNSHARE_NOISE)
    )
