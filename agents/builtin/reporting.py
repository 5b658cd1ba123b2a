"""Reporting: write the final answer, in Markdown, from the triage result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._base import BaseAgent

_ADVICE = {
    "cost_optimization": (
        "Measure cost per request before changing anything: tokens in and out, per model.",
        "Route simple requests to a smaller model and keep the large one for hard cases.",
        "Cache repeated prompts and trim system prompts; both cut input tokens directly.",
    ),
    "latency_optimization": (
        "Track p50, p95 and p99 separately; tail latency usually has its own cause.",
        "Stream responses so users see the first tokens early.",
        "Cap output length and consider a faster model for latency-critical paths.",
    ),
    "model_selection": (
        "Build a small evaluation set from real requests before switching models.",
        "Compare candidates on quality, cost per 1k requests and p95 latency together.",
        "Roll out behind a flag and compare live metrics before the full switch.",
    ),
    "monitoring": (
        "Export request count, error rate, latency percentiles and token usage per model.",
        "Alert on symptoms users feel (errors, p99) rather than on every cause.",
        "Keep a per-request trace id so one slow answer can be followed end to end.",
    ),
    "general": (
        "Say what you want to improve (cost, latency, quality or reliability).",
        "Add the figures you have: volumes, prices, latencies, models in use.",
    ),
}

_TITLES = {
    "cost_optimization": "Cost optimisation",
    "latency_optimization": "Latency optimisation",
    "model_selection": "Model selection",
    "monitoring": "Monitoring",
    "general": "General question",
}


def _entity_lines(entities: Mapping[str, Any]) -> list[str]:
    lines = []
    if entities.get("models"):
        lines.append("- Models: " + ", ".join(f"`{m}`" for m in entities["models"]))
    if entities.get("money"):
        amounts = ", ".join(f"{m['amount']:,.2f} {m['currency']}" for m in entities["money"])
        lines.append(f"- Amounts: {amounts}")
    if entities.get("durations"):
        durations = ", ".join(f"{d['value_ms']:g} ms" for d in entities["durations"])
        lines.append(f"- Durations: {durations}")
    if entities.get("percentages"):
        lines.append("- Percentages: " + ", ".join(f"{p:g}%" for p in entities["percentages"]))
    if entities.get("token_volumes"):
        volumes = ", ".join(f"{t:,.0f}" for t in entities["token_volumes"])
        lines.append(f"- Token volumes: {volumes}")
    if entities.get("periods"):
        lines.append("- Periods: " + ", ".join(entities["periods"]))
    return lines


def write_report(request: str, triage: Mapping[str, Any] | None, degraded: str | None) -> str:
    """The Markdown answer for ``request`` (pure)."""
    if triage is None:
        lines = [
            "## Answer (degraded)",
            "",
            f"The request could not be classified ({degraded or 'triage unavailable'}), "
            "so this answer is generic.",
            "",
            "### Next steps",
        ]
        lines += [f"1. {step}" for step in _ADVICE["general"]]
        return "\n".join(lines) + "\n"
    category = str(triage.get("category", "general"))
    lines = [
        f"## {_TITLES.get(category, category)}",
        "",
        f"Priority **{triage.get('priority', 'medium')}**, "
        f"confidence {triage.get('confidence', 0)}.",
    ]
    found = _entity_lines(triage.get("entities") or {})
    if found:
        lines += ["", "### What you told us", *found]
    lines += ["", "### Recommendations"]
    lines += [f"{i}. {step}" for i, step in enumerate(_ADVICE.get(category, _ADVICE["general"]), 1)]
    return "\n".join(lines) + "\n"


class ReportingAgent(BaseAgent):
    name = "reporting"
    description = "Writes the final Markdown answer from the triage result."

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        triage = inputs.get("triage")
        degraded = inputs.get("degraded")
        await self.think("Writing the answer", progress=50)
        markdown = write_report(str(inputs.get("request", self.context.request)), triage, degraded)
        return {"markdown": markdown, "degraded": degraded is not None}
