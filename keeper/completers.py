"""Shell completion of values that only the hive knows: worker names and job ids.

Asked over :mod:`keeper.blocking` with a short timeout while a person waits at
the prompt; a dead hive only means no suggestions. (Command names are completed
by :class:`keeper.lazy.LazyGroup` without importing anything.)
"""

from __future__ import annotations

from collections.abc import Callable

import click
from click.shell_completion import CompletionItem

from . import api
from .blocking import BlockingClient
from .context import context_of

#: Completion runs while a person waits at the prompt.
COMPLETION_TIMEOUT = 2.0

Query = Callable[[BlockingClient], list[tuple[str, str]]]


def _ask_hives(ctx: click.Context, query: Query) -> list[tuple[str, str]]:
    """Run ``query`` against the hive(s) the command line names; [] on any failure.
    With several hives, values are offered as ``HIVE:VALUE``."""
    try:
        context = context_of(ctx)
    except click.ClickException:
        return []
    found: list[tuple[str, str]] = []
    for target in context.targets:
        try:
            client = BlockingClient.of(context.credentials(target), timeout=COMPLETION_TIMEOUT)
            pairs = query(client)
        except Exception:
            continue
        prefix = f"{target.label}:" if context.several else ""
        found += [(prefix + value, help) for value, help in pairs]
    return found


def _matching(pairs: list[tuple[str, str]], incomplete: str) -> list[CompletionItem]:
    return [
        CompletionItem(value, help=help) for value, help in pairs if value.startswith(incomplete)
    ]


def complete_workers(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    def query(client: BlockingClient) -> list[tuple[str, str]]:
        rows = client.call(api.catalog())["workers"]
        return [(row["name"], row.get("description") or "") for row in rows]

    pairs = _ask_hives(ctx, query)
    unique = list(dict((name.rpartition(":")[2], help) for name, help in pairs).items())
    return _matching(unique, incomplete)


def complete_installed(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    def query(client: BlockingClient) -> list[tuple[str, str]]:
        return [(row["name"], row["version"]) for row in client.call(api.workers())]

    return _matching(_ask_hives(ctx, query), incomplete)


def complete_jobs(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    def query(client: BlockingClient) -> list[tuple[str, str]]:
        jobs = client.call(api.jobs())
        return [(job["id"], f"{job['worker']} {job['state']}") for job in reversed(jobs)]

    return _matching(_ask_hives(ctx, query), incomplete)
