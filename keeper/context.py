"""What every keeper command shares: the hives it talks to, where its status
lines go, and how a failure becomes one line and an exit code.

Command modules import this one (and their own client); this one imports no
command module and no client, so a command pays only for what it uses.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import update_wrapper
from typing import Concatenate, NoReturn, ParamSpec, TypeVar

import click

from .auth import Credentials, credentials
from .config import ConfigError, HiveTarget, KeeperConfig, config_path
from .console import Console
from .errors import ExitCode, HiveError, innermost

P = ParamSpec("P")
R = TypeVar("R")


class Context:
    """The hives a command talks to (resolved from --hive, the config and the
    environment) and where its output goes."""

    def __init__(
        self, hive: str | None, quiet: bool, token: str | None, cacert: str | None
    ) -> None:
        try:
            self.config = KeeperConfig.load(config_path())
            self.targets = self.config.resolve_many(hive)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        self.quiet = quiet
        self.console = Console(quiet=quiet)
        self._token = token
        self._cacert = cacert

    @property
    def several(self) -> bool:
        return len(self.targets) > 1

    @property
    def target(self) -> HiveTarget:
        """The hive of a command that talks to one."""
        if self.several:
            names = ", ".join(target.label for target in self.targets)
            raise click.UsageError(f"this command talks to one hive; --hive names several: {names}")
        return self.targets[0]

    def credentials(self, target: HiveTarget | None = None) -> Credentials:
        """How to reach ``target`` (default: the one hive). With several hives each
        named hive keeps its own token; --token is for those given by URL."""
        target = target or self.target
        token = (target.token or self._token) if self.several else (self._token or target.token)
        return credentials(target, token, self._cacert)

    def split_job(self, ref: str) -> tuple[HiveTarget | None, str]:
        """``HIVE:JOB`` → (that hive, JOB); a bare ``JOB`` → (the one hive, or None
        when there are several and the job must be looked for)."""
        label, colon, job_id = ref.rpartition(":")
        if colon:
            for target in self.targets:
                if target.label == label:
                    return target, job_id
            if label in self.config.hives:
                return self.config.hives[label], job_id
            known = ", ".join(target.label for target in self.targets)
            raise click.UsageError(f"{ref!r}: no hive {label!r} here (known: {known})")
        return (None if self.several else self.target), ref


def context_of(click_ctx: click.Context) -> Context:
    """The :class:`Context` of this command line, made from the root's options the
    first time a command asks for it (``--help`` and ``completion`` never do)."""
    root = click_ctx.find_root()
    if not isinstance(root.obj, Context):
        params = root.params
        root.obj = Context(
            params.get("hive"), bool(params.get("quiet")), params.get("token"), params.get("cacert")
        )
    return root.obj


def pass_context(command: Callable[Concatenate[Context, P], R]) -> Callable[P, R]:
    """Decorator: call ``command`` with the :class:`Context` as its first argument."""

    def new(*args: P.args, **kwargs: P.kwargs) -> R:
        return command(context_of(click.get_current_context()), *args, **kwargs)

    return update_wrapper(new, command)


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"keeper: {message}", err=True)
    sys.exit(code)


def run(main: Callable[[], int | None]) -> NoReturn:
    """Run a command's body (``partial(trio.run, amain)`` for an async one); map
    failures to one line and an exit code."""
    try:
        code = main()
    except BaseException as exc:
        error = innermost(exc)
        if isinstance(error, HiveError):
            fail(str(error), error.exit_code)
        if isinstance(error, KeyboardInterrupt):
            fail("interrupted", ExitCode.INTERRUPTED)
        raise
    sys.exit(code or 0)
