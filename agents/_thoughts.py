"""Coalescing streamed model text into ``agent_thinking`` events."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._base import BaseAgent

#: At most one agent_thinking per agent per this many seconds while streaming.
THOUGHT_INTERVAL = 0.05


class ThoughtStream:
    """Buffers text deltas; emits them as one ``agent_thinking`` per interval.

    No task of its own: a delta arriving ``interval`` seconds after the last
    event flushes the buffer, and leaving the ``async with`` block flushes what
    is left (unless the block is being cancelled). A fast model therefore
    produces at most one event per interval, however many deltas it sends.
    """

    def __init__(self, agent: BaseAgent, interval: float) -> None:
        self._agent = agent
        self._interval = interval
        self._buffer: list[str] = []
        self._last = -float("inf")

    async def add(self, delta: str) -> None:
        self._buffer.append(delta)
        if trio.current_time() - self._last >= self._interval:
            await self.flush()

    async def flush(self) -> None:
        if not self._buffer:
            return
        chunk = "".join(self._buffer)
        self._buffer.clear()
        self._last = trio.current_time()
        await self._agent.think(chunk)

    async def __aenter__(self) -> ThoughtStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.flush()
