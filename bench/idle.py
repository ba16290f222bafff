"""Idle cost and start-up: what the hive costs while nothing happens, and how
long ``hive serve`` takes to be useful (the keeper's start-up: ``startup``).

Idle CPU is measured over the same windows for the hive (with 10 finished jobs)
and for a bare trio program sleeping forever, the floor for any trio daemon.
Wakeups (context switches of the event loop's thread) show a polling loop even when its CPU
time stays under the kernel's 10 ms accounting tick.
"""

from __future__ import annotations

import trio

from .harness import (
    PYTHON,
    Context,
    Figure,
    cpu_seconds,
    run_timed,
    running_hive,
    wait_job_ended,
)

FINISHED_JOBS = 10
#: CPU the idle hive may use, in ms per minute (one 10 ms tick).
IDLE_CPU_AIM = 10.0


def wakeups(pid: int) -> int:
    """Context switches of the main thread of ``pid`` (where trio's loop runs).

    Worker threads are left out: trio ends idle ones after a while, and the
    counts of an ended thread vanish from /proc.
    """
    with open(f"/proc/{pid}/task/{pid}/status") as f:
        return sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)


async def idle_cost(ctx: Context) -> list[Figure]:
    windows = ctx.repeats(6, 2)
    seconds = 10.0 if not ctx.quick else 5.0
    hive_cpu: list[float] = []
    hive_wake: list[float] = []
    floor_cpu: list[float] = []
    floor_wake: list[float] = []
    async with running_hive(ctx.scratch("state")) as hive, hive.client() as client:
        for _ in range(FINISHED_JOBS):
            job = await client.submit("noop", force=True)
            await wait_job_ended(hive, job["id"])
        sleeper = await trio.lowlevel.open_process(
            [PYTHON, "-c", "import trio; trio.run(trio.sleep_forever)"]
        )
        try:
            await trio.sleep(1.0)  # let both finish starting up: not part of idling
            ctx.log(f"idle: {windows} windows of {seconds:g} s")
            per_minute = 60 / seconds
            for _ in range(windows):
                before = [cpu_seconds(hive.pid), wakeups(hive.pid)]
                floor = [cpu_seconds(sleeper.pid), wakeups(sleeper.pid)]
                await trio.sleep(seconds)  # the measurement: nothing happens
                hive_cpu.append((cpu_seconds(hive.pid) - before[0]) * 1000 * per_minute)
                hive_wake.append((wakeups(hive.pid) - before[1]) * per_minute)
                floor_cpu.append((cpu_seconds(sleeper.pid) - floor[0]) * 1000 * per_minute)
                floor_wake.append((wakeups(sleeper.pid) - floor[1]) * per_minute)
        finally:
            sleeper.kill()
            await sleeper.wait()
    cpu_floor = Figure("idle", "trio.sleep_forever(): CPU", "ms/min", floor_cpu)
    cpu = Figure("idle", f"hive, {FINISHED_JOBS} finished jobs: CPU", "ms/min", hive_cpu)
    cpu.compare(cpu_floor).judge(f"<= {IDLE_CPU_AIM:g} ms/min", cpu.median <= IDLE_CPU_AIM)
    wake_floor = Figure("idle", "trio.sleep_forever(): wakeups", "/min", floor_wake)
    wake = Figure("idle", f"hive, {FINISHED_JOBS} finished jobs: wakeups", "/min", hive_wake)
    wake.compare(wake_floor)
    cpu_floor.note = "CPU from utime+stime in /proc/PID/stat (10 ms ticks)"
    return [cpu_floor, cpu, wake_floor, wake]


async def startup(ctx: Context) -> list[Figure]:
    runs = ctx.repeats(10, 4)
    ctx.log(f"startup: {runs} runs each")
    bare: list[float] = []
    ready: list[float] = []
    for _ in range(runs):
        bare.append(await run_timed([PYTHON, "-c", "pass"]) * 1000)
        async with running_hive(ctx.scratch("state")) as hive:
            ready.append(hive.ready_seconds * 1000)
    floor = Figure("idle", "python -c pass", "ms", bare)
    return [
        floor,
        Figure("idle", "hive serve: start to ready line", "ms", ready).compare(floor),
    ]


async def idle(ctx: Context) -> list[Figure]:
    """Idle CPU with finished jobs; hive start-up time."""
    return [*await idle_cost(ctx), *await startup(ctx)]
