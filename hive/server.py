"""``hive serve``: the job engine and the HTTP server, owned by one ``main``.

The engine's nursery encloses the server, so no job outlives the server and
the server outlives every job: on SIGINT/SIGTERM the jobs are cancelled and
torn down *while the server still runs*, so that every follower receives its
job's ``end`` event, and only then does hypercorn shut down.
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import logging
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio import serve as hypercorn_serve

from hivewire.tokenfile import (
    TokenFileError,
    default_state_dir,
    is_loopback_host,
    load_or_create_token,
    token_path,
)

from . import sandbox
from .api import create_app
from .api.auth import Access
from .api.inputs import MAX_HEAD
from .api.pace import BUDGET as FOLLOWER_MESSAGES
from .api.pace import Pace
from .catalog import Catalog, bundled_catalog
from .cgroups import DEFAULT_MAX_PIDS
from .containment import Containment, open_containment
from .fdlimit import FdLimit, raise_nofile_limit
from .install import Installer
from .jobs import JobEngine
from .jobsandbox import DEFAULT_BUILD_USER, BuildUser, BuildUserError
from .remote import insecure_message, open_catalog
from .retention import Retention
from .services import Services
from .statedir import prepare_state_dir

log = logging.getLogger("hive")

DEFAULT_BIND = "127.0.0.1:7835"

#: In the state dir: held (flock) by the hive that runs on it, and names its pid.
LOCK_FILE = "hive.lock"

#: Websockets still open after the jobs ended get this long to close.
GRACEFUL_TIMEOUT = 2.0

#: After that, this much more before the hive exits regardless (see _force_exit).
STUCK_CONNECTION_MARGIN = 3.0


#: TCP keepalive of every connection (seconds): a peer that vanished is
#: dropped after KEEPALIVE_IDLE + KEEPALIVE_COUNT * KEEPALIVE_INTERVAL.
KEEPALIVE_IDLE = 20
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 3


class _HypercornConfig(HypercornConfig):
    """hypercorn's config, with TCP keepalive on the listening sockets.

    Accepted sockets inherit it (Linux). It replaces hypercorn's websocket
    pings: its ping task sleeps out its interval after the websocket has
    closed, so every closed websocket kept its socket (a file descriptor) for
    up to 20 s more, and a hive stopped after a client had just left waited
    out its whole graceful timeout for that sleep. Keepalive probes also find
    a vanished peer of a quiet connection, which pings only did once TCP gave
    up retransmitting them.
    """

    def create_sockets(self) -> Sockets:
        sockets = super().create_sockets()
        for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
        return sockets


#: Connection limits (see docs/security.md): a connection that has not sent a
#: complete request head within KEEP_ALIVE seconds is closed, whether it is
#: idle between requests, silent since it connected, or trickling headers;
#: request heads are capped; TCP keepalive finds dead peers.
#: There is no read timeout: a ``DELETE ?wait=true`` legitimately sends nothing
#: for up to the grace period; slow bodies are cut by Quart's BODY_TIMEOUT.
KEEP_ALIVE = 5.0
WEBSOCKET_MAX_MESSAGE = 64 * 1024
BACKLOG = 1024


class HiveConfigError(ValueError):
    """The hive cannot start with this configuration; ``str()`` says why, in one line."""


@dataclass
class HiveConfig:
    bind: str = DEFAULT_BIND
    state_dir: Path = field(default_factory=default_state_dir)
    #: A directory, or the http(s) URL of a remote catalog's index (a str).
    catalog: Path | str = field(default_factory=bundled_catalog)
    #: Accept a plain-http catalog index (its checksums could be changed on the way).
    allow_insecure_catalog: bool = False
    #: The sha256 of the one catalog index to accept.
    catalog_sha256: str | None = None
    grace: float = 5.0
    max_parallel: int | None = None
    #: Binding a non-loopback address needs this: the token is then the only guard.
    allow_remote: bool = False
    allow_hosts: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ()
    certfile: Path | None = None
    keyfile: Path | None = None
    retention: Retention = field(default_factory=Retention)
    #: Websockets open at once at most; None: derived from the fd limit.
    max_websockets: int | None = None
    #: Messages per second to all followers together while many follow (see hive.api.pace).
    follower_messages: float = FOLLOWER_MESSAGES
    #: Who runs recipe code when the hive is root; limits per job.
    build_user: str = DEFAULT_BUILD_USER
    max_pids: int | None = DEFAULT_MAX_PIDS
    max_memory: int | None = None

    def bind_host(self) -> str:
        return self.bind.rpartition(":")[0].strip("[]") if ":" in self.bind else self.bind

    def is_loopback(self) -> bool:
        return self.bind.startswith("unix:") or is_loopback_host(self.bind_host())

    def access(self, token: str) -> Access:
        """The access policy; a host name the hive is bound to is an allowed Host."""
        hosts = list(self.allow_hosts)
        if not self.bind.startswith("unix:") and self.bind_host():
            hosts.append(self.bind_host())
        try:
            return Access.build(
                token, hosts=hosts, origins=self.allow_origins, tls=self.certfile is not None
            )
        except ValueError as exc:
            raise HiveConfigError(str(exc)) from None

    def check(self) -> None:
        if not self.is_loopback() and not self.allow_remote:
            raise HiveConfigError(
                f"--bind {self.bind} is not a loopback address; pass --allow-remote to "
                "accept connections from other machines (the token is then the only guard)"
            )
        if (self.certfile is None) != (self.keyfile is None):
            raise HiveConfigError("--certfile and --keyfile go together")
        if (
            isinstance(self.catalog, str)
            and not self.catalog.startswith("https://")
            and not self.allow_insecure_catalog
            and self.catalog_sha256 is None
        ):
            raise HiveConfigError(insecure_message(self.catalog))


async def serve(
    config: HiveConfig, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a hive until SIGINT or SIGTERM; then tear every job down and stop.

    Raises :class:`HiveConfigError` before serving anything if the
    configuration is unsafe, the token file unusable or the state dir in use
    by another hive, :class:`~hive.statedir.StateDirError` if the state dir
    cannot be made private (another user's), and
    :class:`~hive.catalog.CatalogUnavailable` if the catalog cannot be had.
    Both are raised before the containment's nursery opens, so that they reach
    the caller as themselves, not inside an exception group.
    """
    config.check()
    prepare_state_dir(config.state_dir)
    with state_dir_lock(config.state_dir):
        try:
            token = load_or_create_token(config.state_dir)
        except (TokenFileError, OSError) as exc:
            raise HiveConfigError(f"cannot use the token file: {exc}") from None
        if not config.is_loopback():
            log.warning(
                "listening on %s, reachable from other machines: the token is the only guard%s",
                config.bind,
                "" if config.certfile else ", and without --certfile it travels in clear text",
            )
        access = config.access(token)
        try:
            build_user = BuildUser.lookup(config.build_user) if os.geteuid() == 0 else None
        except BuildUserError as exc:
            raise HiveConfigError(str(exc)) from None
        catalog = await open_catalog(
            config.catalog,
            config.state_dir,
            allow_insecure=config.allow_insecure_catalog,
            pin=config.catalog_sha256,
        )
        readers = await trio.to_thread.run_sync(sandbox.detect)
        log.info("recipes are read sealed: %s", readers.describe())
        fds = raise_nofile_limit()
        async with open_containment(
            config.state_dir,
            grace=config.grace,
            build_user=build_user,
            max_pids=config.max_pids,
            max_memory=config.max_memory,
        ) as containment:
            await _serve(config, containment, access, catalog, fds, task_status=task_status)
    log.info("stopped")


