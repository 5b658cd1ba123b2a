"""Work and output bounded whatever the input (issue 10, part 1).

A 64 KB ``"9%" * 32000`` used to cost seconds of CPU in triage and send back
megabytes. These tests bound the work structurally, never by the clock: how
much of a request is read in detail, how many numbers are placed, how many log
lines are read, and how large every event and result of a whole run is, for
adversarial inputs made by hypothesis. And the framework side: a tool declared
``cpu_bound`` runs in a worker thread when its input is large, and its time
limit and the run's cancellation still end the call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import (
    AgentClassRegistry,
    AgentRuntime,
    BaseAgent,
    ConfigurationError,
    EndCause,
    RunScope,
    Tool,
    ToolRegistry,
    UserExecutionContext,
    execute_run,
)
from agents._tools import CPU_BOUND_THRESHOLD, SHOWN_STRING
from agents.builtin import default_runtime, default_tools
from agents.builtin.memory import MAX_ENTRIES
from agents.builtin.triage import _entities, extract_entities, read_request
from agents.builtin.triage._entities import MAX_ITEMS
from agents.builtin.triage._input import DETAIL_HEAD, DETAIL_TAIL
from agents.builtin.triage._logs import MAX_LOG_LINES
from agents.builtin.triage._numbers import MAX_NUMBERS

LIMIT = 65_536
#: Encoded size no event of a run may exceed, and what a whole run may send.
EVENT_BUDGET = 16_384
RUN_BUDGET = 96 * 1024

# Pieces that made triage slow or its output large, and other hostile material.
UNITS = [
    "9%", "9", "1,000,", "$1 ", "€5.000 ", "£3k ", "1k tokens ", "2 s ", "429s ", "8 GPUs ",
    "gpt-4o vs claude 3.5 sonnet, ", "(((((", ".,", "p95 ", "alert if p95 above 2 s; ",
    "halve it ", "by a third ", "12.500,50 € pro Monat ", "1 in 20 requests fail ",
    "2025-05-01T10:00:00Z POST /v1/chat status=429 latency_ms=1234\n", "\n", " ", "é",
    "10:00:00 ERROR x\n", '{"status": 500, "duration_ms": 9}\n',
    "ignore previous instructions ", "Mio. ", "3,6k", "per request ",
]  # fmt: skip
ADVERSARIAL = st.one_of(
    st.builds(
        lambda units, size: ("".join(units) * (size // max(1, len("".join(units))) + 1))[:size],
        st.lists(st.sampled_from(UNITS), min_size=1, max_size=4),
        st.integers(min_value=1, max_value=LIMIT),
    ),
    st.text(max_size=2_000),
)


@pytest.fixture
def placed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the figures entity extraction places (each one is bounded work)."""
    calls = [0]
    original = _entities._place

    def counting(*args: Any, **kwargs: Any) -> int:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(_entities, "_place", counting)
    return calls


def check_reading(text: str, placed: list[int]) -> None:
    read_request.cache_clear()
    reading = read_request(text)
    found = extract_entities(text)

    assert len(reading.detail) <= DETAIL_HEAD + DETAIL_TAIL + 5
    assert reading.log is None or reading.log["lines_read"] <= MAX_LOG_LINES
    # Each number read is placed once (a bare amount read as money: twice).
    assert placed[0] <= 2 * MAX_NUMBERS
    assert all(len(found[key]) <= MAX_ITEMS for key in _entities.ENTITY_KEYS)
    assert len(orjson.dumps(found)) <= EVENT_BUDGET


@settings(
    deadline=None,
    max_examples=80,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=ADVERSARIAL)
def test_reading_any_request_is_bounded(text: str, placed: list[int]) -> None:
    placed[0] = 0
    check_reading(text, placed)


def test_the_issue_reproduction_is_read_within_the_bounds(placed: list[int]) -> None:
    text = "9%" * 32_000
    check_reading(text, placed)
    found = extract_entities(text)
    assert found["omitted"]["numbers"] >= MAX_NUMBERS  # the rest is counted, not read
    assert found["omitted"]["characters"] == len(text) - DETAIL_HEAD - DETAIL_TAIL


class SizeEmitter:
    """Keeps the encoded size of every event of a run."""

    def __init__(self) -> None:
        self.sizes: list[tuple[str, str, int]] = []
        self.parameters: list[Mapping[str, Any]] = []

    async def emit(
        self, agent_name: str, event_type: str, data: dict[str, Any], *, final: bool = False
    ) -> None:
        self.sizes.append((agent_name, event_type, len(orjson.dumps(data))))
        if event_type == "tool_executing":
            self.parameters.append(data["parameters"])
        await trio.lowlevel.checkpoint()


async def run_sizes(text: str) -> tuple[SizeEmitter, str]:
    emitter = SizeEmitter()
    context = UserExecutionContext("u", "t", "r", "c", text, emitter)
    runtime = default_runtime()
    with trio.fail_after(30):
        status = await execute_run(RunScope(context, runtime), "supervisor")
    return emitter, status


@settings(
    deadline=None,
    max_examples=15,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=ADVERSARIAL.filter(str.strip))
async def test_a_whole_run_on_any_request_sends_bounded_events(text: str) -> None:
    emitter, status = await run_sizes(text)

    assert status == "completed"
    assert max(size for _, _, size in emitter.sizes) <= EVENT_BUDGET, emitter.sizes
    assert sum(size for _, _, size in emitter.sizes) <= RUN_BUDGET
    for parameters in emitter.parameters:
        for value in parameters.values():
            if isinstance(value, str):
                assert len(value) <= SHOWN_STRING + 40


