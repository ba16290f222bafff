"""``keeper download`` and ``keeper follow``: jobs watched live, on trio.

These are the commands that hold a websocket open, reconnect, and turn Ctrl+C
into a confirmed cancel, so they (and only they, with ``hives``) run an event
loop. ``download`` on several hives hands over to :mod:`keeper.fleet`.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import click
import trio

from .client import HiveClient
from .completers import complete_jobs, complete_workers
from .context import Context, pass_context, run
from .errors import ExitCode
from .fleet import Fleet
from .follow import RECONNECT_GIVE_UP, Follower

reconnect_option = click.option(
    "--reconnect-for",
    type=click.FloatRange(0),
    default=RECONNECT_GIVE_UP,
    show_default=True,
    metavar="SECONDS",
    help="How long to keep trying to reconnect to a hive that was lost mid-job.",
)


async def follow_job(
    ctx: Context,
    client: HiveClient,
    job: dict[str, Any],
    *,
    since: int = 0,
    tail_lines: int | None = None,
    replay: bool = True,
    cancel_on_interrupt: bool,
    reconnect_for: float = RECONNECT_GIVE_UP,
) -> int:
    follower = Follower(
        client,
        job["id"],
        ctx.console,
        since=since,
        tail_lines=tail_lines,
        replay=replay,
        grace=job["grace"],
        reconnect_for=reconnect_for,
    )
    result = await follower.run(cancel_on_interrupt=cancel_on_interrupt)
    return result.exit_code


@click.command()
@click.argument("worker", shell_complete=complete_workers)
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="Stream the build's output; Ctrl+C cancels the build and waits for "
    "the hive to confirm that every process of it is gone.",
)
@click.option("--force", is_flag=True, help="Rebuild even if this version is installed.")
@click.option("--skip-check", is_flag=True, help="Do not run the recipe's check().")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the new job as JSON; with several hives and --follow, every line as "
    "NDJSON with a `hive` field.",
)
@reconnect_option
@pass_context
def download(
    ctx: Context,
    worker: str,
    follow: bool,
    force: bool,
    skip_check: bool,
    as_json: bool,
    reconnect_for: float,
) -> None:
    """Install WORKER from the hive's catalog (a build job).

    Without --follow, prints the job id and returns at once. Installing the
    version that is already installed does nothing (and succeeds) unless --force.
    With several hives (--hive a,b or all), one job per hive, all at once.
    """
    if ctx.several:
        fleet = Fleet(ctx, as_json=as_json, reconnect_for=reconnect_for)
        run(partial(trio.run, partial(fleet.download, worker, force, skip_check, follow)))
    if follow and as_json:
        raise click.UsageError("--json with --follow needs several hives (--hive a,b)")

    async def main() -> int:
        async with HiveClient.of(ctx.credentials()) as client:
            job = await client.submit(worker, force=force, skip_check=skip_check)
            if not follow:
                click.echo(json.dumps(job) if as_json else job["id"])
                return ExitCode.OK
            ctx.console.status(f"job {job['id']}: installing {worker}")
            return await follow_job(
                ctx, client, job, cancel_on_interrupt=True, reconnect_for=reconnect_for
            )

    run(partial(trio.run, main))


@click.command()
@click.argument("job_id", metavar="JOB", shell_complete=complete_jobs)
@click.option(
    "--since",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Replay only events after this seq.",
)
@click.option(
    "-n",
    "--tail",
    "tail_lines",
    type=click.IntRange(0),
    default=None,
    metavar="N",
    help="Start with the last N lines of the job's stdout, then follow.",
)
@click.option(
    "--no-replay",
    is_flag=True,
    help="Show only what the job prints from now on.",
)
@click.option(
    "--cancel-on-interrupt",
    is_flag=True,
    help="Ctrl+C cancels the job (as `download --follow` does) instead of only stopping to watch.",
)
@reconnect_option
@pass_context
def follow(
    ctx: Context,
    job_id: str,
    since: int,
    tail_lines: int | None,
    no_replay: bool,
    cancel_on_interrupt: bool,
    reconnect_for: float,
) -> None:
    """Stream a job's output from the start (or --since, --tail, --no-replay),
    then live, until it ends. A lost connection is resumed where it broke.

    Exits with the job's outcome (see exit codes below). JOB may be HIVE:JOB.
    """
    starts = [since != 0, tail_lines is not None, no_replay]
    if sum(starts) > 1:
        raise click.UsageError("use only one of --since, --tail and --no-replay")
    target, job_id = ctx.split_job(job_id)
    if target is None:
        raise click.UsageError("with several hives, name the job's hive: HIVE:JOB")

    async def main() -> int:
        async with HiveClient.of(ctx.credentials(target)) as client:
            job = await client.job(job_id)
            return await follow_job(
                ctx,
                client,
                job,
                since=since,
                tail_lines=tail_lines,
                replay=not no_replay,
                cancel_on_interrupt=cancel_on_interrupt,
                reconnect_for=reconnect_for,
            )

    run(partial(trio.run, main))
