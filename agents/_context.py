"""Per-run values handed to agents: who asked, what, and where events go."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Protocol

import attrs


class RunEmitter(Protocol):
    """Where a run's events go: the connection that started the run, and no other.

    ``emit`` either queues the event (and returns) or raises ``trio.Cancelled``
    with nothing queued. Events for a connection that has gone are dropped.
    """

    async def emit(
        self, agent_name: str, event_type: str, data: dict[str, Any], *, final: bool = False
    ) -> None: ...


@attrs.frozen
class Turn:
    """One earlier run of the same thread, as the run's agents may see it.

    ``memory`` is what the top-level agent chose to keep from that run (the
    ``memory`` object of its final result; ``{}`` if it kept nothing).
    """

    run_id: str
    request: str
    status: str
    answer: str | None = None
    memory: Mapping[str, Any] = attrs.field(factory=dict)
    started_at: str | None = None


@attrs.frozen
class UserExecutionContext:
    """Everything an agent instance may know about its request. Immutable."""

    user_id: str
    thread_id: str
    run_id: str
    connection_id: str
    request: str
    emitter: RunEmitter = attrs.field(repr=False)
    message_id: str | None = None
    #: The thread's earlier turns, oldest first (at most ``--history-turns``).
    history: tuple[Turn, ...] = ()


class EndCause(enum.Enum):
    """Why a run's scope was cancelled; decides the closing events' status and code."""

    CANCELLED = ("cancelled", "CANCELLED")
    SHUTTING_DOWN = ("cancelled", "SHUTTING_DOWN")
    TIMEOUT = ("timeout", "TIMEOUT")
    #: The run sent more than its output bound (``--max-run-output``).
    OUTPUT_LIMIT = ("failed", "AGENT_ERROR")
    #: The connection that started the run has gone (its events still go to the
    #: run's history and to other connections following it).
    DISCONNECTED = ("cancelled", "DISCONNECTED")

    @property
    def status(self) -> str:
        return self.value[0]

    @property
    def code(self) -> str:
        return self.value[1]

    def describe(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    EndCause.CANCELLED: "stopped by the client",
    EndCause.SHUTTING_DOWN: "the server is shutting down",
    EndCause.TIMEOUT: "time limit exceeded",
    EndCause.OUTPUT_LIMIT: "the run's output passed its size limit",
    EndCause.DISCONNECTED: "the connection has gone",
}
