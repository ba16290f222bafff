"""hive: a structured-concurrency job daemon that builds workers from PKGBUILD recipes."""

__version__ = "0.1.0"
