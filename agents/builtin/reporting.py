"""Reporting: the final answer, in Markdown.

The agent writes a deterministic draft from the triage result and the steps
that completed: what the user said, every figure with where it comes from
(your message, an earlier message of the thread, the catalogue, a
computation), every assumption, the recommendations and the plan, and what is
missing when a step failed or was not run. Small talk, gibberish and injection
attempts get a short reply instead (``replies``), and an unclear request a
short question back.

The draft then goes through the model provider for wording, in the request's
language; the offline provider returns it unchanged, so offline a request in
another language gets the English draft under one line, in its language,
saying so. The model's text is only taken if every number in it is one of the
computed figures (:func:`unknown_numbers`); if the provider fails or invents a
number, the draft is the answer and the reason is in ``degraded_reasons`` and,
visibly, at the top of the answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from server.protocol import ProviderError

from .._base import BaseAgent
from .._providers import ChatMessage, OfflineProvider
from .catalogue import load_catalogue
from .data import fmt_money, fmt_ms, fmt_tokens, fmt_usd
from .reach import fmt_about, spend_check_line, target_lines
from .replies import can_do, refusal_line, short_reply, unclear_heading
from .triage._language import ENGLISH_NOTE, NAMES
from .triage._locale import canonical_numbers

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
    "reliability": (
        "Log every failed call with its status code, provider and model.",
        "Retry 429 and 5xx with exponential backoff and jitter; never retry 400, 401 or 403.",
        "Keep a fallback model from another provider for when one is overloaded.",
    ),
    "self_hosting": (
        "Measure GPU utilisation and requests served per GPU-hour before buying more GPUs.",
        "Serve with continuous batching and consider quantised weights.",
        "Compare the GPU bill with an API's price for the same tokens (the break-even).",
    ),
    "retrieval": (
        "Time each step of the retrieval pipeline (embedding, vector search, reranking, "
        "generation) at p95 and p99: the tail often comes from retrieval, not the model.",
        "Retrieve less context: a lower top-k after reranking and a cap on context tokens.",
        "Run retrieval steps in parallel, cache embeddings and give the reranker a time budget.",
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
    "reliability": "Reliability",
    "self_hosting": "Self-hosted models",
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
    "reliability, model choice, self-hosting, monitoring). Rewrite the draft answer in "
    "{language}, clearly and concisely. Keep its Markdown headings, every number, model name "
    "and unit, where each figure comes from, every assumption, and the sections about missing "
    "data or missing steps. Use only numbers that are in the draft or the facts: compute "
    "nothing, round nothing, add no figure."
)
#: Entries of a list shown in "What you told us" at most.
MAX_SHOWN = 8
#: Characters of the request sent to the model with the draft.
REQUEST_SHOWN = 4_000


_LABELS = {
    "ttft": "time to first token",
    "avg_latency": "average latency",
    "price_per_1m_tokens": "price per 1M tokens",
    "input_price_per_1m_tokens": "input price per 1M tokens",
    "output_price_per_1m_tokens": "output price per 1M tokens",
    "utilization": "utilisation",
    "cost_reduction": "cost cut by",
    "cost_change": "cost change",
}


def label(name: str) -> str:
    """A metric's name for people: ``p95_latency_reduction`` -> ``p95 latency cut by``."""
    if name in _LABELS:
        return _LABELS[name]
    for suffix, words in (("_reduction", "cut by"), ("_increase", "raised by")):
        if name.endswith(suffix):
            return f"{label(name.removesuffix(suffix))} {words}"
    return name.replace("_", " ")


