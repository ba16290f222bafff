"""How long the keeper takes to be useful: ``--help``, ``--version``, printing
the completion script, completing a command name, and ``keeper jobs`` against
a local hive, each as a ratio to ``python -c pass`` measured in the same run.

A person runs these at a prompt (and a shell runs ``keeper completion`` in
every new terminal), so the aim is 3x bare Python: what click itself costs,
and no trio, httpx or trio-websocket on these paths (issue 17). The commands
are run as people run them, through the installed ``keeper`` script, one of
each in turn per round so that a drift of the machine's load is shared.
"""

from __future__ import annotations

import compileall
import os
from pathlib import Path

import hivewire
import keeper

from .harness import PYTHON, Context, Figure, run_timed, running_hive, wait_job_ended

#: Aim of issue 17: each command within this many times `python -c pass`.
AIM = 3.0

#: Jobs the hive has when `keeper jobs` lists them.
JOBS = 3


def keeper_script() -> list[str]:
    """The `keeper` console script of this interpreter's environment."""
    script = Path(PYTHON).parent / "keeper"
    return [str(script)] if script.exists() else [PYTHON, "-m", "keeper"]


def compile_packages() -> None:
    """Bytecode for the keeper's packages, as an install has: with an editable
    install and PYTHONDONTWRITEBYTECODE (set on these machines) every start
    would compile them from source, a cost no installed keeper pays."""
    for package in (keeper, hivewire):
        compileall.compile_dir(Path(package.__file__).parent, quiet=1)


async def startup(ctx: Context) -> list[Figure]:
    runs = ctx.repeats(20, 6)
    compile_packages()
    command = keeper_script()
    async with running_hive(ctx.scratch("state")) as hive:
        async with hive.client() as client:
            for _ in range(JOBS):
                job = await client.submit("noop", force=True)
                await wait_job_ended(hive, job["id"])
        env = {**os.environ, "HIVE_URL": hive.url, "HIVE_TOKEN": hive.token}
        complete = {**env, "_KEEPER_COMPLETE": "bash_complete", "COMP_WORDS": "keeper do"}
        complete["COMP_CWORD"] = "1"
        cases: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass": ([PYTHON, "-c", "pass"], env),
            "keeper --help": ([*command, "--help"], env),
            "keeper --version": ([*command, "--version"], env),
            "keeper completion bash": ([*command, "completion", "bash"], env),
            "complete a command name (keeper do<TAB>)": (command, complete),
            "keeper jobs (local hive, 3 jobs)": ([*command, "jobs"], env),
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        ctx.log(f"startup: {runs} rounds of {len(cases)} commands")
        for _ in range(runs):
            for name, (argv, case_env) in cases.items():
                samples[name].append(await run_timed(argv, env=case_env) * 1000)
    names = list(cases)
    floor = Figure("startup", names[0], "ms", samples[names[0]])
    figures = [floor]
    for name in names[1:]:
        figure = Figure("startup", name, "ms", samples[name]).compare(floor)
        assert figure.ratio is not None
        figures.append(figure.judge(f"<= {AIM:g}x python -c pass", figure.ratio <= AIM))
    floor.note = f"each command through {Path(command[0]).name}, as installed (with bytecode)"
    return figures
