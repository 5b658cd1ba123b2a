"""Optimization: recommendations with numbers grounded in the catalogue.

- A model switch: to the candidates the user named, or else to the cheapest
  (for cost) or fastest (for latency) catalogue model in the same tier or one
  tier smaller, preferring the same provider. Savings come from
  ``compare_models`` at list prices on the user's monthly volume.
- Prompt caching: if 30% of input tokens were a repeated prefix served from the
  provider's cache (only where the catalogue has a cached-input price).
- Prompt trimming: cost of 20% of input tokens.
- Latency: streaming and output caps (no invented numbers), faster models with
  their indicative latency difference; for a retrieval pipeline (RAG), the
  retrieval step and the context size first.
- Batching: the providers' batch discount (catalogue) on the share that can wait.
- Reliability: what each status code means (catalogue), retries with
  exponential backoff and jitter that honour ``Retry-After``, a client-side
  queue sized to the rate limits, quotas, and a fallback model.
- Self-hosting: the cost of idle GPU time, right-sizing to 70% utilisation
  (the ``gpu_cost`` tool's figures), batching, quantisation and the API
  break-even.
- Monitoring: what to export and alert on, using the user's thresholds.

Percentages used for estimates are stated in each recommendation; every
priced saving also carries ``savings_pct`` (of today's monthly cost) and, when
the reported spend and the volumes disagree (``figures.spend_check``), the
same share of the spend (``savings_on_reported_spend``). The result's
``model_costs`` holds the monthly cost of each model compared, and
``target_check`` (:mod:`.reach`) whether the recommendations together reach a
cost target, without adding options that overlap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from .._base import BaseAgent
from .advice import batching, reliability, retrieval, self_hosting
from .catalogue import Catalogue, ModelEntry, load_catalogue
from .data import (
    INPUT_SHARE,
    entities_of,
    fmt_ms,
    fmt_tokens,
    fmt_usd,
    given_prices,
    models_of,
    monthly_volumes,
)
from .reach import CACHE, TRIM, plans, target_check
from .tools import money

#: Share of input tokens assumed to be a repeated prefix for the caching estimate.
CACHEABLE_SHARE = Decimal("0.3")
#: Share of input tokens assumed removable by trimming prompts.
TRIMMABLE_SHARE = Decimal("0.2")
#: Volume used to compare prices when the user gave none: 1M tokens at 3:1.
REFERENCE_TOKENS = (750_000.0, 250_000.0)
PRACTICE = "general practice (no catalogue figure)"
MAX_CANDIDATES = 3

_TIER_WORDS = {
    0: "in the same tier ({tier})",
    1: "one tier smaller ({tier}): check quality on an evaluation set first",
    2: "two tiers smaller ({tier}): a much smaller model, evaluate carefully",
}


def blended_price(entry: ModelEntry) -> Decimal:
    """USD per 1M tokens at a 3:1 input/output split."""
    return INPUT_SHARE * Decimal(repr(entry.input_per_million)) + (1 - INPUT_SHARE) * Decimal(
        repr(entry.output_per_million)
    )


def alternatives(entry: ModelEntry, goal: str, catalogue: Catalogue) -> list[ModelEntry]:
    """Up to two switches for ``goal`` ("cost" or "latency"): best in the same tier, one down.

    Cost: cheaper at a 3:1 blend; latency: lower indicative p95. Within a tier
    the same provider wins, then the cheapest (or fastest) of any provider.
    """
    if goal == "cost":

        def better(m: ModelEntry) -> bool:
            return blended_price(m) < blended_price(entry)

        def score(m: ModelEntry) -> Decimal:
            return blended_price(m)
    else:

        def better(m: ModelEntry) -> bool:
            return m.p95_latency_ms < entry.p95_latency_ms

        def score(m: ModelEntry) -> Decimal:
            return Decimal(repr(m.p95_latency_ms))

    picks: list[ModelEntry] = []
    for step in (0, 1):
        pool = [
            m
            for m in catalogue.models
            if m.id != entry.id and m.tier_rank == entry.tier_rank + step and better(m)
        ]
        pool.sort(key=lambda m: (m.provider != entry.provider, score(m), m.id))
        if pool:
            picks.append(pool[0])
    return picks


def _goals(triage: Mapping[str, Any], figures: Mapping[str, Any]) -> set[str]:
    intent = str(triage.get("intent", ""))
    category = str(triage.get("category", ""))
    goals = set()
    if intent in ("reduce_cost", "choose_model") or category in (
        "cost_optimization",
        "model_selection",
    ):
        goals.add("cost")
    if (
        intent == "reduce_latency"
        or category == "latency_optimization"
        or any(d.get("target_ms") is not None for d in figures.get("target_deltas", []))
    ):
        goals.add("latency")
    if intent == "set_up_monitoring" or category == "monitoring":
        goals.add("monitoring")
    if intent == "improve_quality" or category == "quality":
        goals.add("quality")
    if category == "reliability" or figures.get("reliability"):
        goals.add("reliability")
    if category == "self_hosting" or figures.get("gpu"):
        goals.add("self_hosting")
    if (
        category in ("reliability", "self_hosting")
        and "cost" in goals
        and not (figures.get("monthly_tokens") and figures.get("current_model"))
    ):
        goals.discard("cost")
    return goals or {"cost"}


def _shares(recommendations: list[dict[str, Any]], figures: Mapping[str, Any]) -> None:
    """Each priced saving as a share of today's monthly cost, and (when the reported spend
    and the volumes disagree) the same share of the reported spend."""
    cost = figures.get("monthly_cost_usd")
    check = figures.get("spend_check") or {}
    spend = check.get("reported_monthly_spend")
    for rec in recommendations:
        amount = rec.get("estimated_monthly_savings_usd")
        if not isinstance(amount, int | float) or not isinstance(cost, int | float) or cost <= 0:
            continue
        share = Decimal(repr(amount)) / Decimal(repr(cost))
        rec.setdefault("savings_pct", float(round(share * 100, 2)))
        if isinstance(spend, Mapping) and isinstance(spend.get("amount"), int | float):
            rec["savings_on_reported_spend"] = {
                "amount": money(share * Decimal(repr(spend["amount"]))),
                "currency": str(spend.get("currency", "USD")),
            }


class OptimizationAgent(BaseAgent):
    name = "optimization"
    description = "Recommends model switches, caching, trimming and latency options, with numbers."

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        raw_triage = inputs.get("triage")
        triage: Mapping[str, Any] = raw_triage if isinstance(raw_triage, Mapping) else {}
        steps = inputs.get("steps") or {}
        data = steps.get("data") if isinstance(steps, Mapping) else None
        figures: Mapping[str, Any] = (data or {}).get("figures") or {}
        entities = entities_of(triage)
        request = str(inputs.get("request", self.context.request))
        catalogue = load_catalogue()
        notes: list[str] = []
        recommendations: list[dict[str, Any]] = []

        await self.think("Looking for savings and faster options in the catalogue", progress=10)
        current, candidates = models_of(triage, request)
        current = str(figures.get("current_model") or current or "") or None
        tokens = figures.get("monthly_tokens") or {}
        volume: tuple[float, float] | None = None
        if tokens.get("input") is not None and tokens.get("output") is not None:
            volume = (float(tokens["input"]), float(tokens["output"]))
        else:
            volume = monthly_volumes(entities).tokens
        entry = catalogue.find(current) if current else None
        goals = _goals(triage, figures)
        if current and entry is None:
            notes.append(f"{current} is not in the catalogue (as of {catalogue.as_of})")
        model_costs: dict[str, float] = dict(figures.get("model_costs") or {})

        if entry is not None and ("cost" in goals or "latency" in goals or candidates):
            switches: list[tuple[str, str]] = []
            for name in candidates[:MAX_CANDIDATES]:
                found = catalogue.find(name)
                if found is None:
                    notes.append(f"candidate {name} is not in the catalogue")
                elif found.id != entry.id:
                    switches.append((found.id, "named in the request"))
            if not switches:
                for goal in ("cost", "latency"):
                    if goal in goals:
                        switches += [
                            (
                                m.id,
                                f"{'cheapest' if goal == 'cost' else 'fastest'} "
                                "in the same or the next smaller tier",
                            )
                            for m in alternatives(entry, goal, catalogue)
                            if m.id not in {s for s, _ in switches}
                        ]
            await self.think(f"Comparing {entry.id} with {len(switches)} model(s)", progress=35)
            for candidate, why in switches:
                rec = await self._switch(entry, candidate, why, volume, model_costs)
                if rec is not None:
                    recommendations.append(rec)
        elif ("cost" in goals or "latency" in goals) and "self_hosting" not in goals:
            notes.append("no current model from the catalogue, so no switch can be priced")
        price_in = self._input_price(figures, entities, entry)
        if "cost" in goals and volume is not None and price_in is not None:
            await self.think("Estimating caching and prompt-trimming savings", progress=60)
            recommendations += await self._input_savings(entry, price_in, volume, catalogue)
        sub = str(triage.get("sub_category", ""))
        if "cost" in goals and (sub == "batching" or "batch" in request.lower()[:4000]):
            recommendations += batching(figures, entry, catalogue)

        if "latency" in goals:
            if sub == "retrieval":
                # A slow retrieval pipeline: its retrieval step and context come first.
                recommendations = retrieval(figures, entities) + recommendations
            recommendations += self._latency_practice(figures)
        if "reliability" in goals:
            recommendations += reliability(figures, entry, catalogue)
        if "self_hosting" in goals:
            recommendations += self_hosting(figures, entry, catalogue)
        if "monitoring" in goals:
            recommendations += self._monitoring(entities)
        if "quality" in goals:
            recommendations.append(
                {
                    "title": "Measure quality before changing anything",
                    "detail": "Build an evaluation set of 100-200 real requests with expected "
                    "answers and score every candidate model or prompt change on it.",
                    "source": PRACTICE,
                }
            )
        _shares(recommendations, figures)
        await self.think(f"{len(recommendations)} recommendation(s)", progress=100)
        result: dict[str, Any] = {
            "recommendations": recommendations,
            "as_of": catalogue.as_of,
            "notes": notes,
        }
        if model_costs:
            result["model_costs"] = model_costs
        if "cost" in goals and entry is not None and volume is not None:
            options = plans(
                entry,
                volume,
                recommendations,
                catalogue,
                trim=TRIMMABLE_SHARE,
                cache=CACHEABLE_SHARE,
            )
            for delta in figures.get("target_deltas") or ():
                if "target_ms" in delta or not isinstance(delta, Mapping):
                    continue
                check = target_check(
                    delta,
                    options,
                    entry,
                    volume,
                    catalogue,
                    trim=TRIMMABLE_SHARE,
                    cache=CACHEABLE_SHARE,
                )
                if check is not None:
                    result["target_check"] = check
                    break
        return result

    async def _switch(
        self,
        entry: ModelEntry,
        candidate: str,
        why: str,
        volume: tuple[float, float] | None,
        model_costs: dict[str, float],
    ) -> dict[str, Any] | None:
        tokens_in, tokens_out = volume if volume is not None else REFERENCE_TOKENS
        compared = await self.use_tool(
            "compare_models",
            current=entry.id,
            candidate=candidate,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
        )
        if not compared.ok:
            return None
        c = compared.value
        savings = float(c["monthly_savings_usd"])
        p95 = float(c["p95_latency_change_ms"])
        tier = _TIER_WORDS.get(int(c["tier_change"]), "in a larger tier ({tier})").format(
            tier=c["candidate"]["tier"]
        )
        before, after = c["current"]["total_cost_usd"], c["candidate"]["total_cost_usd"]
        if volume is not None:
            model_costs.setdefault(entry.id, before)
            model_costs[candidate] = after
            basis = (
                f"your {fmt_tokens(tokens_in)} input + {fmt_tokens(tokens_out)} output tokens "
                f"a month cost {fmt_usd(before)} on {entry.id} and {fmt_usd(after)} on {candidate}"
            )
        else:
            basis = (
                f"per 1M tokens (3:1 input/output) {entry.id} costs {fmt_usd(before)} and "
                f"{candidate} {fmt_usd(after)}"
            )
        change = (
            f"{fmt_usd(savings)} less ({c['savings_pct']:g}%)"
            if savings >= 0
            else f"{fmt_usd(-savings)} more"
        )
        detail = (
            f"At list prices, {basis}: {change}. {candidate} is {tier}; {why}. "
            "Indicative p95 latency change: "
            f"{'+' if p95 > 0 else ''}{fmt_ms(p95)}."
        )
        title = (
            f"Switch {entry.id} to {candidate}"
            if savings >= 0
            else f"{candidate} instead of {entry.id}: dearer at list prices"
        )
        rec: dict[str, Any] = {
            "title": title,
            "detail": detail,
            "from_model": entry.id,
            "to_model": candidate,
            "expected_latency_change_ms": p95,
            "tier_change": c["tier_change"],
            "source": c["candidate"]["source"],
        }
        if volume is not None:
            rec["estimated_monthly_savings_usd"] = savings
            rec["savings_pct"] = c["savings_pct"]
        else:
            rec["savings_per_million_tokens_usd"] = savings
        return rec

    @staticmethod
    def _input_price(
        figures: Mapping[str, Any], entities: Mapping[str, Any], entry: ModelEntry | None
    ) -> tuple[float, str] | None:
        """(USD per 1M input tokens, where it comes from): the user's, else the list price."""
        prices = figures.get("prices_per_million_usd") or {}
        if isinstance(prices.get("input"), int | float):
            return float(prices["input"]), str(prices.get("basis", "list prices"))
        given, _ = given_prices(entities)
        if given is not None:
            return given, "given"
        if entry is not None:
            return entry.input_per_million, "list prices"
        return None

    async def _input_savings(
        self,
        entry: ModelEntry | None,
        price: tuple[float, str],
        volume: tuple[float, float],
        catalogue: Catalogue,
    ) -> list[dict[str, Any]]:
        price_in, basis = price
        source = (
            catalogue.cite(entry)
            if entry is not None and basis == "list prices"
            else "your prices per 1M tokens"
        )
        tokens_in = Decimal(repr(volume[0]))
        out: list[dict[str, Any]] = []
        cached = entry.cached_input_per_million if entry is not None else None
        if entry is not None and cached is not None and cached < entry.input_per_million:
            # The cache discount is a share of the input price (50% OpenAI, 90% Anthropic).
            discount = 1 - Decimal(repr(cached)) / Decimal(repr(entry.input_per_million))
            share = float(round(tokens_in * CACHEABLE_SHARE))
            saved = await self.use_tool(
                "cost_calculator",
                input_tokens=share,
                output_tokens=0,
                input_per_million=float(Decimal(repr(price_in)) * discount),
                output_per_million=0.0,
            )
            if saved.ok:
                amount = saved.value["total_cost_usd"]
                out.append(
                    {
                        "title": "Let the provider's prompt cache serve the repeated prefix",
                        "detail": (
                            f"Cached input on {entry.id} is billed {float(discount) * 100:g}% "
                            f"below the input price ({fmt_usd(cached)} instead of "
                            f"{fmt_usd(entry.input_per_million)} per 1M tokens at list "
                            f"prices). If 30% of your input ({fmt_tokens(share)} tokens a "
                            "month) is a prefix repeated across requests (instructions, "
                            "examples), keeping it identical and first saves about "
                            f"{fmt_usd(amount)} a month."
                        ),
                        "estimated_monthly_savings_usd": amount,
                        "measure": CACHE,
                        "assumption": "30% of input tokens are a cacheable prefix",
                        "source": catalogue.cite(entry),
                    }
                )
        trimmed = float(round(tokens_in * TRIMMABLE_SHARE))
        cost = await self.use_tool(
            "cost_calculator",
            input_tokens=trimmed,
            output_tokens=0,
            input_per_million=price_in,
            output_per_million=0.0,
        )
        if cost.ok:
            amount = cost.value["input_cost_usd"]
            out.append(
                {
                    "title": "Trim prompts and retrieved context",
                    "detail": (
                        f"Every 1M input tokens costs {fmt_usd(price_in)}"
                        f"{f' on {entry.id}' if entry is not None else ''}; cutting input by "
                        f"20% ({fmt_tokens(trimmed)} tokens a month) saves {fmt_usd(amount)} "
                        "a month."
                    ),
                    "estimated_monthly_savings_usd": amount,
                    "measure": TRIM,
                    "assumption": "20% of input tokens can be removed",
                    "source": source,
                }
            )
        return out

    @staticmethod
    def _latency_practice(figures: Mapping[str, Any]) -> list[dict[str, Any]]:
        gaps = [d for d in figures.get("target_deltas", []) if d.get("delta_ms") is not None]
        gap = next((d for d in gaps if not d.get("met")), None)
        lead = (
            f"{str(gap['metric']).replace('_', ' ')} is {fmt_ms(gap['delta_ms'])} above its "
            "target. "
            if gap is not None
            else ""
        )
        return [
            {
                "title": "Stream responses",
                "detail": lead + "Users wait for the first tokens, not the whole answer; "
                "streaming shows progress at once without changing the model.",
                "source": PRACTICE,
            },
            {
                "title": "Cap output length",
                "detail": "Generation time grows with output tokens: set max_tokens to what the "
                "answer needs and ask for concise output.",
                "source": PRACTICE,
            },
        ]

    @staticmethod
    def _monitoring(entities: Mapping[str, Any]) -> list[dict[str, Any]]:
        thresholds: Sequence[Any] = entities.get("thresholds") or []
        alerts = [
            f"{t.get('metric')} above {t.get('value'):g} {t.get('unit') or ''}".strip()
            for t in thresholds
            if isinstance(t, Mapping) and isinstance(t.get("value"), int | float)
        ]
        detail = (
            "Alert on what users feel, sustained for a few minutes: "
            + (", ".join(alerts) if alerts else "p95 latency and error rate above your targets")
            + "."
        )
        return [
            {
                "title": "Export per-model usage and latency metrics",
                "detail": "Per model: requests, input and output tokens, cost, p50/p95/p99 "
                "latency and error rate, with a trace id per request.",
                "source": PRACTICE,
            },
            {"title": "Alert on symptoms", "detail": detail, "source": PRACTICE},
        ]
