"""A connection's bounded queue of outgoing frames.

Producers (runs, handlers) put frames; the connection's writer takes them in
batches and never waits on the queue (it runs only while there is something to
take). So the queue needs less than a trio memory channel: a list, a bound, and
a line of producers waiting for room, made only when one has to wait. That
matters on idle connections, where a memory channel pair costs ~1.7 KiB.

Order is kept as a memory channel keeps it: a producer that waits hands its
frame over to the queue as soon as there is room, before anyone who came later
(``put_nowait`` refuses while anyone waits), so frames go out in the order
their ``put`` began.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import attrs
import outcome
import trio

# Items: (a message, UTF-8 JSON, kind). The writer frames each batch as it
# writes it (server.transport). A run event's envelope is joined from its
# parts, so it holds exactly its bytes (orjson's output keeps an allocation of
# several KiB for any size; replies are written as soon as they are queued).
# The writer counts EVENT messages as run events and stops at CLOSE, after
# everything queued before it has been written. EVENT_REST: the rest of a run
# event's frame, whose start was written at once (Connection.send_event_at_once):
# already framed, and only ever first in the queue.
FRAME: Final = 0
EVENT: Final = 1
CLOSE: Final = 2
EVENT_REST: Final = 3
Outbound = tuple[bytes, int]


@attrs.frozen
class OutboundStatistics:
    current_buffer_used: int
    max_buffer_size: int
    tasks_waiting_send: int


class OutboundQueue:
    """FIFO of at most ``max_size`` items; once closed, puts are refused."""

    __slots__ = ("_closed", "_items", "_spilled", "_spilling_since", "_waiting", "max_size")

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size: Final = max_size
        self._items: list[Outbound] = []
        # Producers waiting for room, oldest first, with what they bring (no task:
        # an item spilled by put_spill, which no task waits for).
        self._waiting: deque[tuple[trio.lowlevel.Task | None, Outbound]] | None = None
        self._spilled = 0
        #: When the queue last began to spill (trio clock; None while it does not).
        self._spilling_since: float | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put_nowait(self, item: Outbound) -> None:
        """Queue ``item``; ``trio.WouldBlock`` if full (or others wait), closed: error."""
        if self._closed:
            raise trio.ClosedResourceError("the connection's writer has stopped")
        if len(self._items) >= self.max_size or self._waiting:
            raise trio.WouldBlock
        self._items.append(item)

    async def put(self, item: Outbound) -> None:
        """Queue ``item``, waiting for room. If this raises Cancelled, nothing was queued."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.put_nowait(item)
            return
        except trio.WouldBlock:
            pass
        if self._waiting is None:
            self._waiting = deque()
        waiting = self._waiting
        entry = (trio.lowlevel.current_task(), item)
        waiting.append(entry)

        def abort(_: object) -> trio.lowlevel.Abort:
            waiting.remove(entry)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def put_spill(self, item: Outbound, *, now: float, timeout: float) -> bool:
        """Queue ``item`` without waiting, for producers that must never wait.

        When the queue is full the item waits in line after the producers
        already waiting (order is kept), up to ``max_size`` such items. False,
        with nothing queued, once that is full too or the queue has been
        spilling for ``timeout`` seconds: the consumer is too slow. Closed: error.
        """
        if self._closed:
            raise trio.ClosedResourceError("the connection's writer has stopped")
        if len(self._items) < self.max_size and not self._waiting:
            self._items.append(item)
            self._spilling_since = None
            return True
        if self._spilling_since is None:
            self._spilling_since = now
        elif now - self._spilling_since >= timeout:
            return False
        if self._spilled >= self.max_size:
            return False
        if self._waiting is None:
            self._waiting = deque()
        self._waiting.append((None, item))
        self._spilled += 1
        return True

    def take_batch(self, max_bytes: int) -> list[Outbound]:
        """The oldest items, up to a CLOSE item or about ``max_bytes`` of frames.

        Always at least one item if any is queued. The room it makes goes to
        waiting producers first, in the order they came.
        """
        items = self._items
        size = count = 0
        for frame, kind in items:
            count += 1
            size += len(frame)
            if kind == CLOSE or size >= max_bytes:
                break
        batch = items[:count]
        del items[:count]
        waiting = self._waiting
        while waiting and len(items) < self.max_size:
            task, item = waiting.popleft()
            items.append(item)
            if task is None:
                self._spilled -= 1
            else:
                trio.lowlevel.reschedule(task, outcome.Value(None))
        if not waiting:
            self._spilling_since = None
        return batch

    def close(self) -> None:
        """Refuse further items; producers still waiting get ClosedResourceError."""
        self._closed = True
        while self._waiting:
            task, _ = self._waiting.popleft()
            if task is not None:
                error = trio.ClosedResourceError("the connection's writer has stopped")
                trio.lowlevel.reschedule(task, outcome.Error(error))
        self._spilled = 0

    def statistics(self) -> OutboundStatistics:
        return OutboundStatistics(
            current_buffer_used=len(self._items),
            max_buffer_size=self.max_size,
            tasks_waiting_send=(len(self._waiting) - self._spilled) if self._waiting else 0,
        )
