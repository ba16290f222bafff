"""The ``keeper`` command: drive a hive from a terminal or a script."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import click
import trio

from . import __version__
from .auth import discover_token
from .client import DEFAULT_URL, ExitCode, HiveClient, HiveError, Refused
from .completion import complete_hive_names, complete_jobs, complete_workers, completion
from .config import ConfigError, HiveTarget, KeeperConfig, config_path
from .console import Console
from .follow import Follower, describe_teardown
from .tables import Column, echo_json_lines, echo_table

CONFIG_HINT = "$XDG_CONFIG_HOME/keeper/config.toml"

JOB_COLUMNS: list[Column] = [
    ("JOB", lambda r: r["id"]),
    ("STATE", lambda r: r["state"]),
    ("WORKER", lambda r: r["worker"]),
    ("EXIT", lambda r: "" if r["exit_code"] is None else str(r["exit_code"])),
    ("CREATED", lambda r: r["created_at"]),
]

EXIT_CODES = """\b
Exit codes:
  0        the job succeeded (or the request was done)
  1-123    the job failed: its own exit code (1 if it had none)
  2        usage error
  3        the job was cancelled, but not by this keeper
  4        unknown worker or job
  5        the hive refused the request (bad input, broken recipe)
  6        no token, a wrong token, or an unusable token file
  7        the hive speaks another version of the API
  124      the hive did not confirm a cancel in time
  125      the hive is unreachable or answered nonsense
  130      cancelled by this keeper's Ctrl+C, teardown confirmed
"""


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"keeper: {message}", err=True)
    sys.exit(code)


def _innermost(exc: BaseException) -> BaseException:
    """trio wraps errors in exception groups; the keeper reports the one inside."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def run(main: Callable[[], Awaitable[int | None]]) -> NoReturn:
    """Run ``main`` under trio; map failures to one line and an exit code."""
    try:
        code = trio.run(main)
    except BaseException as exc:
        error = _innermost(exc)
        if isinstance(error, HiveError):
            _fail(str(error), error.exit_code)
        if isinstance(error, KeyboardInterrupt):
            _fail("interrupted", ExitCode.INTERRUPTED)
        raise
    sys.exit(code or 0)


class Context:
    """The hive a command talks to (resolved from --hive, the config and the
    environment) and where its output goes."""

    def __init__(
        self, hive: str | None, quiet: bool, token: str | None, cacert: str | None
    ) -> None:
        try:
            self.config = KeeperConfig.load(config_path())
            self.target = self.config.resolve(hive)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        self.url = self.target.url
        self.quiet = quiet
        self.console = Console(quiet=quiet)
        self.token = token or self.target.token
        cacert_path = cacert or (str(self.target.cacert) if self.target.cacert else None)
        self.cacert = cacert_path

    def client(self, target: HiveTarget | None = None) -> HiveClient:
        target = target or self.target
        if target is self.target:
            token, cacert = self.token, self.cacert
        else:
            token, cacert = target.token, str(target.cacert) if target.cacert else None
        found = discover_token(target.url, token)
        return HiveClient(target.url, token=found.token, cacert=cacert)


pass_context = click.make_pass_decorator(Context)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES,
)
@click.option(
    "--hive",
    "hive",
    default=None,
    metavar="NAME|URL",
    shell_complete=complete_hive_names,
    help=f"The hive to talk to: a name from {CONFIG_HINT} or a URL. Default: $HIVE_URL, "
    f"else the config's default, else {DEFAULT_URL}.",
)
@click.option(
    "--token",
    envvar="HIVE_TOKEN",
    default=None,
    metavar="TOKEN",
    help="The hive's access token (also $HIVE_TOKEN). Default for a hive on a loopback "
    "address: the local hive's token file ($HIVE_STATE_DIR/token, else "
    "$XDG_STATE_HOME/hive/token).",
)
@click.option(
    "--cacert",
    envvar="HIVE_CACERT",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    metavar="FILE",
    help="PEM file of CA certificates to trust for an https:// hive (also $HIVE_CACERT).",
)
@click.option("-q", "--quiet", is_flag=True, help="No status lines on stderr; job output only.")
@click.version_option(__version__, prog_name="keeper")
@click.pass_context
def main(
    ctx: click.Context, hive: str | None, token: str | None, cacert: str | None, quiet: bool
) -> None:
    """keeper: install workers on a hive and watch their builds.

    \b
    Typical use:
      keeper catalog                      what can be installed here
      keeper download cbuild --follow     build, watch; Ctrl+C cancels it all
      keeper jobs                         what the hive is doing
      keeper follow JOB                   watch a job (Ctrl+C only stops watching)
      keeper logs JOB > build.log         a job's whole stdout, exactly
      keeper cancel JOB                   cancel and wait for the teardown report

    With --follow, the job's stdout goes to stdout and everything else
    (job stderr, hive and keeper status lines) to stderr, so
    `keeper download X --follow > build.log` keeps the build log clean.
    """
    ctx.obj = Context(hive, quiet, token, cacert)


async def _follow(
    ctx: Context,
    client: HiveClient,
    job: dict[str, Any],
    *,
    since: int = 0,
    tail_lines: int | None = None,
    replay: bool = True,
    cancel_on_interrupt: bool,
) -> int:
    follower = Follower(
        client,
        job["id"],
        ctx.console,
        since=since,
        tail_lines=tail_lines,
        replay=replay,
        grace=job["grace"],
    )
    result = await follower.run(cancel_on_interrupt=cancel_on_interrupt)
    return result.exit_code


