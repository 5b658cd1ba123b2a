"""The protocol's run invariants as a checker (pure), for tests and load tools."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._errors import InvariantViolation

RUN_EVENT_TYPES = frozenset(
    {
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "agent_completed",
        "agent_error",
    }
)
_CLOSING = ("agent_completed", "agent_error")


def check_run_invariants(
    events: Sequence[Mapping[str, Any]],
    *,
    run_id: str | None = None,
    user_id: str | None = None,
) -> None:
    """Check invariants 1-5 and 7 on the events one client saw for one run.

    Raises :class:`InvariantViolation` naming the first broken invariant.
    Invariant 6 (no foreign events) is a property of a connection: the
    client helpers check it on everything they receive.
    """

    def fail(number: int, text: str) -> None:
        raise InvariantViolation(f"invariant {number}: {text}")

    if not events:
        fail(7, "the run produced no events")
    if run_id is None:
        run_id = events[0].get("run_id")
    for i, event in enumerate(events):
        if event.get("type") not in RUN_EVENT_TYPES:
            fail(6, f"event {i} is not a run event: {event.get('type')!r}")
        if event.get("run_id") != run_id:
            fail(6, f"event {i} belongs to run {event.get('run_id')!r}, not {run_id!r}")
        if user_id is not None and event.get("user_id") != user_id:
            fail(6, f"event {i} is for user {event.get('user_id')!r}, not {user_id!r}")
        if event.get("seq") != i + 1:
            fail(1, f"event {i} has seq {event.get('seq')!r}, expected {i + 1}")
    first = events[0]
    if first["type"] != "agent_started":
        fail(2, f"first event is {first['type']!r}, not agent_started")
    finals = [i for i, e in enumerate(events) if e.get("final") is True]
    if finals != [len(events) - 1]:
        fail(3 if finals else 7, f"final:true on events {finals}, expected only the last")
    last = events[-1]
    if last["type"] not in _CLOSING or last.get("agent_name") != first.get("agent_name"):
        fail(3, "the final event is not the top-level agent's closing event")
    agents: list[str] = []
    open_tools: dict[str, str] = {}
    for i, event in enumerate(events):
        kind, agent = event["type"], event.get("agent_name")
        data = event.get("data") or {}
        if kind == "agent_started":
            agents.append(str(agent))
        elif kind in _CLOSING:
            if not agents or agents[-1] != agent:
                fail(
                    4,
                    f"event {i} closes {agent!r} but the innermost open agent is "
                    f"{agents[-1] if agents else None!r}",
                )
            for open_id, owner in open_tools.items():
                if owner == agent:
                    fail(5, f"{agent!r} closed with tool call {open_id!r} still open")
            agents.pop()
        else:
            if not agents or agents[-1] != agent:
                fail(4, f"event {i} ({kind}) from {agent!r}, which is not the innermost open agent")
            if kind == "tool_executing":
                call_id = data.get("tool_call_id")
                if call_id in open_tools:
                    fail(5, f"tool call {call_id!r} started twice")
                open_tools[str(call_id)] = str(agent)
            elif kind == "tool_completed":
                call_id = data.get("tool_call_id")
                if open_tools.pop(str(call_id), None) is None:
                    fail(5, f"tool_completed for {call_id!r} without a tool_executing")
    if agents:
        fail(4, f"agents still open at the end: {agents}")
