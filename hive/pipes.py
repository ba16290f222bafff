"""Copying a job's output pipes into its log.

The hive owns the pipes of a job's leader and reads them in tasks of the job's
nursery (``trio.run_process`` would wait for an EOF that a grandchild can hold
off forever). Each reader runs in its own *shielded* scope: when the job is
cancelled it keeps reading, so whatever the processes print while they are
torn down still reaches the log; the job cancels :attr:`PipeReader.scope`
once the teardown is over.
"""

from __future__ import annotations

import contextlib
import fcntl

import trio

from hivewire.protocol import MAX_FRAME_PAYLOAD, Stream

from .joblog import JobLog

#: The hive enlarges job pipes to this size, so that a job with bulk output
#: blocks less often on a full pipe while the hive is busy sending.
PIPE_SIZE = 1024 * 1024

#: Bytes asked of a pipe per read: one read fills at most one output frame.
#: Reading the whole pipe (1 MiB) at once made every later copy of the chunk
#: (framing, wsproto, the socket) bigger and the hive measurably slower
#: (``python -m bench bulk``).
READ_SIZE = MAX_FRAME_PAYLOAD


class PipeReader:
    """Copies one pipe of a job into its log until EOF."""

    def __init__(self, log: JobLog, stream: Stream, pipe: trio.abc.ReceiveStream | None) -> None:
        assert pipe is not None
        self.log, self.stream, self.pipe = log, stream, pipe
        self.scope = trio.CancelScope(shield=True)
        self.done = trio.Event()
        enlarge_pipe(pipe)

    async def run(self) -> None:
        try:
            with self.scope:
                async with self.pipe:
                    while chunk := await self.pipe.receive_some(READ_SIZE):
                        self.log.append_output(self.stream, bytes(chunk))
                        await self.log.wait_writable()
        finally:
            self.done.set()


def enlarge_pipe(pipe: trio.abc.ReceiveStream) -> None:
    """Ask for a bigger pipe buffer: fewer, larger reads for bulk output."""
    fileno = getattr(pipe, "fileno", None)
    if fileno is None:
        return
    # Capped by /proc/sys/fs/pipe-max-size for unprivileged users: then keep the default.
    with contextlib.suppress(OSError):
        fcntl.fcntl(fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
