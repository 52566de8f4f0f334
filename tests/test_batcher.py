"""The adaptive batcher on its own: a fake ``process`` records the batches it is given."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from serving.batcher import AdaptiveBatcher, QueueFull

# Long enough that a test passing proves the batcher did not wait for its deadline.
FOREVER = 3600.0


class Recorder:
    """``process`` for the batcher: doubles each item, records batches, can hold a batch until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.started = asyncio.Event()
        self.fail_on: int | None = None

    async def __call__(self, items: list[int]) -> Sequence[int]:
        self.batches.append(items)
        self.started.set()
        await self.hold.wait()
        if self.fail_on in items:
            raise ValueError(f"cannot process {self.fail_on}")
        return [2 * i for i in items]


async def held_first_batch(batcher: AdaptiveBatcher[int, int], recorder: Recorder) -> asyncio.Task[list[int]]:
    """Start a batch of [0] and keep it running until ``recorder.hold`` is set."""
    recorder.hold.clear()
    first = asyncio.create_task(batcher.submit([0]))
    await recorder.started.wait()
    return first


async def settle() -> None:
    """Let every task that can run do so."""
    for _ in range(5):
        await asyncio.sleep(0)


def run(coro: object) -> object:
    return asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


def test_lone_request_is_dispatched_at_once() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(recorder, max_batch_size=8, max_wait_s=FOREVER)
        assert await batcher.submit([21]) == [42]
        assert recorder.batches == [[21]]
        await batcher.close()

    run(scenario())


def test_requests_arriving_during_a_batch_share_the_next_one() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(recorder, max_batch_size=8, max_wait_s=FOREVER)
        first = await held_first_batch(batcher, recorder)
        others = [asyncio.create_task(batcher.submit([i])) for i in (1, 2, 3)]
        await settle()
        recorder.hold.set()
        assert await first == [0]
        assert [await t for t in others] == [[2], [4], [6]]
        assert recorder.batches == [[0], [1, 2, 3]]
        await batcher.close()

    run(scenario())


def test_a_batch_waits_for_as_many_items_as_the_previous_one_held() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(recorder, max_batch_size=8, max_wait_s=FOREVER)
        assert await batcher.submit([1, 2, 3]) == [2, 4, 6]
        # The load was three items: a lone item now waits for two more rather than going alone.
        lone = asyncio.create_task(batcher.submit([4]))
        await settle()
        assert recorder.batches == [[1, 2, 3]]
        rest = [asyncio.create_task(batcher.submit([i])) for i in (5, 6)]
        assert await lone == [8] and [await t for t in rest] == [[10], [12]]
        assert recorder.batches == [[1, 2, 3], [4, 5, 6]]
        await batcher.close()

    run(scenario())


def test_waiting_ends_at_max_wait() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(recorder, max_batch_size=8, max_wait_s=0.05)
        await batcher.submit([1, 2, 3])
        assert await batcher.submit([4]) == [8]
        assert recorder.batches == [[1, 2, 3], [4]]
        await batcher.close()

    run(scenario())


def test_batches_hold_at_most_max_batch_size_and_results_keep_their_order() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(recorder, max_batch_size=3, max_wait_s=FOREVER)
        first = await held_first_batch(batcher, recorder)
        big = asyncio.create_task(batcher.submit(list(range(1, 8))))
        await settle()
        recorder.hold.set()
        await first
        assert await big == [2 * i for i in range(1, 8)]
        assert [len(b) for b in recorder.batches] == [1, 3, 3, 1]
        await batcher.close()

    run(scenario())


def test_a_full_queue_is_split_into_batches_of_similar_size() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(
            recorder, max_batch_size=2, max_wait_s=FOREVER, size=lambda item: item
        )
        first = await held_first_batch(batcher, recorder)
        # Arrival order mixes short and long items; each batch keeps the oldest item and the
        # one nearest it in size.
        waiting = [asyncio.create_task(batcher.submit([i])) for i in (5, 100, 6, 99)]
        await settle()
        recorder.hold.set()
        await first
        await asyncio.gather(*waiting)
        assert recorder.batches == [[0], [5, 6], [100, 99]]
        await batcher.close()

    run(scenario())


def test_an_error_reaches_the_requests_of_its_batch_only() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        recorder.fail_on = 13
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(recorder, max_batch_size=8, max_wait_s=0)
        with pytest.raises(ValueError, match="cannot process 13"):
            await batcher.submit([12, 13])
        assert await batcher.submit([14]) == [28]
        await batcher.close()

    run(scenario())


