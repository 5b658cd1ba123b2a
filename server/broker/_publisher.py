"""Batching a node's event appends off the runs' hot path.

A run's emit must not wait for Redis: :meth:`Publisher.append_nowait` only
puts the entry in a bounded buffer (and says False, counting a drop, when
it is full). One task drains the buffer: it takes everything there (up to
``max_batch``) and publishes it in one round trip; whatever is appended
meanwhile makes the next batch. Batches thus grow with the load by
themselves, with no timer adding latency when the load is light.

An entry that cannot be published (buffer full, broker down) is lost for
the broker only: the history store still has it, and a reader that sees a
seq jump reads the gap from there.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from server.protocol import BrokerUnavailableError

from ._broker import Broker
from ._keys import RunStream

log = logging.getLogger("server.broker")


@attrs.frozen
class PublisherStatistics:
    """A snapshot of a :class:`Publisher`."""

    buffered: int
    capacity: int
    #: Entries accepted by ``append_nowait``.
    accepted: int
    #: Entries appended to their streams.
    published: int
    #: Entries Redis did not append (nobody followed, or already there).
    skipped: int
    #: Entries refused because the buffer was full.
    dropped: int
    #: Entries lost because their batch failed (broker unavailable).
    failed: int
    #: Round trips made.
    batches: int


class Publisher:
    """A bounded buffer of ``(stream, seq, payload)`` drained in batches by one task."""

    def __init__(self, broker: Broker, *, capacity: int, max_batch: int, gated: bool) -> None:
        if capacity < 1 or max_batch < 1:
            raise ValueError("capacity and max_batch must be >= 1")
        self._broker = broker
        self._capacity = capacity
        self._max_batch = max_batch
        self._gated = gated
        self._buffer: deque[tuple[RunStream, int, bytes]] = deque()
        self._wakeup = trio.Event()
        self._accepted = 0
        self._done = 0
        self._published = 0
        self._skipped = 0
        self._dropped = 0
        self._failed = 0
        self._batches = 0
        self._waiters: list[tuple[int, trio.Event]] = []

    def append_nowait(self, stream: RunStream, seq: int, payload: bytes) -> bool:
        """Queue one event for publishing; False (and counted) if the buffer is full."""
        if len(self._buffer) >= self._capacity:
            self._dropped += 1
            return False
        self._buffer.append((stream, seq, payload))
        self._accepted += 1
        self._wakeup.set()
        return True

    async def flush(self) -> None:
        """Return once every entry accepted before the call was published (or lost).

        Each batch is bounded by the broker's timeout, so this is too.
        """
        target = self._accepted
        if self._done >= target:
            return
        done = trio.Event()
        self._waiters.append((target, done))
        await done.wait()

    def statistics(self) -> PublisherStatistics:
        return PublisherStatistics(
            buffered=len(self._buffer),
            capacity=self._capacity,
            accepted=self._accepted,
            published=self._published,
            skipped=self._skipped,
            dropped=self._dropped,
            failed=self._failed,
            batches=self._batches,
        )

    async def serve(self) -> None:
        """Drain the buffer until cancelled (run by :func:`open_publisher`)."""
        buffer = self._buffer
        while True:
            if not buffer:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                continue
            batch = [buffer.popleft() for _ in range(min(len(buffer), self._max_batch))]
            self._batches += 1
            try:
                outcome = await self._broker.publish(batch, gated=self._gated)
            except BrokerUnavailableError as exc:
                self._failed += len(batch)
                log.debug("publisher: lost a batch of %d: %s", len(batch), exc)
            else:
                self._published += outcome.appended
                self._skipped += outcome.skipped
            self._done += len(batch)
            if self._waiters:
                self._wake_waiters()

    def _wake_waiters(self) -> None:
        waiting = []
        for target, event in self._waiters:
            if self._done >= target:
                event.set()
            else:
                waiting.append((target, event))
        self._waiters = waiting


@asynccontextmanager
async def open_publisher(
    broker: Broker,
    *,
    capacity: int = 10_000,
    max_batch: int = 512,
    gated: bool = True,
    flush_timeout: float = 5.0,
) -> AsyncIterator[Publisher]:
    """A :class:`Publisher` whose drain task lives in this block's nursery.

    On exit the entries still buffered get up to ``flush_timeout`` seconds
    to go out; then the task is cancelled.
    """
    publisher = Publisher(broker, capacity=capacity, max_batch=max_batch, gated=gated)
    failure: BaseException | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher.serve)
        try:
            yield publisher
        except BaseException as exc:
            failure = exc
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(flush_timeout):
                await publisher.flush()
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
