"""The keeper's command line as a structure: lazily loaded commands, start-up
paths that import no event loop, several hives resolved and combined, and the
fan-out's line assembly. (How fast it starts is measured in `bench startup`.)"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from keeper.cli import COMMANDS, main
from keeper.config import ConfigError, HiveTarget, KeeperConfig
from keeper.errors import ExitCode, combine
from keeper.fleet_console import FleetConsole

from .support import ROOT, Hive

HEAVY = ("trio", "httpx", "trio_websocket", "anyio", "httpcore")

#: Runs the keeper's `main` with ARGV and reports, at exit, which heavy modules it imported.
PROBE = (
    "import atexit, sys\n"
    f"heavy = {HEAVY!r}\n"
    "atexit.register(lambda: print('IMPORTED', sorted(m for m in heavy if m in sys.modules),"
    " file=sys.stderr))\n"
    "from keeper.cli import main\n"
    "main(sys.argv[1:], prog_name='keeper')\n"
)


def imported(*args: str, env: dict[str, str] | None = None) -> tuple[list[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
    )
    line = [x for x in done.stderr.splitlines() if x.startswith("IMPORTED ")][-1]
    return json.loads(line.removeprefix("IMPORTED ").replace("'", '"')), done.stdout


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--help"], {}),
        (["--version"], {}),
        (["completion", "bash"], {}),
        ([], {"_KEEPER_COMPLETE": "bash_complete", "COMP_WORDS": "keeper do", "COMP_CWORD": "1"}),
    ],
)
def test_quick_paths_import_no_event_loop_and_no_async_http(
    args: list[str], env: dict[str, str]
) -> None:
    heavy, stdout = imported(*args, env=env)
    assert heavy == [], (args, heavy)
    assert stdout  # and they did their job


async def test_one_shot_commands_talk_to_a_hive_without_trio(hive: Hive) -> None:
    env = {"HIVE_URL": hive.url, "HIVE_TOKEN": hive.token}
    heavy, stdout = imported("jobs", env=env)
    assert heavy == [] and stdout.startswith("JOB")
    heavy, stdout = imported("catalog", "--json", env=env)
    assert heavy == [] and "chatty" in stdout


def test_the_lazy_map_keeps_each_commands_own_short_help() -> None:
    ctx = click.Context(main)
    for name, lazy in COMMANDS.items():
        command = lazy.load()
        assert command.name == name
        assert click.Command(name, help=lazy.short_help).get_short_help_str(200) == (
            command.get_short_help_str(200)
        ), name
    assert main.list_commands(ctx) == sorted(COMMANDS)


def test_help_lists_every_command() -> None:
    text = main.get_help(click.Context(main, info_name="keeper"))
    for name in COMMANDS:
        assert f"  {name} " in text


# -- several hives ------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> KeeperConfig:
    path = tmp_path / "config.toml"
    path.write_text(
        '[hives.a]\nurl = "http://a.lan:7835"\n[hives.b]\nurl = "https://b.lan:1"\ntoken = "t"\n'
    )
    return KeeperConfig.load(path)


def test_hive_lists_names_urls_and_all(config: KeeperConfig) -> None:
    assert [t.label for t in config.resolve_many("a,b", {})] == ["a", "b"]
    assert [t.label for t in config.resolve_many("all", {})] == ["a", "b"]
    mixed = config.resolve_many("b, http://10.0.0.9:7835", {})
    assert [t.label for t in mixed] == ["b", "10.0.0.9:7835"]
    assert config.resolve_many(None, {"HIVE_URL": "a,b"})[1].name == "b"
    assert len(config.resolve_many("a", {})) == 1
    assert HiveTarget(url="http://h:1").label == "h:1"


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ("a,a", "names http://a.lan:7835 twice"),
        ("http://a.lan:7835/,a", "twice"),
        ("a,,b", "empty name"),
        ("a,nope", "no hive named 'nope'"),
        ("http://h:1,https://h:1", "same name"),
    ],
)
def test_bad_hive_lists_are_one_clear_line(config: KeeperConfig, choice: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.resolve_many(choice, {})


def test_all_with_nothing_configured() -> None:
    with pytest.raises(ConfigError, match="no hives are configured"):
        KeeperConfig(hives={}).resolve_many("all", {})


@pytest.mark.parametrize(
    ("codes", "interrupted", "expected"),
    [
        ([0, 0, 0], False, 0),
        ([0, 2, 5], False, 5),  # refused beats a job's own code
        ([0, 2, 7], False, 7),
        ([3, 2, 1], False, 3),
        ([0, 2, 1], False, 2),  # the first failing hive's job code
        ([125, 5, 0], False, 125),
        ([130, 130, 130], True, 130),
        ([130, 0, 1], True, 130),  # jobs that ended before the Ctrl+C do not undo it
        ([130, 124, 130], True, 124),
        ([130, 125, 130], True, 125),
    ],
)
def test_exit_codes_of_several_hives_combine(
    codes: list[int], interrupted: bool, expected: int
) -> None:
    assert combine(codes, interrupted=interrupted) == expected
    assert ExitCode.OK == 0


def console(**kwargs: object) -> tuple[FleetConsole, io.BytesIO, io.BytesIO]:
    out, err = io.BytesIO(), io.BytesIO()
    fleet = FleetConsole(["a", "b"], stdout=out, stderr=err, colour=False, live=False, **kwargs)  # type: ignore[arg-type]
    return fleet, out, err


def test_lines_of_several_hives_never_mix_inside_a_line() -> None:
    fleet, out, err = console()
    fleet.output("a", b"one\ntw", to_stdout=True)
    fleet.output("b", b"uno\nd", to_stdout=True)
    fleet.output("a", b"o\nthr", to_stdout=True)
    fleet.output("b", b"os\n", to_stdout=True)
    fleet.output("a", b"oops\n", to_stdout=False)
    fleet.message("b", "hive", "a message")
    fleet.finish("a")
    fleet.finish("b")
    assert out.getvalue() == b"[a] one\n[b] uno\n[a] two\n[b] dos\n[a] thr\n"
    assert err.getvalue() == b"[a] oops\n[b] hive: a message\n"


def test_json_lines_carry_the_hive_and_every_byte() -> None:
    fleet, out, err = console(as_json=True)
    fleet.output("a", b"text\n\xff\xfe\n", to_stdout=True)
    fleet.message("b", "keeper", "hello")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records == [
        {"hive": "a", "stream": "stdout", "line": "text"},
        {"hive": "a", "stream": "stdout", "line_b64": "//4="},
        {"hive": "b", "type": "keeper", "text": "hello"},
    ]
    assert err.getvalue() == b""


def test_the_live_line_shows_every_hives_stage_and_is_erased_before_output() -> None:
    out, err = io.BytesIO(), io.BytesIO()
    fleet = FleetConsole(["a", "b"], stdout=out, stderr=err, colour=False, live=True)
    fleet.output("b", b"==> Starting build()\n", to_stdout=True)
    fleet.tick()
    assert err.getvalue() == b"\r\x1b[2Ka: waiting \xc2\xb7 b: Starting build()"
    fleet.output("a", b"x\n", to_stdout=False)
    assert err.getvalue().endswith(b"\r\x1b[2K[a] x\n")  # erased, then the line
    fleet.set_stage("a", "cancelling")
    fleet.tick()
    fleet.close()
    assert err.getvalue().endswith(b"a: cancelling \xc2\xb7 b: Starting build()\r\x1b[2K")