@main.command()
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
    "--json", "as_json", is_flag=True, help="Print the new job as JSON (not with --follow)."
)
@pass_context
def download(
    ctx: Context, worker: str, follow: bool, force: bool, skip_check: bool, as_json: bool
) -> None:
    """Install WORKER from the hive's catalog (a build job).

    Without --follow, prints the job id and returns at once. Installing the
    version that is already installed does nothing (and succeeds) unless --force.
    """

    async def main() -> int:
        async with ctx.client() as client:
            job = await client.submit(worker, force=force, skip_check=skip_check)
            if not follow:
                click.echo(json.dumps(job) if as_json else job["id"])
                return ExitCode.OK
            ctx.console.status(f"job {job['id']}: installing {worker}")
            return await _follow(ctx, client, job, cancel_on_interrupt=True)

    run(main)


@main.command()
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
@pass_context
def follow(
    ctx: Context,
    job_id: str,
    since: int,
    tail_lines: int | None,
    no_replay: bool,
    cancel_on_interrupt: bool,
) -> None:
    """Stream a job's output from the start (or --since, --tail, --no-replay),
    then live, until it ends. A lost connection is resumed where it broke.

    Exits with the job's outcome (see exit codes below).
    """
    starts = [since != 0, tail_lines is not None, no_replay]
    if sum(starts) > 1:
        raise click.UsageError("use only one of --since, --tail and --no-replay")

    async def main() -> int:
        async with ctx.client() as client:
            job = await client.job(job_id)
            return await _follow(
                ctx,
                client,
                job,
                since=since,
                tail_lines=tail_lines,
                replay=not no_replay,
                cancel_on_interrupt=cancel_on_interrupt,
            )

    run(main)


@main.command()
@click.argument("job_id", metavar="JOB", shell_complete=complete_jobs)
@click.option("--stderr", "stderr", is_flag=True, help="The job's stderr instead of its stdout.")
@pass_context
def logs(ctx: Context, job_id: str, stderr: bool) -> None:
    """Write the exact bytes JOB wrote to its stdout (or --stderr) so far to stdout.

    Works for running jobs (what they printed until now) and for jobs of
    earlier hive runs.
    """

    async def main() -> int:
        out = sys.stdout.buffer
        async with (
            ctx.client() as client,
            client.log(job_id, stream="stderr" if stderr else "stdout") as chunks,
        ):
            try:
                async for chunk in chunks:
                    out.write(chunk)
                out.flush()
            except BrokenPipeError:  # `keeper logs JOB | head`: the reader has enough
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK

    run(main)


@main.command()
@click.argument("job_id", metavar="JOB", shell_complete=complete_jobs)
@click.option("--json", "as_json", is_flag=True, help="Print the ended job as JSON.")
@pass_context
def cancel(ctx: Context, job_id: str, as_json: bool) -> None:
    """Cancel a job and wait until the hive confirms that none of its processes is left."""

    async def main() -> int:
        async with ctx.client() as client:
            try:
                job = await client.cancel(job_id, wait=True)
            except Refused as exc:
                if exc.status != 409:
                    raise
                ctx.console.status(f"job {job_id} had already ended: {exc.body.get('state')}")
                if as_json:
                    click.echo(json.dumps(await client.job(job_id)))
                return ExitCode.OK
            if as_json:
                click.echo(json.dumps(job))
            ctx.console.status(
                f"cancelled: job {job_id} is {job['state']}; "
                f"teardown: {describe_teardown(job.get('teardown'))}"
            )
            return ExitCode.OK

    run(main)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_context
def jobs(ctx: Context, as_json: bool) -> None:
    """List the hive's jobs, oldest first."""

    async def main() -> int:
        async with ctx.client() as client:
            rows = await client.jobs()
        if as_json:
            echo_json_lines(rows)
        else:
            echo_table(rows, JOB_COLUMNS)
        return ExitCode.OK

    run(main)


@main.command()
@click.argument("job_id", metavar="JOB", shell_complete=complete_jobs)
@click.option("--json", "as_json", is_flag=True, help="The job record as JSON.")
@pass_context
def status(ctx: Context, job_id: str, as_json: bool) -> None:
    """Show one job: state, exit code, error, teardown report."""

    async def main() -> int:
        async with ctx.client() as client:
            job = await client.job(job_id)
        if as_json:
            click.echo(json.dumps(job))
            return ExitCode.OK
        fields = [
            ("job", job["id"]),
            ("worker", job["worker"]),
            ("state", job["state"]),
            ("exit code", job["exit_code"]),
            ("error", job["error"]),
            ("created", job["created_at"]),
            ("started", job["started_at"]),
            ("ended", job["ended_at"]),
            ("pid/pgid", job["pid"]),
            ("cancelled by", job["cancel_requested_by"]),
        ]
        for name, value in fields:
            if value is not None:
                click.echo(f"{name + ':':<14}{value}")
        if job["teardown"]:
            click.echo(f"{'teardown:':<14}{describe_teardown(job['teardown'])}")
        return ExitCode.OK

    run(main)


@main.command(short_help="List the configured hives and whether each answers.")
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
                with trio.fail_after(3):
                    async with ctx.client(target) as client:
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

    run(main)


def _register_commands() -> None:
    from .catalog_cmds import register

    register(main)
    main.add_command(completion)


_register_commands()
