"""How the jobs of several hives share one terminal: whole lines, each prefixed.

Every line of a job's output is written whole, as ``[NAME] line``, to stdout
(the job's stdout) or stderr (its stderr, and the hive's and the keeper's
lines about it), so lines of different hives never mix inside a line however
their bytes arrive. A line is held until its newline comes; at the end of a
job what is left is written with a newline added. The prefix is the hive's
configured name, or ``host:port`` for a hive given by URL.

With ``--json`` every line becomes one JSON object on stdout instead (NDJSON,
with a ``hive`` field); bytes that are not UTF-8 are sent base64-encoded, as
the stream protocol does, so nothing is altered.

On a terminal, a live line at the bottom of stderr shows each hive's stage
(``alpha: build() · beta: check() · gamma: queued``); it is erased before
anything else is written, as :class:`~keeper.console.Console` does for one job.
"""

from __future__ import annotations

import base64
import json
from typing import Any, BinaryIO

from .console import (
    COLOURS,
    ERASE_LINE,
    Progress,
    colour_wanted,
    live_wanted,
    streams,
    terminal_width,
)


class FleetConsole:
    """Writes the jobs of several hives, each line whole and prefixed."""

    def __init__(
        self,
        labels: list[str],
        *,
        stdout: BinaryIO | None = None,
        stderr: BinaryIO | None = None,
        quiet: bool = False,
        as_json: bool = False,
        colour: bool | None = None,
        live: bool | None = None,
    ) -> None:
        self.stdout, self.stderr = streams(stdout, stderr)
        self.quiet = quiet
        self.as_json = as_json
        self.colour = colour_wanted(self.stderr) if colour is None else colour
        wanted = live_wanted(self.stderr) if live is None else live
        self.live = wanted and not quiet and not as_json
        self.progress = {label: Progress() for label in labels}
        self._partial: dict[tuple[str, bool], bytes] = {}
        self._live_shown = False

    def view(self, label: str) -> HiveView:
        return HiveView(self, label)

    # -- job output ------------------------------------------------------------

    def output(self, label: str, data: bytes, *, to_stdout: bool) -> None:
        self.progress[label].feed(data)
        key = (label, to_stdout)
        *lines, rest = (self._partial.pop(key, b"") + data).split(b"\n")
        if rest:
            self._partial[key] = rest
        if lines:
            self._lines(label, lines, to_stdout=to_stdout)

    def finish(self, label: str) -> None:
        """The job of ``label`` ended: write its unfinished lines, with a newline."""
        for to_stdout in (True, False):
            if rest := self._partial.pop((label, to_stdout), b""):
                self._lines(label, [rest], to_stdout=to_stdout)

    def _lines(self, label: str, lines: list[bytes], *, to_stdout: bool) -> None:
        if self.as_json:
            stream = "stdout" if to_stdout else "stderr"
            self._write(self.stdout, b"".join(_json_line(label, stream, line) for line in lines))
            return
        prefix = f"[{label}] ".encode()
        self._write(
            self.stdout if to_stdout else self.stderr,
            b"".join(prefix + line + b"\n" for line in lines),
        )

    # -- lines about the jobs --------------------------------------------------

    def message(self, label: str | None, who: str, text: str, tone: str = "info") -> None:
        """A line from the hive or the keeper about ``label``'s job (None: about all)."""
        if self.as_json:
            self.record({"hive": label, "type": who, "text": text})
            return
        if self.quiet:
            return
        prefix = f"[{label}] " if label is not None else ""
        self._write(self.stderr, f"{prefix}{self._paint(f'{who}:', tone)} {text}\n".encode())

    def record(self, fields: dict[str, Any]) -> None:
        """One NDJSON object on stdout (``--json`` only)."""
        self._write(self.stdout, json.dumps(fields).encode() + b"\n")

    def set_stage(self, label: str, stage: str) -> None:
        self.progress[label].stage = stage

    # -- the live line ---------------------------------------------------------

    def tick(self) -> None:
        if not self.live:
            return
        width = max(terminal_width(self.stderr) - 1, 10)
        text = " · ".join(f"{label}: {p.stage}" for label, p in self.progress.items())
        self.stderr.write(ERASE_LINE.encode() + self._paint(text[:width], "dim").encode())
        self.stderr.flush()
        self._live_shown = True

    def close(self) -> None:
        self._erase_live()

    def _erase_live(self) -> None:
        if self._live_shown:
            self.stderr.write(ERASE_LINE.encode())
            self.stderr.flush()
            self._live_shown = False

    def _paint(self, text: str, tone: str) -> str:
        return f"\x1b[{COLOURS[tone]}m{text}\x1b[0m" if self.colour else text

    def _write(self, sink: BinaryIO, data: bytes) -> None:
        """One write of whole lines: nothing else is written between them."""
        self._erase_live()
        sink.write(data)
        sink.flush()


def _json_line(label: str, stream: str, line: bytes) -> bytes:
    fields: dict[str, Any] = {"hive": label, "stream": stream}
    try:
        fields["line"] = line.decode()
    except UnicodeDecodeError:
        fields["line_b64"] = base64.b64encode(line).decode()
    return json.dumps(fields).encode() + b"\n"


class HiveView:
    """One hive's part of a :class:`FleetConsole`, as a follower sees it
    (a :class:`~keeper.console.JobView`)."""

    live = False  # the fleet draws one live line for all hives

    def __init__(self, fleet: FleetConsole, label: str) -> None:
        self.fleet = fleet
        self.label = label

    def output(self, data: bytes, *, to_stdout: bool) -> None:
        self.fleet.output(self.label, data, to_stdout=to_stdout)

    def status(self, text: str, tone: str = "info") -> None:
        self.fleet.message(self.label, "keeper", text, tone)

    def hive(self, text: str) -> None:
        self.fleet.message(self.label, "hive", text, "hive")

    def summary(self, text: str, *, ok: bool) -> None:
        self.fleet.message(self.label, "keeper", text, "ok" if ok else "bad")

    def tick(self) -> None:
        pass

    def close(self) -> None:
        self.fleet.finish(self.label)
