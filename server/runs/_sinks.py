"""Where a run's events go: its owner (the connection that started it) and its sinks.

A run emits each event once; the owner gets it first and may make the run
wait (a full outbound queue is backpressure on the run that fills it). Sinks
(the history store, other connections of the same user) get it next and must
never wait: a sink that cannot keep up deals with that itself (a slow
subscriber is closed; the store batches its writes).
"""

from __future__ import annotations

from typing import Protocol


class RunOwner(Protocol):
    """The connection a run was started on, as the run sees it."""

    @property
    def user_id(self) -> str: ...

    @property
    def connection_id(self) -> str: ...

    async def send_event(self, payload: bytes) -> None:
        """Queue one run event (UTF-8 JSON) for the client; dropped if it has gone.

        May wait for room. If this raises ``trio.Cancelled`` nothing was queued.
        """


class EventSink(Protocol):
    """Receives every event of the runs it is attached to, after their owner."""

    def deliver(self, seq: int, payload: bytes, *, final: bool) -> None:
        """Take one event (never waits, never raises for a problem of its own)."""