@contextmanager
def state_dir_lock(state_dir: Path) -> Iterator[None]:
    """Hold ``<state-dir>/hive.lock`` while the block runs: one hive per state dir.

    Two hives on one state dir would share its job store, job logs and workers:
    each would mark the other's running jobs interrupted and append to their
    logs, and its retention would delete the logs of jobs it does not know. The
    kernel releases the lock when the process dies, however it dies, so a
    killed hive leaves nothing stale behind; the file is close-on-exec, so no
    job process can keep it. Raises :class:`HiveConfigError` if another hive
    holds it.
    """
    path = state_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise HiveConfigError(f"cannot open the lock file {path}: {exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise HiveConfigError(
                f"another hive (pid {holder}) already runs on the state dir {state_dir}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


async def _warm_catalog(catalog: Catalog) -> None:
    """Read every recipe once in the background, so that the first listing finds
    the metadata cached (each read is a sealed process)."""
    started = trio.current_time()
    entries = await catalog.entries()
    log.info(
        "catalog read: %d worker(s), %d broken, in %.2f s",
        len(entries),
        sum(entry.broken for entry in entries),
        trio.current_time() - started,
    )


async def _serve(
    config: HiveConfig,
    containment: Containment,
    access: Access,
    catalog: Catalog,
    fds: FdLimit,
    *,
    task_status: trio.TaskStatus[str],
) -> None:
    engine = JobEngine(
        config.state_dir,
        grace=config.grace,
        max_parallel=config.max_parallel,
        containment=containment,
        retention=config.retention,
    )
    installer = Installer(catalog, config.state_dir, engine, build_user=containment.sandbox.user)
    if removed := await trio.to_thread.run_sync(installer.recover):
        log.info("removed %d leftover(s) of installs interrupted by a previous hive", removed)
    layers = containment.layers
    max_websockets = config.max_websockets or fds.max_websockets()
    pace = Pace(budget=config.follower_messages)
    services = Services(
        engine=engine,
        installer=installer,
        layers=layers,
        reader_layers=sandbox.detect().layers,  # probed before the containment: cached
        recovered=containment.recovered,
    )
    app = create_app(
        services,
        access=access,
        max_websockets=max_websockets,
        pace=pace,
    )

    hyper = _HypercornConfig()
    hyper.bind = [config.bind]
    hyper.graceful_timeout = GRACEFUL_TIMEOUT
    hyper.accesslog = None
    hyper.errorlog = logging.getLogger("hypercorn.error")
    hyper.keep_alive_timeout = KEEP_ALIVE
    hyper.h11_max_incomplete_size = MAX_HEAD
    hyper.websocket_max_message_size = WEBSOCKET_MAX_MESSAGE
    hyper.websocket_ping_interval = None  # see _HypercornConfig
    hyper.backlog = BACKLOG
    if config.certfile is not None and config.keyfile is not None:
        hyper.certfile = str(config.certfile)
        hyper.keyfile = str(config.keyfile)

    stop = trio.Event()
    jobs_down = trio.Event()

    async def shutdown_trigger() -> None:
        await stop.wait()
        services.stopping.set()
        log.info(
            "shutting down: cancelling %d active job(s)",
            sum(not job.state.final for job in engine.jobs()),
        )
        await engine.shutdown()
        jobs_down.set()

    async with engine.running(), trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, stop)
        nursery.start_soon(_force_exit, jobs_down, containment)
        nursery.start_soon(pace.run)

        async def run_server(task_status: trio.TaskStatus[list[str]]) -> None:
            await hypercorn_serve(
                app, hyper, shutdown_trigger=shutdown_trigger, task_status=task_status
            )
            nursery.cancel_scope.cancel()

        bound = await nursery.start(run_server)
        nursery.start_soon(_warm_catalog, catalog)
        url = bound[0] if bound else f"http://{config.bind}"
        log.info(
            "ready on %s (state dir %s, token in %s, catalog %s, grace %gs, teardown layers: %s; "
            "%d file descriptors (soft limit was %d), at most %d websockets)",
            url,
            config.state_dir,
            token_path(config.state_dir),
            config.catalog,
            config.grace,
            ", ".join(layers),
            fds.current,
            fds.original,
            max_websockets,
        )
        task_status.started(url)


