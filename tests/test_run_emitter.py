"""server/runs/_run.py: how a run numbers, hands over and ends its events, races included.

The owner here stands for the connection: its queue may be full (``send_event``
then waits for room), and if it raises ``trio.Cancelled`` nothing was queued.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import trio
import trio.testing
from _run_owner import RecordingOwner

from agents import AgentClassRegistry, AgentRuntime, BaseAgent, EndCause, RunScope, execute_run
from server.runs import Run


class GatedOwner:
    """A connection whose queue is full while ``room`` is not set."""

    user_id = "u-1"
    connection_id = "c-1"

    def __init__(self) -> None:
        self.room = trio.Event()
        self.room.set()
        self.events: list[dict[str, Any]] = []

    async def send_event(self, payload: bytes) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        await self.room.wait()  # cancelled here: nothing was queued
        self.events.append(json.loads(payload))


class RecordingSink:
    def __init__(self, owner: GatedOwner) -> None:
        self._owner = owner
        self.delivered: list[tuple[int, str, bool]] = []

    def deliver(self, seq: int, payload: bytes, *, final: bool) -> None:
        # Sinks come after the owner: it has the event already.
        assert self._owner.events[-1]["seq"] == seq
        self.delivered.append((seq, json.loads(payload)["type"], final))


class Bookkeeping:
    """The run's ``on_final``: what a run table does, and when it was done."""

    def __init__(self, owner: GatedOwner) -> None:
        self._owner = owner
        self.retired: list[tuple[str, int]] = []

    def __call__(self, run: Run, status: str) -> None:
        self.retired.append((status, len(self._owner.events)))


def open_run(owner: GatedOwner, *, message_id: str | None = "m-1") -> tuple[Run, Bookkeeping]:
    bookkeeping = Bookkeeping(owner)
    run = Run(
        owner,
        AgentRuntime(AgentClassRegistry()),
        run_id="r-1",
        thread_id="t-1",
        agent_name="top",
        request="the request",
        message_id=message_id,
        on_final=bookkeeping,
    )
    return run, bookkeeping


async def test_events_are_numbered_enveloped_and_handed_to_the_owner_then_the_sinks() -> None:
    owner = GatedOwner()
    run, bookkeeping = open_run(owner)
    sink = RecordingSink(owner)
    run.sinks.append(sink)
    await run.emit("top", "agent_started", {"status": "started"})
    await run.emit("top", "agent_thinking", {"reasoning": "hmm"})
    await run.emit("top", "agent_completed", {"status": "completed"}, final=True)

    assert [(e["seq"], e["type"], e["final"]) for e in owner.events] == [
        (1, "agent_started", False),
        (2, "agent_thinking", False),
        (3, "agent_completed", True),
    ]
    assert {(e["run_id"], e["thread_id"], e["user_id"]) for e in owner.events} == {
        ("r-1", "t-1", "u-1")
    }
    first, second, _ = (e["data"] for e in owner.events)
    assert first == {"status": "started", "user_request": "the request", "message_id": "m-1"}
    assert "user_request" not in second
    assert sink.delivered == [(1, "agent_started", False), (2, "agent_thinking", False),
                              (3, "agent_completed", True)]  # fmt: skip
    # Retired once, with its status, before the final event was handed over.
    assert bookkeeping.retired == [("completed", 2)]
    assert run.last_seq == 3


async def test_a_final_event_waiting_for_room_goes_out_even_if_the_run_is_cancelled_meanwhile(
    autojump_clock: trio.testing.MockClock,
) -> None:
    owner = GatedOwner()
    run, bookkeeping = open_run(owner)
    sink = RecordingSink(owner)
    run.sinks.append(sink)
    await run.emit("top", "agent_started", {"status": "started"})
    owner.room = trio.Event()  # the connection's queue is full
    async with trio.open_nursery() as nursery:

        async def final_event() -> None:
            with run.scope.cancel_scope:
                await run.emit("top", "agent_completed", {"status": "completed"}, final=True)

        nursery.start_soon(final_event)
        await trio.testing.wait_all_tasks_blocked()
        assert bookkeeping.retired == [("completed", 1)]  # retired: it is on its way
        run.scope.cancel(EndCause.CANCELLED)  # a stop (or drain) meets it waiting for room
        await trio.testing.wait_all_tasks_blocked()
        owner.room.set()
    assert [(e["type"], e["final"]) for e in owner.events] == [
        ("agent_started", False),
        ("agent_completed", True),
    ]
    assert sink.delivered[-1] == (2, "agent_completed", True)
    assert not run.scope.cancel_scope.cancelled_caught  # the emit itself was not cut short
    assert trio.current_time() == 0


