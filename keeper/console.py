"""How a followed job looks: job output untouched, everything else on stderr.

On a terminal, status lines are coloured (unless ``NO_COLOR`` is set) and a
compact live line at the bottom of stderr shows the build's stage, the time
since it started and how much it printed. That line is only ever drawn when the
cursor is at the start of a line, and erased before anything else is written,
so it can never corrupt the job's own output. Piped, the output is plain and
line-oriented: no colour, no live line.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any, BinaryIO, Protocol

#: Prefix of makepkg.sh's stage lines ("==> Starting build()").
STAGE_MARK = b"==> "

ERASE_LINE = "\r\x1b[2K"
COLOURS = {"info": "36", "hive": "33", "ok": "32", "bad": "31", "dim": "2"}


def is_tty(stream: BinaryIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def terminal_width(stream: IO[Any]) -> int:
    """Columns of the terminal ``stream`` writes to ($COLUMNS wins; 80 if unknown),
    as shutil.get_terminal_size says for stdout."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 80
    return columns if columns > 0 else 80  # a fresh pty says 0


def colour_wanted(stream: BinaryIO, environ: dict[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (https://no-color.org)."""
    env = os.environ if environ is None else environ
    return is_tty(stream) and "NO_COLOR" not in env and env.get("TERM") != "dumb"


def live_wanted(stream: BinaryIO) -> bool:
    """A live line only on a terminal that can redraw one."""
    return is_tty(stream) and os.environ.get("TERM") != "dumb"


def streams(stdout: BinaryIO | None, stderr: BinaryIO | None) -> tuple[BinaryIO, BinaryIO]:
    """The streams given, else this process's own."""
    return (
        stdout if stdout is not None else sys.stdout.buffer,
        stderr if stderr is not None else sys.stderr.buffer,
    )


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def last_stage(data: bytes) -> str | None:
    """The text of the last ``==> `` stage line that starts in ``data``."""
    at = data.rfind(STAGE_MARK)
    while at > 0 and data[at - 1 : at] != b"\n":
        at = data.rfind(STAGE_MARK, 0, at)
    if at < 0:
        return None
    line = data[at + len(STAGE_MARK) :].split(b"\n", 1)[0]
    return line.decode(errors="replace").strip() or None


class Progress:
    """What the live line shows; updated from the output as it passes."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.stage = "waiting"
        self.lines = 0
        self.size = 0

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        self.lines += data.count(b"\n")
        if STAGE_MARK in data and (stage := last_stage(data)):
            self.stage = stage

    def render(self) -> str:
        return (
            f"[{self.stage}] {human_duration(time.monotonic() - self.started)} · "
            f"{self.lines} lines · {human_bytes(self.size)}"
        )


class JobView(Protocol):
    """Where a followed job's output and the lines about it go."""

    @property
    def live(self) -> bool: ...

    def output(self, data: bytes, *, to_stdout: bool) -> None: ...

    def status(self, text: str, tone: str = "info") -> None: ...

    def hive(self, text: str) -> None: ...

    def summary(self, text: str, *, ok: bool) -> None: ...

    def tick(self) -> None: ...

    def close(self) -> None: ...


class Console:
    """Writes a followed job to the terminal or to pipes.

    Job stdout goes to ``stdout``; job stderr, hive messages and keeper status
    lines go to ``stderr``.
    """

    def __init__(
        self,
        *,
        stdout: BinaryIO | None = None,
        stderr: BinaryIO | None = None,
        quiet: bool = False,
        colour: bool | None = None,
        live: bool | None = None,
    ) -> None:
        self.stdout, self.stderr = streams(stdout, stderr)
        self.quiet = quiet
        self.colour = colour_wanted(self.stderr) if colour is None else colour
        self.live = (live_wanted(self.stderr) if live is None else live) and not quiet
        self.progress = Progress()
        self._stdout_on_tty = is_tty(self.stdout)
        self._at_line_start = True  # where the terminal's cursor is
        self._live_shown = False

    # -- the job's output: written exactly, never altered ---------------------

    def output(self, data: bytes, *, to_stdout: bool) -> None:
        """Bytes of the job's stdout (``to_stdout``) or stderr."""
        if self.live:
            self._erase_live()
            self.progress.feed(data)
        sink = self.stdout if to_stdout else self.stderr
        sink.write(data)
        sink.flush()
        if data and (not to_stdout or self._stdout_on_tty):
            self._at_line_start = data.endswith(b"\n")

    # -- everything else ------------------------------------------------------

    def status(self, text: str, tone: str = "info") -> None:
        self._line("keeper", text, tone)

    def hive(self, text: str) -> None:
        self._line("hive", text, "hive")

    def summary(self, text: str, *, ok: bool) -> None:
        self._line("keeper", text, "ok" if ok else "bad")

    def _line(self, who: str, text: str, tone: str) -> None:
        if self.quiet:
            return
        self._erase_live()
        prefix = "" if self._at_line_start else "\n"  # never glue onto a partial job line
        self._write_err(f"{prefix}{self._paint(f'{who}:', tone)} {text}\n")
        self._at_line_start = True

    def tick(self) -> None:
        """Redraw the live line (with the new elapsed time), if one may be shown."""
        if not self.live or not self._at_line_start:
            return
        width = max(terminal_width(self.stderr) - 1, 10)
        text = self.progress.render()[:width]
        self._write_err(f"{ERASE_LINE}{self._paint(text, 'dim')}")
        self._live_shown = True

    def close(self) -> None:
        """Erase the live line; call before the command exits."""
        self._erase_live()

    def _erase_live(self) -> None:
        if self._live_shown:
            self._write_err(ERASE_LINE)
            self._live_shown = False

    def _paint(self, text: str, tone: str) -> str:
        return f"\x1b[{COLOURS[tone]}m{text}\x1b[0m" if self.colour else text

    def _write_err(self, text: str) -> None:
        self.stderr.write(text.encode())
        self.stderr.flush()
