"""``keeper jobs``, ``status``, ``logs`` and ``cancel``: questions with one answer.

Each makes a call or two over :mod:`keeper.blocking` and exits: no event loop,
so they start at once. With several hives (``--hive a,b`` or ``all``) they ask
one hive after another (a hive answers in milliseconds; an unreachable one is
named and skipped) and merge the answers with a HIVE column; a job is found on
whichever hive has it, or named ``HIVE:JOB``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NamedTuple

import click

from . import api
from .blocking import BlockingClient
from .completers import complete_jobs
from .config import HiveTarget
from .context import Context, pass_context, run
from .errors import ExitCode, HiveError, NotFound, Refused, combine
from .reports import describe_teardown
from .tables import Column, echo_json_lines, echo_table

JOB_COLUMNS: list[Column] = [
    ("JOB", lambda r: r["id"]),
    ("STATE", lambda r: r["state"]),
    ("WORKER", lambda r: r["worker"]),
    ("EXIT", lambda r: "" if r["exit_code"] is None else str(r["exit_code"])),
    ("CREATED", lambda r: r["created_at"]),
]

HIVE_COLUMN: Column = ("HIVE", lambda r: r["hive"])

#: JOB (or HIVE:JOB) of status, logs and cancel, completed from the hives' jobs.
job_argument = click.argument("job_id", metavar="JOB", shell_complete=complete_jobs)


def named(target: HiveTarget, exc: HiveError) -> HiveError:
    """``exc`` with the hive's name in front, for answers merged from several hives."""
    return type(exc)(f"{target.label}: {exc}", status=exc.status, body=exc.body)


class Located(NamedTuple):
    target: HiveTarget
    client: BlockingClient
    job_id: str
    #: The job's record, if the hives had to be asked for it.
    job: dict[str, Any] | None


def locate(ctx: Context, ref: str) -> Located:
    """The hive that has job ``ref`` (``JOB`` or ``HIVE:JOB``), a client for it, the
    job's id. With one hive, or the hive named, nothing is asked yet; with several,
    each is asked for the job, and exactly one must have it."""
    target, job_id = ctx.split_job(ref)
    if target is not None:
        return Located(target, BlockingClient.of(ctx.credentials(target)), job_id, None)
    found: list[Located] = []
    errors: list[HiveError] = []
    for target in ctx.targets:
        client = BlockingClient.of(ctx.credentials(target))
        try:
            found.append(Located(target, client, job_id, client.call(api.job(job_id))))
        except NotFound:
            continue
        except HiveError as exc:
            errors.append(named(target, exc))
    if len(found) > 1:
        hives = ", ".join(located.target.label for located in found)
        raise click.UsageError(f"job {job_id} is on several hives ({hives}): say HIVE:{job_id}")
    if found:
        return found[0]
    if errors:
        raise errors[0]
    hives = ", ".join(target.label for target in ctx.targets)
    raise NotFound(f"no job {job_id} on {hives}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_context
def jobs(ctx: Context, as_json: bool) -> None:
    """List the hive's jobs, oldest first.

    With several hives, their jobs in one list with a HIVE column (a `hive`
    field in JSON); a hive that does not answer is named on stderr.
    """

    def main() -> int:
        rows: list[dict[str, Any]] = []
        codes: list[int] = []
        for target in ctx.targets:
            try:
                found = BlockingClient.of(ctx.credentials(target)).call(api.jobs())
            except HiveError as exc:
                if not ctx.several:
                    raise
                ctx.console.status(str(named(target, exc)), tone="bad")
                codes.append(exc.exit_code)
                continue
            rows += [{"hive": target.label, **row} for row in found] if ctx.several else found
        rows.sort(key=lambda row: str(row.get("created_at")))
        if as_json:
            echo_json_lines(rows)
        else:
            echo_table(rows, [HIVE_COLUMN, *JOB_COLUMNS] if ctx.several else JOB_COLUMNS)
        return combine(codes)

    run(main)


@click.command()
@job_argument
@click.option("--json", "as_json", is_flag=True, help="The job record as JSON.")
@pass_context
def status(ctx: Context, job_id: str, as_json: bool) -> None:
    """Show one job: state, exit code, error, teardown report.

    JOB may be HIVE:JOB; with several hives, the one that has JOB answers.
    """

    def main() -> int:
        located = locate(ctx, job_id)
        target = located.target
        job = located.job or located.client.call(api.job(located.job_id))
        if as_json:
            click.echo(json.dumps({"hive": target.label, **job} if ctx.several else job))
            return ExitCode.OK
        fields = [
            ("hive", target.label if ctx.several else None),
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


@click.command()
@job_argument
@click.option("--stderr", "stderr", is_flag=True, help="The job's stderr instead of its stdout.")
@pass_context
def logs(ctx: Context, job_id: str, stderr: bool) -> None:
    """Write the exact bytes JOB wrote to its stdout (or --stderr) so far to stdout.

    Works for running jobs (what they printed until now) and for jobs of
    earlier hive runs. JOB may be HIVE:JOB.
    """

    def main() -> int:
        _target, client, job, _ = locate(ctx, job_id)
        out = sys.stdout.buffer
        with client.log(job, stream="stderr" if stderr else "stdout") as chunks:
            try:
                for chunk in chunks:
                    out.write(chunk)
                out.flush()
            except BrokenPipeError:  # `keeper logs JOB | head`: the reader has enough
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK

    run(main)


@click.command()
@job_argument
@click.option("--json", "as_json", is_flag=True, help="Print the ended job as JSON.")
@pass_context
def cancel(ctx: Context, job_id: str, as_json: bool) -> None:
    """Cancel a job and wait until the hive confirms that none of its processes is left.

    JOB may be HIVE:JOB; with several hives, the one that has JOB cancels it.
    """

    def main() -> int:
        target, client, job, _ = locate(ctx, job_id)
        where = f"{target.label}:" if ctx.several else ""
        try:
            ended = client.call(api.cancel(job, wait=True))
        except Refused as exc:
            if exc.status != 409:
                raise
            ctx.console.status(f"job {where}{job} had already ended: {exc.body.get('state')}")
            if as_json:
                click.echo(json.dumps(client.call(api.job(job))))
            return ExitCode.OK
        if as_json:
            click.echo(json.dumps(ended))
        ctx.console.status(
            f"cancelled: job {where}{job} is {ended['state']}; "
            f"teardown: {describe_teardown(ended.get('teardown'))}"
        )
        return ExitCode.OK

    run(main)
