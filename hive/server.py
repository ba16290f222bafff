"""``hive serve``: the job engine and the HTTP server, owned by one ``main``.

The engine's nursery encloses the server, so no job outlives the server and
the server outlives every job: on SIGINT/SIGTERM the jobs are cancelled and
torn down *while the server still runs*, so that every follower receives its
job's ``end`` event, and only then does hypercorn shut down.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from .api import create_app
from .catalog import Catalog, bundled_catalog
from .install import Installer
from .jobs import JobEngine
from .retention import Retention
from .services import Services

log = logging.getLogger("hive")

DEFAULT_BIND = "127.0.0.1:7835"

#: Websockets still open after the jobs ended get this long to close.
GRACEFUL_TIMEOUT = 2.0


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hive"


@dataclass
class HiveConfig:
    bind: str = DEFAULT_BIND
    state_dir: Path = field(default_factory=default_state_dir)
    catalog: Path = field(default_factory=bundled_catalog)
    grace: float = 5.0
    max_parallel: int | None = None
    retention: Retention = field(default_factory=Retention)


def teardown_layers() -> list[str]:
    """Which teardown mechanisms this hive uses, for the start-up line and /v1/health."""
    return ["process-group", "descendants", "pidfd"]


async def serve(
    config: HiveConfig, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a hive until SIGINT or SIGTERM; then tear every job down and stop."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    engine = JobEngine(
        config.state_dir,
        grace=config.grace,
        max_parallel=config.max_parallel,
        retention=config.retention,
    )
    installer = Installer(Catalog(config.catalog), config.state_dir)
    layers = teardown_layers()
    app = create_app(Services(engine=engine, installer=installer, layers=layers))

    hyper = HypercornConfig()
    hyper.bind = [config.bind]
    hyper.graceful_timeout = GRACEFUL_TIMEOUT
    hyper.accesslog = None
    hyper.errorlog = logging.getLogger("hypercorn.error")
    hyper.websocket_max_message_size = 64 * 1024

    stop = trio.Event()

    async def shutdown_trigger() -> None:
        await stop.wait()
        log.info(
            "shutting down: cancelling %d active job(s)",
            sum(not job.state.final for job in engine.jobs()),
        )
        await engine.shutdown()

    async with engine.running(), trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, stop)

        async def run_server(task_status: trio.TaskStatus[list[str]]) -> None:
            await hypercorn_serve(
                app, hyper, shutdown_trigger=shutdown_trigger, task_status=task_status
            )
            nursery.cancel_scope.cancel()

        bound = await nursery.start(run_server)
        url = bound[0] if bound else f"http://{config.bind}"
        log.info(
            "ready on %s (state dir %s, catalog %s, grace %gs, teardown layers: %s)",
            url,
            config.state_dir,
            config.catalog,
            config.grace,
            ", ".join(layers),
        )
        task_status.started(url)
    log.info("stopped")


async def _stop_on_signal(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            stop.set()


def run(config: HiveConfig) -> None:
    trio.run(partial(serve, config))
