"""Reporting: the final answer, in Markdown.

The agent writes a deterministic draft from the triage result and the steps
that completed, and says what is missing when a step failed or was not run.
The draft then goes through the model provider for wording (the offline
provider returns it unchanged); if the provider fails, the draft is the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from server.protocol import ProviderError

from .._base import BaseAgent
from .._providers import ChatMessage
from .catalogue import load_catalogue
from .data import fmt_ms, fmt_tokens, fmt_usd

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
    "quality": (
        "Build an evaluation set of real requests with expected answers.",
        "Score every model or prompt change on it before shipping.",
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
    "quality": "Quality",
    "general": "General question",
}

#: What the answer lacks when a step did not complete.
LOST = {
    "triage": "the classification of the request, so this answer is generic",
    "data": "the computed figures (monthly cost, cost per request, latency deltas)",
    "optimization": "the recommendations with estimated savings",
    "actions": "the ordered action plan",
    "data_helper": "the list of missing data and how to provide it",
}

SYSTEM_PROMPT = (
    "You are the reporting step of an assistant for AI-workload optimisation (cost, latency, "
    "model choice, monitoring). Improve the wording of the draft answer. Keep its Markdown "
    "headings, every number, model name and unit, and the sections about missing data or "
    "missing steps. Do not add figures that are not in the facts."
)


def _fmt_number(value: Any) -> str:
    return f"{value:,.10g}" if isinstance(value, int | float) else str(value)


def _entity_lines(entities: Mapping[str, Any]) -> list[str]:
    def items(key: str) -> list[Mapping[str, Any]]:
        value = entities.get(key)
        return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []

    def per(item: Mapping[str, Any]) -> str:
        return f" per {item['period']}" if item.get("period") else ""

    lines = []
    models = [m for m in entities.get("models") or [] if isinstance(m, str)]
    if models:
        lines.append("- Models: " + ", ".join(f"`{m}`" for m in models))
    if items("token_volumes"):
        volumes = "; ".join(
            f"{fmt_tokens(float(t['tokens']))} {t.get('kind') or 'total'} tokens{per(t)}"
            for t in items("token_volumes")
            if isinstance(t.get("tokens"), int | float)
        )
        lines.append(f"- Token volumes: {volumes}")
    if items("request_volumes"):
        volumes = "; ".join(
            f"{_fmt_number(r.get('requests'))} requests{per(r)}" for r in items("request_volumes")
        )
        lines.append(f"- Requests: {volumes}")
    if items("money"):
        amounts = "; ".join(
            f"{m['amount']:,.2f} {m.get('currency', 'USD')}{per(m)}"
            for m in items("money")
            if isinstance(m.get("amount"), int | float)
        )
        lines.append(f"- Amounts: {amounts}")
    for key, label in (
        ("metrics", "Metrics"),
        ("thresholds", "Thresholds"),
        ("targets", "Targets"),
    ):
        found = [
            f"{m.get('name') or m.get('metric')} {_fmt_number(m.get('value'))} "
            f"{m.get('unit') or ''}"
            for m in items(key)
        ]
        if found:
            lines.append(f"- {label}: " + "; ".join(f.strip() for f in found))
    ranges = [r for r in entities.get("time_ranges") or [] if isinstance(r, str)]
    if ranges:
        lines.append("- Periods: " + ", ".join(ranges))
    return lines


def _figure_lines(figures: Mapping[str, Any]) -> list[str]:
    lines = []
    model = figures.get("current_model")
    tokens = figures.get("monthly_tokens") or {}
    prices = figures.get("prices_per_million_usd") or {}
    cost = figures.get("monthly_cost_usd")
    basis = figures.get("monthly_cost_basis")
    whose = "your" if str(prices.get("basis", "")).startswith("given") else "list"
    if cost is not None:
        if basis == "reported spend":
            how = "as reported"
            if tokens:
                total = fmt_tokens(tokens.get("total", 0))
                how += f"; about {total} tokens a month at {whose} prices"
        elif basis == "cost per request x requests":
            how = (
                f"{fmt_usd(figures.get('cost_per_request_usd', 0))} per request x "
                f"{_fmt_number(figures.get('monthly_requests'))} requests"
            )
        elif tokens and prices:
            how = (
                f"{fmt_tokens(tokens['input'])} input x {fmt_usd(prices['input'])}/1M + "
                f"{fmt_tokens(tokens['output'])} output x {fmt_usd(prices['output'])}/1M, "
                f"{whose} prices"
            )
        else:
            how = f"{whose} prices"
        on = f" on `{model}`" if model else ""
        lines.append(f"- Monthly cost{on}: **{fmt_usd(cost)}** ({how})")
    elif tokens:
        lines.append(
            f"- Monthly tokens: {fmt_tokens(tokens['input'])} input, "
            f"{fmt_tokens(tokens['output'])} output"
        )
    if figures.get("reported_monthly_spend_usd") is not None and (
        figures.get("monthly_cost_basis") != "reported spend"
    ):
        lines.append(f"- Reported spend: {fmt_usd(figures['reported_monthly_spend_usd'])} a month")
    if figures.get("monthly_requests") is not None:
        lines.append(f"- Requests: {_fmt_number(figures['monthly_requests'])} a month")
    if figures.get("cost_per_request_usd") is not None:
        lines.append(f"- Cost per request: {fmt_usd(figures['cost_per_request_usd'])}")
    latency = figures.get("latency_ms") or {}
    if latency:
        lines.append(
            "- Latency (yours): "
            + ", ".join(
                f"{k} {fmt_ms(v)}" for k, v in latency.items() if isinstance(v, int | float)
            )
        )
    summary = figures.get("latency_summary_ms")
    if summary:
        lines.append(
            f"- Latency over {summary['count']} values: p50 {fmt_ms(summary['p50_ms'])}, "
            f"p95 {fmt_ms(summary['p95_ms'])}, p99 {fmt_ms(summary['p99_ms'])}"
        )
    indicative = figures.get("catalogue_latency_ms")
    if indicative and model:
        lines.append(
            f"- Typical latency of `{model}` (indicative): p50 {fmt_ms(indicative['p50'])}, "
            f"p95 {fmt_ms(indicative['p95'])}"
        )
    for delta in figures.get("target_deltas") or []:
        if "target_ms" in delta:
            if "delta_ms" not in delta:
                lines.append(f"- Target {delta['metric']} {fmt_ms(delta['target_ms'])}")
            elif delta.get("met"):
                lines.append(
                    f"- Target {delta['metric']} {fmt_ms(delta['target_ms'])}: already met "
                    f"({fmt_ms(delta['current_ms'])})"
                )
            else:
                note = (
                    " (from the indicative catalogue latency)"
                    if delta.get("basis") != "given"
                    else ""
                )
                pct = delta.get("reduction_needed_pct")
                share = f" ({pct:g}%)" if pct is not None else ""
                lines.append(
                    f"- Target {delta['metric']} {fmt_ms(delta['target_ms'])}: "
                    f"{fmt_ms(delta['delta_ms'])} to cut{share}{note}"
                )
        elif "target_monthly_cost_usd" in delta:
            lines.append(
                f"- Target cost {fmt_usd(delta['target_monthly_cost_usd'])} a month: "
                f"{fmt_usd(delta['savings_needed_usd'])} to save"
            )
    return lines


def _recommendation_lines(recommendations: list[Mapping[str, Any]]) -> list[str]:
    lines = []
    for i, rec in enumerate(recommendations, 1):
        head = f"{i}. **{rec.get('title', 'Recommendation')}**"
        amount = rec.get("estimated_monthly_savings_usd")
        if isinstance(amount, int | float) and amount > 0:
            head += f": saves about {fmt_usd(amount)} a month"
        lines.append(f"{head}. {rec.get('detail', '')}".rstrip())
        if rec.get("source"):
            lines.append(f"   _Source: {rec['source']}._")
    return lines


def write_report(
    triage: Mapping[str, Any] | None,
    steps: Mapping[str, Any],
    failed: Mapping[str, str],
) -> str:
    """The Markdown draft (pure)."""
    lines: list[str] = []
    if triage is None:
        cause = f"triage {failed['triage']}" if "triage" in failed else "triage unavailable"
        lines += [
            "## Answer (degraded)",
            "",
            f"The request could not be classified ({cause}), so this answer is generic.",
        ]
        category = "general"
    else:
        category = str(triage.get("category", "general"))
        lines += [
            f"## {_TITLES.get(category, category.replace('_', ' ').capitalize())}",
            "",
            f"Priority **{triage.get('priority', 'medium')}**, "
            f"confidence {triage.get('confidence', 0)}, "
            f"data {triage.get('data_sufficiency', 'unknown')}.",
        ]
        found = _entity_lines(triage.get("entities") or {})
        if found:
            lines += ["", "### What you told us", *found]
    data = steps.get("data") or {}
    figures = _figure_lines(data.get("figures") or {})
    if figures:
        lines += ["", "### Figures", *figures]
    assumptions = [*(data.get("assumptions") or []), *(data.get("notes") or [])]
    if assumptions:
        lines += ["", "Assumptions and notes: " + "; ".join(assumptions) + "."]
    optimization = steps.get("optimization") or {}
    recommendations = [
        r for r in optimization.get("recommendations") or [] if isinstance(r, Mapping)
    ]
    lines += ["", "### Recommendations"]
    if recommendations:
        lines += _recommendation_lines(recommendations)
    else:
        if "optimization" not in failed:
            lines.append("General advice (specific, priced advice needs the missing data):")
        advice = _ADVICE.get(category, _ADVICE["general"])
        lines += [f"{i}. {step}" for i, step in enumerate(advice, 1)]
    plan = (steps.get("actions") or {}).get("steps") or []
    if plan:
        lines += ["", "### Action plan"]
        lines += [
            f"{s['order']}. {s['action']} ({s.get('owner', 'team')}, effort {s.get('effort', '?')})"
            for s in plan
        ]
    helper = steps.get("data_helper") or {}
    if helper.get("missing"):
        lines += ["", "### What we still need"]
        lines += [
            f"- **{m['item']}**: {m['why']}. For example: {m['example']}" for m in helper["missing"]
        ]
    if failed:
        lines += ["", "### Missing from this answer"]
        lines += [
            f"- {step} {reason}: {LOST.get(step, 'its part of the answer')} is missing."
            for step, reason in failed.items()
        ]
    if figures or recommendations:
        lines += [
            "",
            f"_Prices are vendor list prices as of {load_catalogue().as_of}; latencies are "
            "indicative (public benchmarks), not measured._",
        ]
    return "\n".join(lines) + "\n"


def _facts(triage: Mapping[str, Any] | None, steps: Mapping[str, Any]) -> str:
    facts = {"triage": triage, "steps": steps}
    options = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    return orjson.dumps(facts, option=options, default=str).decode()


class ReportingAgent(BaseAgent):
    name = "reporting"
    description = "Writes the final Markdown answer from the triage result and the steps."

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        raw = inputs.get("triage")
        triage = raw if isinstance(raw, Mapping) else None
        steps = inputs.get("steps") or {}
        failed = {str(k): str(v) for k, v in (inputs.get("failed") or {}).items()}
        await self.think("Drafting the answer from the completed steps", progress=20)
        draft = write_report(triage, steps, failed)
        request = str(inputs.get("request", self.context.request))
        messages = [
            ChatMessage("system", SYSTEM_PROMPT),
            ChatMessage(
                "user",
                f"Request:\n{request}\n\nFacts (JSON):\n{_facts(triage, steps)}\n\nDraft:\n{draft}",
            ),
        ]
        await self.think("Wording the answer", progress=50)
        markdown = draft
        writer = self.model.name
        try:
            async with self.thoughts() as sink:
                result = await self.model.chat(messages, on_delta=sink.add)
        except ProviderError as exc:
            writer = f"draft (the model failed: {exc})"
        else:
            if result.text.strip():
                markdown = result.text
        return {
            "markdown": markdown,
            "degraded": triage is None or bool(failed),
            "writer": writer,
        }
