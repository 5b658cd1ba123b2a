"""A connection's bounded queue of outgoing frames.

Producers (runs, handlers) put frames; the connection's writer takes them in
batches and never waits on the queue (it runs only while there is something to
take). So the queue needs less than a trio memory channel: a list, a bound, and
a parking lot for producers waiting for room, made only when one has to wait.
That matters on idle connections, where a memory channel pair costs ~1.7 KiB.
"""

from __future__ import annotations

from typing import Final

import attrs
import trio

# Items: (a complete WebSocket frame, kind). Frames are built when queued, so
# a queued item holds exactly its bytes (an encoder's buffer may be far larger).
# The writer counts EVENT frames as run events and stops at CLOSE, after
# everything queued before it has been written.
FRAME: Final = 0
EVENT: Final = 1
CLOSE: Final = 2
Outbound = tuple[bytes, int]


@attrs.frozen
class OutboundStatistics:
    current_buffer_used: int
    max_buffer_size: int
    tasks_waiting_send: int


class OutboundQueue:
    """FIFO of at most ``max_size`` items; once closed, puts are refused."""

    __slots__ = ("_closed", "_items", "_room", "max_size")

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size: Final = max_size
        self._items: list[Outbound] = []
        self._room: trio.lowlevel.ParkingLot | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Outbound) -> None:
        """Queue ``item``; ``trio.WouldBlock`` if full, ``trio.ClosedResourceError`` if closed."""
        if self._closed:
            raise trio.ClosedResourceError("the connection's writer has stopped")
        if len(self._items) >= self.max_size:
            raise trio.WouldBlock
        self._items.append(item)

    async def put(self, item: Outbound) -> None:
        """Queue ``item``, waiting for room. If this raises Cancelled, nothing was queued."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._closed and len(self._items) >= self.max_size:
            if self._room is None:
                self._room = trio.lowlevel.ParkingLot()
            await self._room.park()
        self.put_nowait(item)

    def take_batch(self, max_bytes: int) -> list[Outbound]:
        """The oldest items, up to a CLOSE item or about ``max_bytes`` of frames.

        Always at least one item if any is queued; wakes producers waiting for room.
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
        if self._room is not None and count:
            self._room.unpark(count=count)
        return batch

    def close(self) -> None:
        """Refuse further items; producers waiting for room get ClosedResourceError."""
        self._closed = True
        if self._room is not None:
            self._room.unpark_all()

    def statistics(self) -> OutboundStatistics:
        return OutboundStatistics(
            current_buffer_used=len(self._items),
            max_buffer_size=self.max_size,
            tasks_waiting_send=len(self._room) if self._room is not None else 0,
        )
