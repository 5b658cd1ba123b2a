"""The server's own run object, driven without a connection (not a test module).

Agent tests drive runs through the entry points the server uses
(``RunScope``, ``execute_run``) with the server's real :class:`~server.runs.Run`
as the emitter, so every event is numbered, enveloped, encoded and retired
exactly as it is for a client. What the connection would do with the events is
played by a :class:`RecordingOwner`: it decodes each one and keeps it, with
three test-only keys: ``at`` (virtual time), ``agents_active`` (the agent
gauge when the event was handed over) and ``runs_active`` (the run gauge
then: the final event must find its run retired already).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import trio

from agents import AgentRuntime
from server._metrics import Metrics
from server.protocol import StartRun
from server.runs import Run, RunTable

RUN_ID = "r-test"
THREAD_ID = "t-test"
USER_ID = "u-test"


def _not_json(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


class RecordingOwner:
    """A :class:`~server.runs.RunOwner` that records what its runs hand it.

    Like a connection's queue, ``send_event`` raises ``trio.Cancelled`` with
    nothing recorded when the caller is already cancelled; after recording it
    lets other tasks run once, as a writer taking the event would. It also
    retires runs (``retire`` is the ``on_final`` of runs made by
    :meth:`open_run`), counting them in and out as a run table does.
    """

    def __init__(
        self,
        request: str,
        *,
        agents_active: Callable[[], int] = lambda: 0,
        user_id: str = USER_ID,
        connection_id: str = "c-test",
    ) -> None:
        self.request = request
        self._user_id = user_id
        self._connection_id = connection_id
        self._agents_active = agents_active
        #: Runs counted (opened and not yet retired); a RunTable's gauge when one is used.
        self.runs_active: Callable[[], int] = lambda: self._open
        self._open = 0
        #: The status of each retirement, in order.
        self.retired: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._changed = trio.Event()

    @property
    def user_id(self) -> str:
        return self._user_id

    @property
    def connection_id(self) -> str:
        return self._connection_id

    def open_run(
        self,
        runtime: AgentRuntime,
        *,
        run_id: str = RUN_ID,
        thread_id: str = THREAD_ID,
        agent_name: str = "supervisor",
        message_id: str | None = None,
    ) -> Run:
        """A run of ``runtime`` owned by this recorder; drive it with ``execute_run(run.scope)``."""
        self._open += 1
        return Run(
            self,
            runtime,
            run_id=run_id,
            thread_id=thread_id,
            agent_name=agent_name,
            request=self.request,
            message_id=message_id,
            on_final=self.retire,
        )

    def retire(self, run: Run, status: str) -> None:
        assert not run.finished, f"run {run.run_id} retired twice"
        run.finished = True
        self._open -= 1
        self.retired.append(status)

    async def send_event(self, payload: bytes) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        event: dict[str, Any] = json.loads(payload, parse_constant=_not_json)
        event["at"] = trio.current_time()
        event["agents_active"] = self._agents_active()
        event["runs_active"] = self.runs_active()
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_for(self, event_type: str, agent_name: str) -> dict[str, Any]:
        """Wait until an event of ``event_type`` from ``agent_name`` has been recorded."""
        while True:
            for event in self.events:
                if event["type"] == event_type and event["agent_name"] == agent_name:
                    return event
            await self._changed.wait()

    def check_retired(self, status: str) -> None:
        """The run was retired once, with ``status``, before its final event went out."""
        assert self.retired == [status], self.retired
        assert self.runs_active() == 0
        for event in self.events:
            assert event["runs_active"] == (0 if event["final"] else 1), event


async def execute_in_table(
    owner: RecordingOwner, runtime: AgentRuntime, agent_name: str, *, run_id: str = RUN_ID
) -> str:
    """Run ``agent_name`` as a connection does: started and retired by a real RunTable.

    Returns the status the table counted the run under.
    """
    metrics = Metrics()
    table = RunTable(
        owner,
        runtime,
        metrics,
        max_runs=1,
        top_level=frozenset({agent_name}),
        check_can_start=lambda message_id: None,
    )
    owner.runs_active = lambda: metrics.runs_active
    start = StartRun(
        type="start_agent",
        request=owner.request,
        agent_name=agent_name,
        run_id=run_id,
        thread_id=THREAD_ID,
        message_id=None,
    )
    async with trio.open_nursery() as nursery:
        table.open(nursery)
        run = await table.start(start)
        assert run is not None
        assert run.run_id in table
    table.open(None)
    assert len(table) == 0, "the run is still in its table"
    assert sum(metrics.runs_total.values()) == 1, metrics.runs_total
    (status,) = (status for status, count in metrics.runs_total.items() if count)
    owner.retired.append(status)
    return status
