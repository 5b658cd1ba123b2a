"""The five-step workflow: pipeline selection, degradation, tools, catalogue and figures.

Pipeline and degradation tests run over real loopback WebSockets with a stub
``triage`` that returns a hand-built result in the contract's schema (or
raises), so they do not depend on how triage classifies text. The figures
(monthly cost, savings) are checked to the cent against the catalogue's list
prices. The model-provider and property tests drive runs in memory through
``execute_run`` (the server's entry point) with virtual time. Every transcript
is checked against the protocol's run invariants.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
    AgentRuntime,
    BaseAgent,
    ChatMessage,
    ChatResult,
    ConfigurationError,
    FaultSpec,
    ModelProvider,
    OfflineProvider,
    ProviderError,
    ToolParameterError,
)
from agents.builtin import PIPELINES, default_registry, default_tools
from agents.builtin.actions import plan
from agents.builtin.catalogue import load_catalogue, parse_catalogue
from agents.builtin.data import fmt_usd, monthly_volumes, split_models
from agents.builtin.data_helper import WITHOUT_TRIAGE, describe_missing
from agents.builtin.optimization import alternatives
from agents.builtin.reporting import LOST
from agents.builtin.supervisor import plan_for
from agents.builtin.tools import (
    catalogue_lookup,
    compare_models,
    cost_calculator,
    gpu_cost,
    latency_summary,
    parse_quantity,
)
from server import ChatServer
from server.testing import RunTranscript, check_run_invariants, open_chat_client, start_test_server

# -- hand-built triage results ----------------------------------------------------------

REQUEST = (
    "We send 40M input tokens and 10M output tokens a month to gpt-4o, about 1M requests. "
    "How much would switching to gpt-4o-mini save? Our p95 is 1200 ms; cut cost by 30%."
)


def entities(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "models": ["gpt-4o", "gpt-4o-mini"],
        "providers": ["openai"],
        "metrics": [{"name": "p95_latency", "value": 1200, "unit": "ms"}],
        "money": [],
        "token_volumes": [
            {"tokens": 40_000_000, "period": "month", "kind": "input"},
            {"tokens": 10_000_000, "period": "month", "kind": "output"},
        ],
        "request_volumes": [{"requests": 1_000_000, "period": "month"}],
        "time_ranges": ["a month"],
        "thresholds": [],
        "targets": [{"metric": "cost_reduction", "value": 30, "unit": "%"}],
    }
    return {**base, **overrides}


def triage_result(sufficiency: str = "sufficient", **overrides: Any) -> dict[str, Any]:
    missing = {
        "sufficient": [],
        "partial": ["monthly token volume"],
        "insufficient": ["current model", "monthly token volume"],
    }[sufficiency]
    base: dict[str, Any] = {
        "category": "cost_optimization",
        "sub_category": "model_switch",
        "priority": "high",
        "complexity": "medium",
        "intent": "reduce_cost",
        "confidence": 0.9,
        "data_sufficiency": sufficiency,
        "missing_data": missing,
        "entities": entities(),
    }
    return {**base, **overrides}


def stub_triage(result: Mapping[str, Any] | None) -> type[BaseAgent]:
    """A ``triage`` returning a copy of ``result``, or failing when it is None."""

    class StubTriage(BaseAgent):
        name = "triage"

        async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            if result is None:
                raise RuntimeError("triage could not classify this")
            return copy.deepcopy(dict(result))

    return StubTriage


def registry_with(triage: type[BaseAgent]) -> AgentClassRegistry:
    """The default line-up with ``triage`` replaced."""
    registry = AgentClassRegistry()
    for name, cls in default_registry().items():
        registry.register(triage if name == "triage" else cls)
    return registry


def faults(*specs: str) -> tuple[FaultSpec, ...]:
    return tuple(FaultSpec.parse(s) for s in specs)


async def run_with(
    nursery: trio.Nursery,
    triage: Mapping[str, Any] | None,
    text: str = REQUEST,
    **settings_: Any,
) -> RunTranscript:
    server = await start_test_server(
        nursery, registry=registry_with(stub_triage(triage)), **settings_
    )
    async with open_chat_client(server, user_id="u-flow") as client:
        return await client.run(text)


def result_of(run: RunTranscript, agent: str) -> dict[str, Any]:
    event = run.closing(agent)
    assert event["type"] == "agent_completed", event
    result: dict[str, Any] = event["data"]["result"]
    return result


def answer_of(run: RunTranscript) -> str:
    assert run.result is not None
    answer: str = run.result["answer"]
    return answer


def error_of(event: Mapping[str, Any]) -> tuple[str, str, str]:
    assert event["type"] == "agent_error", event
    data = event["data"]
    return data["status"], data["error"]["code"], data["error"]["message"]


# -- pipeline selection ---------------------------------------------------------------------

TABLE = [
    ("sufficient", ["data", "optimization", "actions", "reporting"]),
    ("partial", ["data_helper", "data", "reporting"]),
    ("insufficient", ["data_helper", "reporting"]),
    ("triage failed", ["data_helper", "reporting"]),
]


@pytest.mark.parametrize(("row", "after_triage"), TABLE)
async def test_data_sufficiency_picks_the_pipeline(
    nursery: trio.Nursery, row: str, after_triage: list[str]
) -> None:
    triage = None if row == "triage failed" else triage_result(row)
    run = await run_with(nursery, triage)

    assert run.status == "completed"
    assert run.agents() == ["supervisor", "triage", *after_triage]
    result = run.result
    assert result is not None
    assert result["pipeline"] == ["triage", *after_triage]
    for step in after_triage:
        assert run.closing(step)["type"] == "agent_completed", step
    # Each step is nested directly in the supervisor and closed before the next starts.
    opened = [e["agent_name"] for e in run.events if e["type"] == "agent_started"]
    closed = [
        e["agent_name"]
        for e in run.events
        if e["type"] in ("agent_completed", "agent_error") and e["agent_name"] != "supervisor"
    ]
    assert closed == opened[1:]
    if row == "triage failed":
        assert error_of(run.closing("triage")) == (
            "failed",
            "AGENT_ERROR",
            "RuntimeError: triage could not classify this",
        )
        assert result["triage"] is None
        assert result["degraded"] is True
        assert result["failed_steps"] == ["triage"]
        answer = answer_of(run)
        assert answer.startswith("## Answer (degraded)\n")
        assert "triage failed: RuntimeError: triage could not classify this" in answer
        assert "### What we still need" in answer
        for item in WITHOUT_TRIAGE:
            assert f"**{item}**" in answer
        assert result_of(run, "reporting")["degraded"] is True
    else:
        assert result["triage"] == triage
        assert result["degraded"] is False
        assert result["failed_steps"] == []
        assert "Missing from this answer" not in answer_of(run)
        assert result_of(run, "reporting")["degraded"] is False


@pytest.mark.parametrize("sufficiency", [None, "plenty", 3])
def test_an_unknown_data_sufficiency_takes_the_insufficient_pipeline(sufficiency: Any) -> None:
    assert (
        plan_for(triage_result("sufficient", data_sufficiency=sufficiency))
        == (PIPELINES["insufficient"])
    )
    assert plan_for({}) == ("data_helper",)
    assert plan_for(None) == ("data_helper",)


async def test_every_step_reports_progress(nursery: trio.Nursery) -> None:
    run = await run_with(nursery, triage_result("sufficient"))

    for agent in ("supervisor", "data", "optimization", "actions", "reporting"):
        progress = [
            e["data"]["progress_percentage"]
            for e in run.events
            if e["agent_name"] == agent
            and e["type"] == "agent_thinking"
            and "progress_percentage" in e["data"]
        ]
        assert len(progress) >= 2, agent
        assert progress == sorted(progress), agent
        assert all(0 <= p <= 100 for p in progress), agent


# -- degradation ----------------------------------------------------------------------------

DEGRADATION = [
    ("data", "sufficient"),
    ("optimization", "sufficient"),
    ("actions", "sufficient"),
    ("data_helper", "partial"),
    ("data", "partial"),
]


@pytest.mark.parametrize(("agent", "sufficiency"), DEGRADATION)
async def test_a_failing_optional_step_is_reported_and_the_run_completes(
    nursery: trio.Nursery, agent: str, sufficiency: str
) -> None:
    run = await run_with(nursery, triage_result(sufficiency), faults=faults(f"{agent}:raise:1"))

    assert run.status == "completed"
    message = f"InjectedFault: injected fault in {agent}"
    assert error_of(run.closing(agent)) == ("failed", "AGENT_ERROR", message)
    # The pipeline went on past it, unchanged.
    assert run.agents() == [
        "supervisor",
        "triage",
        *plan_for(triage_result(sufficiency)),
        "reporting",
    ]
    result = run.result
    assert result is not None
    assert result["degraded"] is True
    assert result["failed_steps"] == [agent]
    assert result_of(run, "reporting")["degraded"] is True
    answer = answer_of(run)
    assert "### Missing from this answer" in answer
    assert f"- {agent} failed: {message}: {LOST[agent]} is missing." in answer


async def test_without_the_data_step_optimization_still_prices_the_switch(
    nursery: trio.Nursery,
) -> None:
    run = await run_with(nursery, triage_result("sufficient"), faults=faults("data:raise:1"))

    assert "### Figures" not in answer_of(run)
    switch = result_of(run, "optimization")["recommendations"][0]
    assert switch["estimated_monthly_savings_usd"] == 188.0
    assert "saves about $188.00 a month" in answer_of(run)


async def test_without_recommendations_the_plan_starts_from_a_baseline(
    nursery: trio.Nursery,
) -> None:
    run = await run_with(
        nursery, triage_result("sufficient"), faults=faults("optimization:raise:1")
    )

    steps = result_of(run, "actions")["steps"]
    assert steps[0]["action"].startswith("Measure a baseline")
    answer = answer_of(run)
    assert "Switch gpt-4o" not in answer
    assert "### Action plan" in answer
    assert "the recommendations with estimated savings is missing" in answer


async def test_a_failing_reporting_step_fails_the_run(nursery: trio.Nursery) -> None:
    run = await run_with(nursery, triage_result("sufficient"), faults=faults("reporting:raise:1"))

    assert run.status == "failed"
    reporting = error_of(run.closing("reporting"))
    assert reporting == ("failed", "AGENT_ERROR", "InjectedFault: injected fault in reporting")
    assert run.final["agent_name"] == "supervisor"
    assert error_of(run.final)[:2] == ("failed", "AGENT_ERROR")
    assert [e["type"] for e in run.events[-2:]] == ["agent_error", "agent_error"]
    for step in ("triage", "data", "optimization", "actions"):
        assert run.closing(step)["type"] == "agent_completed"


@pytest.mark.parametrize(
    ("agent", "sufficiency"), [("optimization", "sufficient"), ("data_helper", "insufficient")]
)
async def test_a_hanging_optional_step_times_out_and_the_run_completes(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    agent: str,
    sufficiency: str,
) -> None:
    server = await start_test_server(
        nursery,
        registry=registry_with(stub_triage(triage_result(sufficiency))),
        faults=faults(f"{agent}:hang:1"),
        agent_timeout=5,
    )
    async with open_chat_client(server, user_id="u-flow") as client:
        run_id = await client.start(REQUEST)
        await client.wait_event(run_id, "agent_started", agent_name=agent)
        started = trio.current_time()
        run = await client.collect(run_id)
        ended = trio.current_time()

    assert ended - started == pytest.approx(5, abs=0.01)
    assert error_of(run.closing(agent)) == (
        "timeout",
        "TIMEOUT",
        f"{agent} exceeded its time limit of 5 s",
    )
    assert run.status == "completed"
    result = run.result
    assert result is not None
    assert result["failed_steps"] == [agent]
    assert f"- {agent} timeout: {agent} exceeded its time limit of 5 s" in result["answer"]
    # The steps after it ran as planned.
    after = run.agents()[run.agents().index(agent) + 1 :]
    assert after == list(result["pipeline"][result["pipeline"].index(agent) + 1 :])
    assert after[-1] == "reporting"


# -- figures from hand-built triage results -------------------------------------------------


async def test_monthly_cost_and_switch_savings_match_the_catalogue_prices(
    nursery: trio.Nursery,
) -> None:
    catalogue = load_catalogue()
    gpt4o, mini = catalogue.find("gpt-4o"), catalogue.find("gpt-4o-mini")
    assert gpt4o is not None
    assert mini is not None
    # The expected dollars below are 40M x price_in + 10M x price_out at these prices.
    assert (gpt4o.input_per_million, gpt4o.output_per_million) == (2.5, 10.0)
    assert (mini.input_per_million, mini.output_per_million) == (0.15, 0.6)
    assert gpt4o.cached_input_per_million == 1.25

    run = await run_with(nursery, triage_result("sufficient"))

    figures = result_of(run, "data")["figures"]
    assert figures["current_model"] == "gpt-4o"
    assert figures["candidate_models"] == ["gpt-4o-mini"]
    assert figures["monthly_tokens"] == {
        "input": 40_000_000,
        "output": 10_000_000,
        "total": 50_000_000,
        "basis": "given",
    }
    assert figures["monthly_cost_usd"] == 200.0  # 40 x $2.50 + 10 x $10.00
    assert figures["monthly_cost_breakdown_usd"] == {"input": 100.0, "output": 100.0}
    assert figures["cost_per_request_usd"] == 0.0002  # $200 / 1M requests
    assert figures["latency_ms"] == {"p95": 1200}
    assert figures["target_deltas"] == [
        {
            "metric": "cost_reduction",
            "reduction_pct": 30,
            "current_monthly_cost_usd": 200.0,
            "target_monthly_cost_usd": 140.0,
            "savings_needed_usd": 60.0,
        }
    ]

    recs = result_of(run, "optimization")["recommendations"]
    switch, cache, trim = recs[0], recs[1], recs[2]
    assert (switch["from_model"], switch["to_model"]) == ("gpt-4o", "gpt-4o-mini")
    assert switch["estimated_monthly_savings_usd"] == 188.0  # $200 - (40 x 0.15 + 10 x 0.60)
    assert switch["savings_pct"] == 94.0
    assert switch["expected_latency_change_ms"] == mini.p95_latency_ms - gpt4o.p95_latency_ms
    assert switch["source"].startswith("OpenAI API pricing (https://openai.com/api/pricing/)")
    assert switch["source"].endswith(f"list prices as of {catalogue.as_of}")
    assert cache["estimated_monthly_savings_usd"] == 15.0  # 30% of 40M x ($2.50 - $1.25)
    assert trim["estimated_monthly_savings_usd"] == 20.0  # 20% of 40M x $2.50

    tools = [
        (e["agent_name"], e["data"]["tool_name"], e["data"]["status"])
        for e in run.events
        if e["type"] == "tool_completed"
    ]
    assert tools == [
        ("data", "catalogue_lookup", "completed"),
        ("data", "cost_calculator", "completed"),
        ("optimization", "compare_models", "completed"),
        ("optimization", "cost_calculator", "completed"),
        ("optimization", "cost_calculator", "completed"),
    ]
    answer = answer_of(run)
    assert "Monthly cost on `gpt-4o`: **$200.00** (40M input x $2.50/1M + 10M output" in answer
    assert "**Switch gpt-4o to gpt-4o-mini**: saves about $188.00 a month" in answer
    assert f"list prices as of {catalogue.as_of}" in answer
    assert "latencies are indicative" in answer
    steps = result_of(run, "actions")["steps"]
    assert [s["order"] for s in steps] == list(range(1, len(steps) + 1))
    assert any("gpt-4o-mini" in s["action"] and "$188.00" in s["action"] for s in steps)


async def test_daily_total_tokens_become_a_monthly_cost_with_the_split_stated(
    nursery: trio.Nursery,
) -> None:
    triage = triage_result(
        "sufficient",
        entities=entities(
            models=["gpt-4o-mini"],
            token_volumes=[{"tokens": 2_000_000, "period": "day", "kind": "total"}],
            request_volumes=[],
            targets=[],
        ),
    )
    run = await run_with(nursery, triage, "We use gpt-4o-mini for 2M tokens a day.")

    data = result_of(run, "data")
    figures = data["figures"]
    # 2M x 30 days = 60M, split 3:1 = 45M input + 15M output.
    assert figures["monthly_tokens"]["input"] == 45_000_000
    assert figures["monthly_tokens"]["output"] == 15_000_000
    assert figures["monthly_cost_usd"] == 15.75  # 45 x $0.15 + 15 x $0.60
    assert "a month is 30 days" in data["assumptions"]
    assert any("75% input / 25% output" in a for a in data["assumptions"])
    assert "cost_per_request_usd" not in figures


FIGURE_CASES = [
    pytest.param(
        {
            "models": [],
            "metrics": [
                {"name": "input_price_per_1m_tokens", "value": 2.5, "unit": "USD"},
                {"name": "output_price_per_1m_tokens", "value": 10.0, "unit": "USD"},
                {"name": "tokens_per_request", "value": 1500, "unit": "tokens"},
            ],
            "token_volumes": [],
            "request_volumes": [{"requests": 2_000_000, "period": "month"}],
        },
        {
            # 2M x 1,500 = 3B tokens, 2.25B in x $2.50 + 0.75B out x $10
            "monthly_tokens": {
                "input": 2_250_000_000,
                "output": 750_000_000,
                "total": 3_000_000_000,
                "basis": "requests x tokens per request",
            },
            "prices_per_million_usd": {"input": 2.5, "output": 10.0, "basis": "given"},
            "monthly_cost_usd": 13_125.0,
            "monthly_cost_basis": "your prices",
            "cost_per_request_usd": 0.006563,  # 0.0065625, half up
        },
        id="given prices, requests x tokens per request",
    ),
    pytest.param(
        {
            "models": ["gpt-4o-mini"],
            "metrics": [
                {"name": "input_tokens_per_request", "value": 1200, "unit": "tokens"},
                {"name": "output_tokens_per_request", "value": 300, "unit": "tokens"},
            ],
            "token_volumes": [],
            "request_volumes": [{"requests": 1_000_000, "period": "month"}],
        },
        {
            "monthly_cost_usd": 360.0,  # 1.2B x $0.15 + 0.3B x $0.60
            "monthly_cost_breakdown_usd": {"input": 180.0, "output": 180.0},
            "cost_per_request_usd": 0.00036,
        },
        id="list prices, input and output tokens per request",
    ),
    pytest.param(
        {
            "models": [],
            "metrics": [{"name": "cost_per_request", "value": 0.02, "unit": "USD"}],
            "token_volumes": [],
            "request_volumes": [{"requests": 100_000, "period": "day"}],
        },
        {
            "monthly_requests": 3_000_000,
            "monthly_cost_usd": 60_000.0,
            "monthly_cost_basis": "cost per request x requests",
            "cost_per_request_usd": 0.02,
        },
        id="cost per request x requests per day",
    ),
    pytest.param(
        {
            "models": ["gpt-4o"],
            "metrics": [],
            "token_volumes": [],
            "request_volumes": [],
            "money": [{"amount": 5000, "currency": "USD", "period": "month"}],
            "targets": [{"metric": "cost", "value": 3000, "unit": "USD", "period": "month"}],
        },
        {
            "monthly_cost_usd": 5000.0,
            "monthly_cost_basis": "reported spend",
            "target_deltas": [
                {
                    "metric": "cost",
                    "current_monthly_cost_usd": 5000.0,
                    "target_monthly_cost_usd": 3000.0,
                    "savings_needed_usd": 2000.0,
                }
            ],
        },
        id="spend and a budget",
    ),
    pytest.param(
        {
            "models": ["llama-3.1-70b"],
            "metrics": [{"name": "p95_latency", "value": 900, "unit": "ms"}],
            "token_volumes": [],
            "request_volumes": [],
            "targets": [
                {"metric": "p95_latency_reduction", "value": 200, "unit": "ms"},
                {"metric": "p50_latency", "value": 0.5, "unit": "s"},
            ],
        },
        {
            "latency_ms": {"p95": 900},
            "target_deltas": [
                {
                    "metric": "p95_latency_reduction",
                    "target_ms": 700.0,
                    "current_ms": 900,
                    "delta_ms": 200.0,
                    "reduction_needed_pct": 22.22,
                    "met": False,
                    "basis": "given",
                },
                {  # no p50 given: measured against the catalogue's indicative p50
                    "metric": "p50_latency",
                    "target_ms": 500.0,
                    "current_ms": 1000.0,
                    "delta_ms": 500.0,
                    "reduction_needed_pct": 50.0,
                    "met": False,
                    "basis": "indicative catalogue latency",
                },
            ],
        },
        id="latency cut by an amount, and a level",
    ),
]


@pytest.mark.parametrize(("found", "expected"), FIGURE_CASES)
async def test_the_data_step_computes_figures_from_every_kind_of_input(
    autojump_clock: trio.testing.MockClock, found: dict[str, Any], expected: dict[str, Any]
) -> None:
    run = await run_in_memory(triage_result("sufficient", entities=entities(**found)), request="")

    figures = result_of(run, "data")["figures"]
    assert {key: figures.get(key) for key in expected} == expected


async def test_amounts_in_other_currencies_keep_their_currency_and_state_the_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rate = load_catalogue().usd_per_unit["EUR"]
    found = entities(
        models=["claude-3-5-sonnet"],
        token_volumes=[],
        request_volumes=[],
        money=[{"amount": 4000, "currency": "EUR", "period": "month"}],
        targets=[{"metric": "cost_reduction", "value": 25, "unit": "%"}],
    )
    run = await run_in_memory(triage_result("sufficient", entities=found), request="")

    figures = result_of(run, "data")["figures"]
    # The spend stays in euros; USD list prices are compared at the stated rate.
    assert figures["reported_monthly_spend"] == {
        "amount": 4000.0,
        "currency": "EUR",
        "usd": round(4000 * rate, 6),
    }
    assert figures["monthly_cost"] == {"amount": 4000.0, "currency": "EUR"}
    assert figures["monthly_cost_usd"] == round(4000 * rate, 6)
    (delta,) = figures["target_deltas"]
    assert delta["target_monthly_cost"] == {"amount": 3000.0, "currency": "EUR"}
    assert delta["savings_needed"] == {"amount": 1000.0, "currency": "EUR"}
    assumptions = result_of(run, "data")["assumptions"]
    assert any(f"1 EUR = {rate:g} USD (ECB reference rate of" in a for a in assumptions)
    answer = answer_of(run)
    assert "€4,000.00" in answer
    assert "Target cost €3,000.00 a month: €1,000.00 to save" in answer


async def test_a_reported_spend_without_volumes_is_priced_by_the_same_tier_and_the_next(
    nursery: trio.Nursery,
) -> None:
    triage = triage_result(
        "sufficient",
        entities=entities(
            models=["gpt-4o"],
            token_volumes=[],
            request_volumes=[],
            money=[{"amount": 5000, "currency": "USD", "period": "month"}],
            targets=[],
            metrics=[],
        ),
    )
    run = await run_with(nursery, triage, "How can we cut our GPT-4o bill of $5,000 per month?")

    figures = result_of(run, "data")["figures"]
    assert figures["monthly_cost_usd"] == 5000.0
    assert figures["monthly_cost_basis"] == "reported spend"
    assert figures["monthly_tokens"]["basis"] == "implied by the reported spend"
    recs = result_of(run, "optimization")["recommendations"]
    switches = [(r["to_model"], round(r["estimated_monthly_savings_usd"], 2)) for r in recs[:2]]
    # gpt-4.1 (same tier) costs 3.5 vs 4.375 $/1M at 3:1, gpt-4.1-mini (one tier down) 0.7.
    assert switches == [("gpt-4.1", 1000.0), ("gpt-4.1-mini", 4200.0)]
    assert all(r["from_model"] == "gpt-4o" for r in recs[:2])


async def test_an_unknown_model_is_a_failed_lookup_that_the_answer_mentions(
    nursery: trio.Nursery,
) -> None:
    triage = triage_result("sufficient", entities=entities(models=["gpt-17-ultra"]))
    run = await run_with(nursery, triage, "We use gpt-17-ultra for 40M input tokens a month")

    assert run.status == "completed"
    lookup = next(e for e in run.events if e["type"] == "tool_completed")
    assert lookup["agent_name"] == "data"
    assert lookup["data"]["tool_name"] == "catalogue_lookup"
    assert lookup["data"]["status"] == "failed"
    assert "'gpt-17-ultra' is not in the catalogue" in lookup["data"]["result"]["error"]
    data = result_of(run, "data")
    assert "monthly_cost_usd" not in data["figures"]
    assert "gpt-17-ultra is not in the catalogue, so its list prices are unknown" in data["notes"]
    assert "gpt-17-ultra is not in the catalogue" in answer_of(run)
    assert result_of(run, "optimization")["notes"][0].startswith("gpt-17-ultra is not in")


async def test_latency_targets_give_deltas_and_faster_options(nursery: trio.Nursery) -> None:
    triage = triage_result(
        "sufficient",
        category="latency_optimization",
        intent="reduce_latency",
        entities=entities(
            models=["gpt-4o"],
            token_volumes=[],
            request_volumes=[],
            metrics=[
                {"name": "latency", "value": v, "unit": "ms"} for v in (400, 500, 600, 900, 2000)
            ],
            targets=[{"metric": "p95_latency", "value": 0.8, "unit": "s"}],
        ),
    )
    run = await run_with(nursery, triage, "Our latency is all over the place on gpt-4o")

    figures = result_of(run, "data")["figures"]
    summary = figures["latency_summary_ms"]
    assert summary == latency_summary([400, 500, 600, 900, 2000])
    assert summary["p95_ms"] == 1780.0
    delta = figures["target_deltas"][0]
    assert delta["target_ms"] == 800.0
    assert delta["delta_ms"] == 980.0
    assert delta["met"] is False
    recs = result_of(run, "optimization")["recommendations"]
    faster = [r for r in recs if r.get("to_model")]
    assert faster
    catalogue = load_catalogue()
    for rec in faster:
        # per 1M tokens (no volume given), never a monthly figure made up
        assert "estimated_monthly_savings_usd" not in rec
        assert "savings_per_million_tokens_usd" in rec
        entry = catalogue.find(rec["to_model"])
        assert entry is not None
        assert rec["expected_latency_change_ms"] == entry.p95_latency_ms - 3200.0
        assert rec["expected_latency_change_ms"] < 0
    assert any(r["title"] == "Stream responses" for r in recs)


# -- the model provider does the wording ----------------------------------------------------


@attrs.define
class ScriptedProvider:
    """Answers with a fixed text (or raises), recording the messages it was sent."""

    reply: str | None
    name: str = "scripted"
    calls: list[list[ChatMessage]] = attrs.field(factory=list)
    tool_calling: bool = False

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        on_delta: Callable[[str], Awaitable[None]] | None = None,
        max_tokens: int | None = None,
        tools: Any = None,
        tool_choice: str | None = None,
    ) -> ChatResult:
        self.calls.append(list(messages))
        if self.reply is None:
            raise ProviderError("model unavailable")
        assert on_delta is not None  # the reporting agent streams
        for word in self.reply.split(" "):
            await on_delta(word + " ")
        return ChatResult(text=self.reply, model=self.name)


async def run_in_memory(
    triage: Mapping[str, Any] | None,
    provider: ModelProvider | None = None,
    request: str = REQUEST,
) -> RunTranscript:
    runtime = AgentRuntime(
        registry_with(stub_triage(triage)),
        tools=default_tools(),
        provider=provider if provider is not None else OfflineProvider(),
    )
    # The server's own Run and RunTable, with an in-memory owner for the connection.
    owner = RecordingOwner(request, user_id="u-1", connection_id="c-1")
    status = await execute_in_table(owner, runtime, "supervisor", run_id="r-1")
    check_run_invariants(owner.events, run_id="r-1", user_id="u-1")
    owner.check_retired(status)
    return RunTranscript("r-1", tuple(owner.events))


async def test_reporting_sends_its_draft_to_the_model_and_answers_with_its_text(
    autojump_clock: trio.testing.MockClock,
) -> None:
    offline = await run_in_memory(triage_result("sufficient"))
    draft = answer_of(offline)
    provider = ScriptedProvider(reply="## Better wording\n\nSwitching saves $188.00 a month.")
    run = await run_in_memory(triage_result("sufficient"), provider)

    assert answer_of(run) == "## Better wording\n\nSwitching saves $188.00 a month."
    assert result_of(run, "reporting")["writer"] == "scripted"
    (messages,) = provider.calls
    assert [m.role for m in messages] == ["system", "user"]
    facts, _, sent_draft = messages[1].content.rpartition("Draft:\n")
    assert sent_draft == draft  # the offline provider's answer is the draft itself
    assert REQUEST in facts
    assert '"monthly_cost_usd":200.0' in facts
    # The streamed text became coalesced agent_thinking events of reporting.
    streamed = [
        e["data"]["reasoning"]
        for e in run.events
        if e["agent_name"] == "reporting"
        and e["type"] == "agent_thinking"
        and "progress_percentage" not in e["data"]
    ]
    assert "".join(streamed).strip() == provider.reply


async def test_a_failing_model_leaves_the_draft_as_the_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    offline = await run_in_memory(triage_result("partial"))
    run = await run_in_memory(triage_result("partial"), ScriptedProvider(reply=None))

    assert run.status == "completed"
    assert answer_of(run) == answer_of(offline)
    writer = result_of(run, "reporting")["writer"]
    assert writer == "draft (the model failed: model unavailable)"


# -- any triage-shaped result completes --------------------------------------------------------

_numbers = st.one_of(
    st.integers(min_value=-10, max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3),
    st.none(),
)
_period = st.sampled_from(["month", "day", "hour", "year", "week", None, "fortnight"])
_models = st.lists(
    st.sampled_from(["gpt-4o", "gpt-4o-mini", "claude-3-5-haiku", "llama-3.1-70b", "gpt-9"]),
    max_size=3,
)
_entities = st.fixed_dictionaries(
    {
        "models": _models,
        "metrics": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["p95_latency", "latency", "p99_latency", "rps"]),
                    "value": _numbers,
                    "unit": st.sampled_from(["ms", "s", "%", None]),
                }
            ),
            max_size=4,
        ),
        "money": st.lists(
            st.fixed_dictionaries(
                {"amount": _numbers, "currency": st.sampled_from(["USD", "EUR"]), "period": _period}
            ),
            max_size=2,
        ),
        "token_volumes": st.lists(
            st.fixed_dictionaries(
                {
                    "tokens": _numbers,
                    "period": _period,
                    "kind": st.sampled_from(["input", "output", "total", "weird"]),
                }
            ),
            max_size=3,
        ),
        "request_volumes": st.lists(
            st.fixed_dictionaries({"requests": _numbers, "period": _period}), max_size=2
        ),
        "targets": st.lists(
            st.fixed_dictionaries(
                {
                    "metric": st.sampled_from(["cost", "p95_latency", "budget", "quality"]),
                    "value": _numbers,
                    "unit": st.sampled_from(["%", "ms", "s", "USD", None]),
                }
            ),
            max_size=2,
        ),
        "thresholds": st.lists(
            st.fixed_dictionaries(
                {"metric": st.just("p99_latency"), "value": _numbers, "unit": st.just("ms")}
            ),
            max_size=2,
        ),
    }
)


@settings(
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    sufficiency=st.sampled_from(["sufficient", "partial", "insufficient"]),
    found=_entities,
    category=st.sampled_from(
        ["cost_optimization", "latency_optimization", "model_selection", "monitoring", "general"]
    ),
    request=st.text(max_size=80),
)
async def test_any_triage_result_completes_every_step_with_strict_json(
    autojump_clock: trio.testing.MockClock,
    sufficiency: str,
    found: dict[str, Any],
    category: str,
    request: str,
) -> None:
    triage = triage_result(sufficiency, category=category, entities=found)
    run = await run_in_memory(triage, request=request or "x")

    assert run.status == "completed"
    assert not any(e["type"] == "agent_error" for e in run.events)
    assert run.result is not None
    assert run.result["degraded"] is False
    assert answer_of(run).startswith("## ")


# -- tools ------------------------------------------------------------------------------------

TOOL_NAMES = {
    "extract_entities",
    "catalogue_lookup",
    "cost_calculator",
    "parse_quantity",
    "latency_summary",
    "compare_models",
    "gpu_cost",
}


def test_default_tools_declare_schemas_that_match_their_functions() -> None:
    tools = default_tools()
    assert set(tools) == TOOL_NAMES
    for tool in tools.values():
        schema = tool.parameters
        assert schema["type"] == "object"
        properties = set(schema["properties"])
        assert set(schema["required"]) <= properties
        signature = inspect.signature(tool.func)
        assert set(signature.parameters) == properties, tool.name
        required = {n for n, p in signature.parameters.items() if p.default is p.empty}
        assert required == set(schema["required"]), tool.name
        assert tool.schema()["description"]


@pytest.mark.parametrize(
    ("tool", "params", "complaint"),
    [
        ("cost_calculator", {"input_tokens": 1}, "missing parameter 'output_tokens'"),
        ("cost_calculator", {"input_tokens": "40M", "output_tokens": 1}, "must be of type number"),
        ("cost_calculator", {"input_tokens": True, "output_tokens": 1}, "must be of type number"),
        ("catalogue_lookup", {"model": "gpt-4o", "tier": "x"}, "unknown parameter 'tier'"),
        ("latency_summary", {"values_ms": "100,200"}, "must be of type array"),
        ("compare_models", {"current": "gpt-4o", "candidate": "o1"}, "missing parameter"),
    ],
)
def test_tools_refuse_parameters_outside_their_schema(
    tool: str, params: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ToolParameterError, match=complaint):
        default_tools()[tool].validate(params)


def test_catalogue_lookup_finds_ids_and_aliases_with_their_source() -> None:
    entry = catalogue_lookup("Claude 3.5 Haiku")
    assert entry["id"] == "claude-3-5-haiku"
    assert (entry["input_per_million"], entry["output_per_million"]) == (0.8, 4.0)
    assert entry["source_url"] == "https://www.anthropic.com/pricing#api"
    assert entry["as_of"] == load_catalogue().as_of
    assert "indicative" in entry["latency_note"]
    assert catalogue_lookup("GPT_4o")["id"] == "gpt-4o"
    with pytest.raises(LookupError, match="'gpt-5-turbo-max' is not in the catalogue"):
        catalogue_lookup("gpt-5-turbo-max")


def test_cost_calculator_uses_catalogue_or_explicit_prices() -> None:
    cost = cost_calculator(40_000_000, 10_000_000, model="gpt-4o")
    assert (cost["input_cost_usd"], cost["output_cost_usd"], cost["total_cost_usd"]) == (
        100.0,
        100.0,
        200.0,
    )
    assert cost["price_source"] == "catalogue"
    negotiated = cost_calculator(
        1_000_000, 1_000_000, model="gpt-4o", input_per_million=2.0, output_per_million=8.0
    )
    assert negotiated["total_cost_usd"] == 10.0
    assert negotiated["price_source"] == "given"
    own = cost_calculator(3_000, 1_000, input_per_million=0.3, output_per_million=0.9)
    assert own["total_cost_usd"] == 0.0018
    assert own["model"] is None
    # Decimal arithmetic: no binary rounding noise in dollars.
    assert cost_calculator(1, 1, model="gpt-4o-mini")["total_cost_usd"] == 0.000001  # 0.75e-6
    mixed = cost_calculator(1_000_000, 1_000_000, model="gpt-4o", input_per_million=1.0)
    assert (mixed["total_cost_usd"], mixed["price_source"]) == (11.0, "given and catalogue")


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"input_tokens": -1, "output_tokens": 0, "model": "gpt-4o"}, "input_tokens must be"),
        ({"input_tokens": 1, "output_tokens": math.inf, "model": "gpt-4o"}, "output_tokens must"),
        ({"input_tokens": 1, "output_tokens": 1}, "give a catalogue model or both"),
        ({"input_tokens": 1, "output_tokens": 1, "model": "gpt-99"}, "not in the catalogue"),
        (
            {
                "input_tokens": 1,
                "output_tokens": 1,
                "input_per_million": -2.0,
                "output_per_million": 1.0,
            },
            "input_per_million must be",
        ),
    ],
)
def test_cost_calculator_rejects_impossible_input(kwargs: dict[str, Any], complaint: str) -> None:
    with pytest.raises((ValueError, LookupError), match=complaint):
        cost_calculator(**kwargs)


@pytest.mark.parametrize(
    ("text", "value", "unit"),
    [
        ("2M tokens", 2_000_000, "tokens"),
        ("900 ms", 900, "ms"),
        ("1.2 s", 1200, "ms"),
        ("$4k", 4000, "USD"),
        ("$1,250.50", 1250.5, "USD"),
        ("30%", 30, "%"),
        ("1,200 EUR", 1200, "EUR"),
        ("2.5 million tokens", 2_500_000, "tokens"),
        ("750k", 750_000, ""),
        ("3 minutes", 180_000, "ms"),
        ("200 rps", 200, "rps"),
        ("5bn tokens", 5_000_000_000, "tokens"),
    ],
)
def test_parse_quantity_reads_units(text: str, value: float, unit: str) -> None:
    assert parse_quantity(text) == {"value": value, "unit": unit, "text": text}


@pytest.mark.parametrize(
    "text", ["", "fast", "about 2M tokens", "12 parsecs", "$4k tokens", "1.2.3 s"]
)
def test_parse_quantity_rejects_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_quantity(text)


def test_latency_summary_interpolates_percentiles() -> None:
    summary = latency_summary(list(range(1, 101)))
    assert summary == {
        "count": 100,
        "min_ms": 1,
        "mean_ms": 50.5,
        "p50_ms": 50.5,
        "p95_ms": 95.05,
        "p99_ms": 99.01,
        "max_ms": 100,
    }
    single = latency_summary([250.0])
    assert single["p50_ms"] == single["p99_ms"] == 250.0
    bad_lists: list[list[Any]] = [[], [1, -5], [1, math.nan], ["1"]]
    for bad in bad_lists:
        with pytest.raises(ValueError, match="values_ms"):
            latency_summary(bad)


@settings(deadline=None, max_examples=100)
@given(st.lists(st.floats(min_value=0, max_value=1e7), min_size=1, max_size=200))
def test_latency_percentiles_are_ordered_and_within_the_values(values: list[float]) -> None:
    summary = latency_summary(values)
    lo, hi = round(min(values), 3), round(max(values), 3)
    ladder = [lo, summary["p50_ms"], summary["p95_ms"], summary["p99_ms"], hi]
    assert ladder == sorted(ladder)
    assert summary["count"] == len(values)


def test_compare_models_gives_cost_and_latency_deltas() -> None:
    compared = compare_models("gpt-4o", "gpt-4o-mini", 40_000_000, 10_000_000)
    assert compared["current"]["total_cost_usd"] == 200.0
    assert compared["candidate"]["total_cost_usd"] == 12.0
    assert compared["monthly_savings_usd"] == 188.0
    assert compared["savings_pct"] == 94.0
    assert compared["p50_latency_change_ms"] == -300.0
    assert compared["p95_latency_change_ms"] == -600.0
    assert compared["tier_change"] == 2
    upgrade = compare_models("gpt-4o-mini", "gpt-4o", 1_000_000, 0)
    assert upgrade["monthly_savings_usd"] == -2.35
    assert upgrade["tier_change"] == -2
    with pytest.raises(LookupError, match="'mystery-7b'"):
        compare_models("gpt-4o", "mystery-7b", 1, 1)


async def test_a_failed_tool_result_is_handled_by_the_agent_that_called_it(
    nursery: trio.Nursery,
) -> None:
    class Probe(BaseAgent):
        name = "probe"
        top_level = True

        async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            bad = await self.use_tool("cost_calculator", input_tokens="lots", output_tokens=1)
            unknown = await self.use_tool(
                "compare_models", current="gpt-4o", candidate="x-1", input_tokens=1, output_tokens=1
            )
            good = await self.use_tool("parse_quantity", text="1.2 s")
            return {"errors": [bad.error, unknown.error], "parsed": good.value}

    registry = default_registry()
    registry.register(Probe)
    server = await start_test_server(nursery, registry=registry)
    async with open_chat_client(server) as client:
        run = await client.run("probe", agent_name="probe")

    assert run.status == "completed"
    statuses = [e["data"]["status"] for e in run.events if e["type"] == "tool_completed"]
    assert statuses == ["failed", "failed", "completed"]
    assert run.result == {
        "errors": [
            "ToolParameterError: parameter 'input_tokens' must be of type number",
            "LookupError: model 'x-1' is not in the catalogue (prices as of "
            f"{load_catalogue().as_of})",
        ],
        "parsed": {"value": 1200, "unit": "ms", "text": "1.2 s"},
    }


# -- the catalogue and the pure helpers ---------------------------------------------------------


def test_the_catalogue_is_loaded_once_and_cannot_be_changed() -> None:
    catalogue = load_catalogue()
    assert load_catalogue() is catalogue
    entry = catalogue.models[0]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        entry.input_per_million = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        catalogue.sources["openai"] = catalogue.sources["anthropic"]  # type: ignore[index]
    # Dicts handed out are copies.
    catalogue_lookup("gpt-4o")["input_per_million"] = 0.0
    assert catalogue_lookup("gpt-4o")["input_per_million"] == 2.5


def test_the_catalogue_states_its_date_sources_and_what_its_numbers_are() -> None:
    catalogue = load_catalogue()
    assert len(catalogue.as_of) == 10
    notes = " ".join(catalogue.notes)
    assert "list prices" in notes
    assert "indicative" in notes
    assert all(s.url.startswith("https://") for s in catalogue.sources.values())
    ids = catalogue.ids
    assert len(ids) == len(set(ids)) >= 15
    for entry in catalogue.models:
        assert entry.source in catalogue.sources
        assert 0 < entry.input_per_million <= entry.output_per_million or entry.provider == "meta"
        assert 0 < entry.p50_latency_ms < entry.p95_latency_ms
        if entry.cached_input_per_million is not None:
            assert entry.cached_input_per_million < entry.input_per_million


def test_the_reliability_self_hosting_and_currency_tables_are_dated_and_sourced() -> None:
    catalogue = load_catalogue()
    for dated in (
        catalogue.rates_dated,
        catalogue.gpus_dated,
        catalogue.status_dated,
        catalogue.batch_dated,
    ):
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", dated.as_of)
    for source in (catalogue.rates_dated.source, catalogue.gpus_dated.source):
        assert catalogue.sources[source].url.startswith("https://")
    assert set(catalogue.usd_per_unit) == {"EUR", "GBP"}
    assert catalogue.gpu(None) is not None
    assert {429, 500, 502, 503, 504, 529} <= set(catalogue.status_codes)
    for code in catalogue.status_codes.values():
        assert code.source in catalogue.sources
        assert code.retry == (code.code in (408, 429) or code.code >= 500)
    assert all(0 < d < 1 for d, _ in catalogue.batch_discounts.values())
    notes = " ".join(catalogue.notes)
    for table in ("exchange_rates", "gpus", "status_codes", "batch_discounts"):
        assert table in notes


@pytest.mark.parametrize(
    ("table", "value", "complaint"),
    [
        ("exchange_rates", {"as_of": "2025-04-30", "usd_per_unit": {"EUR": -1}}, "numbers"),
        ("exchange_rates", {"as_of": "soon", "usd_per_unit": {}}, "as_of"),
        ("gpus", {"as_of": "2025-05-01", "default": "tpu", "models": []}, "names no GPU"),
        ("status_codes", {"as_of": "2025-05-01", "codes": [{"code": 429}]}, "malformed"),
        (
            "batch_discounts",
            {"as_of": "2025-05-01", "providers": [{"provider": "x", "discount": 2}]},
            "malformed",
        ),
        ("gpus", {"as_of": "2025-05-01", "source": "nobody", "models": []}, "names no source"),
    ],
)
def test_a_malformed_dated_table_is_a_configuration_error(
    table: str, value: dict[str, Any], complaint: str
) -> None:
    raw = {
        "as_of": "2025-05-01",
        "sources": [{"id": "ecb", "name": "ECB", "url": "https://example.org"}],
        "models": [],
        table: value,
    }
    with pytest.raises(ConfigurationError, match=complaint):
        parse_catalogue(raw)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"as_of": "May 2025"}, "as_of"),
        ({"models": [{"id": "a", "tier": "huge"}]}, "tier"),
        ({"models": "dup"}, "used twice"),
    ],
)
def test_a_malformed_catalogue_is_a_configuration_error(
    change: dict[str, Any], complaint: str
) -> None:
    raw = json.loads(
        json.dumps(
            {
                "as_of": load_catalogue().as_of,
                "sources": [
                    {"id": s.id, "name": s.name, "url": s.url}
                    for s in load_catalogue().sources.values()
                ],
                "models": [m.as_dict() for m in load_catalogue().models],
            }
        )
    )
    assert parse_catalogue(raw).ids == load_catalogue().ids
    if change.get("models") == "dup":
        raw["models"][1]["aliases"].append(raw["models"][0]["id"])
    else:
        raw.update(change)
    with pytest.raises(ConfigurationError, match=complaint):
        parse_catalogue(raw)


@pytest.mark.parametrize(
    ("text", "models", "current", "candidates"),
    [
        (
            "switch from gpt-4o to gpt-4o-mini?",
            ["gpt-4o", "gpt-4o-mini"],
            "gpt-4o",
            ["gpt-4o-mini"],
        ),
        ("Is gpt-4o-mini enough, or gpt-4o?", ["gpt-4o", "gpt-4o-mini"], "gpt-4o-mini", ["gpt-4o"]),
        (
            "Should we move to Llama 3.1 70B? We use Claude 3.5 Haiku today",
            ["claude-3-5-haiku", "llama-3.1-70b"],
            "claude-3-5-haiku",
            ["llama-3.1-70b"],
        ),
        (
            "compare gpt-4o with claude-3-5-haiku",
            ["claude-3-5-haiku", "gpt-4o"],
            "gpt-4o",
            ["claude-3-5-haiku"],
        ),
        ("we run gpt-4o", ["gpt-4o"], "gpt-4o", []),
        ("no names here", ["gpt-4o", "o1"], "gpt-4o", ["o1"]),
        ("", [], None, []),
    ],
)
def test_split_models_tells_the_current_model_from_candidates(
    text: str, models: list[str], current: str | None, candidates: list[str]
) -> None:
    assert split_models(text, models) == (current, candidates)


def test_monthly_volumes_normalise_periods_and_state_assumptions() -> None:
    volumes = monthly_volumes(
        {
            "token_volumes": [
                {"tokens": 1_000_000, "period": "day", "kind": "input"},
                {"tokens": 9, "period": "day", "kind": "input"},  # only the first counts
                {"tokens": 12_000_000, "period": "year", "kind": "output"},
            ],
            "request_volumes": [{"requests": 100, "period": "hour"}],
        }
    )
    assert volumes.tokens == (30_000_000, 1_000_000)
    assert volumes.requests == 72_000
    assert volumes.assumptions == ("a month is 30 days",)
    only_input = monthly_volumes({"token_volumes": [{"tokens": 3000, "kind": "input"}]})
    assert only_input.tokens == (3000, 1000)
    assert only_input.assumptions == (
        "token volumes given without a period are taken as per month",
        "output tokens are assumed to be a third of input tokens (3:1)",
    )
    assert monthly_volumes({}).tokens is None


def test_alternatives_stay_within_the_same_or_the_next_smaller_tier() -> None:
    catalogue = load_catalogue()
    for entry in catalogue.models:
        for goal in ("cost", "latency"):
            for alt in alternatives(entry, goal, catalogue):
                assert alt.tier_rank - entry.tier_rank in (0, 1)
                if goal == "cost":
                    cheaper = 3 * alt.input_per_million + alt.output_per_million
                    assert cheaper < 3 * entry.input_per_million + entry.output_per_million
                else:
                    assert alt.p95_latency_ms < entry.p95_latency_ms
    gpt4o = catalogue.find("gpt-4o")
    assert gpt4o is not None
    assert [m.id for m in alternatives(gpt4o, "cost", catalogue)] == ["gpt-4.1", "gpt-4.1-mini"]


def test_actions_put_quick_wins_first_and_monitoring_last() -> None:
    recs = [
        {
            "title": "Switch a to b",
            "from_model": "a",
            "to_model": "b",
            "estimated_monthly_savings_usd": 50.0,
        },
        {"title": "Trim prompts", "estimated_monthly_savings_usd": 5.0},
    ]
    steps = plan(recs, have_figures=True)
    assert [s["order"] for s in steps] == list(range(1, 6))
    assert steps[0]["action"] == "Trim prompts (about $5.00 a month)"
    assert "evaluation set" in steps[1]["action"]
    assert steps[3]["action"].startswith("Switch to b if quality holds (about $50.00 a month)")
    assert steps[-1]["action"].startswith("Track cost per request")
    baseline = plan([], have_figures=False)
    assert [s["action"].split(":")[0] for s in baseline] == [
        "Measure a baseline",
        "Track cost per request and p95 latency per model on a dashboard and alert on "
        "regressions, to confirm each change",
    ]


def test_data_helper_says_why_and_gives_an_example_for_each_missing_item() -> None:
    result = describe_missing(["monthly token volume", "current model", "price per 1M tokens"])
    items = [(m["item"], m["example"]) for m in result["missing"]]
    assert items == [
        ("monthly token volume", "'about 40M input tokens and 10M output tokens per month'"),
        ("current model", "'we use gpt-4o for chat and gpt-4o-mini for classification'"),
        ("price per 1M tokens", "'we pay $2.50 per 1M input tokens and $10 per 1M output tokens'"),
    ]
    assert all(m["why"] for m in result["missing"])
    assert len(result["questions"]) == 3
    unknown = describe_missing(["team size"])
    assert unknown["questions"] == ["What is your team size?"]


async def test_the_real_triage_sends_a_request_with_volumes_down_the_full_pipeline(
    server: ChatServer,
) -> None:
    async with open_chat_client(server, user_id="u1") as client:
        run = await client.run(REQUEST)

    assert run.status == "completed"
    assert run.agents() == ["supervisor", "triage", "data", "optimization", "actions", "reporting"]
    assert result_of(run, "triage")["data_sufficiency"] == "sufficient"
    assert result_of(run, "data")["figures"]["monthly_cost_usd"] == 200.0
    switch = result_of(run, "optimization")["recommendations"][0]
    assert (switch["to_model"], switch["estimated_monthly_savings_usd"]) == ("gpt-4o-mini", 188.0)
    assert "saves about $188.00 a month" in answer_of(run)


# -- issue 15: GPUs, reliability, replies, provenance ---------------------------------------------


def test_gpu_cost_prices_gpu_hours_idle_time_and_right_sizing() -> None:
    found = gpu_cost(8, hourly_price=2.5, utilisation_pct=30, requests_per_month=2e6)

    assert found["gpu_hours_per_month"] == 5760.0  # 8 x 24 h x 30 days
    assert found["monthly_cost"] == {"amount": 14_400.0, "currency": "USD"}
    assert found["idle_cost"] == {"amount": 10_080.0, "currency": "USD"}
    assert found["cost_per_used_gpu_hour"] == {"amount": 8.333333, "currency": "USD"}
    # 8 GPUs at 30% is the load of 2.4 GPUs: 4 GPUs at 70% carry it.
    assert found["right_sized"] == {
        "gpus": 4,
        "target_utilisation_pct": 70.0,
        "monthly_saving": {"amount": 7200.0, "currency": "USD"},
    }
    assert found["cost_per_request"] == 0.0072
    assert found["assumptions"] == ["the GPUs run 24 hours a day, 30 days a month"]


def test_gpu_cost_without_a_price_uses_the_catalogue_and_says_so() -> None:
    catalogue = load_catalogue()
    h100 = catalogue.gpu("h100")
    assert h100 is not None
    found = gpu_cost(2, gpu_type="h100", hours_per_day=8)

    assert found["hourly"]["amount"] == h100.hourly_usd
    assert found["hourly"]["source"].startswith("catalogue: NVIDIA H100")
    assert found["monthly_cost"]["amount"] == round(2 * 8 * 30 * h100.hourly_usd, 6)
    assert any("no GPU price was given" in a for a in found["assumptions"])


def test_gpu_cost_in_euros_keeps_the_currency() -> None:
    found = gpu_cost(6, hourly_price=2.1, currency="EUR", utilisation_pct=35)
    assert found["monthly_cost"] == {"amount": 9072.0, "currency": "EUR"}
    assert found["monthly_cost_usd"] == round(9072 * load_catalogue().usd_per_unit["EUR"], 6)


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"gpus": 0}, "at least 1"),
        ({"gpus": 2.5}, "whole number"),
        ({"gpus": 2, "hours_per_day": 25}, "from 0 to 24"),
        ({"gpus": 2, "utilisation_pct": 120}, "from 0 to 100"),
    ],
)
def test_gpu_cost_rejects_impossible_input(kwargs: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        gpu_cost(**kwargs)


async def test_status_codes_get_what_they_mean_and_reliability_advice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    triage = triage_result(
        "sufficient",
        category="reliability",
        intent="improve_reliability",
        entities=entities(
            models=["claude-3-5-sonnet"],
            token_volumes=[],
            request_volumes=[],
            targets=[],
            metrics=[{"name": "error_rate", "value": 3, "unit": "%"}],
            status_codes=[{"code": 429, "mentions": 1}, {"code": 529, "mentions": 1}],
        ),
    )
    run = await run_in_memory(triage, request="We get 429s and 529s, about 3% of requests")

    reliability = result_of(run, "data")["figures"]["reliability"]
    assert (
        reliability["status_codes"]["529"]["meaning"] == "Anthropic's API is temporarily overloaded"
    )
    assert reliability["status_codes"]["429"]["retry"] is True
    assert reliability["error_rate_pct"] == 3
    titles = [r["title"] for r in result_of(run, "optimization")["recommendations"]]
    assert titles == [
        "What the status codes say",
        "Retry with exponential backoff and jitter",
        "Queue requests under your rate limits",
        "Check the quota and the usage tier",
        "Add a fallback provider",
    ]
    answer = answer_of(run)
    assert "HTTP 429" in answer
    assert "latency_ms" not in result_of(run, "data")["figures"]  # a status is no latency
    assert "429,000" not in answer
    steps = [s["action"] for s in result_of(run, "actions")["steps"]]
    assert not any("What the status codes say" in s for s in steps)  # a finding, not a step
    assert steps[-1].startswith("Track failed requests by status code")


@pytest.mark.parametrize(
    ("reply", "language", "start"),
    [
        ("smalltalk", "en", "Hello! I help teams"),
        ("smalltalk", "de", "Hallo! Ich helfe Teams"),
        ("smalltalk", "pt", "Olá! Ajudo equipas"),
        ("gibberish", "en", "I could not make out a question"),
        ("injection", "en", "I can't change my instructions"),
        ("injection", "fr", "Je ne peux pas changer mes instructions"),
    ],
)
async def test_messages_that_need_no_analysis_get_a_short_reply_in_their_language(
    autojump_clock: trio.testing.MockClock, reply: str, language: str, start: str
) -> None:
    triage = triage_result("insufficient", category="general", intent="ask_question")
    triage.update(reply=reply, language=language)
    run = await run_in_memory(triage, request="hello there")

    assert run.agents() == ["supervisor", "triage", "reporting"]
    answer = answer_of(run)
    assert answer.startswith(start)
    assert answer.count('\n- "') == 2  # two example questions
    assert "Priority" not in answer
    assert len(answer) < 800
    assert run.result is not None
    assert (run.result["reply"], run.result["language"]) == (reply, language)


async def test_an_injection_with_a_real_question_is_refused_and_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    triage = triage_result("sufficient")
    triage["reply"] = "injection"
    run = await run_in_memory(triage)

    answer = answer_of(run)
    assert answer.startswith("I can't change my instructions")
    assert "## Cost optimisation" in answer
    assert "data" in run.agents()


async def test_an_answer_in_english_to_another_language_says_so_in_that_language(
    autojump_clock: trio.testing.MockClock,
) -> None:
    triage = triage_result("sufficient")
    triage["language"] = "it"
    run = await run_in_memory(triage)

    answer = answer_of(run)
    assert answer.startswith("_Nota: la risposta dettagliata qui sotto è in inglese._\n\n## ")
    assert run.result is not None
    assert run.result["language"] == "it"


async def test_every_figure_says_where_it_comes_from(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run = await run_in_memory(triage_result("sufficient"))

    provenance = result_of(run, "data")["figures"]["provenance"]
    assert provenance["monthly_tokens"] == "your message"
    assert provenance["prices_per_million_usd"].startswith("catalogue: OpenAI API pricing")
    assert provenance["monthly_cost"] == "computed"
    figures = answer_of(run).split("### Figures")[1].split("### ")[0]
    assert "Monthly tokens: 40M input, 10M output _(you said)_" in figures
    assert "_(catalogue: OpenAI API pricing, list prices as of" in figures
    assert "Cost per request: $0.0002 _(computed)_" in figures


@pytest.mark.parametrize(
    ("amount", "shown"),
    [(0.00925, "$0.00925"), (0.0875, "$0.0875"), (0.2, "$0.20"), (13_875, "$13,875.00")],
)
def test_small_amounts_keep_their_digits(amount: float, shown: str) -> None:
    assert fmt_usd(amount) == shown