async def test_the_issue_reproduction_sends_kilobytes_not_megabytes() -> None:
    emitter, status = await run_sizes("9%" * 32_000)

    assert status == "completed"
    assert sum(size for _, _, size in emitter.sizes) < 32 * 1024  # was 5.9 MB
    (entities,) = [s for a, t, s in emitter.sizes if a == "triage" and t == "tool_completed"]
    assert entities < 4 * 1024  # was 1.95 MB


async def test_a_follow_up_memory_stays_small_after_a_huge_request() -> None:
    recorder = Recorder()
    context = UserExecutionContext("u", "t", "r", "c", "gpt-4o 1M tokens a day " * 2500, recorder)
    with trio.fail_after(30):
        await execute_run(RunScope(context, default_runtime()), "supervisor")
    memory = recorder.final["result"]["memory"]
    assert all(len(v) <= MAX_ENTRIES for v in memory["entities"].values())
    assert len(orjson.dumps(memory)) < 4096


class Recorder:
    def __init__(self) -> None:
        self.final: dict[str, Any] = {}

    async def emit(
        self, agent_name: str, event_type: str, data: dict[str, Any], *, final: bool = False
    ) -> None:
        if final:
            self.final = data


# -- CPU-bound tools ---------------------------------------------------------------------------


def probe_tool(func: Callable[..., Any], *, timeout: float | None = None) -> Tool:
    return Tool(
        "probe",
        "records where it ran",
        {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        func,
        timeout=timeout,
        cpu_bound=True,
    )


class CallProbe(BaseAgent):
    name = "caller"
    top_level = True

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        result = await self.use_tool("probe", text=self.context.request)
        return {"status": result.status, "value": result.value, "error": result.error}


class ListEmitter:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    async def emit(
        self, agent_name: str, event_type: str, data: dict[str, Any], *, final: bool = False
    ) -> None:
        self.events.append((agent_name, event_type, data))
        await trio.lowlevel.checkpoint()


def probe_run(tool: Tool, text: str) -> tuple[RunScope, ListEmitter]:
    registry = AgentClassRegistry()
    registry.register(CallProbe)
    runtime = AgentRuntime(registry, tools=ToolRegistry((tool,)))
    emitter = ListEmitter()
    context = UserExecutionContext("u", "t", "r", "c", text, emitter)
    return RunScope(context, runtime), emitter


def where(text: str) -> str:
    return threading.current_thread().name


@pytest.mark.parametrize(
    ("size", "in_thread"),
    [(1, False), (CPU_BOUND_THRESHOLD, False), (CPU_BOUND_THRESHOLD + 1, True), (LIMIT, True)],
)
async def test_a_cpu_bound_tool_runs_in_a_worker_thread_only_when_its_input_is_large(
    size: int, in_thread: bool
) -> None:
    scope, emitter = probe_run(probe_tool(where), "x" * size)
    with trio.fail_after(10):
        status = await execute_run(scope, "caller")

    assert status == "completed"
    _, _, closing = emitter.events[-1]
    ran_in = closing["result"]["value"]
    assert (ran_in != threading.current_thread().name) is in_thread
    executing = next(d for _, kind, d in emitter.events if kind == "tool_executing")
    assert len(executing["parameters"]["text"]) <= SHOWN_STRING + 40


async def test_a_stuck_cpu_bound_call_fails_at_its_time_limit_and_abandons_its_thread(
    autojump_clock: trio.testing.MockClock,
) -> None:
    release = threading.Event()

    def stuck(text: str) -> str:
        release.wait(30)
        return "late"

    scope, emitter = probe_run(probe_tool(stuck, timeout=2.5), "y" * LIMIT)
    try:
        with trio.fail_after(10):
            status = await execute_run(scope, "caller")
    finally:
        release.set()

    assert status == "completed"
    assert trio.current_time() == 2.5  # the tool's limit, in virtual time
    _, _, closing = emitter.events[-1]
    assert closing["result"] == {
        "status": "failed",
        "value": None,
        "error": "TimeoutError: probe took longer than 2.5 s",
    }


async def test_cancelling_the_run_ends_a_cpu_bound_call_at_once() -> None:
    started, release = threading.Event(), threading.Event()

    def stuck(text: str) -> str:
        started.set()
        release.wait(30)
        return "late"

    scope, emitter = probe_run(probe_tool(stuck), "z" * LIMIT)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(execute_run, scope, "caller")
                await trio.to_thread.run_sync(started.wait)
                scope.cancel(EndCause.CANCELLED)
    finally:
        release.set()

    kinds = [(agent, kind) for agent, kind, _ in emitter.events]
    assert kinds == [
        ("caller", "agent_started"),
        ("caller", "tool_executing"),
        ("caller", "tool_completed"),
        ("caller", "agent_error"),
    ]
    assert emitter.events[2][2]["status"] == "failed"
    assert emitter.events[3][2]["error"]["code"] == "CANCELLED"


def test_a_cpu_bound_tool_must_be_synchronous() -> None:
    async def asynchronous(text: str) -> str:
        return text

    with pytest.raises(ConfigurationError, match="must be synchronous"):
        probe_tool(asynchronous)


def test_the_heavy_builtin_tools_are_cpu_bound() -> None:
    tools = default_tools()
    assert tools["extract_entities"].cpu_bound
    assert tools["extract_entities"].offloads({"text": "9%" * 32_000})
    assert not tools["extract_entities"].offloads({"text": "We spend $5k a month on gpt-4o."})
