"""``keeper completion SHELL``: the script that makes a shell complete keeper.

It imports click's completion classes and nothing of the keeper's clients, so
printing the script (often done in every new shell) is as quick as ``--help``.
The script is click's template filled in, as click's ``source()`` documents;
for bash, the check that the shell is 4.4 or newer is part of the script, made
by the shell that runs it, instead of click's (a ``bash`` started from PATH to
ask its version: a process, and the imports of subprocess and shutil, in every
new terminal).
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

PROG = "keeper"
COMPLETE_VAR = "_KEEPER_COMPLETE"

BASH_GUARD = """\
if (( BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4) )); then
    echo "keeper: shell completion needs bash 4.4 or newer (this is $BASH_VERSION)" >&2
else
%s
fi
"""


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
    kind = get_completion_class(shell)
    if kind is None:  # click.Choice lets through only the shells click knows
        raise click.UsageError(f"no completion for {shell}")
    completer = kind(root, {}, PROG, COMPLETE_VAR)
    script = completer.source_template % completer.source_vars()
    click.echo(BASH_GUARD % script.strip("\n") if shell == "bash" else script)
