"""Shell completion (click's mechanism) that knows the hive's workers and jobs.

``keeper completion bash`` prints the script to ``eval`` (or save) for bash;
``zsh`` and ``fish`` likewise. Worker names and job ids are completed by asking
the hive, with a short timeout: a dead hive only means no suggestions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import click
import trio
from click.shell_completion import CompletionItem, get_completion_class

from .client import HiveClient
from .config import ConfigError, KeeperConfig, config_path

#: Completion runs while a person waits at the prompt.
COMPLETION_TIMEOUT = 2.0

PROG = "keeper"
COMPLETE_VAR = "_KEEPER_COMPLETE"


def _ask_hive(
    ctx: click.Context, query: Callable[[HiveClient], Awaitable[list[tuple[str, str]]]]
) -> list[tuple[str, str]]:
    """Run ``query`` against the hive the command line names; [] on any failure."""
    from .cli import Context  # the CLI module imports this one

    params = ctx.find_root().params
    try:
        context = Context(params.get("hive"), True, params.get("token"), params.get("cacert"))

        async def run() -> list[tuple[str, str]]:
            with trio.move_on_after(COMPLETION_TIMEOUT):
                async with context.client() as client:
                    return await query(client)
            return []

        return trio.run(run)
    except Exception:
        return []


def _matching(pairs: list[tuple[str, str]], incomplete: str) -> list[CompletionItem]:
    return [
        CompletionItem(value, help=help) for value, help in pairs if value.startswith(incomplete)
    ]


def complete_workers(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    async def query(client: HiveClient) -> list[tuple[str, str]]:
        catalog = await client.catalog()
        return [(row["name"], row.get("description") or "") for row in catalog["workers"]]

    return _matching(_ask_hive(ctx, query), incomplete)


def complete_installed(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    async def query(client: HiveClient) -> list[tuple[str, str]]:
        return [(row["name"], row["version"]) for row in await client.workers()]

    return _matching(_ask_hive(ctx, query), incomplete)


def complete_jobs(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    async def query(client: HiveClient) -> list[tuple[str, str]]:
        jobs = await client.jobs()
        return [(job["id"], f"{job['worker']} {job['state']}") for job in reversed(jobs)]

    return _matching(_ask_hive(ctx, query), incomplete)


def complete_hive_names(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    try:
        config = KeeperConfig.load(config_path())
    except ConfigError:
        return []
    return _matching([(name, hive.url) for name, hive in config.hives.items()], incomplete)


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL.

    \b
    bash:  eval "$(keeper completion bash)"      (e.g. in ~/.bashrc)
    zsh:   eval "$(keeper completion zsh)"       (e.g. in ~/.zshrc)
    fish:  keeper completion fish > ~/.config/fish/completions/keeper.fish
    """
    root = ctx.find_root().command
    completer: Any = get_completion_class(shell)
    click.echo(completer(root, {}, PROG, COMPLETE_VAR).source())
