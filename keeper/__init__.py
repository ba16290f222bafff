"""keeper: the command-line client of a hive."""

from hivewire import __version__

__all__ = ["__version__"]
