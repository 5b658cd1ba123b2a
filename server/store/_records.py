"""The store's values: what goes in, what comes out. Pure code, no I/O.

Times cross the store's API in two forms: integer epoch milliseconds going in
(``*_ms`` fields, what the tables hold) and ISO 8601 UTC strings with
milliseconds coming out (what the protocol shows).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import attrs

from agents import Turn

#: Statuses of a run; ``running`` until its final event is committed.
RUN_STATUSES: tuple[str, ...] = ("running", "completed", "failed", "cancelled", "timeout")
ENDED_STATUSES: frozenset[str] = frozenset(RUN_STATUSES[1:])
#: A thread's default title is its first request's first line, cut here.
TITLE_LENGTH = 80

T = TypeVar("T")


def now_ms() -> int:
    """The wall clock in integer epoch milliseconds (what the store records)."""
    return time.time_ns() // 1_000_000


def iso_from_ms(ms: int) -> str:
    """``1763719200123`` -> ``2025-11-21T10:00:00.123Z``."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def default_title(request: str) -> str:
    """The first non-blank line of ``request``, trimmed, at most 80 characters."""
    for line in request.splitlines():
        if line.strip():
            return line.strip()[:TITLE_LENGTH].rstrip()
    return ""


def answer_of(result: Mapping[str, Any] | None) -> str | None:
    """``result["answer"]`` when it is a string (the built-in supervisor's Markdown)."""
    if result is None:
        return None
    answer = result.get("answer")
    return answer if isinstance(answer, str) else None


def memory_of(result: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """``result["memory"]`` when it is an object: what the run chose to keep."""
    if result is None:
        return {}
    memory = result.get("memory")
    return memory if isinstance(memory, Mapping) else {}


# -- going in -------------------------------------------------------------------


@attrs.frozen
class RunStart:
    """A run about to start: ``begin_run`` records it as ``running``.

    ``run_key`` is minted by the server and unique for ever; ``run_id`` is
    the client's name for the run and may be reused once its run has ended.
    """

    run_key: str
    user_id: str
    run_id: str
    thread_id: str
    agent_name: str
    request: str
    started_at_ms: int = attrs.field(factory=now_ms)


@attrs.frozen
class EventRecord:
    """One run event as sent: ``frame`` is the JSON text, byte for byte."""

    run_key: str
    seq: int
    frame: bytes


def _answer_from_result(end: RunEnd) -> str | None:
    return answer_of(end.result)


@attrs.frozen
class RunEnd:
    """How a run ended: ``finish_run`` records it if the run is still running.

    ``last_seq`` is the final event's ``seq``; ``answer`` defaults to the
    result's string ``answer``.
    """

    run_key: str
    status: str = attrs.field(validator=attrs.validators.in_(ENDED_STATUSES))
    last_seq: int
    error_code: str | None = None
    result: Mapping[str, Any] | None = None
    ended_at_ms: int = attrs.field(factory=now_ms)
    answer: str | None = attrs.field(default=attrs.Factory(_answer_from_result, takes_self=True))


# -- coming out -----------------------------------------------------------------


@attrs.frozen
class ThreadInfo:
    """A thread as ``list_threads`` and ``get_thread`` show it."""

    thread_id: str
    user_id: str
    title: str
    created_at: str
    updated_at: str
    run_count: int
    #: The status of the thread's latest run (None before its first run).
    last_status: str | None


@attrs.frozen
class RunInfo:
    """A run's record (without its events)."""

    run_key: str
    run_id: str
    user_id: str
    thread_id: str
    agent_name: str
    request: str
    status: str
    error_code: str | None
    answer: str | None
    result: Mapping[str, Any] | None
    started_at: str
    ended_at: str | None
    last_seq: int
    #: The server process that owns the run while it is running.
    node_id: str

    @property
    def running(self) -> bool:
        return self.status == "running"

    def to_turn(self) -> Turn:
        """This run as a later run of its thread sees it (agents' memory)."""
        return Turn(
            run_id=self.run_id,
            request=self.request,
            status=self.status,
            answer=self.answer,
            memory=memory_of(self.result),
            started_at=self.started_at,
        )


@attrs.frozen
class RunBegun:
    """What ``begin_run`` returns: the thread, and its earlier ended runs as turns."""

    thread: ThreadInfo
    #: Whether this run created the thread.
    created: bool
    #: The thread's last ``history_turns`` ended runs, oldest first.
    history: tuple[Turn, ...]


@attrs.frozen
class StoredEvent:
    """One committed event of a run: its ``seq`` and the frame as it was sent."""

    seq: int
    frame: bytes


@attrs.frozen
class Page(Generic[T]):
    """One page of a list; ``next_cursor`` is None on the last one."""

    items: tuple[T, ...]
    next_cursor: str | None


class DeleteResult(enum.Enum):
    """The outcome of ``delete_thread``."""

    DELETED = "deleted"
    #: Missing, or another user's thread (the two look the same).
    NOT_FOUND = "not_found"
    #: A run of the thread is in progress; nothing was deleted.
    BUSY = "busy"
