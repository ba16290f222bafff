"""keeper commands about the catalog and installed workers.

``keeper catalog``, ``keeper info WORKER``, ``keeper workers``, ``keeper remove
WORKER``; each prints a table (or ``key: value`` lines) for people and, with
``--json``, one JSON object per line for scripts.
"""

from __future__ import annotations

from typing import Any

import click

from . import api
from .blocking import BlockingClient
from .completers import complete_installed, complete_workers
from .context import Context, pass_context, run
from .errors import ExitCode
from .tables import Column, echo_json_lines, echo_table

json_option = click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")


def _list(values: Any) -> str:
    return ", ".join(values) if values else "-"


def catalog_status(row: dict[str, Any]) -> str:
    """One word or phrase: can this worker be installed here, right now?"""
    if row.get("broken"):
        return f"broken: {row.get('reason')}"
    if row.get("installing"):
        return f"installing (job {row['installing']})"
    if row.get("missing"):
        return "missing dependencies"
    return "ok"


CATALOG_COLUMNS: list[Column] = [
    ("NAME", lambda r: r["name"]),
    ("VERSION", lambda r: r.get("full_version") or "-"),
    ("INSTALLED", lambda r: _list(r.get("installed"))),
    ("MISSING", lambda r: _list(r.get("missing"))),
    ("STATUS", catalog_status),
]

WORKER_COLUMNS: list[Column] = [
    ("NAME", lambda r: r["name"]),
    ("VERSION", lambda r: r["version"]),
    ("FILES", lambda r: str(r.get("files", 0))),
    ("INSTALLED AT", lambda r: r.get("installed_at") or "-"),
    ("PATH", lambda r: r["path"]),
]


def info_lines(entry: dict[str, Any]) -> list[str]:
    """``keeper info``: the catalog entry of one worker, one field a line."""
    fields: list[tuple[str, Any]] = [
        ("name", entry["name"]),
        ("version", entry.get("full_version")),
        ("description", entry.get("description")),
        ("status", catalog_status(entry)),
        ("installed", _list(entry.get("installed"))),
    ]
    if not entry.get("broken"):
        fields += [
            ("url", entry.get("url")),
            ("license", _list(entry.get("license"))),
            ("arch", _list(entry.get("arch"))),
            ("depends", _list(entry.get("depends"))),
            ("makedepends", _list(entry.get("makedepends"))),
            ("missing", _list(entry.get("missing"))),
            ("functions", _list(entry.get("functions"))),
        ]
    lines = [f"{name + ':':<13}{value}" for name, value in fields if value not in (None, "")]
    sums = entry.get("sha256sums") or []
    for index, source in enumerate(entry.get("sources") or []):
        checksum = sums[index] if index < len(sums) else "?"
        lines.append(f"{'source:':<13}{source}")
        lines.append(f"{'  sha256:':<13}{checksum}")
    return lines


@click.command()
@click.option("--refresh", is_flag=True, help="Re-read (or re-fetch) the catalog first.")
@json_option
@pass_context
def catalog(ctx: Context, refresh: bool, as_json: bool) -> None:
    """List the workers the hive can install, and whether each can be built here.

    A broken recipe is listed with the reason; MISSING names the commands
    its depends/makedepends need that this machine lacks.
    """

    def main() -> int:
        client = BlockingClient.of(ctx.credentials())
        if refresh:
            client.call(api.refresh_catalog())
        listing = client.call(api.catalog())
        rows = listing["workers"]
        if as_json:
            echo_json_lines(rows)
            return ExitCode.OK
        source = listing.get("catalog") or {}
        if source.get("stale"):
            ctx.console.status(
                f"catalog {source.get('location')} could not be fetched "
                f"({source.get('error') or 'unreachable'}); showing the copy from "
                f"{source.get('fetched_at')}"
            )
        echo_table(rows, CATALOG_COLUMNS)
        return ExitCode.OK

    run(main)


@click.command()
@click.argument("worker", shell_complete=complete_workers)
@json_option
@pass_context
def info(ctx: Context, worker: str, as_json: bool) -> None:
    """Show WORKER's recipe: version, dependencies, sources and checksums."""

    def main() -> int:
        entry = BlockingClient.of(ctx.credentials()).call(api.catalog_entry(worker))
        if as_json:
            echo_json_lines([entry])
        else:
            for line in info_lines(entry):
                click.echo(line)
        return ExitCode.OK

    run(main)


@click.command()
@json_option
@pass_context
def workers(ctx: Context, as_json: bool) -> None:
    """List installed workers: one line per installed version."""

    def main() -> int:
        rows = BlockingClient.of(ctx.credentials()).call(api.workers())
        if as_json:
            echo_json_lines(rows)
        else:
            echo_table(rows, WORKER_COLUMNS)
        return ExitCode.OK

    run(main)


@click.command()
@click.argument("worker", shell_complete=complete_installed)
@json_option
@pass_context
def remove(ctx: Context, worker: str, as_json: bool) -> None:
    """Uninstall every version of WORKER (refused while it is being installed)."""

    def main() -> int:
        result = BlockingClient.of(ctx.credentials()).call(api.remove_worker(worker))
        if as_json:
            echo_json_lines([result])
        else:
            ctx.console.status(f"removed {worker} {_list(result.get('removed'))}")
        return ExitCode.OK

    run(main)
