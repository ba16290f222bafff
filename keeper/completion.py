"""``keeper completion SHELL``: the script that makes a shell complete keeper.

It imports click's completion classes and nothing of the keeper's clients, so
printing the script (often done in every new shell) is as quick as ``--help``.
"""

from __future__ import annotations

from typing import Any

import click
from click.shell_completion import get_completion_class

PROG = "keeper"
COMPLETE_VAR = "_KEEPER_COMPLETE"


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