def test_one_bad_item_fails_only_the_request_that_sent_it() -> None:
    # Three requests share one batch; the item 13 makes the whole batch fail. Retried alone, the
    # other requests get their answers and only the one that sent 13 sees the error.
    async def scenario() -> None:
        recorder = Recorder()
        recorder.fail_on = 13
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(recorder, max_batch_size=8, max_wait_s=FOREVER)
        first = await held_first_batch(batcher, recorder)
        good = asyncio.create_task(batcher.submit([1, 2]))
        bad = asyncio.create_task(batcher.submit([3, 13]))
        other = asyncio.create_task(batcher.submit([4]))
        await settle()
        recorder.hold.set()
        assert await first == [0]
        assert await good == [2, 4] and await other == [8]
        with pytest.raises(ValueError, match="cannot process 13"):
            await bad
        assert recorder.batches[1] == [1, 2, 3, 13, 4]
        assert sorted(map(tuple, recorder.batches[2:])) == [(1,), (2,), (3,), (4,), (13,)]
        await batcher.close()

    run(scenario())


def test_a_cancelled_request_is_not_processed() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(recorder, max_batch_size=8, max_wait_s=FOREVER)
        first = await held_first_batch(batcher, recorder)
        gone = asyncio.create_task(batcher.submit([1]))
        kept = asyncio.create_task(batcher.submit([2]))
        await settle()
        gone.cancel()
        await settle()
        recorder.hold.set()
        await first
        assert await kept == [4]
        assert recorder.batches == [[0], [2]]
        await batcher.close()

    run(scenario())


def test_close_cancels_what_is_still_queued() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(recorder, max_batch_size=8, max_wait_s=FOREVER)
        first = await held_first_batch(batcher, recorder)
        queued = asyncio.create_task(batcher.submit([1]))
        await settle()
        await batcher.close()
        with pytest.raises(asyncio.CancelledError):
            await first
        with pytest.raises(asyncio.CancelledError):
            await queued

    run(scenario())


def test_invalid_limits_are_refused() -> None:
    async def process(items: list[int]) -> list[int]:
        return items

    with pytest.raises(ValueError, match="max_batch_size"):
        AdaptiveBatcher(process, max_batch_size=0, max_wait_s=0.0)


def test_a_small_request_behind_large_ones_gets_its_turn() -> None:
    # Two requests of six items queue behind a running batch, then one of a single item. Taking
    # turns, the small one runs in the second batch from now, not after all twelve items.
    async def scenario() -> None:
        recorder = Recorder()
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(recorder, max_batch_size=1, max_wait_s=FOREVER)
        first = await held_first_batch(batcher, recorder)
        large = [asyncio.create_task(batcher.submit(list(range(k, k + 6)))) for k in (10, 20)]
        await settle()
        small = asyncio.create_task(batcher.submit([99]))
        await settle()
        recorder.hold.set()
        await first
        assert await small == [198]
        assert [await t for t in large] == [[2 * i for i in range(k, k + 6)] for k in (10, 20)]
        assert recorder.batches[:4] == [[0], [10], [20], [99]]
        await batcher.close()

    run(scenario())


def test_every_waiting_request_gets_a_share_of_a_full_batch() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(recorder, max_batch_size=4, max_wait_s=FOREVER)
        first = await held_first_batch(batcher, recorder)
        large = [asyncio.create_task(batcher.submit(list(range(k, k + 8)))) for k in (10, 20)]
        small = asyncio.create_task(batcher.submit([99]))
        await settle()
        recorder.hold.set()
        await first
        await asyncio.gather(small, *large)
        # One item each (four slots, three requests), then the leader's next one fills the batch.
        assert recorder.batches[1] == [10, 20, 99, 11]
        await batcher.close()

    run(scenario())


def test_a_full_queue_refuses_a_request_at_once_and_queues_nothing_of_it() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(
            recorder, max_batch_size=2, max_wait_s=FOREVER, max_queued=4
        )
        first = await held_first_batch(batcher, recorder)
        queued = asyncio.create_task(batcher.submit([1, 2]))
        await settle()
        assert batcher.queued == 3
        with pytest.raises(QueueFull, match="3 texts are queued, 2 more would pass the bound of 4") as refused:
            await batcher.submit([3, 4])
        assert (refused.value.queued, refused.value.requested, refused.value.limit) == (3, 2, 4)
        # One more fits exactly.
        fits = asyncio.create_task(batcher.submit([5]))
        await settle()
        recorder.hold.set()
        assert await first == [0] and await queued == [2, 4] and await fits == [10]
        assert 3 not in {i for b in recorder.batches for i in b}
        assert batcher.queued == 0
        await batcher.close()

    run(scenario())


def test_the_items_of_a_request_that_ends_early_are_dropped_and_counted() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        dropped: list[int] = []
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(
            recorder, max_batch_size=2, max_wait_s=FOREVER, on_drop=dropped.append
        )
        first = await held_first_batch(batcher, recorder)
        gone = asyncio.create_task(batcher.submit([1, 2, 3, 4, 5]))
        await settle()
        gone.cancel()
        await settle()
        recorder.hold.set()
        await first
        # None of its five items ran; the running batch's own item is not counted.
        assert dropped == [5] and recorder.batches == [[0]] and batcher.queued == 0
        await batcher.close()

    run(scenario())
