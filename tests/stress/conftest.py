"""The stress run is not part of the default test run (see ``addopts`` in
pyproject.toml); ``make stress`` runs it. Its numbers are printed at the end."""

from __future__ import annotations

import pytest

#: Lines a stress test wants shown after the run, whether it passed or not.
SUMMARY: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.section("stress summary")
        for line in SUMMARY:
            terminalreporter.write_line(line)
