"""What a run keeps for the later turns of its thread: the supervisor's ``memory`` (pure).

``memory`` holds the request's category and language, the models (and which
one is in use), the figures the answer used with where each came from
(``facts``), and the entities triage found (``entities``), which triage merges
into a follow-up that does not give them again. Every list is capped, so a
memory stays small whatever the request was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Entity lists a later turn may reuse, and the entries kept of each.
MEMORY_KEYS = (
    "models",
    "providers",
    "metrics",
    "money",
    "token_volumes",
    "request_volumes",
    "gpus",
    "status_codes",
)
MAX_ENTRIES = 8
MAX_FACTS = 24


def _fact(name: str, value: Any, unit: str, source: str) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "source": source}


def facts_of(figures: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The figures an answer used, each with its unit and where it came from."""
    where: Mapping[str, str] = figures.get("provenance") or {}
    out: list[dict[str, Any]] = []
    tokens = figures.get("monthly_tokens")
    if isinstance(tokens, Mapping):
        source = where.get("monthly_tokens", "your message")
        for side in ("input", "output"):
            if isinstance(tokens.get(side), int | float):
                out.append(_fact(f"{side} tokens a month", tokens[side], "tokens", source))
    if isinstance(figures.get("monthly_requests"), int | float):
        source = where.get("monthly_requests", "your message")
        out.append(_fact("requests a month", figures["monthly_requests"], "requests", source))
    spend = figures.get("reported_monthly_spend")
    if isinstance(spend, Mapping):
        source = where.get("reported_monthly_spend", "your message")
        out.append(_fact("spend a month", spend.get("amount"), str(spend.get("currency")), source))
    elif isinstance(figures.get("reported_monthly_spend_usd"), int | float):
        source = where.get("reported_monthly_spend", "your message")
        out.append(_fact("spend a month", figures["reported_monthly_spend_usd"], "USD", source))
    cost = figures.get("monthly_cost")
    if isinstance(cost, Mapping):
        basis = f"computed: {figures.get('monthly_cost_basis')}"
        out.append(_fact("monthly cost", cost.get("amount"), str(cost.get("currency")), basis))
    elif isinstance(figures.get("monthly_cost_usd"), int | float):
        basis = f"computed: {figures.get('monthly_cost_basis')}"
        out.append(_fact("monthly cost", figures["monthly_cost_usd"], "USD", basis))
    if isinstance(figures.get("cost_per_request_usd"), int | float):
        out.append(_fact("cost per request", figures["cost_per_request_usd"], "USD", "computed"))
    for model, usd in (figures.get("model_costs") or {}).items():
        out.append(_fact(f"monthly cost on {model}", usd, "USD", "computed: list prices"))
    gpu = figures.get("gpu")
    if isinstance(gpu, Mapping):
        source = where.get("gpu", "your message")
        out.append(_fact("GPUs", gpu.get("count"), "GPUs", source))
        if gpu.get("utilisation_pct") is not None:
            out.append(_fact("GPU utilisation", gpu["utilisation_pct"], "%", source))
        hourly = gpu.get("hourly") or {}
        out.append(
            _fact(
                "price per GPU-hour",
                hourly.get("amount"),
                str(hourly.get("currency")),
                "your message" if hourly.get("source") == "given" else str(hourly.get("source")),
            )
        )
    for name, value in (figures.get("latency_ms") or {}).items():
        source = where.get("latency_ms", "your message")
        out.append(_fact(f"{name} latency", value, "ms", source))
    reliability = figures.get("reliability")
    if isinstance(reliability, Mapping):
        source = where.get("reliability", "your message")
        codes = list((reliability.get("status_codes") or {}).keys())
        if codes:
            out.append(_fact("HTTP status codes", codes, "", source))
        if reliability.get("error_rate_pct") is not None:
            out.append(_fact("error rate", reliability["error_rate_pct"], "%", source))
    return out[:MAX_FACTS]


def build_memory(triage: Mapping[str, Any] | None, steps: Mapping[str, Any]) -> dict[str, Any]:
    """The ``memory`` of a run from its triage result and the results of its steps."""
    if triage is None:
        return {}
    entities = triage.get("entities") if isinstance(triage.get("entities"), Mapping) else {}
    assert isinstance(entities, Mapping)
    data = steps.get("data") if isinstance(steps.get("data"), Mapping) else {}
    figures = data.get("figures") if isinstance(data, Mapping) else None
    figures = figures if isinstance(figures, Mapping) else {}
    models = [m for m in entities.get("models") or () if isinstance(m, str)][:MAX_ENTRIES]
    current = figures.get("current_model") or triage.get("current_model")
    if current is None and models:
        current = models[0]
    kept = {
        key: list(entities[key][:MAX_ENTRIES])
        for key in MEMORY_KEYS
        if isinstance(entities.get(key), list) and entities[key]
    }
    memory: dict[str, Any] = {
        "category": triage.get("category"),
        "sub_category": triage.get("sub_category"),
        "language": triage.get("language", "en"),
        "current_model": current,
        "models": models,
        "facts": facts_of(figures),
        "entities": kept,
    }
    return memory
