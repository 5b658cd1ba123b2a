"""A connection's run table: starting, stopping and retiring the runs it owns.

The runs live in the connection's nursery (the mission's shape: a
connection's runs die with it). The table checks a start request in the
protocol's order (agent, run id, drain, limit), records the run in the
history store (which refuses a busy or foreign thread), starts the run's task,
and retires each run exactly once: out of the table and the gauges just
before its final event is queued, or when its task ends without one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable

import trio

from agents import AgentRuntime, EndCause, Turn, execute_run
from server.protocol import (
    AgentNotFoundError,
    FormatError,
    ProtocolError,
    RunNotFoundError,
    StartRun,
    TooManyRunsError,
    new_id,
)
from server.store import RunStart

from .._logging import ids
from .._metrics import Metrics
from ._directory import RunDirectory
from ._follow import Follows
from ._history import History
from ._run import Run
from ._sinks import RunOwner

log = logging.getLogger("trio_agent_server.runs")

#: ``stop_elsewhere(run_id, message_id)``: stop a run of this user that another
#: process owns; True if one was found.
StopElsewhere = Callable[[str, str | None], Awaitable[bool]]


class RunTable:
    """The runs started on one connection, by run id."""

    __slots__ = (
        "__weakref__",
        "_check_can_start",
        "_delivering",
        "_directory",
        "_follows",
        "_history",
        "_idle",
        "_max_event_size",
        "_max_run_output",
        "_metrics",
        "_nursery",
        "_on_start",
        "_owner",
        "_runs",
        "_runtime",
        "_stop_elsewhere",
        "_tasks",
        "_top_level",
        "max_runs",
    )

    def __init__(
        self,
        owner: RunOwner,
        runtime: AgentRuntime,
        metrics: Metrics,
        *,
        max_runs: int,
        top_level: frozenset[str],
        check_can_start: Callable[[str | None], None],
        max_event_size: int | None = None,
        max_run_output: int | None = None,
        history: History | None = None,
        directory: RunDirectory | None = None,
        follows: Follows | None = None,
        stop_elsewhere: StopElsewhere | None = None,
        on_start: Callable[[Run], None] | None = None,
    ) -> None:
        self._owner = owner
        self._runtime = runtime
        self._metrics = metrics
        self.max_runs = max_runs
        self._top_level = top_level
        #: Raises ShuttingDownError when the session starts no new runs.
        self._check_can_start = check_can_start
        self._max_event_size = max_event_size
        self._max_run_output = max_run_output
        self._history = history
        self._directory = directory if directory is not None else RunDirectory()
        #: The owner's own follows: it is not its own subscriber.
        self._follows = follows
        self._stop_elsewhere = stop_elsewhere
        #: Told of every run as it starts (the broker's announcements).
        self._on_start = on_start
        self._runs: dict[str, Run] = {}
        #: Run tasks not yet over (a retired run's task still delivers its final event).
        self._tasks = 0
        #: Retired runs whose final event is still being committed and delivered
        #: (made when the first one is): a socket lost meanwhile detaches them too.
        self._delivering: list[Run] | None = None
        self._nursery: trio.Nursery | None = None
        self._idle: trio.Event | None = None

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def run_ids(self) -> tuple[str, ...]:
        return tuple(self._runs)

    def runs(self) -> tuple[Run, ...]:
        return tuple(self._runs.values())

    def receives(self, run: Run) -> bool:
        """Whether this table's connection receives ``run``'s events as its owner."""
        return run.owner is self._owner

    def open(self, nursery: trio.Nursery | None) -> None:
        """Runs start in ``nursery`` from now on (None: no more runs start)."""
        self._nursery = nursery

    async def start(self, message: StartRun) -> Run | None:
        """Start a run for ``message``, or raise the protocol error that refuses it.

        With a history store the run is recorded first (THREAD_NOT_FOUND,
        THREAD_BUSY and STORE_UNAVAILABLE refuse it, with nothing written).
        None if the connection ended while the run was being recorded (its
        record is then ended as cancelled, code DISCONNECTED).
        """
        message_id = message.message_id
        if message.agent_name not in self._top_level:
            raise AgentNotFoundError(
                f"no top-level agent named {message.agent_name[:64]!r}",
                details={
                    "agent_name": message.agent_name[:128],
                    "available": sorted(self._top_level),
                },
                message_id=message_id,
            )
        run_id = message.run_id or new_id("r")
        if run_id in self._runs:
            raise FormatError(
                "run_id is already running on this connection",
                details={"field": "payload.run_id", "run_id": run_id},
                message_id=message_id,
            )
        self._check_can_start(message_id)
        if len(self._runs) >= self.max_runs:
            raise TooManyRunsError(
                f"{self.max_runs} runs are already running on this connection",
                details={"max_runs_per_connection": self.max_runs},
                message_id=message_id,
            )
        thread_id = message.thread_id or new_id("t")
        run_key = os.urandom(16).hex()  # as uuid4().hex, a quarter of the cost
        turns: tuple[Turn, ...] = ()
        # While the run is being recorded the store already says it is running:
        # a resume_run then waits for it here rather than finding nothing live.
        starting = self._directory.reserve(self._owner.user_id, run_id)
        try:
            if self._history is not None:
                start = RunStart(
                    run_key=run_key,
                    user_id=self._owner.user_id,
                    run_id=run_id,
                    thread_id=thread_id,
                    agent_name=message.agent_name,
                    request=message.request,
                )
                try:
                    begun = await self._history.begin(start)
                except ProtocolError as exc:
                    if exc.message_id is None:
                        exc.message_id = message_id  # the answer names the frame that asked
                    raise
                turns = begun.history
            run = Run(
                self._owner,
                self._runtime,
                run_id=run_id,
                thread_id=thread_id,
                agent_name=message.agent_name,
                request=message.request,
                message_id=message_id,
                on_final=self.retire,
                on_delivered=self._directory.remove,
                metrics=self._metrics,
                max_event_size=self._max_event_size,
                max_output=self._max_run_output,
                run_key=run_key,
                history=self._history.recorder(run_key) if self._history is not None else None,
                turns=turns,
            )
            self._runs[run_id] = run
            self._metrics.runs_active += 1
            self._directory.add(run)
        finally:
            self._directory.release(self._owner.user_id, run_id, starting)
        for follows in self._directory.subscribers(run.user_id, thread_id):
            if follows is not self._follows:
                follows.run_started(run)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "run started: %s %r",
                message.agent_name,
                message.request[:200],
                extra=self._log_ids(run_id),
            )
        nursery = self._nursery
        if nursery is None:
            # The connection ended while the run was being recorded: end it the
            # way a disconnect ends any run (its events go to history and followers).
            run.scope.cancel(EndCause.DISCONNECTED)
            self._tasks += 1
            await self._run_task(run)
            return None
        self._tasks += 1
        nursery.start_soon(self._run_task, run, name=f"run {run_id}")
        if self._on_start is not None:
            self._on_start(run)
        return run

    async def stop(self, run_id: str, *, message_id: str | None) -> None:
        """Cancel the run ``run_id`` of this user, whichever connection started it.

        Its final event (cancelled) is the reply, to whoever receives the run.
        """
        run = self._runs.get(run_id)
        if run is None:
            run = self._directory.find(self._owner.user_id, run_id)
        if run is not None and not run.finished:
            run.scope.cancel(EndCause.CANCELLED)
            return
        if self._stop_elsewhere is not None and await self._stop_elsewhere(run_id, message_id):
            return
        raise RunNotFoundError(
            "no such run is running", details={"run_id": run_id}, message_id=message_id
        )

    def cancel_all(self, cause: EndCause) -> None:
        for run in list(self._runs.values()):
            run.scope.cancel(cause)

    def detach_owner(self) -> None:
        """The socket went away and the session lingers: the runs go on without it."""
        for run in self._runs.values():
            run.detach_owner()
        # Their finals are on their way to the store: once committed, they must
        # go to whoever resumes the run, not to the socket that took the session over.
        for run in self._delivering or ():
            run.detach_owner()

    def retire(self, run: Run, status: str) -> None:
        """Take ``run`` out of the table and the gauges, counted once (idempotent)."""
        if run.finished:
            return
        run.finished = True
        del self._runs[run.run_id]
        if self._delivering is None:
            self._delivering = []
        self._delivering.append(run)
        metrics = self._metrics
        metrics.runs_active -= 1
        metrics.runs_total[status if status in metrics.runs_total else "failed"] += 1
        level = logging.DEBUG if status == "completed" else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "run ended: %s", status, extra=self._log_ids(run.run_id))

    async def wait_idle(self) -> None:
        """Wait until no run is left, each final event delivered."""
        while self._tasks:
            self._idle = trio.Event()
            await self._idle.wait()

    async def _run_task(self, run: Run) -> None:
        status = "cancelled"
        try:
            status = await execute_run(run.scope, run.agent_name)
        finally:
            self.retire(run, status)
            self._directory.remove(run)
            delivering = self._delivering
            if delivering is not None:
                delivering.remove(run)
                if not delivering:
                    self._delivering = None
            run.release()
            self._tasks -= 1
            if not self._tasks and self._idle is not None:
                self._idle.set()

    def _log_ids(self, run_id: str) -> dict[str, str]:
        owner = self._owner
        return ids(run_id=run_id, connection_id=owner.connection_id, user_id=owner.user_id)
