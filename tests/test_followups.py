"""Follow-ups: a run keeps a ``memory``; a later turn of the thread reuses its figures.

The thread store that fills ``context.history`` is built elsewhere; these tests
hand-build the earlier turns (``agents.Turn``) the way it will, from an earlier
run's final result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import trio

from agents import RunScope, Turn, UserExecutionContext, execute_run
from agents.builtin import default_runtime
from agents.builtin.memory import build_memory
from agents.builtin.triage._history import merge_history


class Recorder:
    """Keeps each agent's result."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}

    async def emit(
        self, agent_name: str, event_type: str, data: dict[str, Any], *, final: bool = False
    ) -> None:
        if event_type == "agent_completed":
            self.results[agent_name] = data["result"]


async def run(text: str, history: tuple[Turn, ...] = (), run_id: str = "r-2") -> Recorder:
    recorder = Recorder()
    context = UserExecutionContext("u", "t-1", run_id, "c", text, recorder, history=history)
    with trio.fail_after(10):
        status = await execute_run(RunScope(context, default_runtime()), "supervisor")
    assert status == "completed"
    return recorder


async def turn(text: str, run_id: str = "r-1") -> Turn:
    """The earlier turn as the thread store records it: request, answer, memory."""
    final = (await run(text, run_id=run_id)).results["supervisor"]
    return Turn(run_id, text, "completed", final["answer"], final["memory"])


FIRST = "We send 40M input and 10M output tokens a month to gpt-4o."


async def test_a_run_keeps_a_memory_of_its_category_models_and_figures_with_sources() -> None:
    final = (await run(FIRST)).results["supervisor"]
    memory = final["memory"]

    assert memory["category"] == "cost_optimization"
    assert memory["language"] == "en"
    assert memory["current_model"] == "gpt-4o"
    assert memory["entities"]["token_volumes"] == [
        {"tokens": 40e6, "period": "month", "kind": "input"},
        {"tokens": 10e6, "period": "month", "kind": "output"},
    ]
    facts = {f["name"]: f for f in memory["facts"]}
    assert facts["input tokens a month"] == {
        "name": "input tokens a month",
        "value": 40e6,
        "unit": "tokens",
        "source": "your message",
    }
    assert facts["monthly cost"]["value"] == 200.0
    assert facts["monthly cost"]["source"] == "computed: list prices"


async def test_a_follow_up_without_figures_reuses_the_earlier_ones_and_says_so() -> None:
    earlier = await turn(FIRST)
    results = (await run("And what if we switched to claude 3.5 haiku?", (earlier,))).results

    triage = results["triage"]
    assert triage["reused"] == [
        {"what": "workload", "from_run": "r-1", "items": 2},
        {"what": "current model", "from_run": "r-1", "items": 1},
    ]
    assert triage["current_model"] == "gpt-4o"
    assert results["data"]["figures"]["monthly_cost_usd"] == 200.0
    assert (
        results["data"]["figures"]["provenance"]["monthly_tokens"]
        == "your earlier message in this thread (run r-1)"
    )
    switch = next(r for r in results["optimization"]["recommendations"] if r.get("to_model"))
    assert (switch["from_model"], switch["to_model"]) == ("gpt-4o", "claude-3-5-haiku")
    assert switch["estimated_monthly_savings_usd"] == 128.0  # $200 - (40 x 0.80 + 10 x 4)
    answer = results["supervisor"]["answer"]
    assert "### From earlier in this thread" in answer
    assert "Reused from your earlier message (run r-1): workload" in answer
    assert "Earlier in this thread the monthly cost was $200.00" in answer
    assert "_(from your earlier message)_" in answer


async def test_a_follow_up_with_its_own_figures_keeps_them_and_reuses_only_the_model() -> None:
    earlier = await turn(FIRST)
    results = (
        await run("Actually it's 80M input and 20M output tokens a month.", (earlier,))
    ).results

    assert [r["what"] for r in results["triage"]["reused"]] == ["models"]
    assert results["data"]["figures"]["monthly_cost_usd"] == 400.0


async def test_a_follow_up_can_scale_the_earlier_volume() -> None:
    earlier = await turn(FIRST)
    results = (await run("And at 3x the volume?", (earlier,))).results

    assert results["triage"]["scale"] == 3.0
    assert results["data"]["figures"]["monthly_tokens"]["input"] == 120e6
    assert "Scaled by 3 as you asked" in results["supervisor"]["answer"]


async def test_a_short_follow_up_keeps_the_language_of_the_thread() -> None:
    earlier = await turn(
        "Wir senden 40 Mio. Eingabe-Tokens und 10 Mio. Ausgabe-Tokens pro Monat an gpt-4o."
    )
    results = (await run("Und mit gpt-4o-mini?", (earlier,))).results

    assert results["triage"]["language"] == "de"
    assert results["supervisor"]["answer"].startswith(
        "_Hinweis: Die ausführliche Antwort unten ist auf Englisch._"
    )
    saving = next(r for r in results["optimization"]["recommendations"] if r.get("to_model"))
    assert saving["estimated_monthly_savings_usd"] == 188.0


async def test_targets_are_not_reused_and_a_new_target_applies_to_the_earlier_spend() -> None:
    earlier = await turn("We spend $18k a month on gpt-4o. Get it under $15k.")
    results = (await run("Can we cut it by 40%?", (earlier,))).results

    deltas = results["data"]["figures"]["target_deltas"]
    assert [d["target_monthly_cost_usd"] for d in deltas] == [10_800.0]


async def test_an_earlier_turn_without_memory_changes_nothing() -> None:
    alone = (await run(FIRST)).results
    earlier = Turn("r-0", "hi", "completed", "Hello!", {})
    with_history = (await run(FIRST, (earlier,))).results

    assert "reused" not in with_history["triage"]
    assert with_history["data"]["figures"] == alone["data"]["figures"]


@pytest.mark.parametrize(
    ("triage", "memory"),
    [
        (None, {}),
        (
            {"category": "general", "language": "fr", "entities": {"models": []}},
            {"category": "general", "language": "fr", "models": [], "entities": {}},
        ),
    ],
)
def test_build_memory_of_a_run_without_figures(
    triage: Mapping[str, Any] | None, memory: Mapping[str, Any]
) -> None:
    built = build_memory(triage, {})
    assert {k: built.get(k) for k in memory} == memory


def test_merge_history_skips_turns_that_kept_nothing() -> None:
    entities: dict[str, Any] = {"models": [], "token_volumes": []}
    merged = merge_history("and with batching?", entities, [Turn("r-1", "x", "failed")])
    assert merged.entities == entities
    assert merged.reused == []
