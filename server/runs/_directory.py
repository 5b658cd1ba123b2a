"""The live runs of one server process, and which connections follow which threads.

A process-wide *table* would be global state; this one belongs to one server
(``ChatServer`` makes it and hands it to its connections), like its metrics.
Run tables register their runs here while they run, so another connection of
the same user can find a run by id (``resume_run``, ``stop_agent``) or by
thread (``subscribe_thread``'s ``running_run_id``), and a run starting on a
thread finds the connections that subscribed to it. Keys always include the
user: nothing here lets one user reach another's runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._follow import Follows
    from ._run import Run


class RunDirectory:
    """Live runs by (user, run id) and (user, thread id); subscriptions by (user, thread id)."""

    __slots__ = ("_by_id", "_by_thread", "_starting", "_subscribers")

    def __init__(self) -> None:
        self._by_id: dict[tuple[str, str], Run] = {}
        #: Runs being recorded (begin_run) before they start: set once they have
        #: started or were refused.
        self._starting: dict[tuple[str, str], trio.Event] = {}
        self._by_thread: dict[tuple[str, str], Run] = {}
        self._subscribers: dict[tuple[str, str], list[Follows]] = {}

    # -- runs ----------------------------------------------------------------------

    def reserve(self, user_id: str, run_id: str) -> trio.Event:
        """A run is being recorded: until it is added (or released), it is starting.

        The store says such a run is running before it is here; a follower
        that asks in between waits for :meth:`wait_started`.
        """
        key = (user_id, run_id)
        starting = self._starting.get(key)
        if starting is None:
            self._starting[key] = starting = trio.Event()
        return starting

    def release(self, user_id: str, run_id: str, starting: trio.Event) -> None:
        """The run was refused or has been added: no longer starting."""
        key = (user_id, run_id)
        if self._starting.get(key) is starting:
            del self._starting[key]
        starting.set()

    async def wait_started(self, user_id: str, run_id: str) -> Run | None:
        """The run ``run_id``, after waiting for it if it is being recorded."""
        starting = self._starting.get((user_id, run_id))
        if starting is not None:
            await starting.wait()  # bounded: begin_run is, and its caller releases
        return self.find(user_id, run_id)

    def add(self, run: Run) -> None:
        """A run started (the latest run a user gave an id wins that id)."""
        self._by_id[(run.user_id, run.run_id)] = run
        self._by_thread[(run.user_id, run.thread_id)] = run

    def remove(self, run: Run) -> None:
        """A run's final event was delivered (or it ended without one)."""
        if self._by_id.get((run.user_id, run.run_id)) is run:
            del self._by_id[(run.user_id, run.run_id)]
        if self._by_thread.get((run.user_id, run.thread_id)) is run:
            del self._by_thread[(run.user_id, run.thread_id)]

    def find(self, user_id: str, run_id: str) -> Run | None:
        return self._by_id.get((user_id, run_id))

    def running_on(self, user_id: str, thread_id: str) -> Run | None:
        return self._by_thread.get((user_id, thread_id))

    def __len__(self) -> int:
        return len(self._by_id)

    # -- subscriptions -------------------------------------------------------------

    def subscribe(self, user_id: str, thread_id: str, follows: Follows) -> None:
        subscribers = self._subscribers.setdefault((user_id, thread_id), [])
        if follows not in subscribers:
            subscribers.append(follows)

    def unsubscribe(self, user_id: str, thread_id: str, follows: Follows) -> None:
        key = (user_id, thread_id)
        subscribers = self._subscribers.get(key)
        if subscribers is not None and follows in subscribers:
            subscribers.remove(follows)
            if not subscribers:
                del self._subscribers[key]

    def subscribers(self, user_id: str, thread_id: str) -> Iterator[Follows]:
        """The connections subscribed to the thread (a copy: safe to change while iterating)."""
        return iter(tuple(self._subscribers.get((user_id, thread_id), ())))
