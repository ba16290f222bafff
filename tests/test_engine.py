"""The job engine on its own: real trio, a real state dir, jobs without HTTP."""

from __future__ import annotations

from pathlib import Path

import trio

from hive.jobs import Job, JobEngine, JobSpec, JobState
from hivewire.protocol import ControlEvent


async def test_a_cancel_during_the_finish_step_lets_it_complete(tmp_path: Path) -> None:
    """The finish step (the install) only renames: once it runs, a cancel says
    so and the job ends as the step does, instead of a "cancelled" that would
    hide a worker that was installed all the same."""
    finishing = trio.Event()
    proceed = trio.Event()

    async def finish(job: Job) -> None:
        finishing.set()
        await proceed.wait()

    spec = JobSpec(operation="test", worker="w", argv=[], env={}, finish=finish)
    async with JobEngine(tmp_path, grace=1).running() as engine:
        job = engine.submit(spec)
        await finishing.wait()
        engine.cancel(job.id, by="a test")
        proceed.set()
        await job.ended.wait()
        events = [batch async for batch in job.log.follow(0)]
    assert job.state == JobState.SUCCEEDED
    texts = [e.body.get("text", "") for b in events for e in b if isinstance(e, ControlEvent)]
    assert any("after every process of the job had ended" in t for t in texts), texts
