"""A click group that imports a command's module only when that command runs.

click's documented pattern for lazily loaded subcommands, with one addition:
each command's short help is kept next to its import path, so that ``keeper
--help`` and shell completion of command names list every command without
importing any (a command module imports what it needs: trio, httpx...).
``tests/test_keeper_cli.py`` checks that the kept help is the command's own.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import click
from click.shell_completion import CompletionItem


class LazyCommand(NamedTuple):
    #: ``"package.module:attribute"``
    target: str
    short_help: str

    def load(self) -> click.Command:
        module, _, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is not a click command")
        return command


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy: Mapping[str, LazyCommand], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            return self.lazy[cmd_name].load()
        return super().get_command(ctx, cmd_name)

    def command_help(self, ctx: click.Context, name: str, limit: int) -> str | None:
        if name in self.lazy:
            # click's own shortening, applied to the kept text
            return click.Command(name, help=self.lazy[name].short_help).get_short_help_str(limit)
        command = super().get_command(ctx, name)
        return None if command is None or command.hidden else command.get_short_help_str(limit)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, text) for name in names if (text := self.command_help(ctx, name, limit))]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        items = [
            CompletionItem(name, help=self.command_help(ctx, name, 45))
            for name in self.list_commands(ctx)
            if name.startswith(incomplete)
        ]
        return items + click.Command.shell_complete(self, ctx, incomplete)
