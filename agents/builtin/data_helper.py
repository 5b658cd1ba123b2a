"""Data helper: which data is missing, why it matters, and how to give it.

Starts from triage's ``missing_data``; when triage failed or listed nothing,
falls back to what its intent needs (or, without triage, to what any
optimisation question needs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .._base import BaseAgent


@attrs.frozen
class Need:
    keywords: tuple[str, ...]
    why: str
    example: str
    question: str


#: What each kind of missing data is for; the first entry whose keyword occurs wins.
NEEDS: tuple[Need, ...] = (
    Need(
        ("price",),
        "cost is tokens x price; without a price (or a catalogue model) there is no cost",
        "'we pay $2.50 per 1M input tokens and $10 per 1M output tokens'",
        "What do you pay per 1M input and output tokens?",
    ),
    Need(
        ("request", "traffic", "rps"),
        "cost per request and capacity need the number of requests",
        "'1.2M requests per month' or 'peaks of 50 requests per second'",
        "How many requests do you serve per month, and at what peak rate?",
    ),
    Need(
        ("token", "volume", "usage"),
        "monthly cost and every saving scale with token volume: without it only prices "
        "per 1M tokens can be compared",
        "'about 40M input tokens and 10M output tokens per month'",
        "How many input and output tokens do you use per month (or per day)?",
    ),
    Need(
        ("model",),
        "prices, latency and the alternatives all depend on the model in use",
        "'we use gpt-4o for chat and gpt-4o-mini for classification'",
        "Which model (and provider) do you use today?",
    ),
    Need(
        ("target", "goal", "budget", "objective"),
        "a target says how far to go and which trade-offs (quality, latency) are acceptable",
        "'cut cost by 30%' or 'p95 under 500 ms'",
        "What target do you want to reach (e.g. a budget or a latency percentile)?",
    ),
    Need(
        ("latency", "percentile", "p95", "p99", "p50", "response time"),
        "a latency plan needs where you are now, per percentile, not an average",
        "'p50 800 ms, p95 2.1 s, p99 4 s over the last 7 days'",
        "What are your p50, p95 and p99 latencies, and over which period?",
    ),
    Need(
        ("spend", "cost", "bill", "money"),
        "the current spend anchors the savings estimates",
        "'our OpenAI bill is $4,000 per month'",
        "How much do you spend per month today?",
    ),
    Need(
        ("error", "metric", "monitor", "alert", "threshold"),
        "alerts need the metrics you already collect and the levels that hurt users",
        "'error rate 0.5%, alert if p99 is above 3 s for 5 minutes'",
        "Which metrics do you collect today, and at what levels should we alert?",
    ),
    Need(
        ("quality", "eval", "accuracy"),
        "a model change is only safe if quality can be measured",
        "'we have 200 labelled requests; accuracy today is 92%'",
        "How do you measure answer quality today?",
    ),
)
_GENERIC = Need(
    (),
    "the answer can only be as specific as the figures it starts from",
    "state it with a number and a unit, e.g. '900 ms' or '$4k per month'",
    "Can you give this figure?",
)

#: Missing data to ask for when triage gave none, by intent.
INTENT_NEEDS: Mapping[str, tuple[str, ...]] = {
    "reduce_cost": ("current model", "monthly token volume"),
    "choose_model": ("current model", "monthly token volume", "quality measure"),
    "reduce_latency": ("latency percentiles", "current model", "latency target"),
    "set_up_monitoring": ("metrics collected today", "alert thresholds"),
    "improve_quality": ("quality measure", "current model"),
}
WITHOUT_TRIAGE = ("goal", "current model", "monthly token volume", "latency percentiles")
GENERAL = ("goal", "current model", "monthly token volume")


def need_for(item: str) -> Need:
    text = item.lower()
    return next((n for n in NEEDS if any(k in text for k in n.keywords)), _GENERIC)


def missing_items(triage: Mapping[str, Any] | None) -> list[str]:
    if triage is None:
        return list(WITHOUT_TRIAGE)
    listed = triage.get("missing_data")
    items = [str(i) for i in listed if isinstance(i, str) and i.strip()] if listed else []
    if items:
        return list(dict.fromkeys(items))
    return list(INTENT_NEEDS.get(str(triage.get("intent", "")), GENERAL))


def describe_missing(items: Sequence[str]) -> dict[str, Any]:
    """The data_helper result for ``items`` (pure)."""
    missing = []
    questions = []
    for item in items:
        need = need_for(item)
        missing.append({"item": item, "why": need.why, "example": need.example})
        question = need.question if need is not _GENERIC else f"What is your {item}?"
        if question not in questions:
            questions.append(question)
    return {"missing": missing, "questions": questions}


class DataHelperAgent(BaseAgent):
    name = "data_helper"
    description = "Says precisely which data is missing, why, and how to provide it."

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        triage = inputs.get("triage")
        triage = triage if isinstance(triage, Mapping) else None
        await self.think("Checking which figures the answer still needs", progress=20)
        items = missing_items(triage)
        result = describe_missing(items)
        result["triage_available"] = triage is not None
        await self.think(f"{len(items)} item(s) missing: " + ", ".join(items), progress=100)
        return result
