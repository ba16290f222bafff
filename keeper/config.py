"""Named hives: which hive a command talks to, and with which credentials.

A person with several machines names their hives in
``$XDG_CONFIG_HOME/keeper/config.toml``::

    default = "build-box"

    [hives.build-box]
    url = "https://build-box.lan:7835"
    token = "…"            # or token_file = "~/.config/keeper/build-box.token"
    cacert = "~/.config/keeper/build-box.pem"

    [hives.local]
    url = "http://127.0.0.1:7835"

``--hive`` takes a name from that file or a URL. Without it: ``$HIVE_URL``, then
the config's ``default``, then the local hive. This module is pure: it reads
the file it is given and resolves names; it opens no connection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

#: Where a hive listens when nothing else is said (``hive serve``'s default bind).
DEFAULT_URL = "http://127.0.0.1:7835"

#: ``--hive all``: every hive of the config.
ALL = "all"


class ConfigError(ValueError):
    """The config file is unreadable or names a hive that is not in it."""


class HiveTarget(NamedTuple):
    """A hive to talk to: where, how to authenticate, and what it is called."""

    url: str
    name: str | None = None
    token: str | None = None
    cacert: Path | None = None

    @property
    def label(self) -> str:
        """What output about this hive is prefixed with: its name, else ``host:port``."""
        if self.name:
            return self.name
        parts = urlsplit(self.url)
        return parts.netloc.rpartition("@")[2] or self.url


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if explicit := env.get("KEEPER_CONFIG"):
        return Path(explicit)
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "keeper" / "config.toml"


class KeeperConfig(NamedTuple):
    hives: dict[str, HiveTarget]
    default: str | None = None

    @classmethod
    def load(cls, path: Path) -> KeeperConfig:
        """Read ``path``; a missing file is an empty config."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls(hives={})
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        # Here, not at the top: most keepers have no config file, and tomllib's
        # import (it compiles its regular expressions) is a fifth of bare Python's start.
        import tomllib

        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        return cls.parse(raw, origin=path)

    @classmethod
    def parse(cls, raw: dict[str, Any], *, origin: Path) -> KeeperConfig:
        hives: dict[str, HiveTarget] = {}
        table = raw.get("hives", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: [hives] must be a table")
        for name, entry in table.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
                raise ConfigError(f'{origin}: [hives.{name}] needs url = "http(s)://…"')
            hives[name] = HiveTarget(
                url=entry["url"],
                name=name,
                token=_token(entry, name, origin),
                cacert=Path(entry["cacert"]).expanduser() if "cacert" in entry else None,
            )
        default = raw.get("default")
        if default is not None and default not in hives:
            raise ConfigError(f"{origin}: default = {default!r} is not one of [hives.*]")
        return cls(hives=hives, default=default)

    def resolve(self, choice: str | None, environ: Mapping[str, str] | None = None) -> HiveTarget:
        """The hive for ``--hive CHOICE`` (a name or a URL), or the default one."""
        env = os.environ if environ is None else environ
        choice = choice or env.get("HIVE_URL") or self.default
        if choice is None:
            return HiveTarget(url=DEFAULT_URL)
        if choice in self.hives:
            return self.hives[choice]
        if "://" in choice:
            return HiveTarget(url=choice)
        known = ", ".join(sorted(self.hives)) or "none configured"
        raise ConfigError(f"no hive named {choice!r} (known: {known}); or pass a URL")

    def resolve_many(
        self, choice: str | None, environ: Mapping[str, str] | None = None
    ) -> list[HiveTarget]:
        """The hives for ``--hive a,b,URL`` or ``--hive all``: each once, in the order
        given (``all``: the config's order); one hive for a single choice."""
        env = os.environ if environ is None else environ
        choice = choice or env.get("HIVE_URL")
        if choice is None or ("," not in choice and choice != ALL):
            return [self.resolve(choice, env)]
        if choice == ALL:
            if not self.hives:
                raise ConfigError(f"--hive {ALL}: no hives are configured")
            return list(self.hives.values())
        targets: list[HiveTarget] = []
        for part in (item.strip() for item in choice.split(",")):
            if not part:
                raise ConfigError(f"--hive {choice!r}: an empty name between commas")
            target = self.resolve(part, env)
            if any(known.url.rstrip("/") == target.url.rstrip("/") for known in targets):
                raise ConfigError(f"--hive {choice!r} names {target.url} twice")
            targets.append(target)
        labels = [target.label for target in targets]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"--hive {choice!r}: two hives would print as the same name")
        return targets


def _token(entry: dict[str, Any], name: str, origin: Path) -> str | None:
    if isinstance(entry.get("token"), str):
        return str(entry["token"])
    if isinstance(entry.get("token_file"), str):
        path = Path(entry["token_file"]).expanduser()
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{origin}: [hives.{name}] token_file: {exc}") from None
    return None
