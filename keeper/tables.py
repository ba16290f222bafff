"""Data for people (aligned tables) and for scripts (NDJSON: one object a line)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

#: A table column: header and how to get the cell from a row.
Column = tuple[str, Callable[[dict[str, Any]], str]]


def table(rows: Iterable[dict[str, Any]], columns: Sequence[Column]) -> list[str]:
    """Left-aligned columns, as wide as their widest cell; the last one unpadded."""
    cells = [[header for header, _ in columns]]
    cells += [[cell(row) for _, cell in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns) - 1)]
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(line, widths, strict=False)), line[-1]]).rstrip()
        for line in cells
    ]


def echo_table(rows: Iterable[dict[str, Any]], columns: Sequence[Column]) -> None:
    for line in table(rows, columns):
        click.echo(line)


def echo_json_lines(rows: Iterable[dict[str, Any]]) -> None:
    """The stable machine-readable form: one JSON object per line (NDJSON)."""
    for row in rows:
        click.echo(json.dumps(row))
