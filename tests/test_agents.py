"""Unit tests of the agent framework (``agents/``), driven without sockets.

Runs go through the entry points the server uses (``RunScope``, ``execute_run``,
``AgentRuntime``, ``RunTable``) with the server's own ``Run`` as the emitter and
an in-memory owner in place of the connection (``tests/_run_owner.py``), so
every transcript is numbered and retired as a client's is, and checked against
the protocol's run invariants. Time is virtual (``autojump_clock``).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from _run_owner import RecordingOwner, execute_in_table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import (
    AgentClassRegistry,
    AgentFailed,
    AgentRuntime,
    BaseAgent,
    ConfigurationError,
    EndCause,
    FaultKind,
    FaultPlan,
    FaultSpec,
    RunScope,
    UserExecutionContext,
    execute_run,
)
from agents.builtin import classify, default_registry, default_tools
from agents.builtin.supervisor import plan_for
from agents.builtin.triage import extract_entities
from server.testing import RunTranscript, check_run_invariants

RUN_ID = "r-test"
THREAD_ID = "t-test"
USER_ID = "u-test"
REQUEST = "How can we cut our GPT-4o bill of $5,000 per month?"

BUILTIN = {"supervisor", "triage", "data", "optimization", "actions", "data_helper", "reporting"}
CATEGORIES = {
    "cost_optimization",
    "latency_optimization",
    "model_selection",
    "monitoring",
    "general",
}
PRIORITIES = {"critical", "high", "medium", "low"}
CLOSING = ("agent_completed", "agent_error")
ERROR_CODES = {"failed": "AGENT_ERROR", "timeout": "TIMEOUT"}


# -- in-memory run harness ----------------------------------------------------


class CountingObserver:
    """An ``AgentObserver`` that keeps the ``chat_agents_active`` gauge by hand."""

    def __init__(self) -> None:
        self.opened: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()
        self.active = 0
        self.lowest = 0

    def agent_opened(self, name: str) -> None:
        self.opened[name] += 1
        self.active += 1

    def agent_closed(self, name: str, seconds: float) -> None:
        assert seconds >= 0
        self.closed[name] += 1
        self.active -= 1
        self.lowest = min(self.lowest, self.active)

    def assert_balanced(self) -> None:
        assert self.lowest >= 0, "the agent gauge went negative"
        assert self.active == 0
        assert self.opened == self.closed


def assert_gauge_exact(events: Sequence[Mapping[str, Any]]) -> None:
    """At every event the gauge counts exactly the agents still open.

    An agent counts from before its ``agent_started`` and no longer counts
    when its closing event is emitted (so the final event sees 0).
    """
    depth = 0
    for event in events:
        if event["type"] == "agent_started":
            depth += 1
        elif event["type"] in CLOSING:
            depth -= 1
        assert event["agents_active"] == depth, event


class Bench:
    """One factory (with a counting observer) and the runs made with it."""

    def __init__(
        self,
        registry: AgentClassRegistry | None = None,
        *,
        faults: Iterable[str] = (),
        seed: int | None = None,
        agent_timeout: float = 30.0,
        run_timeout: float = 300.0,
    ) -> None:
        self.observer = CountingObserver()
        self.runtime = AgentRuntime(
            registry if registry is not None else default_registry(),
            tools=default_tools(),
            agent_timeout=agent_timeout,
            run_timeout=run_timeout,
            faults=FaultPlan([FaultSpec.parse(f) for f in faults], seed=seed),
            observer=self.observer,
        )

    def open(self, request: str = REQUEST) -> tuple[RunScope, RecordingOwner]:
        """The scope of a real server ``Run`` (drive it with ``execute_run``) and its owner."""
        owner = RecordingOwner(request, agents_active=lambda: self.observer.active)
        return owner.open_run(self.runtime).scope, owner

    async def run(self, request: str = REQUEST, agent_name: str = "supervisor") -> RunTranscript:
        """A whole run, started and retired by a real ``RunTable`` as a connection does."""
        owner = RecordingOwner(request, agents_active=lambda: self.observer.active)
        status = await execute_in_table(owner, self.runtime, agent_name)
        return self.finish(status, owner)

    def finish(self, status: str, emitter: RecordingOwner) -> RunTranscript:
        """Check a finished run: invariants, status, retirement, and the gauge."""
        check_run_invariants(emitter.events, run_id=RUN_ID, user_id=USER_ID)
        transcript = RunTranscript(RUN_ID, tuple(emitter.events))
        assert transcript.status == status
        assert transcript.events[0]["data"]["user_request"] == emitter.request
        emitter.check_retired(status)
        self.observer.assert_balanced()
        assert_gauge_exact(transcript.events)
        return transcript


class Background:
    """``execute_run`` in a task, so a test can act while the run is in progress."""

    def __init__(self) -> None:
        self.status: str | None = None

    async def __call__(self, scope: RunScope, agent_name: str) -> None:
        self.status = await execute_run(scope, agent_name)


def error_of(event: Mapping[str, Any]) -> tuple[str, str, str]:
    """(status, code, message) of an ``agent_error`` event."""
    assert event["type"] == "agent_error", event
    data = event["data"]
    return data["status"], data["error"]["code"], data["error"]["message"]


def kinds(transcript: RunTranscript) -> list[tuple[str, str]]:
    return [(e["type"], e["agent_name"]) for e in transcript.events]


# -- custom agents ------------------------------------------------------------


def registry_of(*classes: type[BaseAgent]) -> AgentClassRegistry:
    registry = AgentClassRegistry()
    for cls in classes:
        registry.register(cls)
    return registry


def blocking_registry(entered: trio.Event) -> AgentClassRegistry:
    """``outer`` (top level) runs ``inner``, whose tool blocks until cancelled."""

    class Outer(BaseAgent):
        name = "outer"
        top_level = True

        async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            await self.think("delegating to inner")
            return {"inner": await self.run_agent("inner")}

    class Inner(BaseAgent):
        name = "inner"

        async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            async def wait_forever(until: str) -> None:
                entered.set()
                await trio.sleep_forever()

            await self.call_tool("wait_forever", {"until": "cancelled"}, wait_forever)
            return {"unreachable": True}

    return registry_of(Outer, Inner)


@attrs.define
class InstanceLog:
    """What tracked agent classes record about their instances."""

    serials: itertools.count[int] = attrs.field(factory=itertools.count)
    refs: list[weakref.ReferenceType[BaseAgent]] = attrs.field(factory=list)
    executed: list[tuple[str, int]] = attrs.field(factory=list)

    def alive(self) -> list[BaseAgent]:
        return [agent for ref in self.refs if (agent := ref()) is not None]


def tracked(cls: type[BaseAgent], log: InstanceLog) -> type[BaseAgent]:
    """A subclass of ``cls`` (same name) that logs each instance and each execute()."""

    class Tracked(cls):  # type: ignore[valid-type,misc]
        def __init__(self, context: UserExecutionContext) -> None:
            super().__init__(context)
            self.serial = next(log.serials)
            log.refs.append(weakref.ref(self))

        async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            log.executed.append((self.name, self.serial))
            result: dict[str, Any] = await super().execute(inputs)
            return result

    Tracked.__qualname__ = f"Tracked{cls.__name__}"
    return Tracked


def tracked_default_registry(log: InstanceLog) -> AgentClassRegistry:
    base = default_registry()
    return registry_of(*(tracked(base[name], log) for name in base))


# -- the default pipeline -----------------------------------------------------


async def test_default_pipeline_runs_the_full_workflow_for_a_request_with_model_and_spend(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bench = Bench()
    run = await bench.run()

    assert kinds(run) == [
        ("agent_started", "supervisor"),
        ("agent_thinking", "supervisor"),
        ("agent_started", "triage"),
        ("agent_thinking", "triage"),
        ("tool_executing", "triage"),
        ("tool_completed", "triage"),
        ("agent_thinking", "triage"),
        ("agent_completed", "triage"),
        ("agent_thinking", "supervisor"),
        ("agent_started", "data"),
        ("agent_thinking", "data"),
        ("tool_executing", "data"),  # catalogue_lookup
        ("tool_completed", "data"),
        ("agent_thinking", "data"),
        ("agent_thinking", "data"),
        ("agent_thinking", "data"),
        ("agent_completed", "data"),
        ("agent_started", "optimization"),
        ("agent_thinking", "optimization"),
        ("agent_thinking", "optimization"),
        ("tool_executing", "optimization"),  # compare_models, same tier
        ("tool_completed", "optimization"),
        ("tool_executing", "optimization"),  # compare_models, next tier
        ("tool_completed", "optimization"),
        ("agent_thinking", "optimization"),
        ("tool_executing", "optimization"),  # cost_calculator, caching
        ("tool_completed", "optimization"),
        ("tool_executing", "optimization"),  # cost_calculator, trimming
        ("tool_completed", "optimization"),
        ("agent_thinking", "optimization"),
        ("agent_completed", "optimization"),
        ("agent_started", "actions"),
        ("agent_thinking", "actions"),
        ("agent_thinking", "actions"),
        ("agent_completed", "actions"),
        ("agent_thinking", "supervisor"),
        ("agent_started", "reporting"),
        ("agent_thinking", "reporting"),
        ("agent_thinking", "reporting"),
        # The model's streamed text, coalesced (no virtual time passes: first
        # delta at once, the rest when the stream ends).
        ("agent_thinking", "reporting"),
        ("agent_thinking", "reporting"),
        ("agent_completed", "reporting"),
        ("agent_completed", "supervisor"),
    ]
    assert run.status == "completed"
    # Steps are numbered per agent instance.
    steps = [
        (e["agent_name"], e["data"]["step_number"])
        for e in run.events
        if "step_number" in e["data"]
    ]
    assert steps == [
        ("supervisor", 1),
        ("triage", 1),
        ("triage", 2),
        ("supervisor", 2),
        *(("data", i) for i in range(1, 5)),
        *(("optimization", i) for i in range(1, 5)),
        ("actions", 1),
        ("actions", 2),
        ("supervisor", 3),
        *(("reporting", i) for i in range(1, 5)),
    ]
    executing, completed = run.events[4], run.events[5]
    assert executing["data"]["tool_name"] == "extract_entities"
    assert executing["data"]["parameters"] == {"text": REQUEST}
    assert completed["data"]["tool_call_id"] == executing["data"]["tool_call_id"]
    assert completed["data"]["status"] == "completed"
    assert completed["data"]["result"] == extract_entities(REQUEST)
    assert completed["data"]["execution_time_ms"] >= 0

    triage = run.closing("triage")["data"]["result"]
    assert triage["category"] == "cost_optimization"
    assert triage["entities"]["models"] == ["gpt-4o"]
    result = run.result
    assert result is not None
    assert result["degraded"] is False
    assert result["triage"] == triage
    answer = result["answer"]
    assert answer.startswith("## Cost optimisation\n")
    assert "### Recommendations" in answer
    assert "`gpt-4o`" in answer
    assert "$5,000.00" in answer
    assert "degraded" not in answer
    assert bench.observer.opened == Counter(
        supervisor=1, triage=1, data=1, optimization=1, actions=1, reporting=1
    )
    # No agent sleeps: the whole run takes no virtual time.
    assert trio.current_time() == 0.0
    assert all(e["at"] == 0.0 for e in run.events)


async def test_triage_failure_is_degraded_by_the_supervisor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bench = Bench(faults=["triage:raise:1"])
    run = await bench.run()

    assert run.agents() == ["supervisor", "triage", "data_helper", "reporting"]
    assert error_of(run.closing("triage")) == (
        "failed",
        "AGENT_ERROR",
        "InjectedFault: injected fault in triage",
    )
    # The fault fires right after agent_started: triage did nothing else.
    triage_events = [e["type"] for e in run.events if e["agent_name"] == "triage"]
    assert triage_events == ["agent_started", "agent_error"]
    assert run.status == "completed"
    result = run.result
    assert result is not None
    assert result["degraded"] is True
    assert result["triage"] is None
    assert result["answer"].startswith("## Answer (degraded)\n")
    assert "triage failed" in result["answer"]
    assert run.closing("reporting")["data"]["result"]["degraded"] is True


async def test_reporting_failure_fails_the_run_with_the_same_status_and_code(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bench = Bench(faults=["reporting:raise:1"])
    run = await bench.run()

    assert run.status == "failed"
    reporting = error_of(run.closing("reporting"))
    assert reporting[:2] == ("failed", "AGENT_ERROR")
    assert run.final["type"] == "agent_error"
    assert run.final["agent_name"] == "supervisor"
    assert run.final["final"] is True
    assert error_of(run.final) == reporting
    assert [e["type"] for e in run.events[-2:]] == ["agent_error", "agent_error"]
    assert run.closing("triage")["type"] == "agent_completed"


async def test_agent_timeout_closes_triage_at_its_deadline_and_the_run_completes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bench = Bench(faults=["triage:hang:1"], agent_timeout=5)
    run = await bench.run()

    triage_error = run.closing("triage")
    assert error_of(triage_error) == ("timeout", "TIMEOUT", "triage exceeded its time limit of 5 s")
    assert triage_error["at"] == 5.0
    assert run.status == "completed"
    assert run.final["at"] == 5.0
    assert trio.current_time() == 5.0
    result = run.result
    assert result is not None
    assert result["degraded"] is True
    assert "triage timeout" in result["answer"]


async def test_run_timeout_ends_a_hanging_supervisor_at_the_run_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bench = Bench(faults=["supervisor:hang:1"], run_timeout=7)
    scope, emitter = bench.open()
    status = await execute_run(scope, "supervisor")
    run = bench.finish(status, emitter)

    assert status == "timeout"
    assert run.types() == ["agent_started", "agent_error"]
    assert error_of(run.final) == (
        "timeout",
        "TIMEOUT",
        "supervisor exceeded its time limit of 7 s",
    )
    assert run.final["at"] == 7.0
    assert trio.current_time() == 7.0


async def test_run_timeout_inside_an_inner_tool_call_closes_everything_with_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bench = Bench(blocking_registry(trio.Event()), run_timeout=7, agent_timeout=30)
    run = await bench.run(agent_name="outer")

    assert kinds(run)[-3:] == [
        ("tool_completed", "inner"),
        ("agent_error", "inner"),
        ("agent_error", "outer"),
    ]
    tool = run.events[-3]["data"]
    assert tool["status"] == "failed"
    assert tool["result"] == {"error": "TIMEOUT", "message": "time limit exceeded"}
    assert error_of(run.closing("inner"))[:2] == ("timeout", "TIMEOUT")
    assert error_of(run.final) == ("timeout", "TIMEOUT", "outer exceeded its time limit of 7 s")
    assert [e["at"] for e in run.events[-3:]] == [7.0, 7.0, 7.0]


async def test_agent_timeout_inside_a_tool_call_closes_the_tool_then_the_agents(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bench = Bench(blocking_registry(trio.Event()), agent_timeout=5)
    run = await bench.run(agent_name="outer")

    assert kinds(run)[-3:] == [
        ("tool_completed", "inner"),
        ("agent_error", "inner"),
        ("agent_error", "outer"),
    ]
    assert run.events[-3]["data"]["result"] == {
        "error": "TIMEOUT",
        "message": "time limit exceeded",
    }
    inner = error_of(run.closing("inner"))
    assert inner == ("timeout", "TIMEOUT", "inner exceeded its time limit of 5 s")
    # outer does not handle it, so it closes with the same status and code.
    assert error_of(run.final) == inner
    assert run.final["at"] == 5.0


async def test_slow_fault_takes_exactly_one_virtual_second_and_completes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bench = Bench(faults=["triage:slow:1"])
    run = await bench.run()

    started = run.events[2]
    assert (started["type"], started["agent_name"], started["at"]) == ("agent_started", "triage", 0)
    first_step = next(e for e in run.events if e["agent_name"] == "triage" and e["seq"] > 3)
    assert first_step["at"] == 1.0
    assert run.closing("triage")["type"] == "agent_completed"
    assert run.closing("triage")["at"] == 1.0
    assert run.status == "completed"
    assert run.result is not None
    assert run.result["degraded"] is False
    assert trio.current_time() == 1.0


async def test_slow_fault_counts_against_the_agent_time_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bench = Bench(faults=["triage:slow:1"], agent_timeout=0.5)
    run = await bench.run()

    triage_error = run.closing("triage")
    assert error_of(triage_error) == (
        "timeout",
        "TIMEOUT",
        "triage exceeded its time limit of 0.5 s",
    )
    assert triage_error["at"] == 0.5
    assert run.status == "completed"
    assert run.result is not None
    assert run.result["degraded"] is True
    assert trio.current_time() == 0.5


async def test_faults_for_one_agent_act_in_spec_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bench = Bench(faults=["triage:slow:1", "triage:raise:1"])
    run = await bench.run()

    assert error_of(run.closing("triage"))[:2] == ("failed", "AGENT_ERROR")
    assert run.closing("triage")["at"] == 1.0
    assert run.status == "completed"


# -- cancellation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("cause", "code", "message"),
    [
        (EndCause.CANCELLED, "CANCELLED", "stopped by the client"),
        (EndCause.SHUTTING_DOWN, "SHUTTING_DOWN", "the server is shutting down"),
    ],
)
async def test_cancel_inside_a_tool_call_closes_tool_then_inner_then_outer(
    autojump_clock: trio.testing.MockClock, cause: EndCause, code: str, message: str
) -> None:
    entered = trio.Event()
    bench = Bench(blocking_registry(entered))
    scope, emitter = bench.open()
    background = Background()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(background, scope, "outer")
            await entered.wait()
            before = len(emitter.events)
            assert emitter.events[-1]["type"] == "tool_executing"
            assert bench.observer.active == 2
            scope.cancel(cause)

    assert background.status == "cancelled"
    run = bench.finish("cancelled", emitter)
    tail = run.events[before:]
    assert [(e["type"], e["agent_name"]) for e in tail] == [
        ("tool_completed", "inner"),
        ("agent_error", "inner"),
        ("agent_error", "outer"),
    ]
    tool = tail[0]["data"]
    assert tool["status"] == "failed"
    assert tool["tool_call_id"] == run.events[before - 1]["data"]["tool_call_id"]
    assert tool["result"] == {"error": code, "message": message}
    assert error_of(tail[1]) == ("cancelled", code, message)
    assert error_of(tail[2]) == ("cancelled", code, message)
    assert tail[2]["final"] is True
    # Nothing waited on a timer: the cancellation was immediate.
    assert trio.current_time() == 0.0


async def test_cancel_is_not_degraded_by_an_agent_that_handles_agent_errors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The supervisor degrades when triage fails or times out, but a stop must
    # end the whole run, not be turned into a degraded answer.
    bench = Bench(faults=["triage:hang:1"])
    scope, emitter = bench.open()
    background = Background()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(background, scope, "supervisor")
            await emitter.wait_for("agent_started", "triage")
            scope.cancel(EndCause.CANCELLED)

    assert background.status == "cancelled"
    run = bench.finish("cancelled", emitter)
    assert run.agents() == ["supervisor", "triage"]
    assert error_of(run.closing("triage"))[:2] == ("cancelled", "CANCELLED")
    assert error_of(run.final)[:2] == ("cancelled", "CANCELLED")
    assert trio.current_time() == 0.0


async def test_first_cancel_cause_wins(autojump_clock: trio.testing.MockClock) -> None:
    entered = trio.Event()
    bench = Bench(blocking_registry(entered))
    scope, emitter = bench.open()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(execute_run, scope, "outer")
            await entered.wait()
            scope.cancel(EndCause.CANCELLED)
            scope.cancel(EndCause.SHUTTING_DOWN)

    run = bench.finish("cancelled", emitter)
    assert error_of(run.final)[:2] == ("cancelled", "CANCELLED")
    assert error_of(run.closing("inner"))[:2] == ("cancelled", "CANCELLED")


@pytest.mark.parametrize(
    ("cause", "status", "code"),
    [
        (EndCause.CANCELLED, "cancelled", "CANCELLED"),
        (EndCause.SHUTTING_DOWN, "cancelled", "SHUTTING_DOWN"),
        (EndCause.TIMEOUT, "timeout", "TIMEOUT"),
    ],
)
async def test_cancel_before_the_run_starts_still_opens_and_closes_it(
    autojump_clock: trio.testing.MockClock, cause: EndCause, status: str, code: str
) -> None:
    bench = Bench()
    scope, emitter = bench.open()
    scope.cancel(cause)
    returned = await execute_run(scope, "supervisor")
    run = bench.finish(returned, emitter)

    assert returned == status
    assert kinds(run) == [("agent_started", "supervisor"), ("agent_error", "supervisor")]
    assert error_of(run.final)[:2] == (status, code)
    assert run.final["final"] is True
    assert bench.observer.opened == Counter(supervisor=1)


async def test_outside_cancellation_inside_a_tool_call_closes_everything_as_disconnected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    entered = trio.Event()
    bench = Bench(blocking_registry(entered))
    scope, emitter = bench.open()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(execute_run, scope, "outer")
            await entered.wait()
            seen = list(emitter.events)
            assert bench.observer.active == 2
            # Not scope.cancel(): the connection's own scope goes away.
            nursery.cancel_scope.cancel()

    # v1.1: the run's history and its other followers still get its end.
    assert seen[-1]["type"] == "tool_executing"
    closing = emitter.events[len(seen) :]
    assert [(e["type"], e["agent_name"]) for e in closing] == [
        ("tool_completed", "inner"),
        ("agent_error", "inner"),
        ("agent_error", "outer"),
    ]
    assert closing[0]["data"]["result"]["error"] == "DISCONNECTED"
    assert [e["data"]["error"]["code"] for e in closing[1:]] == ["DISCONNECTED"] * 2
    assert [e["data"]["status"] for e in closing[1:]] == ["cancelled"] * 2
    assert [e["final"] for e in closing] == [False, False, True]
    check_run_invariants(emitter.events, run_id=RUN_ID, user_id=USER_ID)
    assert scope.cause is None
    assert scope.cancellation_cause() is EndCause.DISCONNECTED
    bench.observer.assert_balanced()
    assert bench.observer.opened == Counter(outer=1, inner=1)
    assert trio.current_time() == 0.0


async def test_outside_cancellation_of_a_hanging_agent_closes_it_as_disconnected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bench = Bench(faults=["triage:hang:1"])
    scope, emitter = bench.open()
    with trio.fail_after(10), trio.CancelScope() as connection_scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(execute_run, scope, "supervisor")
            await emitter.wait_for("agent_started", "triage")
            seen = list(emitter.events)
            connection_scope.cancel()

    assert connection_scope.cancelled_caught
    closing = emitter.events[len(seen) :]
    assert [(e["type"], e["agent_name"]) for e in closing] == [
        ("agent_error", "triage"),
        ("agent_error", "supervisor"),
    ]
    assert {e["data"]["error"]["code"] for e in closing} == {"DISCONNECTED"}
    check_run_invariants(emitter.events, run_id=RUN_ID, user_id=USER_ID)
    assert bench.observer.active == 0
    bench.observer.assert_balanced()
    assert trio.current_time() == 0.0


# -- instances ----------------------------------------------------------------


async def test_factory_makes_a_fresh_instance_for_every_step_and_keeps_none(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = InstanceLog()
    bench = Bench(tracked_default_registry(log))
    first = await bench.run()
    second = await bench.run()

    assert first.status == second.status == "completed"
    # Twelve steps, twelve instances, each executed exactly once.
    names = ["supervisor", "triage", "data", "optimization", "actions", "reporting"]
    assert log.executed == list(zip(names + names, range(12), strict=True))
    assert len(log.refs) == 12
    gc.collect()
    assert log.alive() == []


async def test_failed_and_timed_out_instances_are_released_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = InstanceLog()
    bench = Bench(
        tracked_default_registry(log),
        faults=["triage:hang:1", "reporting:raise:1"],
        agent_timeout=2,
    )
    run = await bench.run()

    assert run.status == "failed"
    assert error_of(run.closing("triage"))[:2] == ("timeout", "TIMEOUT")
    assert trio.current_time() == 2.0
    assert run.agents() == ["supervisor", "triage", "data_helper", "reporting"]
    assert len(log.refs) == 4
    gc.collect()
    assert log.alive() == []


async def test_a_failing_instance_does_not_affect_the_next_step_or_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = InstanceLog()

    class Fragile(BaseAgent):
        name = "fragile"
        top_level = True

        async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            # State left behind on an instance would show up in the next step.
            reused = getattr(self, "poisoned", False)
            self.poisoned = True
            if inputs.get("fail", self.context.request == "fail"):
                raise RuntimeError("boom")
            return {"reused": reused}

    class Caller(BaseAgent):
        name = "caller"
        top_level = True

        async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            with contextlib.suppress(AgentFailed):
                await self.run_agent("fragile", {"fail": True})
            return await self.run_agent("fragile", {"fail": False})

    bench = Bench(registry_of(tracked(Fragile, log), tracked(Caller, log)))
    failed = await bench.run("fail", agent_name="fragile")
    assert failed.status == "failed"
    assert error_of(failed.final) == ("failed", "AGENT_ERROR", "RuntimeError: boom")

    ok = await bench.run("ok", agent_name="fragile")
    assert ok.status == "completed"
    assert ok.result == {"reused": False}

    nested = await bench.run("anything", agent_name="caller")
    assert nested.status == "completed"
    assert nested.result == {"reused": False}
    assert error_of(nested.closing("fragile"))[:2] == ("failed", "AGENT_ERROR")

    serials = [serial for _, serial in log.executed]
    assert len(serials) == len(set(serials)) == 5
    gc.collect()
    assert log.alive() == []


# -- agent and tool errors ----------------------------------------------------


async def test_an_agent_returning_a_non_dict_fails_with_agent_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Listy(BaseAgent):
        name = "listy"
        top_level = True

        async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            return ["not", "a", "dict"]  # type: ignore[return-value]

    run = await Bench(registry_of(Listy)).run(agent_name="listy")

    assert run.status == "failed"
    assert error_of(run.final) == (
        "failed",
        "AGENT_ERROR",
        "TypeError: execute() must return a dict, not list",
    )


def tool_registry(*, catch: bool) -> AgentClassRegistry:
    class ToolUser(BaseAgent):
        name = "tool_user"
        top_level = True

        async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            def explode(reason: str) -> None:
                raise ValueError(reason)

            try:
                await self.call_tool("explode", {"reason": "boom"}, explode)
            except ValueError:
                if not catch:
                    raise
                await self.think("the tool failed; going on without it")
            doubled = await self.call_tool("double", {"x": 21}, _async_double)
            return {"doubled": doubled}

    return registry_of(ToolUser)


async def _async_double(x: int) -> int:
    await trio.lowlevel.checkpoint()
    return 2 * x


async def test_a_raising_tool_fails_its_call_and_then_its_agent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run = await Bench(tool_registry(catch=False)).run(agent_name="tool_user")

    assert run.types() == ["agent_started", "tool_executing", "tool_completed", "agent_error"]
    tool = run.events[2]["data"]
    assert tool["tool_name"] == "explode"
    assert tool["status"] == "failed"
    assert tool["result"] == {"error": "ValueError: boom"}
    assert error_of(run.final) == ("failed", "AGENT_ERROR", "ValueError: boom")


async def test_an_agent_that_catches_a_tool_error_goes_on_and_completes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run = await Bench(tool_registry(catch=True)).run(agent_name="tool_user")

    assert run.types() == [
        "agent_started",
        "tool_executing",
        "tool_completed",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "agent_completed",
    ]
    assert run.events[2]["data"]["status"] == "failed"
    second = run.events[5]["data"]
    assert (second["tool_name"], second["status"], second["result"]) == ("double", "completed", 42)
    # Tool call ids are unique within the run.
    assert run.events[1]["data"]["tool_call_id"] != run.events[4]["data"]["tool_call_id"]
    assert run.status == "completed"
    assert run.result == {"doubled": 42}


async def test_running_an_unregistered_inner_agent_fails_the_caller(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Lost(BaseAgent):
        name = "lost"
        top_level = True

        async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            return await self.run_agent("ghost")

    bench = Bench(registry_of(Lost))
    run = await bench.run(agent_name="lost")

    assert run.types() == ["agent_started", "agent_error"]
    assert error_of(run.final) == ("failed", "AGENT_ERROR", "no agent named 'ghost' is registered")
    assert "ghost" not in bench.observer.opened


async def test_think_numbers_steps_and_clamps_progress(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Thinker(BaseAgent):
        name = "thinker"
        top_level = True

        async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            await self.think("a", progress=-5)
            await self.think("b")
            await self.think("c", progress=250)
            await self.think("d", progress=42.5)
            return {}

    run = await Bench(registry_of(Thinker)).run(agent_name="thinker")

    thinking = [e["data"] for e in run.events if e["type"] == "agent_thinking"]
    assert thinking == [
        {"reasoning": "a", "step_number": 1, "progress_percentage": 0.0},
        {"reasoning": "b", "step_number": 2},
        {"reasoning": "c", "step_number": 3, "progress_percentage": 100.0},
        {"reasoning": "d", "step_number": 4, "progress_percentage": 42.5},
    ]


# -- faults against a model of the time limits ---------------------------------

AGENTS = ("supervisor", "triage", "data", "optimization", "actions", "data_helper", "reporting")
#: The steps after a completed triage of REQUEST (a model and a monthly spend: sufficient).
REQUEST_STEPS = plan_for(classify(REQUEST).as_dict())


def _fault_effect(fault_kinds: Sequence[str]) -> tuple[float, str | None]:
    """Seconds of ``slow`` before the first ``hang``/``raise`` (if any)."""
    delay = 0.0
    for kind in fault_kinds:
        if kind != "slow":
            return delay, kind
        delay += 1.0
    return delay, None


def _inner_step(
    fault_kinds: Sequence[str], start: float, agent_timeout: float, run_deadline: float
) -> tuple[str, float, bool]:
    """(status, end time, whether the run's deadline ended it) of an inner agent."""
    delay, terminal = _fault_effect(fault_kinds)
    own_deadline = start + agent_timeout
    limit = min(own_deadline, run_deadline)
    if terminal == "hang" or start + delay > limit:
        return "timeout", limit, run_deadline < own_deadline
    return ("failed" if terminal == "raise" else "completed"), start + delay, False


def expected_outcome(
    faults: Mapping[str, Sequence[str]], agent_timeout: float, run_timeout: float
) -> tuple[str, float, dict[str, str]]:
    """(run status, run end time, closing status per agent) for the default pipeline."""
    delay, terminal = _fault_effect(faults.get("supervisor", ()))
    if terminal == "hang" or delay > run_timeout:
        return "timeout", run_timeout, {"supervisor": "timeout"}
    if terminal == "raise":
        return "failed", delay, {"supervisor": "failed"}
    closings: dict[str, str] = {}
    now = delay
    steps = ["triage"]
    for name in steps:  # grows once triage has closed
        status, now, run_expired = _inner_step(
            faults.get(name, ()), now, agent_timeout, run_timeout
        )
        closings[name] = status
        if run_expired:
            return "timeout", run_timeout, {**closings, "supervisor": "timeout"}
        if name == "triage":
            steps += [*(REQUEST_STEPS if status == "completed" else ("data_helper",)), "reporting"]
    # The supervisor degrades past triage and the optional steps; a reporting
    # error ends the run.
    final = closings["reporting"]
    return final, now, {**closings, "supervisor": final}


@settings(
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    fault_list=st.lists(
        st.tuples(st.sampled_from(AGENTS), st.sampled_from(["raise", "hang", "slow"])),
        max_size=5,
    ),
    # Half-second agent limits and quarter-second run limits never tie with
    # whole-second slow faults, so every expected outcome is unambiguous.
    agent_timeout=st.sampled_from([0.5, 1.5, 2.5, 30.0]),
    run_timeout=st.sampled_from([0.75, 3.25, 300.25]),
)
async def test_any_fault_mix_ends_as_the_time_limits_predict(
    autojump_clock: trio.testing.MockClock,
    fault_list: list[tuple[str, str]],
    agent_timeout: float,
    run_timeout: float,
) -> None:
    grouped: dict[str, list[str]] = {}
    for agent, kind in fault_list:
        grouped.setdefault(agent, []).append(kind)
    status, end, closings = expected_outcome(grouped, agent_timeout, run_timeout)

    bench = Bench(
        faults=[f"{agent}:{kind}:1" for agent, kind in fault_list],
        agent_timeout=agent_timeout,
        run_timeout=run_timeout,
    )
    start = trio.current_time()  # the clock carries over between examples
    run = await bench.run()

    assert run.status == status
    assert run.final["at"] - start == end
    assert trio.current_time() - start == end
    assert run.agents() == ["supervisor", *(name for name in closings if name != "supervisor")]
    for agent, expected in closings.items():
        event = run.closing(agent)
        assert event["data"]["status"] == expected, agent
        if event["type"] == "agent_error":
            assert event["data"]["error"]["code"] == ERROR_CODES[expected]
    if status == "completed":
        assert run.result is not None
        optional = [s for name, s in closings.items() if name not in ("supervisor", "reporting")]
        assert run.result["degraded"] is any(s != "completed" for s in optional)


# -- registry, factory, faults --------------------------------------------------

_MISSING = object()


def agent_class(name: object = _MISSING, *, top_level: bool = False) -> type[BaseAgent]:
    namespace: dict[str, Any] = {"top_level": top_level}
    if name is not _MISSING:
        namespace["name"] = name

    async def execute(self: BaseAgent, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    namespace["execute"] = execute
    return type("Custom", (BaseAgent,), namespace)


def test_the_runtime_freezes_the_registry() -> None:
    registry = default_registry()
    assert not registry.frozen
    runtime = AgentRuntime(registry)

    assert registry.frozen
    assert runtime.registry is registry
    with pytest.raises(ConfigurationError, match="frozen"):
        registry.register(agent_class("late"))
    assert "late" not in registry


def test_frozen_registry_refuses_a_class_without_a_name_with_configuration_error() -> None:
    registry = default_registry().freeze()
    with pytest.raises(ConfigurationError):
        registry.register(agent_class())


def test_copy_of_a_frozen_registry_can_be_extended_without_touching_the_original() -> None:
    original = default_registry().freeze()
    extended = original.copy()
    extended.register(agent_class("extra"))

    assert not extended.frozen
    assert set(extended) == {*BUILTIN, "extra"}
    assert set(original) == BUILTIN


def test_registry_rejects_a_second_class_under_the_same_name() -> None:
    registry = default_registry()
    with pytest.raises(ConfigurationError, match="already registered"):
        registry.register(agent_class("triage"))
    # Registering the very same class again is harmless.
    same = registry["triage"]
    assert registry.register(same) is same
    assert len(registry) == len(BUILTIN)


@pytest.mark.parametrize(
    "name",
    ["", "Triage", "1triage", "_triage", "tri-age", "tri age", "triage\n", "a" * 65, 42, None],
)
def test_registry_rejects_bad_names(name: object) -> None:
    registry = AgentClassRegistry()
    with pytest.raises(ConfigurationError, match="lowercase `name`"):
        registry.register(agent_class(name))
    assert len(registry) == 0


def test_registry_rejects_a_class_without_a_name() -> None:
    with pytest.raises(ConfigurationError, match="lowercase `name`"):
        AgentClassRegistry().register(agent_class())


@pytest.mark.parametrize("name", ["a", "x_1", "a" * 64])
def test_registry_accepts_well_formed_names(name: str) -> None:
    registry = AgentClassRegistry()
    cls = agent_class(name)
    assert registry.register(cls) is cls
    assert registry[name] is cls


def test_top_level_names_are_the_agents_clients_may_start() -> None:
    assert default_registry().top_level_names() == {"supervisor"}
    registry = default_registry()
    registry.register(agent_class("planner", top_level=True))
    registry.register(agent_class("helper"))

    assert registry.top_level_names() == {"supervisor", "planner"}
    assert AgentRuntime(registry).top_level_names() == {"supervisor", "planner"}


def test_factory_rejects_faults_for_unknown_agents() -> None:
    plan = FaultPlan([FaultSpec.parse("triage:raise:1"), FaultSpec.parse("ghost:hang:1")])
    with pytest.raises(ConfigurationError, match="ghost") as info:
        AgentRuntime(default_registry(), faults=plan)
    message = str(info.value)
    assert "unknown agent(s) ghost;" in message
    assert message.endswith(
        "known agents: actions, data, data_helper, optimization, reporting, supervisor, triage"
    )


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("triage:raise", "expected AGENT:KIND:RATE"),
        ("triage:raise:1:2", "expected AGENT:KIND:RATE"),
        ("", "expected AGENT:KIND:RATE"),
        ("triage:explode:1", "kind must be one of raise, hang, slow"),
        ("triage:RAISE:1", "kind must be one of"),
        ("triage:raise:often", "rate must be a number"),
        ("triage:raise:", "rate must be a number"),
        ("triage:raise:1.5", "between 0 and 1"),
        ("triage:raise:-0.1", "between 0 and 1"),
        ("triage:raise:nan", "between 0 and 1"),
        ("triage:raise:inf", "between 0 and 1"),
    ],
)
def test_fault_spec_parse_rejects_malformed_text(text: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        FaultSpec.parse(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("triage:raise:1", FaultSpec("triage", FaultKind.RAISE, 1.0)),
        ("reporting:hang:0", FaultSpec("reporting", FaultKind.HANG, 0.0)),
        ("supervisor:slow:0.25", FaultSpec("supervisor", FaultKind.SLOW, 0.25)),
    ],
)
def test_fault_spec_parse_accepts_well_formed_text(text: str, expected: FaultSpec) -> None:
    assert FaultSpec.parse(text) == expected


