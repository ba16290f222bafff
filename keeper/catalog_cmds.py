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
    if row.get("newer"):
        return "newer than installed"
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
    if entry.get("srcinfo"):
        packages = entry.get("packages") or []
        optdepends = [
            f"{o.get('name')}: {o.get('description')}" if o.get("description") else o.get("name")
            for o in entry.get("optdepends") or []
        ]
        fields += [
            ("pkgbase", entry.get("pkgbase") if len(packages) > 1 else None),
            ("packages", _list(packages) if len(packages) > 1 else None),
            ("url", entry.get("url")),
            ("license", _list(entry.get("license"))),
            ("arch", _list(entry.get("arch"))),
            ("groups", _list(entry.get("groups")) if entry.get("groups") else None),
            ("depends", _list(entry.get("depends"))),
            ("makedepends", _list(entry.get("makedepends"))),
            (
                "checkdepends",
                _list(entry.get("checkdepends")) if entry.get("checkdepends") else None,
            ),
            ("optdepends", "; ".join(optdepends) if optdepends else None),
            ("provides", _list(entry.get("provides")) if entry.get("provides") else None),
            ("conflicts", _list(entry.get("conflicts")) if entry.get("conflicts") else None),
            ("replaces", _list(entry.get("replaces")) if entry.get("replaces") else None),
            ("backup", _list(entry.get("backup")) if entry.get("backup") else None),
            ("options", _list(entry.get("options")) if entry.get("options") else None),
            ("missing", _list(entry.get("missing"))),
            ("functions", _list(entry.get("functions"))),
        ]
    lines = [f"{name + ':':<13}{value}" for name, value in fields if value not in (None, "")]
    checksums: dict[str, list[str]] = entry.get("checksums") or {}
    for index, source in enumerate(entry.get("sources") or []):
        lines.append(f"{'source:':<13}{source}")
        for kind, sums in checksums.items():
            checksum = sums[index] if index < len(sums) else "?"
            lines.append(f"{'  ' + kind + ':':<13}{checksum}")
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
@click.option("--srcinfo", is_flag=True, help="Print the recipe's .SRCINFO, as makepkg does.")
@pass_context
def info(ctx: Context, worker: str, as_json: bool, srcinfo: bool) -> None:
    """Show WORKER's recipe: version, dependencies, sources and checksums."""

    def main() -> int:
        entry = BlockingClient.of(ctx.credentials()).call(api.catalog_entry(worker))
        if srcinfo:
            if not entry.get("srcinfo"):
                ctx.console.status(f"{worker}: no .SRCINFO: {entry.get('reason')}")
                return ExitCode.REFUSED
            click.echo(entry["srcinfo"], nl=False)
        elif as_json:
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
