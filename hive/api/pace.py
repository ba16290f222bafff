"""A budget of websocket messages per second for all followers together.

Every message to a follower costs the event loop the same fixed work (Quart's
and hypercorn's layers, wsproto's framing, a ``send(2)``, and several trips
through trio's scheduler), whatever it carries. A job printing 10 lines a
second followed by 1,000 followers was 10,000 messages a second: the hive sat
at 80-98 % CPU and, trio's scheduler being fair, ``GET /v1/health`` waited
behind every follower at every one of its own steps, for 3 s (a cancel, 9 s).
A follower that keeps up gets one message per write of the job, so what grows
the cost is the number of followers times the job's rate of writes.

So while more than :data:`FREE_FOLLOWERS` follow, each follower sends at most
one batch per turn (one message, unless control events sit between its output),
and turns come round at ``followers / BUDGET`` second intervals. What the job
writes in the meantime piles up in the log and goes out as one message (the
stream coalesces consecutive output): nothing is lost or reordered, only
batched. The turn comes before the send, so a line that wakes every follower
of a job at once still goes out group by group over a round, not as a burst of
a thousand sends. With a handful of followers nothing waits at all.
Followers are dealt into :data:`GROUPS` groups whose turns are staggered, so
that each step of the event loop serves a small group, never all followers
at once: a request arriving meanwhile waits for a few followers, not for a
thousand. Turns are events set by one ticker task (:meth:`Pace.run`), not a
timer per follower, whose expiry (a cancellation, an exception) cost more
than the message itself.
"""

from __future__ import annotations

import trio

#: Messages per second the hive spends on all followers together, before they
#: are batched (``hive serve --follower-messages``). Each costs 100-200 us of
#: the event loop on these machines, most of it hypercorn's and trio's path to
#: a ``send(2)`` and the ``send(2)`` itself; 2,000 a second kept a hive with
#: 1,000 followers at 30-45 % CPU and its health p99 at 150-460 ms on a loaded
#: 2-core machine, 1,000 at 25-33 % and 110-320 ms (BENCHMARKS.md, fanout).
BUDGET = 1000.0

#: Followers up to this many are never paced.
FREE_FOLLOWERS = 8

#: Groups whose turns are staggered across one round: with 1,000 followers a
#: tick serves 10, so that a request waits for ten sends, not a hundred.
GROUPS = 100

#: The ticker wakes at most this often; with few followers, several groups
#: get their turn at each tick.
MIN_TICK = 0.005


class Pace:
    """Counts the hive's followers and gives them turns while there are many."""

    def __init__(self, budget: float = BUDGET, groups: int = GROUPS) -> None:
        self.budget = budget
        self.followers = 0
        self._turns = [trio.Event() for _ in range(groups)]
        self._dealt = 0
        self._waiting = 0
        self._wake = trio.Event()
        self._running = False

    @property
    def crowded(self) -> bool:
        return self._running and self.followers > FREE_FOLLOWERS

    def follower(self) -> Follower:
        return Follower(self)

    def _join(self) -> int:
        self.followers += 1
        self._dealt += 1
        return self._dealt % len(self._turns)

    async def run(self) -> None:
        """Give the turns, for as long as the hive serves. Sleeps on an event
        while nobody waits for a turn: an idle hive is not woken."""
        self._running = True
        groups = len(self._turns)
        try:
            group = 0
            while True:
                if self.followers <= FREE_FOLLOWERS or not self._waiting:
                    self._release_all()
                    self._wake = trio.Event()
                    await self._wake.wait()
                    continue
                interval = self.followers / self.budget  # one round of every group
                tick = max(interval / groups, MIN_TICK)
                await trio.sleep(tick)
                for _ in range(min(groups, max(1, round(groups * tick / interval)))):
                    self._release(group)
                    group = (group + 1) % groups
        finally:
            self._running = False
            self._release_all()

    async def turn(self, group: int) -> None:
        if not self.crowded:
            return
        turn = self._turns[group]
        self._waiting += 1
        self._wake.set()
        try:
            await turn.wait()
        finally:
            self._waiting -= 1

    def _release(self, group: int) -> None:
        event, self._turns[group] = self._turns[group], trio.Event()
        event.set()

    def _release_all(self) -> None:
        for group in range(len(self._turns)):
            self._release(group)


class Follower:
    """One follower's place in the budget; a context manager for its lifetime."""

    def __init__(self, pace: Pace) -> None:
        self.pace = pace
        self.group = 0

    def __enter__(self) -> Follower:
        self.group = self.pace._join()
        return self

    def __exit__(self, *exc: object) -> None:
        self.pace.followers -= 1

    async def turn(self) -> None:
        """Call before each send but the first: while the hive is crowded,
        wait for this follower's next turn."""
        await self.pace.turn(self.group)