def _draws(seed: int, count: int = 40) -> list[tuple[FaultKind, ...]]:
    plan = FaultPlan(
        [
            FaultSpec("triage", FaultKind.RAISE, 0.5),
            FaultSpec("triage", FaultKind.SLOW, 0.5),
            FaultSpec("reporting", FaultKind.HANG, 0.3),
        ],
        seed=seed,
    )
    names = itertools.cycle(["triage", "reporting", "supervisor"])
    return [plan.draw(next(names)) for _ in range(count)]


def test_fault_plans_with_the_same_seed_draw_the_same_sequence() -> None:
    first = _draws(seed=1234)
    assert first == _draws(seed=1234)
    assert first != _draws(seed=4321)
    # The sequence is not trivial: both outcomes and several combinations occur.
    assert {(), (FaultKind.RAISE, FaultKind.SLOW), (FaultKind.HANG,)} <= set(first)
    # Agents without a spec never draw anything.
    assert all(draw == () for draw in first[2::3])


def test_fault_rates_zero_and_one_are_never_and_always() -> None:
    plan = FaultPlan(
        [FaultSpec("triage", FaultKind.RAISE, 1.0), FaultSpec("reporting", FaultKind.HANG, 0.0)]
    )
    assert plan.agents == {"triage", "reporting"}
    assert all(plan.draw("triage") == (FaultKind.RAISE,) for _ in range(50))
    assert all(plan.draw("reporting") == () for _ in range(50))
    assert not FaultPlan()


