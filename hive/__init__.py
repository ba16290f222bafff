"""hive: a structured-concurrency job daemon that builds workers from PKGBUILD recipes."""

from hivewire import __version__

__all__ = ["__version__"]
