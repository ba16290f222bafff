"""The keeper as people and scripts use it: plain pipes, a live terminal,
JSON for scripts, shell completion, named hives."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import trio

from .support import ROOT, Hive, keeper, keeper_in

ESC = b"\x1b["


async def follow_on_a_terminal(hive: Hive, env: dict[str, str]) -> tuple[int, bytes, bytes]:
    """`keeper download pause --follow` with stderr on a pty, stdout on a pipe."""
    master, slave = pty.openpty()
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "keeper", "--hive", hive.url, "download", "pause", "--follow"],
            stdout=subprocess.PIPE,
            stderr=slave,
            cwd=ROOT,
            env={**env, "TERM": "xterm"},
        )
    finally:
        os.close(slave)
    terminal = b""
    stdout = b""

    async def read_terminal() -> None:
        nonlocal terminal
        async with trio.lowlevel.FdStream(master) as stream:
            try:
                while chunk := await stream.receive_some(65536):
                    terminal += chunk
            except trio.BrokenResourceError:  # EIO: every writer of the pty has gone
                pass

    async def read_stdout() -> None:
        nonlocal stdout
        assert process.stdout is not None
        async with process.stdout:
            while chunk := await process.stdout.receive_some(65536):
                stdout += chunk

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_terminal)
            nursery.start_soon(read_stdout)
            await process.wait()
    return process.returncode, stdout, terminal


async def job_stdout(hive: Hive) -> bytes:
    async with hive.client() as client:
        jobs = (await client.get("/v1/jobs")).json()["jobs"]
        return (await client.get(f"/v1/jobs/{jobs[-1]['id']}/log")).content


async def test_piped_output_is_plain_lines(hive: Hive) -> None:
    result = await keeper(hive, "download", "pause", "--follow")
    assert result.returncode == 0, result.stderr
    assert ESC.decode() not in result.stderr
    assert result.stdout == await job_stdout(hive)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("keeper: job ") and "succeeded; exit code 0; in " in last


async def test_a_terminal_gets_colour_and_a_live_line_that_never_touches_the_output(
    hive: Hive,
) -> None:
    code, stdout, terminal = await follow_on_a_terminal(hive, hive.keeper_env())
    assert code == 0, terminal
    assert stdout == await job_stdout(hive)  # the job's bytes, exactly
    assert b"\x1b[2m[Starting build()] " in terminal  # the live line, dimmed
    assert b"\x1b[32mkeeper:\x1b[0m job " in terminal  # the summary, green
    assert terminal.rstrip().endswith(b"s")  # ends on the summary, the live line erased
    assert b"\r\x1b[2K" in terminal


async def test_no_color_is_respected_on_a_terminal(hive: Hive) -> None:
    code, _stdout, terminal = await follow_on_a_terminal(
        hive, {**hive.keeper_env(), "NO_COLOR": "1"}
    )
    assert code == 0, terminal
    assert b"\x1b[3" not in terminal and b"\x1b[2m" not in terminal
    assert b"keeper: job " in terminal


async def test_json_for_scripts(hive: Hive) -> None:
    submitted = await keeper(hive, "download", "chatty", "--json")
    job = json.loads(submitted.stdout)
    assert job["worker"] == "chatty" and job["state"] == "queued"
    followed = await keeper(hive, "follow", job["id"])
    assert followed.returncode == 0
    status = json.loads((await keeper(hive, "status", job["id"], "--json")).stdout)
    assert status["state"] == "succeeded" and status["id"] == job["id"]
    lines = (await keeper(hive, "jobs", "--json")).stdout.decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [job["id"]]
    cancel = await keeper(hive, "cancel", job["id"], "--json")
    assert cancel.returncode == 0 and json.loads(cancel.stdout)["state"] == "succeeded"


async def test_completion_offers_the_hives_workers_and_jobs(hive: Hive) -> None:
    job_id = (await keeper(hive, "download", "chatty")).stdout.decode().strip()
    env = {**hive.keeper_env(), "HIVE_URL": hive.url, "_KEEPER_COMPLETE": "bash_complete"}
    workers = await keeper_in({**env, "COMP_WORDS": "keeper download ch", "COMP_CWORD": "2"})
    assert "plain,chatty" in workers.stdout.decode().splitlines()
    jobs = await keeper_in({**env, "COMP_WORDS": "keeper status ", "COMP_CWORD": "2"})
    assert f"plain,{job_id}" in jobs.stdout.decode().splitlines()
    script = await keeper_in(hive.keeper_env(), "completion", "bash")
    assert b"_KEEPER_COMPLETE=bash_complete" in script.stdout


async def test_the_bash_script_completes_in_bash(hive: Hive) -> None:
    """The printed script, evaluated by a real bash, completes a command name
    (the installed `keeper` script answers the shell's question)."""
    script = (await keeper_in(hive.keeper_env(), "completion", "bash")).stdout.decode()
    probe = "\n".join(
        [
            script,
            "COMP_WORDS=(keeper do); COMP_CWORD=1; _keeper_completion keeper do keeper",
            'printf "%s\\n" "${COMPREPLY[@]}"',
        ]
    )
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    with trio.fail_after(60):
        done = await trio.run_process(
            ["bash", "--norc", "-c", probe],
            capture_stdout=True,
            capture_stderr=True,
            env={**hive.keeper_env(), "PATH": path},
        )
    assert done.stdout.decode().split() == ["download"], done.stderr


async def test_named_hives(hive: Hive, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'default = "here"\n'
        f'[hives.here]\nurl = "{hive.url}"\ntoken = "{hive.token}"\n'
        '[hives.gone]\nurl = "http://127.0.0.1:9"\n'
    )
    env = {**os.environ, "KEEPER_CONFIG": str(config)}
    env.pop("HIVE_URL", None)
    env.pop("HIVE_TOKEN", None)
    listed = await keeper_in(env, "hives", "--json")
    rows = {row["name"]: row for row in map(json.loads, listed.stdout.decode().splitlines())}
    assert rows["here"]["reachable"] and rows["here"]["default"]
    assert not rows["gone"]["reachable"] and "cannot reach" in rows["gone"]["error"]
    by_default = await keeper_in(env, "jobs", "--json")
    by_name = await keeper_in(env, "--hive", "here", "jobs", "--json")
    assert by_default.returncode == by_name.returncode == 0
    unknown = await keeper_in(env, "--hive", "nowhere", "jobs")
    assert unknown.returncode == 2
    assert "no hive named 'nowhere' (known: gone, here)" in unknown.stderr