async def test_seeded_faults_repeat_across_servers(autojump_clock: trio.testing.MockClock) -> None:
    async def outcomes() -> list[str]:
        bench = Bench(faults=["triage:raise:0.5"], seed=99)
        return [(await bench.run()).closing("triage")["type"] for _ in range(12)]

    first = await outcomes()
    assert first == await outcomes()
    assert set(first) == {"agent_completed", "agent_error"}


# -- triage classification ----------------------------------------------------


@settings(
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=st.text(min_size=1, max_size=200))
async def test_any_request_completes_the_default_pipeline(
    autojump_clock: trio.testing.MockClock, text: str
) -> None:
    bench = Bench()
    run = await bench.run(text)

    assert run.status == "completed"
    triage = run.closing("triage")["data"]["result"]
    assert run.agents() == ["supervisor", "triage", *plan_for(triage), "reporting"]
    assert triage["category"] == classify(text).category
    found = json.loads(json.dumps(extract_entities(text)))
    assert (found.pop("language"), found.pop("log")) == (triage["language"], triage["log"])
    assert triage["entities"] == found
    assert run.result is not None
    if triage["reply"] == "answer":
        # Under the one-line note that the answer is in English, for another language.
        assert run.result["answer"].startswith("## ") or "\n\n## " in run.result["answer"]
    else:  # small talk, gibberish, an injection attempt: a short reply
        assert 0 < len(run.result["answer"]) < 1000
