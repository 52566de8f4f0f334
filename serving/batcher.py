"""Adaptive batching: items submitted by concurrent requests run together in one ``process`` call.

A plain asyncio class with no KServe or model in it. One batch runs at a time; while it runs,
newly submitted items queue, and they form the next batch as soon as it finishes. A batch is
dispatched when it holds as many items as the previous one did (the current load), when it
is full, or when its oldest item has waited ``max_wait_s``, whichever comes first, and at once
when items are left over from a backlog the previous batch could not take. So a lone
request under light load is dispatched at once (the previous batch held one item), while a
steady stream of concurrent requests fills each batch instead of alternating between a full
batch and a few stragglers.

When more items wait than a batch holds, requests take turns (round robin): the request
served least recently leads the batch, every waiting request gets its share of the rest, and
within those shares the items closest in size to the leading one go first, so batches hold
texts of similar length. A small request that arrives behind large ones is in one of the next
few batches, not behind all of their items.

The queue is bounded: ``submit`` raises ``QueueFull`` at once when accepting its items would
put more than ``max_queued`` items in the batcher (waiting or running). The items of a request
that ends early (its caller cancelled, e.g. because its client left) leave the queue unrun.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class QueueFull(Exception):
    """``submit`` would put more than ``limit`` items in the batcher; nothing of it was queued."""

    def __init__(self, queued: int, requested: int, limit: int):
        super().__init__(
            f"server busy: {queued} texts are queued, {requested} more would pass the bound of {limit} "
            "(--max-queued-texts); retry later"
        )
        self.queued, self.requested, self.limit = queued, requested, limit


@dataclass(eq=False)
class _Request:
    """The items of one ``submit`` call. Requests with the lowest ``turn`` lead the next batch."""

    turn: int


@dataclass
class _Pending(Generic[T, R]):
    item: T
    size: int
    arrived: float
    request: _Request = field(repr=False)
    future: asyncio.Future[R] = field(repr=False)
    dispatched: bool = False


class AdaptiveBatcher(Generic[T, R]):
    """Gathers items from concurrent ``submit`` calls into batches for one ``process`` call each.

    ``process`` takes a list of items and returns one result per item, in order (it should run
    heavy work off the event loop, e.g. in an executor). ``size`` gives an item's length (tokens)
    for grouping; ``on_batch`` is told the size of every dispatched batch; ``max_queued`` bounds
    the items in the batcher (``None``: no bound); ``on_drop`` is told how many items of a request
    that ended early left the queue without running.
    """

    def __init__(
        self,
        process: Callable[[list[T]], Awaitable[Sequence[R]]],
        max_batch_size: int,
        max_wait_s: float,
        size: Callable[[T], int] = lambda _: 1,
        on_batch: Callable[[int], None] | None = None,
        max_queued: int | None = None,
        on_drop: Callable[[int], None] | None = None,
    ):
        if max_batch_size < 1 or max_wait_s < 0 or (max_queued is not None and max_queued < 1):
            raise ValueError("max_batch_size must be >= 1, max_wait_s >= 0 and max_queued >= 1")
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queued = max_queued
        self._process = process
        self._size = size
        self._on_batch = on_batch
        self._on_drop = on_drop
        # Items of the submit calls not yet answered, waiting or running.
        self.queued = 0
        # Round-robin order: a request's turn is when it arrived, then when it was last served.
        self._turns = itertools.count()
        self._pending: deque[_Pending[T, R]] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        # The load estimate: how many items the previous batch held. One at the start, so the
        # first request does not wait.
        self._expected = 1
        # When the previous batch left; items older than that were left over from a backlog.
        self._dispatched_at = float("-inf")

    async def submit(self, items: Sequence[T]) -> list[R]:
        """The results for ``items``, in order, once the batches holding them have run.

        Raises ``QueueFull`` (queuing nothing) when the items would pass ``max_queued``, and what
        ``process`` raised for a batch holding any of them.
        """
        if self.max_queued is not None and self.queued + len(items) > self.max_queued:
            raise QueueFull(self.queued, len(items), self.max_queued)
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run(), name="batcher")
        now = loop.time()
        request = _Request(next(self._turns))
        pending = [_Pending(item, self._size(item), now, request, loop.create_future()) for item in items]
        self._pending.extend(pending)
        self.queued += len(pending)
        self._arrived.set()
        try:
            return list(await asyncio.gather(*(p.future for p in pending)))
        finally:
            self.queued -= len(pending)
            # A cancelled or failed request leaves nothing behind for the worker to run.
            dropped = sum(not p.dispatched for p in pending)
            for p in pending:
                p.future.cancel()
            if dropped and self._on_drop is not None:
                self._on_drop(dropped)

    async def close(self) -> None:
        """Stop the worker; items still queued are cancelled."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        while self._pending:
            self._pending.popleft().future.cancel()

    async def _run(self) -> None:
        while True:
            await self._gather()
            batch = self._take()
            if not batch:
                continue
            self._expected = len(batch)
            self._dispatched_at = asyncio.get_running_loop().time()
            if self._on_batch is not None:
                self._on_batch(len(batch))
            try:
                await self._settle(batch)
            except asyncio.CancelledError:
                for p in batch:
                    p.future.cancel()
                raise

    async def _settle(self, batch: list[_Pending[T, R]]) -> None:
        """Run ``batch`` and resolve its futures; when it fails, run each member alone.

        One bad item must not fail the requests it happened to share a batch with: retried
        alone, the good items get their results and only the item that fails alone gets the error.
        """
        try:
            results = await self._process([p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} items gave {len(results)} results")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the error belongs to the items waiting on this batch
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            for p in batch:
                if not p.future.done():
                    await self._settle([p])
            return
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)

    def _live(self) -> int:
        while self._pending and self._pending[0].future.done():
            self._pending.popleft()
        return sum(not p.future.done() for p in self._pending)

    async def _gather(self) -> None:
        """Wait for the first item, then for the batch to reach the expected size or its deadline."""
        while not self._live():
            self._arrived.clear()
            await self._arrived.wait()
        if self._pending[0].arrived <= self._dispatched_at:
            # A backlog (more items than the last batch could take): run it, nothing to wait for.
            return
        loop = asyncio.get_running_loop()
        deadline = self._pending[0].arrived + self.max_wait_s
        target = min(self._expected, self.max_batch_size)
        while self._live() < target and (timeout := deadline - loop.time()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                break

    def _take(self) -> list[_Pending[T, R]]:
        """The next batch: everything waiting if it fits, else a fair share (``_share``); the rest keeps waiting."""
        live = [p for p in self._pending if not p.future.done()]
        self._pending.clear()
        batch = live if len(live) <= self.max_batch_size else self._share(live)
        chosen = {id(p) for p in batch}
        self._pending.extend(p for p in live if id(p) not in chosen)
        turn = next(self._turns)
        for p in batch:
            p.dispatched = True
            p.request.turn = turn
        return batch

    def _share(self, live: list[_Pending[T, R]]) -> list[_Pending[T, R]]:
        """A full batch from more items than fit: each waiting request gets its turn and its share.

        The request served least recently leads with its oldest item; then, nearest in size to
        that item first, each request gets up to its share (the batch divided among the waiting
        requests, at least one item); what room is left goes to the nearest items of any request.
        """
        # sorted() is stable: among equal turns and equally near items the earlier ones go first.
        requests = sorted({id(p.request): p.request for p in live}.values(), key=lambda r: r.turn)
        lead = next(p for p in live if p.request is requests[0])
        nearest = sorted((p for p in live if p is not lead), key=lambda p: abs(p.size - lead.size))
        share = max(1, self.max_batch_size // len(requests))
        batch, taken = [lead], Counter([id(lead.request)])
        for p in nearest:
            if len(batch) < self.max_batch_size and taken[id(p.request)] < share:
                batch.append(p)
                taken[id(p.request)] += 1
        chosen = {id(p) for p in batch}
        batch += [p for p in nearest if id(p) not in chosen][: self.max_batch_size - len(batch)]
        return batch
