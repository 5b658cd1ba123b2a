"""A connection's run table: starting, stopping and retiring the runs it owns.

The runs live in the connection's nursery (the mission's shape: a
connection's runs die with it). The table checks a start request in the
protocol's order (agent, run id, drain, limit), starts the run's task, and
retires each run exactly once: out of the table and the gauges just before
its final event is queued, or when its task ends without one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from agents import AgentRuntime, EndCause, execute_run
from server.protocol import (
    AgentNotFoundError,
    FormatError,
    RunNotFoundError,
    StartRun,
    TooManyRunsError,
    new_id,
)

from .._logging import ids
from .._metrics import Metrics
from ._run import Run
from ._sinks import RunOwner

log = logging.getLogger("trio_agent_server.runs")


class RunTable:
    """The runs started on one connection, by run id."""

    __slots__ = (
        "__weakref__",
        "_check_can_start",
        "_idle",
        "_max_event_size",
        "_max_run_output",
        "_metrics",
        "_nursery",
        "_owner",
        "_runs",
        "_runtime",
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
        self._runs: dict[str, Run] = {}
        self._nursery: trio.Nursery | None = None
        self._idle: trio.Event | None = None

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def run_ids(self) -> tuple[str, ...]:
        return tuple(self._runs)

    def open(self, nursery: trio.Nursery | None) -> None:
        """Runs start in ``nursery`` from now on (None: no more runs start)."""
        self._nursery = nursery

    def start(self, message: StartRun) -> Run:
        """Start a run for ``message``, or raise the protocol error that refuses it."""
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
        nursery = self._nursery
        assert nursery is not None, "runs start only while the connection is served"
        run = Run(
            self._owner,
            self._runtime,
            run_id=run_id,
            thread_id=message.thread_id or new_id("t"),
            agent_name=message.agent_name,
            request=message.request,
            message_id=message_id,
            on_final=self.retire,
            metrics=self._metrics,
            max_event_size=self._max_event_size,
            max_output=self._max_run_output,
        )
        self._runs[run_id] = run
        self._metrics.runs_active += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "run started: %s %r",
                message.agent_name,
                message.request[:200],
                extra=self._log_ids(run_id),
            )
        nursery.start_soon(self._run_task, run, name=f"run {run_id}")
        return run

    def stop(self, run_id: str, *, message_id: str | None) -> None:
        """Cancel the run ``run_id`` of this connection (its final event is the reply)."""
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFoundError(
                "no such run is running on this connection",
                details={"run_id": run_id},
                message_id=message_id,
            )
        run.scope.cancel(EndCause.CANCELLED)

    def cancel_all(self, cause: EndCause) -> None:
        for run in list(self._runs.values()):
            run.scope.cancel(cause)

    def retire(self, run: Run, status: str) -> None:
        """Take ``run`` out of the table and the gauges, counted once (idempotent)."""
        if run.finished:
            return
        run.finished = True
        del self._runs[run.run_id]
        metrics = self._metrics
        metrics.runs_active -= 1
        metrics.runs_total[status if status in metrics.runs_total else "failed"] += 1
        level = logging.DEBUG if status == "completed" else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "run ended: %s", status, extra=self._log_ids(run.run_id))
        if not self._runs and self._idle is not None:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until no run is left."""
        while self._runs:
            self._idle = trio.Event()
            await self._idle.wait()

    async def _run_task(self, run: Run) -> None:
        status = "cancelled"
        try:
            status = await execute_run(run.scope, run.agent_name)
        finally:
            self.retire(run, status)
            run.release()

    def _log_ids(self, run_id: str) -> dict[str, str]:
        owner = self._owner
        return ids(run_id=run_id, connection_id=owner.connection_id, user_id=owner.user_id)
