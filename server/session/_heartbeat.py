"""Heartbeats for every connection from one task.

A sleeping task per connection only to send a ping every ``interval`` costs
memory on every idle connection (its coroutine frames, its timer), so the server
runs one :class:`HeartbeatSchedule` instead: connections join it when they open
and leave when they close, in due order (every connection has the same
interval, so joining or re-joining at the end keeps the order). When one is due
the schedule calls its ``ping_soon()``; the connection starts a short-lived task
in its own nursery that sends the ping and waits up to the timeout for the pong.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

import trio


class Pingable(Protocol):
    def ping_soon(self) -> None:
        """Send a ping now (without waiting here) and watch for its pong."""


class HeartbeatSchedule:
    """When each connection is next pinged; run :meth:`run` in the server's nursery."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._due: OrderedDict[Pingable, float] = OrderedDict()
        self._changed = trio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def add(self, connection: Pingable) -> None:
        """First ping one interval from now."""
        self._due[connection] = trio.current_time() + self.interval
        if len(self._due) == 1:
            self._changed.set()  # the schedule was empty: wake run()

    def discard(self, connection: Pingable) -> None:
        self._due.pop(connection, None)

    async def run(self) -> None:
        while True:
            if not self._due:
                self._changed = trio.Event()
                await self._changed.wait()
                continue
            # Joiners are due later than the head, so only leaving can change
            # it; then the head is simply due later or gone.
            await trio.sleep_until(self._ping_due(trio.current_time()))

    def _ping_due(self, now: float) -> float:
        """Ping every connection that is due; return when the next one is.

        A function of its own so that no connection is held by run() while it
        sleeps (a connection that left must be freed at once).
        """
        while self._due:
            connection, due = next(iter(self._due.items()))
            if due > now:
                return due
            # From now, not from ``due``: a stalled server does not catch up
            # with a burst of pings. Still the latest due time, so order holds.
            self._due.move_to_end(connection)
            self._due[connection] = now + self.interval
            connection.ping_soon()
        return now