def _fmt_number(value: Any) -> str:
    """A figure as people write it: "2,500", "33.33" (not "33.33333333"), "0.000177"."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    if abs(value) >= 1 or value == 0:
        return f"{round(value, 2):,.15g}"
    return f"{value:.3g}"


def _entity_lines(entities: Mapping[str, Any]) -> list[str]:
    def items(key: str) -> list[Mapping[str, Any]]:
        value = entities.get(key)
        found = [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []
        return found[:MAX_SHOWN]

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
            (
                f"{_fmt_number(r.get('of'))} {r.get('who') or 'users'} x "
                f"{_fmt_number(r.get('each'))}{' ' + str(r['unit']) if r.get('unit') else ''} "
                "each = "
                if r.get("each") is not None
                else ""
            )
            + f"{_fmt_number(r.get('requests'))} requests{per(r)}"
            for r in items("request_volumes")
        )
        lines.append(f"- Requests: {volumes}")
    if items("money"):
        amounts = "; ".join(
            f"{fmt_money(float(m['amount']), str(m.get('currency', 'USD')))}{per(m)}"
            + (" (currency assumed)" if m.get("currency_assumed") else "")
            for m in items("money")
            if isinstance(m.get("amount"), int | float)
        )
        lines.append(f"- Amounts: {amounts}")
    if items("gpus"):
        gpus = "; ".join(
            f"{_fmt_number(g.get('count'))} {str(g.get('type') or '').upper()} GPUs".replace(
                "  ", " "
            )
            for g in items("gpus")
        )
        lines.append(f"- GPUs: {gpus}")
    if items("status_codes"):
        codes = ", ".join(f"HTTP {s.get('code')}" for s in items("status_codes"))
        lines.append(f"- Status codes: {codes}")
    for key, heading in (
        ("metrics", "Metrics"),
        ("thresholds", "Thresholds"),
        ("targets", "Targets"),
    ):
        found = [
            f"{label(str(m.get('name') or m.get('metric')))} {_fmt_number(m.get('value'))} "
            f"{m.get('unit') or ''}"
            for m in items(key)
        ]
        if found:
            lines.append(f"- {heading}: " + "; ".join(f.strip() for f in found))
    ranges = [r for r in entities.get("time_ranges") or [] if isinstance(r, str)]
    if ranges:
        lines.append("- Periods: " + ", ".join(ranges))
    return lines


def _tag(figures: Mapping[str, Any], key: str) -> str:
    """`` _(where the figure comes from)_`` for a figure line."""
    where = (figures.get("provenance") or {}).get(key)
    if not isinstance(where, str) or not where:
        return ""
    if where == "your message":
        return " _(you said)_"
    if where.startswith("your earlier message"):
        return " _(from your earlier message)_"
    return f" _({where})_"


def _amount(value: Any) -> str:
    if isinstance(value, Mapping) and isinstance(value.get("amount"), int | float):
        return fmt_money(float(value["amount"]), str(value.get("currency", "USD")))
    return "?"


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
        shown = fmt_usd(cost)
        other = figures.get("monthly_cost")
        if isinstance(other, Mapping) and other.get("currency") != "USD":
            shown = f"{_amount(other)} (about {fmt_usd(cost)})"
        if basis == "GPUs x price per GPU-hour x hours":
            on, how = "", "your GPUs x price per GPU-hour x hours a month"
        lines.append(f"- Monthly cost{on}: **{shown}** ({how}){_tag(figures, 'monthly_cost')}")
    elif isinstance(figures.get("monthly_cost"), Mapping):
        other = figures["monthly_cost"]
        lines.append(
            f"- Monthly cost: **{_amount(other)}** ({figures.get('monthly_cost_basis', '')})"
        )
    if tokens:
        lines.append(
            f"- Monthly tokens: {fmt_tokens(tokens['input'])} input, "
            f"{fmt_tokens(tokens['output'])} output{_tag(figures, 'monthly_tokens')}"
        )
    prices_where = _tag(figures, "prices_per_million_usd")
    if prices and prices_where and model:
        lines.append(
            f"- Prices of `{model}`: {fmt_usd(prices['input'])} per 1M input tokens, "
            f"{fmt_usd(prices['output'])} per 1M output tokens{prices_where}"
        )
    if figures.get("reported_monthly_spend_usd") is not None and (
        figures.get("monthly_cost_basis") != "reported spend"
    ):
        lines.append(
            f"- Reported spend: {fmt_usd(figures['reported_monthly_spend_usd'])} a month"
            f"{_tag(figures, 'reported_monthly_spend')}"
        )
    spend = figures.get("reported_monthly_spend")
    if isinstance(spend, Mapping) and figures.get("monthly_cost_basis") != "reported spend":
        lines.append(
            f"- Reported spend: {_amount(spend)} a month{_tag(figures, 'reported_monthly_spend')}"
        )
    if figures.get("monthly_requests") is not None:
        lines.append(
            f"- Requests: {_fmt_number(figures['monthly_requests'])} a month"
            f"{_tag(figures, 'monthly_requests')}"
        )
    if figures.get("cost_per_request_usd") is not None:
        lines.append(
            f"- Cost per request: {fmt_usd(figures['cost_per_request_usd'])}"
            f"{_tag(figures, 'cost_per_request')}"
        )
    costs = figures.get("model_costs") or {}
    if len(costs) > 1:
        lines.append(
            "- Monthly cost by model (list prices): "
            + ", ".join(f"`{m}` {fmt_usd(c)}" for m, c in costs.items())
        )
    lines += _gpu_lines(figures)
    lines += _reliability_lines(figures)
    latency = figures.get("latency_ms") or {}
    if latency:
        lines.append(
            "- Latency (yours): "
            + ", ".join(
                f"{k} {fmt_ms(v)}" for k, v in latency.items() if isinstance(v, int | float)
            )
            + _tag(figures, "latency_ms")
        )
    summary = figures.get("latency_summary_ms")
    if summary:
        lines.append(
            f"- Latency over {summary['count']} values: p50 {fmt_ms(summary['p50_ms'])}, "
            f"p95 {fmt_ms(summary['p95_ms'])}, p99 {fmt_ms(summary['p99_ms'])}, "
            f"max {fmt_ms(summary['max_ms'])}"
            + (f" ({summary['of']})" if isinstance(summary.get("of"), str) else "")
            + _tag(figures, "latency_summary_ms")
        )
    indicative = figures.get("catalogue_latency_ms")
    if indicative and model:
        lines.append(
            f"- Typical latency of `{model}` (indicative): p50 {fmt_ms(indicative['p50'])}, "
            f"p95 {fmt_ms(indicative['p95'])}"
        )
    for delta in figures.get("target_deltas") or []:
        name = label(str(delta["metric"]))
        from_spend = " (from your reported spend)" if _from_spend(figures, delta) else ""
        if "target_ms" in delta:
            if "delta_ms" not in delta:
                lines.append(f"- Target {name} {fmt_ms(delta['target_ms'])}")
            elif delta.get("met"):
                lines.append(
                    f"- Target {name} {fmt_ms(delta['target_ms'])}: already met "
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
                    f"- Target {name} {fmt_ms(delta['target_ms'])}: "
                    f"{fmt_ms(delta['delta_ms'])} to cut{share}{note}"
                )
        elif _already_met(delta):
            target = delta.get("target_monthly_cost") or {
                "amount": delta.get("target_monthly_cost_usd"),
                "currency": "USD",
            }
            current = delta.get("current_monthly_cost") or {
                "amount": delta.get("current_monthly_cost_usd"),
                "currency": "USD",
            }
            lines.append(
                f"- Target cost {_amount(target)} a month: already met "
                f"({_amount(current)} a month{from_spend})"
            )
        elif "target_monthly_cost" in delta:
            lines.append(
                f"- Target cost {_amount(delta['target_monthly_cost'])} a month: "
                f"{_amount(delta['savings_needed'])} to save{from_spend}"
            )
        elif "target_monthly_cost_usd" in delta:
            lines.append(
                f"- Target cost {fmt_usd(delta['target_monthly_cost_usd'])} a month: "
                f"{fmt_usd(delta['savings_needed_usd'])} to save{from_spend}"
            )
    return lines


def _from_spend(figures: Mapping[str, Any], delta: Mapping[str, Any]) -> bool:
    """Whether a cost target is measured from a reported spend that the volumes do not
    explain (so the answer says which of the two it starts from)."""
    check = figures.get("spend_check")
    if not isinstance(check, Mapping) or check.get("reported_cost_per_request_usd") is not None:
        return False
    spend = check.get("reported_monthly_spend")
    if not isinstance(spend, Mapping):
        return False
    current = delta.get("current_monthly_cost")
    if not isinstance(current, Mapping):
        current = {"amount": delta.get("current_monthly_cost_usd"), "currency": "USD"}
    return current.get("amount") == spend.get("amount") and current.get(
        "currency", "USD"
    ) == spend.get("currency", "USD")


def _already_met(delta: Mapping[str, Any]) -> bool:
    needed = delta.get("savings_needed")
    amount = needed.get("amount") if isinstance(needed, Mapping) else None
    if amount is None:
        amount = delta.get("savings_needed_usd")
    return isinstance(amount, int | float) and amount <= 0


def _gpu_lines(figures: Mapping[str, Any]) -> list[str]:
    gpu = figures.get("gpu")
    if not isinstance(gpu, Mapping):
        return []
    hourly = gpu.get("hourly") or {}
    where = "you said" if hourly.get("source") == "given" else str(hourly.get("source"))
    kind = f" {str(gpu.get('type')).upper()}" if gpu.get("type") else ""
    lines = [
        f"- GPUs: {gpu.get('count')}{kind} at {_amount(hourly)} per GPU-hour _({where})_, "
        f"{_fmt_number(gpu.get('hours_per_day'))} hours a day, "
        f"{_fmt_number(gpu.get('gpu_hours_per_month'))} GPU-hours a month"
    ]
    if gpu.get("utilisation_pct") is not None:
        lines.append(
            f"- GPU utilisation: {gpu['utilisation_pct']:g}%"
            f"{_tag(figures, 'gpu_utilisation') or _tag(figures, 'gpu')}: idle time "
            f"costs {_amount(gpu.get('idle_cost'))} a month; a GPU-hour actually used costs "
            f"{_amount(gpu.get('cost_per_used_gpu_hour'))}"
        )
    return lines


def _reliability_lines(figures: Mapping[str, Any]) -> list[str]:
    facts = figures.get("reliability")
    if not isinstance(facts, Mapping):
        return []
    lines = []
    codes = facts.get("status_codes") or {}
    if codes:
        shown = []
        for code, info in list(codes.items())[:MAX_SHOWN]:
            count = info.get("log_lines")
            seen = f", {count} log lines" if isinstance(count, int) else ""
            shown.append(f"HTTP {code} ({info.get('meaning', 'status')}{seen})")
        lines.append("- Status codes: " + "; ".join(shown) + _tag(figures, "reliability"))
    if facts.get("error_rate_pct") is not None:
        lines.append(f"- Error rate: {facts['error_rate_pct']:g}% of requests")
    if facts.get("timeout_rate_pct") is not None:
        lines.append(f"- Timeouts: {facts['timeout_rate_pct']:g}% of requests")
    if facts.get("timeout_ms") is not None:
        lines.append(f"- Timeout setting: {fmt_ms(facts['timeout_ms'])} (not a latency)")
    return lines


def _log_lines(figures: Mapping[str, Any]) -> list[str]:
    """A pasted log in a few lines: counts, distributions, the most repeated messages."""
    log = figures.get("log")
    if not isinstance(log, Mapping):
        return []
    read = log.get("lines_read", log.get("lines"))
    lines = [f"- {log.get('lines')} log lines ({read} read)"]
    if log.get("status_codes"):
        lines.append(
            "- Status codes: "
            + ", ".join(f"{c}: {n}" for c, n in log["status_codes"].items())
            + (
                f" ({log['error_rate_pct']:g}% errors)"
                if isinstance(log.get("error_rate_pct"), int | float)
                else ""
            )
        )
    tokens = log.get("tokens")
    if isinstance(tokens, Mapping):
        lines.append(
            f"- Tokens per request (average of {tokens.get('lines')} lines): "
            f"{tokens.get('input_per_line')} input, {tokens.get('output_per_line')} output"
        )
    if log.get("models"):
        lines.append("- Models: " + ", ".join(f"{m} ({n})" for m, n in log["models"].items()))
    if log.get("levels"):
        lines.append("- Levels: " + ", ".join(f"{k} {n}" for k, n in log["levels"].items()))
    for message in log.get("top_messages") or ():
        lines.append(f"- Repeated {message.get('count')} times: `{message.get('message')}`")
    return lines


def _earlier_lines(triage: Mapping[str, Any], history: Sequence[Any]) -> list[str]:
    """What a follow-up took from earlier turns, and what was said then."""
    lines = []
    for reused in triage.get("reused") or ():
        if isinstance(reused, Mapping):
            lines.append(
                f"- Reused from your earlier message (run {reused.get('from_run')}): "
                f"{reused.get('what')}"
            )
    if triage.get("scale"):
        lines.append(f"- Scaled by {triage['scale']:g} as you asked")
    if triage.get("period_corrected"):
        lines.append(
            f"- The earlier volumes read per {triage['period_corrected']}, as you corrected"
        )
    if lines and history:
        last = history[-1]
        memory = getattr(last, "memory", None) or {}
        facts = [f for f in memory.get("facts") or () if f.get("name") == "monthly cost"]
        if facts:
            value = facts[0].get("value")
            if isinstance(value, int | float):
                cost = fmt_money(float(value), str(facts[0].get("unit", "USD")))
                lines.append(f"- Earlier in this thread the monthly cost was {cost}")
    return lines


def _recommendation_lines(
    recommendations: list[Mapping[str, Any]], *, mismatch: bool = False
) -> list[str]:
    lines = []
    for i, rec in enumerate(recommendations, 1):
        head = f"{i}. **{rec.get('title', 'Recommendation')}**"
        amount = rec.get("estimated_monthly_savings_usd")
        if isinstance(amount, int | float) and amount > 0:
            head += f": saves about {fmt_usd(amount)} a month"
            pct = rec.get("savings_pct")
            scaled = rec.get("savings_on_reported_spend")
            if mismatch and isinstance(pct, int | float):
                head += f" at the volumes you wrote ({pct:.0f}%"
                if isinstance(scaled, Mapping) and isinstance(scaled.get("amount"), int | float):
                    about = fmt_about(float(scaled["amount"]), str(scaled.get("currency", "USD")))
                    head += f"; about {about} a month of your reported spend"
                head += ")"
            elif isinstance(pct, int | float):
                head += f" ({pct:.0f}%)"
        lines.append(f"{head}. {rec.get('detail', '')}".rstrip())
        if rec.get("source"):
            lines.append(f"   _Source: {rec['source']}._")
    return lines


def short_kind(triage: Mapping[str, Any] | None) -> str | None:
    """The kind of short reply ``triage`` calls for, or None for an answer."""
    if triage is None:
        return None
    reply = triage.get("reply")
    if reply in ("smalltalk", "gibberish"):
        return str(reply)
    if reply == "injection" and triage.get("category") in (None, "general"):
        return "injection"
    return None


def write_report(
    triage: Mapping[str, Any] | None,
    steps: Mapping[str, Any],
    failed: Mapping[str, str],
    *,
    request: str = "",
    history: Sequence[Any] = (),
) -> str:
    """The Markdown draft, in English (pure)."""
    kind = short_kind(triage)
    if kind is not None:
        return short_reply(kind, str((triage or {}).get("language", "en")), request)
    lines: list[str] = []
    if triage is not None and triage.get("reply") == "injection":
        lines += [refusal_line("en"), ""]
    shown_figures = (steps.get("data") or {}).get("figures") or {}
    check = shown_figures.get("spend_check")
    model = shown_figures.get("current_model")
    if triage is None:
        cause = f"triage {failed['triage']}" if "triage" in failed else "triage unavailable"
        lines += [
            "## Answer (degraded)",
            "",
            f"The request could not be classified ({cause}), so this answer is generic.",
        ]
        category = "general"
    elif triage.get("category") == "general" and not (steps.get("data") or {}).get("figures"):
        lines += [f"## {unclear_heading('en')}", "", can_do("en")]
        helper = steps.get("data_helper") or {}
        questions = [q for q in helper.get("questions") or () if isinstance(q, str)][:3]
        if questions:
            lines += ["", "### What would help", *(f"- {q}" for q in questions)]
        return "\n".join(lines) + "\n"
    else:
        category = str(triage.get("category", "general"))
        lines += [
            f"## {_TITLES.get(category, category.replace('_', ' ').capitalize())}",
            "",
            f"Priority **{triage.get('priority', 'medium')}**, "
            f"confidence {triage.get('confidence', 0)}, "
            f"data {triage.get('data_sufficiency', 'unknown')}.",
        ]
        if check:
            lines += ["", spend_check_line(check, model)]
        earlier = _earlier_lines(triage, history)
        if earlier:
            lines += ["", "### From earlier in this thread", *earlier]
        found = _entity_lines(triage.get("entities") or {})
        if found:
            lines += ["", "### What you told us", *found]
        omitted = (triage.get("entities") or {}).get("omitted") or {}
        if omitted:
            parts = ", ".join(f"{n} {key}" for key, n in omitted.items() if isinstance(n, int))
            lines.append(f"- Not read in detail (the request is long): {parts}")
    data = dict(steps.get("data") or {})
    compared = (steps.get("optimization") or {}).get("model_costs")
    if isinstance(compared, Mapping) and len(compared) > 1 and data.get("figures"):
        # Every model priced for the same volume, in one line with the figures.
        data["figures"] = {**(data.get("figures") or {}), "model_costs": dict(compared)}
    log = _log_lines(data.get("figures") or {})
    if log:
        lines += ["", "### The log you pasted", *log]
    figures = _figure_lines(data.get("figures") or {})
    if figures:
        lines += ["", "### Figures", *figures]
    assumptions = list(
        dict.fromkeys([*(data.get("assumptions") or []), *(data.get("notes") or [])])
    )
    if assumptions:
        lines += ["", "### Assumptions", *(f"- {a}" for a in assumptions)]
    optimization = steps.get("optimization") or {}
    recommendations = [
        r for r in optimization.get("recommendations") or [] if isinstance(r, Mapping)
    ]
    lines += ["", "### Recommendations"]
    if recommendations:
        lines += _recommendation_lines(recommendations, mismatch=bool(check))
    else:
        if "optimization" not in failed:
            lines.append("General advice (specific, priced advice needs the missing data):")
        sub = str((triage or {}).get("sub_category", ""))
        advice = _ADVICE.get(sub) or _ADVICE.get(category, _ADVICE["general"])
        lines += [f"{i}. {step}" for i, step in enumerate(advice, 1)]
    reach = optimization.get("target_check")
    if isinstance(reach, Mapping) and recommendations:
        lines += ["", "### Against your target", *target_lines(reach, model)]
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
    shown = data.get("figures") or {}
    priced = "prices_per_million_usd" in shown or "catalogue_latency_ms" in shown
    if priced or any("list prices" in str(r.get("source", "")) for r in recommendations):
        lines += [
            "",
            f"_Prices are vendor list prices as of {load_catalogue().as_of}; latencies are "
            "indicative (public benchmarks), not measured._",
        ]
    return "\n".join(lines) + "\n"


def with_notes(markdown: str, *, language: str, in_english: bool, reasons: Iterable[str]) -> str:
    """``markdown`` under the lines a reader must see first: why the answer is degraded,
    and (for another language) that it is in English."""
    head = [f"> **Degraded answer:** {reason}." for reason in reasons]
    if in_english and language in ENGLISH_NOTE and not markdown.startswith(ENGLISH_NOTE[language]):
        head.insert(0, f"_{ENGLISH_NOTE[language]}_")
    return "\n\n".join([*head, markdown]) if head else markdown


_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?([kKmMbB])?(?![\w])")
_SCALE = {"k": 1e3, "m": 1e6, "b": 1e9}


def _numbers_in(text: str, language: str) -> list[float]:
    values = []
    for m in _NUMBER.finditer(canonical_numbers(text, language)):
        value = float(m.group(1)) * _SCALE.get((m.group(2) or "").lower(), 1.0)
        values.append(value)
    return values


def _numbers_of(value: Any, out: set[float]) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        out.add(float(value))
    elif isinstance(value, Mapping):
        for item in value.values():
            _numbers_of(item, out)
    elif isinstance(value, list | tuple):
        for item in value:
            _numbers_of(item, out)


def unknown_numbers(
    answer: str, language: str, allowed_texts: Iterable[str], facts: Any
) -> list[float]:
    """The numbers of ``answer`` that are in none of ``allowed_texts`` or ``facts``.

    Small numbers (up to 10: list items, "3:1") always pass; the others must
    match a known number within 0.6% (rounding), also at a thousand, million or
    billion times (``$13.9k``, ``40M``) or as a share (``94%``).
    """
    allowed: set[float] = set()
    for text in allowed_texts:
        allowed.update(_numbers_in(text, "en"))
    _numbers_of(facts, allowed)
    known = sorted(allowed)
    out = []
    for value in _numbers_in(answer, language):
        if value <= 10 or any(abs(value - a) <= max(0.011, 0.006 * abs(a)) for a in known):
            continue
        out.append(value)
        if len(out) >= 5:
            break
    return out


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
        request = str(inputs.get("request", self.context.request))
        language = str((triage or {}).get("language") or "en")
        await self.think("Drafting the answer from the completed steps", progress=20)
        draft = write_report(triage, steps, failed, request=request, history=self.context.history)
        reasons: list[str] = []
        if triage is not None and triage.get("degraded"):
            reasons.append(f"{triage['degraded']}; the offline parser read it")
        writer = self.model.name
        markdown = draft
        # A short reply is written in the request's language already.
        in_english = short_kind(triage) is None
        # The offline provider only returns the draft: the facts would be encoded for nothing.
        facts = "{}" if isinstance(self.model, OfflineProvider) else _facts(triage, steps)
        messages = [
            ChatMessage("system", SYSTEM_PROMPT.format(language=NAMES.get(language, "English"))),
            ChatMessage(
                "user",
                f"Request:\n{request[:REQUEST_SHOWN]}\n\nFacts (JSON):\n{facts}\n\nDraft:\n{draft}",
            ),
        ]
        await self.think("Wording the answer", progress=50)
        try:
            async with self.thoughts() as sink:
                result = await self.model.chat(messages, on_delta=sink.add)
        except ProviderError as exc:
            writer = f"draft (the model failed: {exc})"
            if self.model.tool_calling:
                reasons.append(f"the model could not write the answer ({exc}); this is the draft")
        else:
            text = result.text
            invented = (
                unknown_numbers(
                    text, language, (draft, request), {"triage": triage, "steps": steps}
                )
                if self.model.tool_calling
                else []
            )
            if invented:
                writer = "draft (the model's text had figures that were not computed)"
                shown = ", ".join(f"{v:,.10g}" for v in invented)
                reasons.append(
                    f"the model's wording had figures that were not computed ({shown}); "
                    "this is the draft"
                )
            elif text.strip():
                markdown = text
                in_english = in_english and not self.model.tool_calling
        markdown = with_notes(markdown, language=language, in_english=in_english, reasons=reasons)
        return {
            "markdown": markdown,
            "language": language,
            "degraded": triage is None or bool(failed) or bool(reasons),
            "degraded_reasons": reasons,
            "writer": writer,
        }
