"""The run-invariant checker: hand-built transcripts, each broken one way, and a real run."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import trio

from agents import FaultSpec
from server import ChatServer
from server.protocol import InvariantViolation, check_run_invariants
from server.testing import ChatClient, open_chat_client, start_test_server

RUN_ID = "r-1"
USER_ID = "u1"

Event = dict[str, Any]


def event(kind: str, agent: str, **data: Any) -> Event:
    """One run event without ``seq``/``final``; :func:`numbered` adds them."""
    return {
        "type": kind,
        "run_id": RUN_ID,
        "thread_id": "t-1",
        "user_id": USER_ID,
        "agent_name": agent,
        "timestamp": "2026-11-21T10:00:00.123Z",
        "data": data,
    }


def numbered(events: list[Event], *, final: int | None = -1) -> list[Event]:
    """Number ``events`` 1..n and mark the event at index ``final`` (None: none) final."""
    out = [{**e, "seq": i + 1, "final": False} for i, e in enumerate(events)]
    if final is not None:
        out[final]["final"] = True
    return out


def started(agent: str, **data: Any) -> Event:
    return event("agent_started", agent, status="started", **data)


def thinking(agent: str, step: int = 1) -> Event:
    return event("agent_thinking", agent, reasoning="hmm", step_number=step)


def tool_executing(agent: str, call_id: str) -> Event:
    return event(
        "tool_executing", agent, tool_call_id=call_id, tool_name="lookup", parameters={"q": 1}
    )


def tool_completed(agent: str, call_id: str, status: str = "completed") -> Event:
    return event(
        "tool_completed",
        agent,
        tool_call_id=call_id,
        tool_name="lookup",
        status=status,
        result={"ok": True},
        execution_time_ms=3,
    )


def completed(agent: str) -> Event:
    return event("agent_completed", agent, status="completed", result={}, execution_time_ms=5)


def failed(agent: str, status: str = "failed", code: str = "AGENT_ERROR") -> Event:
    return event(
        "agent_error",
        agent,
        status=status,
        error={"code": code, "message": "boom"},
        execution_time_ms=5,
    )


def valid_run() -> list[Event]:
    """supervisor -> (triage -> reporting nested inside it, with tools) -> reporting."""
    return numbered(
        [
            started("supervisor", user_request="cut my bill", message_id="m1"),
            thinking("supervisor"),
            started("triage"),
            thinking("triage"),
            tool_executing("triage", "tc-1"),
            tool_completed("triage", "tc-1"),
            started("reporting"),
            tool_executing("reporting", "tc-2"),
            tool_completed("reporting", "tc-2", status="failed"),
            completed("reporting"),
            thinking("triage", step=2),
            completed("triage"),
            thinking("supervisor", step=2),
            started("reporting"),
            thinking("reporting"),
            completed("reporting"),
            completed("supervisor"),
        ]
    )


def failed_run() -> list[Event]:
    """An inner error that ends its enclosing agents, with a tool call closed first."""
    return numbered(
        [
            started("supervisor", user_request="x"),
            started("triage"),
            tool_executing("triage", "tc-1"),
            tool_completed("triage", "tc-1", status="failed"),
            failed("triage", "cancelled", "CANCELLED"),
            failed("supervisor", "cancelled", "CANCELLED"),
        ]
    )


def assert_violates(number: int, events: list[Event], **kwargs: Any) -> None:
    with pytest.raises(InvariantViolation, match=rf"^invariant {number}: "):
        check_run_invariants(events, **kwargs)


def test_a_valid_transcript_with_nested_agents_and_tool_calls_passes() -> None:
    check_run_invariants(valid_run())
    check_run_invariants(valid_run(), run_id=RUN_ID, user_id=USER_ID)


def test_a_run_ending_in_a_cascading_error_passes() -> None:
    check_run_invariants(failed_run(), run_id=RUN_ID, user_id=USER_ID)


def test_the_shortest_run_passes() -> None:
    check_run_invariants(numbered([started("supervisor"), completed("supervisor")]))
    check_run_invariants(numbered([started("supervisor"), failed("supervisor", "timeout")]))


def test_the_checker_does_not_modify_the_transcript() -> None:
    events = valid_run()
    before = copy.deepcopy(events)
    check_run_invariants(events, run_id=RUN_ID, user_id=USER_ID)
    assert events == before


def test_invariant_violation_is_an_assertion_error() -> None:
    # So a transcript check inside a test reads as a test failure.
    assert issubclass(InvariantViolation, AssertionError)


def renumber(events: list[Event], seqs: list[int]) -> list[Event]:
    return [{**e, "seq": s} for e, s in zip(events, seqs, strict=True)]


def with_field(index: int, **fields: Any) -> Callable[[list[Event]], list[Event]]:
    def change(events: list[Event]) -> list[Event]:
        events[index] = {**events[index], **fields}
        return events

    return change


@pytest.mark.parametrize(
    ("seqs", "why"),
    [
        ([1, 2, 3, 5, 6, 7], "gap"),
        ([2, 3, 4, 5, 6, 7], "starts at 2"),
        ([0, 1, 2, 3, 4, 5], "starts at 0"),
        ([1, 2, 2, 3, 4, 5], "repeat"),
        ([1, 2, 4, 3, 5, 6], "out of order"),
    ],
)
def test_sequence_numbers_that_do_not_count_from_one_by_one_violate_invariant_1(
    seqs: list[int], why: str
) -> None:
    assert_violates(1, renumber(failed_run(), seqs))


def test_a_string_seq_violates_invariant_1() -> None:
    events = failed_run()
    events[2]["seq"] = "3"
    assert_violates(1, events)


def test_a_first_event_other_than_agent_started_violates_invariant_2() -> None:
    events = numbered([thinking("supervisor"), started("supervisor"), completed("supervisor")])
    assert_violates(2, events)


def test_a_run_without_a_final_event_violates_invariant_7() -> None:
    # "A run ends with final: true whatever happens to it."
    assert_violates(7, numbered([started("supervisor"), completed("supervisor")], final=None))
    assert_violates(7, numbered([started("supervisor"), thinking("supervisor")], final=None))


def test_a_run_with_no_events_violates_invariant_7() -> None:
    assert_violates(7, [])


def test_two_final_events_violate_invariant_3() -> None:
    events = valid_run()
    events[11]["final"] = True  # triage's agent_completed, besides the supervisor's
    assert_violates(3, events)


def test_a_final_event_that_is_not_the_last_violates_invariant_3() -> None:
    events = numbered(
        [started("supervisor"), completed("supervisor"), thinking("supervisor")], final=1
    )
    assert_violates(3, events)
    # Even when the event after it would be a valid closing event.
    assert_violates(3, numbered(valid_run(), final=-2))


def test_a_final_event_from_an_inner_agent_violates_invariant_3() -> None:
    events = numbered([started("supervisor"), started("triage"), completed("triage")])
    assert_violates(3, events)


def test_a_final_event_that_is_not_a_closing_event_violates_invariant_3() -> None:
    events = numbered([started("supervisor"), thinking("supervisor")])
    assert_violates(3, events)


def test_an_outer_agent_closing_before_its_inner_agent_violates_invariant_4() -> None:
    events = numbered(
        [
            started("supervisor"),
            started("triage"),
            started("reporting"),
            completed("triage"),
            completed("reporting"),
            completed("supervisor"),
        ]
    )
    assert_violates(4, events)


def test_closing_an_agent_that_never_started_violates_invariant_4() -> None:
    events = numbered([started("supervisor"), completed("triage"), completed("supervisor")])
    assert_violates(4, events)


def test_closing_an_agent_twice_violates_invariant_4() -> None:
    events = numbered(
        [
            started("supervisor"),
            started("triage"),
            completed("triage"),
            failed("triage"),
            completed("supervisor"),
        ]
    )
    assert_violates(4, events)


def test_an_agent_left_open_at_the_end_violates_invariant_4() -> None:
    events = numbered([started("supervisor"), started("supervisor"), completed("supervisor")])
    assert_violates(4, events)


def test_an_event_from_an_agent_that_is_not_the_innermost_open_one_violates_invariant_4() -> None:
    events = numbered(
        [
            started("supervisor"),
            started("triage"),
            thinking("supervisor"),
            completed("triage"),
            completed("supervisor"),
        ]
    )
    assert_violates(4, events)


def test_tool_executing_without_tool_completed_violates_invariant_5() -> None:
    events = numbered(
        [
            started("supervisor"),
            started("triage"),
            tool_executing("triage", "tc-1"),
            completed("triage"),
            completed("supervisor"),
        ]
    )
    assert_violates(5, events)


def test_tool_completed_after_its_agent_closed_violates_invariant_5() -> None:
    events = numbered(
        [
            started("supervisor"),
            started("triage"),
            tool_executing("triage", "tc-1"),
            completed("triage"),
            tool_completed("triage", "tc-1"),
            completed("supervisor"),
        ]
    )
    assert_violates(5, events)


def test_tool_completed_without_tool_executing_violates_invariant_5() -> None:
    events = numbered(
        [started("supervisor"), tool_completed("supervisor", "tc-9"), completed("supervisor")]
    )
    assert_violates(5, events)


def test_a_tool_call_id_started_twice_violates_invariant_5() -> None:
    events = numbered(
        [
            started("supervisor"),
            tool_executing("supervisor", "tc-1"),
            tool_executing("supervisor", "tc-1"),
            tool_completed("supervisor", "tc-1"),
            tool_completed("supervisor", "tc-1"),
            completed("supervisor"),
        ]
    )
    assert_violates(5, events)


@pytest.mark.parametrize("index", [0, 4, 16])
def test_an_event_of_a_foreign_run_violates_invariant_6(index: int) -> None:
    assert_violates(6, with_field(index, run_id="r-other")(valid_run()))


def test_events_of_another_run_than_the_one_asked_for_violate_invariant_6() -> None:
    assert_violates(6, valid_run(), run_id="r-other")


@pytest.mark.parametrize("index", [0, 4, 16])
def test_an_event_for_a_foreign_user_violates_invariant_6(index: int) -> None:
    events = with_field(index, user_id="u2")(valid_run())
    assert_violates(6, events, user_id=USER_ID)


def test_the_user_is_only_checked_when_given() -> None:
    check_run_invariants(valid_run())
    assert_violates(6, valid_run(), user_id="u2")


def test_a_non_run_frame_in_a_transcript_violates_invariant_6() -> None:
    events = valid_run()
    events[3] = {**events[3], "type": "pong"}
    assert_violates(6, events)


# -- over a real server -------------------------------------------------------------

REQUEST = "How can we cut our GPT-4o bill of $5,000 per month?"


async def test_a_default_run_over_a_real_server_satisfies_every_invariant(
    server: ChatServer,
) -> None:
    async with open_chat_client(server, user_id=USER_ID) as client:
        run_id = await client.start(REQUEST, message_id="m-1")
        transcript = await client.collect(run_id)
    events = list(transcript.events)
    check_run_invariants(events, run_id=run_id, user_id=USER_ID)
    assert transcript.status == "completed"
    assert transcript.agents() == [
        "supervisor",
        "triage",
        "data",
        "optimization",
        "actions",
        "reporting",
    ]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["data"]["user_request"] == REQUEST
    assert events[0]["data"]["message_id"] == "m-1"
    # The default pipeline exercises tool events, so the check above covered invariant 5.
    assert "tool_executing" in transcript.types()


async def test_a_real_transcript_with_one_event_dropped_fails_the_check(
    server: ChatServer,
) -> None:
    async with open_chat_client(server, user_id=USER_ID) as client:
        transcript = await client.run(REQUEST)
    events = list(transcript.events)
    tool_done = transcript.types().index("tool_completed")
    without_tool_completed = numbered(events[:tool_done] + events[tool_done + 1 :])
    assert_violates(5, without_tool_completed, user_id=USER_ID)
    assert_violates(1, events[:tool_done] + events[tool_done + 1 :])
    assert_violates(7, numbered(events[:-1], final=None))


@pytest.mark.parametrize("fault", ["triage:raise:1", "reporting:raise:1", "supervisor:raise:1"])
async def test_runs_with_a_failing_agent_over_a_real_server_satisfy_every_invariant(
    nursery: trio.Nursery, fault: str
) -> None:
    server = await start_test_server(
        nursery, admin_port=None, faults=(FaultSpec.parse(fault),), fault_seed=1
    )
    async with open_chat_client(server, user_id=USER_ID) as client:
        run_id = await client.start(REQUEST)
        transcript = await client.collect(run_id)
    check_run_invariants(list(transcript.events), run_id=run_id, user_id=USER_ID)
    failing_agent = fault.split(":")[0]
    assert transcript.closing(failing_agent)["data"]["status"] == "failed"


# -- the test client reads streams: nothing may follow a run's final event ------------


class ScriptedPeer:
    """A client connection whose server side is a fixed list of frames."""

    def __init__(self, frames: list[dict[str, Any]]) -> None:
        self._frames = [json.dumps(frame) for frame in frames]
        self.sent: list[str | bytes] = []

    async def send_message(self, message: str | bytes) -> None:
        self.sent.append(message)

    async def get_message(self) -> str:
        await trio.lowlevel.checkpoint()
        return self._frames.pop(0)

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        pass


def scripted_client(*frames: dict[str, Any]) -> ChatClient:
    established = {"data": {"event": "connection_established", "connection_id": "c-1",
                            "user_id": USER_ID}}  # fmt: skip
    return ChatClient(ScriptedPeer(list(frames)), established)


def short_run(run_id: str = RUN_ID) -> list[Event]:
    events = numbered([started("supervisor"), completed("supervisor")])
    return [{**e, "run_id": run_id} for e in events]


def pong() -> Event:
    return {"type": "pong", "data": {"user_id": USER_ID}}


async def test_the_client_fails_on_a_final_event_sent_twice_even_after_collecting() -> None:
    run = short_run()
    twice = {**run[1], "seq": 3}
    client = scripted_client(*run, twice, pong())
    await client.start("hi", run_id=RUN_ID)
    with trio.fail_after(5):
        transcript = await client.collect(RUN_ID)  # stops at the first final event
        assert transcript.types() == ["agent_started", "agent_completed"]
        with pytest.raises(InvariantViolation, match=r"^invariant 3: .* after its final event"):
            await client.receive_frame("pong")


async def test_a_late_event_of_an_ended_run_fails_while_collecting_another() -> None:
    first, second = short_run("r-a"), short_run("r-b")
    late = {**thinking("supervisor"), "run_id": "r-a", "seq": 3, "final": False}
    client = scripted_client(first[0], first[1], second[0], late, second[1])
    await client.start("a", run_id="r-a")
    await client.start("b", run_id="r-b")
    with trio.fail_after(5):
        assert (await client.collect("r-a")).status == "completed"
        with pytest.raises(InvariantViolation, match=r"invariant 3: agent_thinking \(seq 3\)"):
            await client.collect("r-b")


async def test_a_run_id_reused_after_the_final_event_is_a_new_run() -> None:
    first, again = short_run(), short_run()
    again[0] = {**again[0], "data": {"status": "started", "user_request": "again"}}
    client = scripted_client(*first, *again)
    with trio.fail_after(5):
        await client.start("hi", run_id=RUN_ID)
        assert len((await client.collect(RUN_ID)).events) == 2
        await client.start("again", run_id=RUN_ID)
        second = await client.collect(RUN_ID)
        started_again = await client.wait_event(RUN_ID, "agent_started")
    assert second.events == tuple(again)
    assert started_again["data"]["user_request"] == "again"
    assert len(client.events(RUN_ID)) == 4  # every run that used the id
