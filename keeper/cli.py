"""The ``keeper`` command: drive a hive from a terminal or a script.

This module is the root of the command line: its options and the map of
commands (see :mod:`keeper.lazy`), nothing else, so ``keeper --help``,
``--version`` and ``keeper completion`` start as fast as click does. The
options become a :class:`keeper.context.Context` when a command asks for one.
"""

from __future__ import annotations

import sys

import click
from click.shell_completion import CompletionItem

from . import __version__
from .config import DEFAULT_URL, ConfigError, KeeperConfig, config_path
from .console import terminal_width
from .lazy import LazyCommand, LazyGroup

CONFIG_HINT = "$XDG_CONFIG_HOME/keeper/config.toml"

#: The help's width as click would choose it (the terminal's, at most 80, less 2,
#: at least 50), worked out here: click's own way imports shutil, and bz2 and lzma.
HELP_WIDTH = max(min(terminal_width(sys.stdout), 80) - 2, 50)

#: Every command: where it lives, and its short help for `keeper --help`.
COMMANDS = {
    "download": LazyCommand(
        "keeper.follow_cmds:download", "Install WORKER from the hive's catalog (a build job)."
    ),
    "follow": LazyCommand(
        "keeper.follow_cmds:follow",
        "Stream a job's output from the start (or --since, --tail, --no-replay), "
        "then live, until it ends.",
    ),
    "logs": LazyCommand(
        "keeper.job_cmds:logs",
        "Write the exact bytes JOB wrote to its stdout (or --stderr) so far to stdout.",
    ),
    "cancel": LazyCommand(
        "keeper.job_cmds:cancel",
        "Cancel a job and wait until the hive confirms that none of its processes is left.",
    ),
    "jobs": LazyCommand("keeper.job_cmds:jobs", "List the hive's jobs, oldest first."),
    "status": LazyCommand(
        "keeper.job_cmds:status", "Show one job: state, exit code, error, teardown report."
    ),
    "catalog": LazyCommand(
        "keeper.catalog_cmds:catalog",
        "List the workers the hive can install, and whether each can be built here.",
    ),
    "info": LazyCommand(
        "keeper.catalog_cmds:info",
        "Show WORKER's recipe: version, dependencies, sources and checksums.",
    ),
    "workers": LazyCommand(
        "keeper.catalog_cmds:workers", "List installed workers: one line per installed version."
    ),
    "remove": LazyCommand(
        "keeper.catalog_cmds:remove",
        "Uninstall every version of WORKER (refused while it is being installed).",
    ),
    "hives": LazyCommand(
        "keeper.hive_cmds:hives", "List the configured hives and whether each answers."
    ),
    "completion": LazyCommand(
        "keeper.completion:completion", "Print the completion script for SHELL."
    ),
}

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
With several hives: 0 if all succeeded, 130 if Ctrl+C cancelled all with
confirmed teardown, 124 if any did not confirm, else the worst per hive
(125, 7, 6, 5, 4, 3, then the job code of the first failing hive).
"""


def complete_hive_names(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    try:
        config = KeeperConfig.load(config_path())
    except ConfigError:
        return []
    names = [("all", "every configured hive"), *((n, h.url) for n, h in config.hives.items())]
    done, comma, last = incomplete.rpartition(",")
    return [
        CompletionItem(done + comma + name, help=url)
        for name, url in names
        if name.startswith(last)
    ]


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "terminal_width": HELP_WIDTH},
    epilog=EXIT_CODES,
)
@click.option(
    "--hive",
    "hive",
    default=None,
    metavar="NAME|URL[,...]",
    shell_complete=complete_hive_names,
    help=f"The hive to talk to: a name from {CONFIG_HINT} or a URL. Default: $HIVE_URL, "
    f"else the config's default, else {DEFAULT_URL}. Several, comma-separated, or 'all' "
    "(download, jobs, status, logs, cancel): one job per hive, output lines prefixed "
    "[NAME].",
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
def main(hive: str | None, token: str | None, cacert: str | None, quiet: bool) -> None:
    """keeper: install workers on a hive and watch their builds.

    \b
    Typical use:
      keeper catalog                      what can be installed here
      keeper download cbuild --follow     build, watch; Ctrl+C cancels it all
      keeper jobs                         what the hive is doing
      keeper follow JOB                   watch a job (Ctrl+C only stops watching)
      keeper logs JOB > build.log         a job's whole stdout, exactly
      keeper cancel JOB                   cancel and wait for the teardown report
      keeper --hive a,b download X -f     the same build on hives a and b at once

    With --follow, the job's stdout goes to stdout and everything else
    (job stderr, hive and keeper status lines) to stderr, so
    `keeper download X --follow > build.log` keeps the build log clean.
    """
    # The options are read by the command that needs them (keeper.context.context_of).
