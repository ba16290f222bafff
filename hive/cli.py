"""The ``hive`` command."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click
import trio

from hivewire.tokenfile import default_state_dir

from . import __version__
from .api.pace import BUDGET as FOLLOWER_MESSAGES
from .catalog import CatalogUnavailable, bundled_catalog
from .cgroups import DEFAULT_MAX_PIDS
from .jobsandbox import DEFAULT_BUILD_USER
from .remote import build_index, read_srcinfo
from .retention import (
    DEFAULT_KEEP_BYTES,
    DEFAULT_KEEP_DAYS,
    DEFAULT_KEEP_JOBS,
    Retention,
    parse_size,
)
from .server import DEFAULT_BIND, HiveConfig, HiveConfigError, run
from .statedir import StateDirError


def catalog_location(ctx: click.Context, param: click.Parameter, value: object) -> Path | str:
    """``--catalog``: an existing directory (resolved) or an http(s):// index URL."""
    if isinstance(value, Path):
        return value
    text = str(value)
    if text.startswith(("http://", "https://")):
        return text
    if "://" in text:
        raise click.BadParameter(f"{text!r}: only http:// and https:// catalogs are supported")
    directory = click.Path(exists=True, file_okay=False, path_type=Path, resolve_path=True)
    result: Path = directory.convert(text, param, ctx)
    return result


def _sha256_option(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise click.BadParameter(f"{value!r} is not a sha256 (64 hex digits)")
    return value.lower()


def _size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _optional_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    return None if value is None else _size(ctx, param, value)


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
    help="Address to listen on. Port 0 picks a free port (the ready line shows it). "
    "Only loopback addresses unless --allow-remote.",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow --bind on a non-loopback address. Anyone who can reach it and has the "
    "token can run builds: use --certfile/--keyfile too.",
)
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer requests whose Host header is NAME (besides localhost and IP "
    "addresses; DNS-rebinding defence). Repeatable.",
)
@click.option(
    "--allow-origin",
    "allow_origins",
    multiple=True,
    metavar="SCHEME://HOST[:PORT]",
    help="Also accept browser requests and websockets from this origin. Repeatable.",
)
@click.option(
    "--certfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Serve HTTPS/WSS with this PEM certificate (chain); needs --keyfile.",
)
@click.option(
    "--keyfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The private key for --certfile.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path, resolve_path=True),
    default=default_state_dir,
    envvar="HIVE_STATE_DIR",
    show_default="$XDG_STATE_HOME/hive",
    help="Where installed workers, builds, job state and the token live (also "
    "$HIVE_STATE_DIR, which the keeper reads too).",
)
@click.option(
    "--catalog",
    callback=catalog_location,
    default=bundled_catalog,
    metavar="DIR|URL",
    show_default="the catalog bundled with hive",
    help="Directory with one folder per worker recipe (PKGBUILD + files), or the "
    "http(s) URL of a remote catalog's index.json (fetched at start, cached in the state dir).",
)
@click.option(
    "--allow-insecure-catalog",
    is_flag=True,
    help="Accept a plain-http catalog index URL (anyone on the way could change the "
    "recipes and their checksums).",
)
@click.option(
    "--catalog-sha256",
    metavar="HEX",
    callback=lambda ctx, param, value: _sha256_option(value),
    help="Pin the catalog index by its own sha256: any other index is refused "
    "(http is then safe too).",
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
    "--max-websockets",
    type=click.IntRange(1),
    default=None,
    help="Websockets (followers, web pages) open at once; more are refused with 503 "
    "and Retry-After.  [default: half the file descriptors left after 256 for jobs]",
)
@click.option(
    "--follower-messages",
    type=click.IntRange(1),
    default=int(FOLLOWER_MESSAGES),
    show_default=True,
    metavar="N",
    help="Messages a second to all stream followers together once more than 8 follow; "
    "output in between is batched.",
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
@click.option(
    "--build-user",
    default=DEFAULT_BUILD_USER,
    show_default=True,
    metavar="USER",
    help="When the hive runs as root, recipe code runs as this unprivileged user "
    "(a hive run by another user builds as itself).",
)
@click.option(
    "--max-pids",
    type=click.IntRange(16),
    default=DEFAULT_MAX_PIDS,
    show_default=True,
    help="Processes and threads one job may have at once (cgroup pids.max, or the "
    "build's RLIMIT_NPROC where no pids controller is writable).",
)
@click.option(
    "--max-memory",
    default=None,
    callback=_optional_size,
    metavar="SIZE",
    help="Memory one job may use (cgroup memory limit, e.g. 4G).  [default: no limit]",
)
def serve(
    bind: str,
    allow_remote: bool,
    allow_hosts: tuple[str, ...],
    allow_origins: tuple[str, ...],
    certfile: Path | None,
    keyfile: Path | None,
    state_dir: Path,
    catalog: Path | str,
    allow_insecure_catalog: bool,
    catalog_sha256: str | None,
    grace: float,
    max_parallel: int | None,
    max_websockets: int | None,
    follower_messages: int,
    keep_jobs: int,
    keep_days: float,
    keep_bytes: int,
    build_user: str,
    max_pids: int,
    max_memory: int | None,
) -> None:
    """Run the daemon until SIGINT or SIGTERM.

    On shutdown every running job is cancelled, and its whole process tree is
    torn down, before the hive exits.

    Every request needs the token in <state-dir>/token (created at first
    start, mode 0600); a local keeper finds it by itself.
    """
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s hive: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per catalog file otherwise
    config = HiveConfig(
        bind=bind,
        state_dir=state_dir,
        catalog=catalog,
        allow_insecure_catalog=allow_insecure_catalog,
        catalog_sha256=catalog_sha256,
        grace=grace,
        max_parallel=max_parallel,
        allow_remote=allow_remote,
        allow_hosts=allow_hosts,
        allow_origins=allow_origins,
        certfile=certfile,
        keyfile=keyfile,
        retention=Retention(keep_jobs, keep_days, keep_bytes),
        max_websockets=max_websockets,
        follower_messages=follower_messages,
        build_user=build_user,
        max_pids=max_pids,
        max_memory=max_memory,
    )
    try:
        run(config)
    except HiveConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except StateDirError as exc:
        raise click.ClickException(str(exc)) from None
    except CatalogUnavailable as exc:
        raise click.ClickException(str(exc)) from None


@main.command("catalog-index")
@click.argument(
    "directory", type=click.Path(exists=True, file_okay=False, path_type=Path, resolve_path=True)
)
@click.option(
    "--srcinfo/--no-srcinfo",
    default=True,
    show_default=True,
    help="Carry each recipe's .SRCINFO, so that hives list the catalog without running "
    "recipe code (read here, sealed).",
)
def catalog_index(directory: Path, srcinfo: bool) -> None:
    """Print the index.json of a catalog DIRECTORY, for serving it as a remote catalog.

    Serve DIRECTORY over HTTP with the output saved as DIRECTORY/index.json,
    then start hives with `--catalog https://HOST/PATH/index.json`.
    """
    metadata = trio.run(read_srcinfo, directory) if srcinfo else None
    click.echo(json.dumps(build_index(directory, metadata), indent=2))
