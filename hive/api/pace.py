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

A follower with nothing left to read does not wait on the job's log itself
either: a line would wake every follower of the job in one step of the event
loop (a thousand tasks, tens of milliseconds that every request waits behind).
It waits on its job's :class:`Feed` instead: one watcher task per followed job
waits on the log, and each new entry is announced group by group, at each
group's turn, so a line costs one wake-up at once and the rest spread over a
round. While the job writes nothing, nothing is woken.
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio

log = logging.getLogger("hive.api")

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


class Source(Protocol):
    """What a :class:`Feed` watches: a job's log, as far as followers may see it."""

    @property
    def last_seq(self) -> int: ...

    async def grown(self, seq: int) -> bool:
        """Wait until there is an entry after ``seq``; False once there never will be."""
        ...


class Feed:
    """The doorbell of one followed job: rung by its watcher when the job's log
    grows, answered one group of followers at a time."""

    def __init__(self, source: Source, groups: int) -> None:
        self.source = source
        #: A watcher was started: the first time a follower waited on the
        #: feed, while the hive was crowded (few followers wait on the log).
        self.watched = False
        #: The watcher stopped (the log is complete, or could not be watched):
        #: followers wait on the log itself.
        self.done = False
        self.scope = trio.CancelScope()
        self._news = [trio.Event() for _ in range(groups)]

    def _release(self, group: int) -> None:
        event, self._news[group] = self._news[group], trio.Event()
        event.set()


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
        self._nursery: trio.Nursery | None = None
        self._feeds: set[Feed] = set()
        #: Feeds with news, and how many groups are still to hear it.
        self._pending: dict[Feed, int] = {}

    @property
    def crowded(self) -> bool:
        return self._running and self.followers > FREE_FOLLOWERS

    def follower(self, feed: Feed | None = None) -> Follower:
        return Follower(self, feed)

    def _join(self) -> int:
        self.followers += 1
        self._dealt += 1
        return self._dealt % len(self._turns)

    def open_feed(self, source: Source) -> Feed:
        """A feed for a job that followers start to follow; :meth:`close_feed`
        once the last has left."""
        feed = Feed(source, len(self._turns))
        self._feeds.add(feed)
        return feed

    def close_feed(self, feed: Feed) -> None:
        feed.scope.cancel()
        self._feeds.discard(feed)
        self._pending.pop(feed, None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Give the turns, for as long as the hive serves. Sleeps on an event
        while nobody waits for a turn and no job has news: an idle hive is not
        woken."""
        groups = len(self._turns)
        try:
            async with trio.open_nursery() as self._nursery:
                self._running = True
                task_status.started()
                group = 0
                while True:
                    if self.followers <= FREE_FOLLOWERS or not (self._waiting or self._pending):
                        self._release_all(feeds=self.followers <= FREE_FOLLOWERS)
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
            self._nursery = None
            self._release_all(feeds=True)

    async def _watch(self, feed: Feed) -> None:
        with feed.scope:
            try:
                while await feed.source.grown(feed.source.last_seq):
                    self._announce(feed)
            except Exception:
                log.exception("watching a followed job's log failed; its followers wait on it")
            finally:
                feed.done = True
                self._announce(feed)

    def _announce(self, feed: Feed) -> None:
        if feed in self._feeds:
            self._pending[feed] = len(self._turns)  # a whole round from now
            self._wake.set()

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

    async def news(self, feed: Feed, group: int) -> None:
        if not self.crowded or feed.done or feed not in self._feeds:
            return
        if not feed.watched:
            if self._nursery is None:
                return
            feed.watched = True
            self._nursery.start_soon(self._watch, feed)
        await feed._news[group].wait()

    def _release(self, group: int) -> None:
        event, self._turns[group] = self._turns[group], trio.Event()
        event.set()
        for feed in list(self._pending):
            feed._release(group)
            self._pending[feed] -= 1
            if not self._pending[feed]:
                del self._pending[feed]

    def _release_all(self, *, feeds: bool) -> None:
        for group in range(len(self._turns)):
            self._release(group)
            if feeds:
                for feed in self._feeds:
                    feed._release(group)


class Follower:
    """One follower's place in the budget; a context manager for its lifetime."""

    def __init__(self, pace: Pace, feed: Feed | None = None) -> None:
        self.pace = pace
        self.feed = feed
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

    async def news(self) -> None:
        """Call when the job's log has nothing more for this follower yet: while
        the hive is crowded, wait until it has, and it is this follower's turn
        (returns at once otherwise; the caller then waits on the log)."""
        if self.feed is not None:
            await self.pace.news(self.feed, self.group)
