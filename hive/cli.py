"""The ``hive`` command."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from . import __version__
from .catalog import bundled_catalog
from .retention import (
    DEFAULT_KEEP_BYTES,
    DEFAULT_KEEP_DAYS,
    DEFAULT_KEEP_JOBS,
    Retention,
    parse_size,
)
from .server import DEFAULT_BIND, HiveConfig, default_state_dir, run


def _size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hive")
def main() -> None:
    """hive: a job daemon that builds workers from PKGBUILD recipes.

    Start one with `hive serve`, then drive it with `keeper`.
    """


@main.command()
@click.option(
    "--bind",
    default=DEFAULT_BIND,
    show_default=True,
    metavar="HOST:PORT",
    help="Address to listen on. Port 0 picks a free port (the ready line shows it).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path, resolve_path=True),
    default=default_state_dir,
    show_default="$XDG_STATE_HOME/hive",
    help="Where installed workers, builds and job state live.",
)
@click.option(
    "--catalog",
    type=click.Path(exists=True, file_okay=False, path_type=Path, resolve_path=True),
    default=bundled_catalog,
    show_default="the catalog bundled with hive",
    help="Directory with one folder per worker recipe (PKGBUILD + files).",
)
@click.option(
    "--grace",
    type=click.FloatRange(0, 3600),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="On cancel, time between SIGTERM and SIGKILL for a job's processes.",
)
@click.option(
    "--max-parallel",
    type=click.IntRange(1, 1024),
    default=None,
    help="Jobs that run at once; more wait as 'queued'.  [default: number of cores]",
)
@click.option(
    "--keep-jobs",
    type=click.IntRange(0),
    default=DEFAULT_KEEP_JOBS,
    show_default=True,
    help="Forget the oldest ended jobs (record and log) beyond this many jobs.",
)
@click.option(
    "--keep-days",
    type=click.FloatRange(0),
    default=DEFAULT_KEEP_DAYS,
    show_default=True,
    help="Forget jobs that ended more than this many days ago.",
)
@click.option(
    "--keep-bytes",
    default=str(DEFAULT_KEEP_BYTES),
    callback=_size,
    show_default="2G",
    metavar="SIZE",
    help="Forget the oldest ended jobs while their logs take more than this (e.g. 500M, 2G).",
)
def serve(
    bind: str,
    state_dir: Path,
    catalog: Path,
    grace: float,
    max_parallel: int | None,
    keep_jobs: int,
    keep_days: float,
    keep_bytes: int,
) -> None:
    """Run the daemon until SIGINT or SIGTERM.

    On shutdown every running job is cancelled, and its whole process tree is
    torn down, before the hive exits.
    """
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s hive: %(message)s",
        datefmt="%H:%M:%S",
    )
    run(
        HiveConfig(
            bind=bind,
            state_dir=state_dir,
            catalog=catalog,
            grace=grace,
            max_parallel=max_parallel,
            retention=Retention(keep_jobs, keep_days, keep_bytes),
        )
    )
