"""``keeper hives``: the configured hives, and whether each answers.

Every hive is probed at once (a trio task each, 3 s at most), so one hive
that is down costs the listing 3 s, not 3 s per hive.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import click
import trio

from .auth import credentials
from .client import HiveClient
from .config import HiveTarget, config_path
from .context import Context, pass_context, run
from .errors import ExitCode, HiveError
from .tables import echo_json_lines

#: Seconds a hive has to answer its probe.
PROBE_TIMEOUT = 3.0


@click.command(short_help="List the configured hives and whether each answers.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_context
def hives(ctx: Context, as_json: bool) -> None:
    """List the hives named in $XDG_CONFIG_HOME/keeper/config.toml, and whether each answers.

    \b
    Example config:
      default = "build-box"
      [hives.build-box]
      url = "https://build-box.lan:7835"
      token_file = "~/.config/keeper/build-box.token"
      cacert = "~/.config/keeper/build-box.pem"
    """

    async def main() -> int:
        targets = list(ctx.config.hives.values())
        results: dict[str, dict[str, Any]] = {}

        async def probe(target: HiveTarget) -> None:
            row: dict[str, Any] = {"name": target.name, "url": target.url}
            row["default"] = target.name == ctx.config.default
            try:
                with trio.fail_after(PROBE_TIMEOUT):
                    async with HiveClient.of(credentials(target, None, None)) as client:
                        health = await client.health()
                row.update(reachable=True, version=health.get("version"), error=None)
                row["active_jobs"] = health.get("jobs", {}).get("active")
            except (HiveError, trio.TooSlowError) as exc:
                row.update(reachable=False, version=None, error=str(exc) or "timed out")
            results[str(target.name)] = row

        async with trio.open_nursery() as nursery:
            for target in targets:
                nursery.start_soon(probe, target)
        rows = [results[str(target.name)] for target in targets]
        if as_json:
            echo_json_lines(rows)
            return ExitCode.OK
        if not rows:
            ctx.console.status(f"no hives configured in {config_path()}")
            return ExitCode.OK
        for row in rows:
            mark = "*" if row["default"] else " "
            state = (
                f"ok (hive {row['version']}, {row['active_jobs']} active job(s))"
                if row["reachable"]
                else f"unreachable: {row['error']}"
            )
            click.echo(f"{mark} {row['name']:<16} {row['url']:<32} {state}")
        return ExitCode.OK

    run(partial(trio.run, main))