async def _stop_on_signal(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            stop.set()


async def _force_exit(jobs_down: trio.Event, containment: Containment) -> None:
    """Exit even if hypercorn cannot close a connection.

    hypercorn writes to a socket in a shielded scope with no timeout, so a
    websocket client that stops reading (its receive window full) blocks that
    write, and with it hypercorn's shutdown, forever. Every job is torn down by
    the time ``jobs_down`` is set; if the server has not stopped well after its
    graceful timeout, nothing is left to lose by leaving. Cancelled (with the
    server's nursery) on a normal shutdown. ``os._exit`` skips every
    ``finally``, so the hive's (now empty) cgroup is removed here.
    """
    await jobs_down.wait()
    await trio.sleep(GRACEFUL_TIMEOUT + STUCK_CONNECTION_MARGIN)
    log.warning("a client connection did not close (a client that stopped reading?); exiting")
    if containment.cgroups is not None:
        containment.cgroups.remove()
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(0)


#: glibc's ``mallopt`` parameter for the number of malloc arenas.
M_ARENA_MAX = -8
#: Arenas the hive allows itself (glibc's default is 8 per core).
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas, as ``MALLOC_ARENA_MAX`` would; return
    whether it could (not on another C library).

    The hive's worker threads (job log writes and reads, the job store) each
    get an arena of their own by default, and memory freed in one arena is
    not reused by the others: with 64 jobs followed by 4 clients each, peak
    RSS was 219-256 MB with the default and 164 MB with two arenas, for the
    same work. The threads do little besides system calls, so they contend
    little for a shared arena.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False  # the operator chose
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))


#: Allocations between collections of the youngest generation (CPython: 700).
GC_GEN0_THRESHOLD = 5_000


def tune_gc() -> None:
    """Make the cyclic garbage collector's pauses rarer and shorter.

    Every collection of the oldest generation walks every object alive, and
    with 1,000 websockets open the hive holds enough of them that one such
    walk stopped the event loop for 0.3-1 s (``gc.callbacks``, in the fanout
    benchmark), while a request waited. What is alive once the hive has
    imported everything lives as long as the hive: :func:`gc.freeze` takes it
    out of every collection. A larger youngest generation makes collections
    rarer (the garbage is mostly freed by reference counting anyway), but each
    pause grows with it: 20,000 gave gen-0 pauses of 20-170 ms on the loaded
    benchmark machine, so the threshold stays moderate.
    """
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


def run(config: HiveConfig) -> None:
    limit_malloc_arenas()  # before any thread starts
    tune_gc()
    trio.run(partial(serve, config))
