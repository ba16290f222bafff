"""The followers' message budget (hive.api.pace), on trio's virtual clock."""

from __future__ import annotations

from collections import Counter

import trio
import trio.testing

from hive.api.pace import BUDGET, FREE_FOLLOWERS, GROUPS, Follower, Pace


async def send_for(pace: Pace, seconds: float, counts: list[int], index: int) -> None:
    with pace.follower() as follower, trio.move_on_after(seconds):
        while True:
            counts[index] += 1  # a message (sending one is a checkpoint)
            await trio.lowlevel.checkpoint()
            await follower.turn()


async def messages(followers: int, seconds: float) -> list[int]:
    pace = Pace()
    counts = [0] * followers
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pace.run)
        async with trio.open_nursery() as senders:
            for index in range(followers):
                senders.start_soon(send_for, pace, seconds, counts, index)
        nursery.cancel_scope.cancel()
    return counts


async def test_many_followers_share_the_budget(autojump_clock: trio.testing.MockClock) -> None:
    seconds = 10.0
    counts = await messages(1000, seconds)
    total = sum(counts) / seconds
    assert BUDGET * 0.5 <= total <= BUDGET * 1.1, total
    assert min(counts) >= seconds * BUDGET / 1000 * 0.5  # every follower gets turns


async def test_few_followers_never_wait(autojump_clock: trio.testing.MockClock) -> None:
    pace = Pace()
    async with trio.open_nursery() as nursery:
        await nursery.start(pace.run)
        with pace.follower() as follower:
            others = [pace.follower().__enter__() for _ in range(FREE_FOLLOWERS - 1)]
            started = trio.current_time()
            for _ in range(1000):
                await follower.turn()
            assert trio.current_time() == started  # no virtual time passed: no wait
            for other in others:
                other.__exit__(None, None, None)
        nursery.cancel_scope.cancel()


async def test_a_crowd_that_thins_out_is_released(autojump_clock: trio.testing.MockClock) -> None:
    pace = Pace()
    async with trio.open_nursery() as nursery:
        await nursery.start(pace.run)
        crowd = [pace.follower().__enter__() for _ in range(FREE_FOLLOWERS + 5)]
        waiting = trio.Event()

        async def wait_turn() -> None:
            await crowd[0].turn()
            waiting.set()

        nursery.start_soon(wait_turn)
        for member in crowd[1:]:
            member.__exit__(None, None, None)
        with trio.fail_after(1):
            await waiting.wait()
        nursery.cancel_scope.cancel()


async def test_the_budget_is_the_one_given(autojump_clock: trio.testing.MockClock) -> None:
    """``hive serve --follower-messages`` sets the budget; half of it halves the rate."""
    seconds = 10.0
    for budget in (BUDGET, BUDGET / 2):
        pace = Pace(budget=budget)
        counts = [0] * 500
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pace.run)
            async with trio.open_nursery() as senders:
                for index in range(len(counts)):
                    senders.start_soon(send_for, pace, seconds, counts, index)
            nursery.cancel_scope.cancel()
        assert budget * 0.5 <= sum(counts) / seconds <= budget * 1.1, (budget, sum(counts))


class Log:
    """A stand-in for a job's log as a feed sees it (hive.api.pace.Source)."""

    def __init__(self) -> None:
        self.last_seq = 0
        self.complete = False
        self.watchers = 0
        self._grown = trio.Event()

    async def grown(self, seq: int) -> bool:
        self.watchers += 1
        try:
            while self.last_seq <= seq and not self.complete:
                await self._grown.wait()
        finally:
            self.watchers -= 1
        return self.last_seq > seq

    def append(self, complete: bool = False) -> None:
        self.last_seq += 1
        self.complete = complete
        self._grown.set()
        self._grown = trio.Event()


async def test_a_write_reaches_a_crowd_group_by_group(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One watcher waits on the log for all followers; a write wakes them at
    their turns, spread over a round, not all in one step of the event loop."""
    pace, log, count = Pace(), Log(), 1000
    woken: list[float] = []

    async def follow(follower: Follower) -> None:
        await follower.news()
        woken.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        await nursery.start(pace.run)
        feed = pace.open_feed(log)
        crowd = [pace.follower(feed).__enter__() for _ in range(count)]
        async with trio.open_nursery() as followers:
            for follower in crowd:
                followers.start_soon(follow, follower)
            await trio.sleep(60)  # nothing written: nobody is woken
            assert woken == [] and log.watchers == 1
            log.append()
            started = trio.current_time()
        round_ = count / BUDGET
        assert len(woken) == count and max(woken) - started <= round_ * 1.1
        assert max(Counter(woken).values()) <= count / GROUPS * 2  # a few groups a step at most
        pace.close_feed(feed)
        with trio.fail_after(1):  # the watcher stops with the last follower
            while log.watchers:
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()


async def test_a_complete_log_releases_its_followers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pace, log = Pace(), Log()
    async with trio.open_nursery() as nursery:
        await nursery.start(pace.run)
        feed = pace.open_feed(log)
        crowd = [pace.follower(feed).__enter__() for _ in range(FREE_FOLLOWERS * 4)]
        with trio.fail_after(5):
            async with trio.open_nursery() as followers:
                for follower in crowd:
                    followers.start_soon(follower.news)
                await trio.sleep(1)
                log.append(complete=True)
        assert feed.done
        with trio.fail_after(0):
            await crowd[0].news()  # a feed that stopped never makes anyone wait
        nursery.cancel_scope.cancel()


async def test_few_followers_wait_on_the_log_itself(autojump_clock: trio.testing.MockClock) -> None:
    """No watcher while the hive is not crowded: a lone follower (the bulk and
    latency paths) is woken by the log directly, with no task in between."""
    pace, log = Pace(), Log()
    async with trio.open_nursery() as nursery:
        await nursery.start(pace.run)
        feed = pace.open_feed(log)
        with pace.follower(feed) as follower, trio.fail_after(0):
            await follower.news()
        assert log.watchers == 0 and not feed.watched
        nursery.cancel_scope.cancel()