async def test_a_run_already_cancelled_sends_no_final_event_and_is_not_retired() -> None:
    owner = GatedOwner()
    run, bookkeeping = open_run(owner)
    await run.emit("top", "agent_started", {"status": "started"})
    run.scope.cancel(EndCause.CANCELLED)
    with run.scope.cancel_scope:
        await run.emit("top", "agent_completed", {"status": "completed"}, final=True)
    assert run.scope.cancel_scope.cancelled_caught
    assert [e["type"] for e in owner.events] == ["agent_started"]
    assert bookkeeping.retired == []
    assert run.last_seq == 1  # its number is still free for the closing event


async def test_an_event_cancelled_while_waiting_for_room_leaves_its_number_free() -> None:
    owner = GatedOwner()
    run, _ = open_run(owner, message_id=None)
    sink = RecordingSink(owner)
    run.sinks.append(sink)
    await run.emit("top", "agent_started", {"status": "started"})
    owner.room = trio.Event()
    with trio.CancelScope() as waiting:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run.emit, "top", "agent_thinking", {"reasoning": "lost"})
            await trio.testing.wait_all_tasks_blocked()
            waiting.cancel()
    owner.room.set()
    await run.emit("top", "agent_completed", {"status": "completed"}, final=True)
    assert [(e["seq"], e["type"]) for e in owner.events] == [
        (1, "agent_started"),
        (2, "agent_completed"),
    ]
    assert [seq for seq, _, _ in sink.delivered] == [1, 2]
    assert "message_id" not in owner.events[0]["data"]


async def test_a_stop_landing_as_the_agent_returns_ends_the_run_cancelled_not_completed() -> None:
    # The agent's last await has completed and the stop is processed before the
    # run's task resumes: trio delivers the result, and the cancellation waits
    # for the next checkpoint, which must come before the final event.
    scopes: list[RunScope] = []

    class Quick(BaseAgent):
        name = "quick"
        top_level = True

        async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            scopes[0].cancel(EndCause.CANCELLED)  # the client's stop_agent, just now
            return {"done": True}

    registry = AgentClassRegistry()
    registry.register(Quick)
    owner = RecordingOwner("hi")
    run = owner.open_run(AgentRuntime(registry), agent_name="quick")
    scopes.append(run.scope)
    status = await execute_run(run.scope, "quick")

    assert status == "cancelled"
    assert [(e["type"], e["data"]["status"]) for e in owner.events] == [
        ("agent_started", "started"),
        ("agent_error", "cancelled"),
    ]
    assert owner.events[-1]["data"]["error"]["code"] == "CANCELLED"
    owner.check_retired("cancelled")


class QueueingOwner:
    """A connection with room in its queue whose writer is a task of its own."""

    user_id = "u-1"
    connection_id = "c-1"

    def __init__(self) -> None:
        self.events: list[bytes] = []

    async def send_event(self, payload: bytes) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()  # queued, no wait
        self.events.append(payload)


async def test_the_first_event_lets_the_owner_s_writer_run_before_the_rest_of_the_run(
    nursery: trio.Nursery,
) -> None:
    # An owner that cannot write at once (no send_event_at_once) writes from a
    # task: the first emit yields so that task runs before the run goes on,
    # or a run that never waits would send agent_started with its last event.
    owner = QueueingOwner()
    run = Run(
        owner, AgentRuntime(AgentClassRegistry()), run_id="r-1", thread_id="t-1",
        agent_name="top", request="the request", message_id=None,
        on_final=lambda run, status: None,
    )  # fmt: skip
    ran: list[int] = []

    async def writer() -> None:
        ran.append(len(owner.events))

    nursery.start_soon(writer)
    await run.emit("top", "agent_started", {"status": "started"})
    assert ran == [1]
    await run.emit("top", "agent_thinking", {"reasoning": "r", "step_number": 1})
    assert len(owner.events) == 2
