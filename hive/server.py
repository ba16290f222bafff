"""``hive serve``: the job engine and the HTTP server, owned by one ``main``.

The engine's nursery encloses the server, so no job outlives the server and
the server outlives every job: on SIGINT/SIGTERM the jobs are cancelled and
torn down *while the server still runs*, so that every follower receives its
job's ``end`` event, and only then does hypercorn shut down.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from hivewire.tokenfile import (
    TokenFileError,
    default_state_dir,
    is_loopback_host,
    load_or_create_token,
    token_path,
)

from .api import create_app
from .api.auth import Access
from .catalog import Catalog, bundled_catalog
from .cgroups import DEFAULT_MAX_PIDS
from .containment import Containment, open_containment
from .install import Installer
from .jobs import JobEngine
from .jobsandbox import DEFAULT_BUILD_USER, BuildUser, BuildUserError
from .remote import open_catalog
from .retention import Retention
from .services import Services

log = logging.getLogger("hive")

DEFAULT_BIND = "127.0.0.1:7835"

#: In the state dir: held (flock) by the hive that runs on it, and names its pid.
LOCK_FILE = "hive.lock"

#: Websockets still open after the jobs ended get this long to close.
GRACEFUL_TIMEOUT = 2.0

#: After that, this much more before the hive exits regardless (see _force_exit).
STUCK_CONNECTION_MARGIN = 3.0


#: Connection limits (see docs/security.md): a connection that has not sent a
#: complete request head within KEEP_ALIVE seconds is closed, whether it is
#: idle between requests, silent since it connected, or trickling headers;
#: request heads are capped; websockets are pinged so dead peers surface.
#: There is no read timeout: a ``DELETE ?wait=true`` legitimately sends nothing
#: for up to the grace period; slow bodies are cut by Quart's BODY_TIMEOUT.
KEEP_ALIVE = 5.0
MAX_REQUEST_HEAD = 16 * 1024
WEBSOCKET_MAX_MESSAGE = 64 * 1024
WEBSOCKET_PING_INTERVAL = 20.0
BACKLOG = 1024


class HiveConfigError(ValueError):
    """The hive cannot start with this configuration; ``str()`` says why, in one line."""


@dataclass
class HiveConfig:
    bind: str = DEFAULT_BIND
    state_dir: Path = field(default_factory=default_state_dir)
    #: A directory, or the http(s) URL of a remote catalog's index (a str).
    catalog: Path | str = field(default_factory=bundled_catalog)
    grace: float = 5.0
    max_parallel: int | None = None
    #: Binding a non-loopback address needs this: the token is then the only guard.
    allow_remote: bool = False
    allow_hosts: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ()
    certfile: Path | None = None
    keyfile: Path | None = None
    retention: Retention = field(default_factory=Retention)
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


async def serve(
    config: HiveConfig, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a hive until SIGINT or SIGTERM; then tear every job down and stop.

    Raises :class:`HiveConfigError` before serving anything if the
    configuration is unsafe, the token file unusable or the state dir in use
    by another hive, and
    :class:`~hive.catalog.CatalogUnavailable` if the catalog cannot be had.
    Both are raised before the containment's nursery opens, so that they reach
    the caller as themselves, not inside an exception group.
    """
    config.check()
    config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
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
        catalog = await open_catalog(config.catalog, config.state_dir)
        async with open_containment(
            config.state_dir,
            grace=config.grace,
            build_user=build_user,
            max_pids=config.max_pids,
            max_memory=config.max_memory,
        ) as containment:
            await _serve(config, containment, access, catalog, task_status=task_status)
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


async def _serve(
    config: HiveConfig,
    containment: Containment,
    access: Access,
    catalog: Catalog,
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
    app = create_app(
        Services(
            engine=engine, installer=installer, layers=layers, recovered=containment.recovered
        ),
        access=access,
    )

    hyper = HypercornConfig()
    hyper.bind = [config.bind]
    hyper.graceful_timeout = GRACEFUL_TIMEOUT
    hyper.accesslog = None
    hyper.errorlog = logging.getLogger("hypercorn.error")
    hyper.keep_alive_timeout = KEEP_ALIVE
    hyper.h11_max_incomplete_size = MAX_REQUEST_HEAD
    hyper.websocket_max_message_size = WEBSOCKET_MAX_MESSAGE
    hyper.websocket_ping_interval = WEBSOCKET_PING_INTERVAL
    hyper.backlog = BACKLOG
    if config.certfile is not None and config.keyfile is not None:
        hyper.certfile = str(config.certfile)
        hyper.keyfile = str(config.keyfile)

    stop = trio.Event()
    jobs_down = trio.Event()

    async def shutdown_trigger() -> None:
        await stop.wait()
        log.info(
            "shutting down: cancelling %d active job(s)",
            sum(not job.state.final for job in engine.jobs()),
        )
        await engine.shutdown()
        jobs_down.set()

    async with engine.running(), trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, stop)
        nursery.start_soon(_force_exit, jobs_down, containment)

        async def run_server(task_status: trio.TaskStatus[list[str]]) -> None:
            await hypercorn_serve(
                app, hyper, shutdown_trigger=shutdown_trigger, task_status=task_status
            )
            nursery.cancel_scope.cancel()

        bound = await nursery.start(run_server)
        url = bound[0] if bound else f"http://{config.bind}"
        log.info(
            "ready on %s (state dir %s, token in %s, catalog %s, grace %gs, teardown layers: %s)",
            url,
            config.state_dir,
            token_path(config.state_dir),
            config.catalog,
            config.grace,
            ", ".join(layers),
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


def run(config: HiveConfig) -> None:
    limit_malloc_arenas()  # before any thread starts
    trio.run(partial(serve, config))
