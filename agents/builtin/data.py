"""Data: compute figures from the numbers the user gave.

Monthly token volumes and requests (from any period, or requests x tokens per
request), the monthly cost (tokens x the user's prices or the current model's
list prices; else the reported spend, or cost per request x requests), cost
per request, the user's latency figures (percentiles as given, or a summary of
raw values) and the deltas to their targets. Every assumption made on the way
is listed in the result; a failed tool call becomes a note, not a failure.

The pure helpers here (reading triage entities, telling the current model
from candidates) are shared with the optimization agent.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

from .._base import BaseAgent
from .catalogue import load_catalogue
from .tools import MAX_QUANTITY, money

#: How many of each period make a month (a month is 30 days).
PERIOD_PER_MONTH: Mapping[str | None, Decimal] = {
    "month": Decimal(1),
    "day": Decimal(30),
    "hour": Decimal(720),
    "minute": Decimal(43_200),
    "second": Decimal(2_592_000),
    "week": Decimal(30) / Decimal(7),
    "year": Decimal(1) / Decimal(12),
}
#: ``Volumes.basis`` when the token volume was derived from a reported spend.
IMPLIED = "implied by the reported spend"
#: Input share of a total token volume when the user gives no split (3:1).
INPUT_SHARE = Decimal("0.75")
_CANDIDATE_MARKER = re.compile(r"(?:^|\W)(?:to|into|with|vs\.?|versus|or)\s+$")
_PERCENTILE = re.compile(r"\bp(\d{2})\b")
_LATENCY_UNITS = {"ms": 1.0, "s": 1000.0, "sec": 1000.0, "seconds": 1000.0, "us": 0.001}


def entities_of(triage: Mapping[str, Any] | None) -> Mapping[str, Any]:
    entities = (triage or {}).get("entities")
    return entities if isinstance(entities, Mapping) else {}


def _items(entities: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = entities.get(key)
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _number(value: Any) -> float | None:
    """A usable figure: a number from 0 to ``MAX_QUANTITY`` (anything else is ignored)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value <= MAX_QUANTITY else None


def _period(value: Any) -> str | None:
    text = str(value).lower().rstrip("s") if value else None
    return text if text in PERIOD_PER_MONTH else None


def _monthly(amount: float, period: Any) -> Decimal:
    return Decimal(repr(amount)) * PERIOD_PER_MONTH[_period(period) or "month"]


# -- models ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _name_pattern(name: str) -> tuple[str, re.Pattern[str]]:
    """``gpt-4o`` also matches ``GPT 4o`` and ``gpt4o``, but not inside ``gpt-4o-mini``.

    With the name's first word, which any match contains (a cheap test first).
    """
    words = [p for p in re.split(r"[\s_-]+", name.lower()) if p]
    parts = [re.escape(p) for p in words]
    pattern = re.compile(r"(?<![\w.-])" + r"[\s_-]?".join(parts) + r"(?![\w]|-\w|\.\d)")
    return (words[0] if words else ""), pattern


@functools.lru_cache(maxsize=512)
def _name_patterns(model: str) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """The patterns of ``model``, its catalogue id and its aliases (the catalogue is frozen)."""
    entry = load_catalogue().find(model)
    names = dict.fromkeys((model, *((entry.id, *entry.aliases) if entry else ())))
    return tuple(_name_pattern(name) for name in names)


def _position(request: str, model: str) -> int | None:
    """Where ``model`` (its id or an alias) first appears in ``request``."""
    text = request.lower()
    found = [
        match.start()
        for word, pattern in _name_patterns(model)
        if word in text and (match := pattern.search(text))
    ]
    return min(found) if found else None


def split_models(request: str, models: Sequence[str]) -> tuple[str | None, list[str]]:
    """(current model, candidates) among the models the request mentions.

    A model written right after "to", "into", "with", "vs", "versus" or "or"
    ("switch from gpt-4o to gpt-4o-mini") is a candidate; the first other
    model in the text is the current one. If every model is a candidate, the
    first one in the text is taken as current; models not found in the text
    come last, in triage's order.
    """
    text = request.lower()
    placed: list[tuple[int, int, str, bool]] = []
    for order, model in enumerate(dict.fromkeys(models)):
        at = _position(request, model)
        marked = at is not None and bool(_CANDIDATE_MARKER.search(text[max(0, at - 12) : at]))
        placed.append((at if at is not None else len(text) + order, order, model, marked))
    placed.sort()
    if not placed:
        return None, []
    current = next((m for _, _, m, marked in placed if not marked), placed[0][2])
    return current, [m for _, _, m, _ in placed if m != current]


# -- volumes, prices, spend -------------------------------------------------------------


def metric_value(entities: Mapping[str, Any], *names: str) -> float | None:
    """The value of the first metric named one of ``names`` (None: not given)."""
    for item in _items(entities, "metrics"):
        if item.get("name") in names:
            value = _number(item.get("value"))
            if value is not None:
                return value
    return None


@attrs.frozen
class Volumes:
    """Monthly token volumes and requests read from the entities (None: not given)."""

    input_tokens: float | None
    output_tokens: float | None
    requests: float | None
    basis: str
    assumptions: tuple[str, ...]

    @property
    def tokens(self) -> tuple[float, float] | None:
        """(input, output) tokens per month, if known."""
        if self.input_tokens is None or self.output_tokens is None:
            return None
        return self.input_tokens, self.output_tokens


def _split(
    given_in: Decimal | None,
    given_out: Decimal | None,
    total: Decimal | None,
    assumptions: list[str],
) -> tuple[Decimal | None, Decimal | None]:
    """Complete (input, output) from what is known, with the 3:1 split stated."""
    if given_in is None and given_out is None and total is not None:
        assumptions.append("the total token volume is split 75% input / 25% output (3:1)")
        return total * INPUT_SHARE, total * (1 - INPUT_SHARE)
    if given_in is not None and given_out is None:
        assumptions.append("output tokens are assumed to be a third of input tokens (3:1)")
        return given_in, given_in * (1 - INPUT_SHARE) / INPUT_SHARE
    if given_out is not None and given_in is None:
        assumptions.append("input tokens are assumed to be three times output tokens (3:1)")
        return given_out * INPUT_SHARE / (1 - INPUT_SHARE), given_out
    return given_in, given_out


def monthly_volumes(entities: Mapping[str, Any]) -> Volumes:
    """Input and output tokens and requests per month.

    Token volumes as given (the first of each kind), else requests x tokens
    per request; a missing side comes from a 3:1 input/output split.
    """
    assumptions: list[str] = []
    requests = None
    for item in _items(entities, "request_volumes"):
        count = _number(item.get("requests"))
        if count is not None:
            requests = _monthly(count, item.get("period"))
            if not _period(item.get("period")):
                assumptions.append("the request volume given without a period is per month")
            break
    first: dict[str, Mapping[str, Any]] = {}
    for item in _items(entities, "token_volumes"):
        kind = str(item.get("kind") or "total")
        if kind in ("input", "output", "total") and _number(item.get("tokens")) is not None:
            first.setdefault(kind, item)
    periods = [_period(item.get("period")) for item in first.values()]
    if first and not all(periods):
        assumptions.append("token volumes given without a period are taken as per month")

    def tokens(kind: str) -> Decimal | None:
        item = first.get(kind)
        return _monthly(float(item["tokens"]), item.get("period")) if item else None

    given_in, given_out, total = tokens("input"), tokens("output"), tokens("total")
    basis = "given"
    if not first and requests is not None:
        per = {
            kind: metric_value(entities, name)
            for kind, name in (
                ("input", "input_tokens_per_request"),
                ("output", "output_tokens_per_request"),
                ("total", "tokens_per_request"),
            )
        }
        if any(v is not None for v in per.values()):
            given_in, given_out, total = (
                None if v is None else requests * Decimal(repr(v)) for v in per.values()
            )
            basis = "requests x tokens per request"
    given_in, given_out = _split(given_in, given_out, total, assumptions)
    if given_in is not None and any(p in ("day", "hour", "minute", "second") for p in periods):
        assumptions.append("a month is 30 days")
    return Volumes(
        input_tokens=None if given_in is None else float(round(given_in)),
        output_tokens=None if given_out is None else float(round(given_out)),
        requests=None if requests is None else float(requests),
        basis=basis if given_in is not None else "not given",
        assumptions=tuple(assumptions),
    )


def monthly_spend(entities: Mapping[str, Any]) -> tuple[float | None, list[str]]:
    """(the first USD spend the user gave, per month; the assumptions made)."""
    notes: list[str] = []
    for item in _items(entities, "money"):
        amount = _number(item.get("amount"))
        if amount is None:
            continue
        if item.get("currency", "USD") != "USD":
            notes.append(f"amounts in {item.get('currency')} are not converted to USD")
            continue
        if not _period(item.get("period")):
            notes.append("a spend given without a period is taken as monthly")
        return money(_monthly(amount, item.get("period"))), notes
    return None, notes


def given_prices(entities: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(input, output) USD per 1M tokens the user stated (None: not stated)."""
    both = metric_value(entities, "price_per_1m_tokens")
    return (
        metric_value(entities, "input_price_per_1m_tokens") or both,
        metric_value(entities, "output_price_per_1m_tokens") or both,
    )


# -- latency ---------------------------------------------------------------------------


def percentile_of(metric: str) -> str | None:
    """``"p95"`` for ``"p95_latency"`` / ``"latency_p95"``; ``"latency"`` for plain latency."""
    name = metric.lower()
    match = _PERCENTILE.search(name.replace("_", " "))
    if match:
        return f"p{match.group(1)}"
    return "latency" if "latency" in name or "response_time" in name else None


def latency_ms(value: float, unit: Any) -> float | None:
    factor = _LATENCY_UNITS.get(str(unit or "ms").lower())
    return None if factor is None else value * factor


def latency_figures(entities: Mapping[str, Any]) -> tuple[dict[str, float], list[float]]:
    """(percentiles the user gave, in ms; raw latencies without a percentile, in ms)."""
    given: dict[str, float] = {}
    raw: list[float] = []
    for item in _items(entities, "metrics"):
        which = percentile_of(str(item.get("name", "")))
        value = _number(item.get("value"))
        if which is None or value is None:
            continue
        ms = latency_ms(value, item.get("unit"))
        if ms is None:
            continue
        if which == "latency":
            raw.append(ms)
        else:
            given.setdefault(which, ms)
    return given, raw


def _target_kind(metric: str) -> str | None:
    name = metric.lower()
    if name.endswith("_increase"):
        return None  # more latency or more cost is not a target this step computes
    if percentile_of(name) is not None:
        return "latency"
    if any(word in name for word in ("cost", "spend", "bill", "budget")):
        return "cost"
    return None


def _latency_delta(
    metric: str,
    value: float,
    unit: str,
    latency: Mapping[str, float],
    indicative: Mapping[str, float],
) -> dict[str, Any] | None:
    which = percentile_of(metric) or "latency"
    basis = "given"
    current = latency.get(which)
    if current is None and which in indicative:
        current, basis = indicative[which], "indicative catalogue latency"
    amount = value if unit == "%" else latency_ms(value, unit)
    if amount is None or (current is None and (unit == "%" or metric.endswith("_reduction"))):
        return None
    if unit == "%":
        assert current is not None
        goal = current * (1 - amount / 100)
    elif metric.endswith("_reduction"):
        assert current is not None
        goal = current - amount
    else:
        goal = amount
    entry: dict[str, Any] = {"metric": metric, "target_ms": round(goal, 3)}
    if current is not None:
        gap = current - goal
        entry.update(
            current_ms=current,
            delta_ms=round(gap, 3),
            reduction_needed_pct=round(gap / current * 100, 2) if current >= 1 else None,
            met=gap <= 0,
            basis=basis,
        )
    return entry


def target_deltas(
    targets: Iterable[Mapping[str, Any]],
    latency: Mapping[str, float],
    indicative: Mapping[str, float],
    monthly_cost: float | None,
) -> list[dict[str, Any]]:
    """How far each target is from the figures (latency in ms, cost in USD a month).

    ``<metric>_reduction`` targets are relative ("cut cost by 30%") or absolute
    ("cut p95 by 200 ms"); other targets are levels ("p95 under 500 ms",
    "$3,000 a month").
    """
    out: list[dict[str, Any]] = []
    for target in targets:
        metric = str(target.get("metric", ""))
        value = _number(target.get("value"))
        unit = str(target.get("unit") or "")
        kind = _target_kind(metric)
        if value is None or kind is None:
            continue
        if kind == "latency":
            found = _latency_delta(metric, value, unit, latency, indicative)
            if found is not None:
                out.append(found)
            continue
        if monthly_cost is None or unit not in ("%", "USD", "$", ""):
            continue
        cost = Decimal(repr(monthly_cost))
        if unit == "%":
            goal = cost * (1 - Decimal(repr(value)) / 100)
            entry: dict[str, Any] = {"metric": metric, "reduction_pct": value}
        elif metric.endswith("_reduction"):
            goal = cost - _monthly(value, target.get("period"))
            entry = {"metric": metric, "reduction_usd": value}
        else:
            goal = _monthly(value, target.get("period"))
            entry = {"metric": metric}
        entry.update(
            current_monthly_cost_usd=monthly_cost,
            target_monthly_cost_usd=money(max(goal, Decimal(0))),
            savings_needed_usd=money(max(cost - goal, Decimal(0))),
        )
        out.append(entry)
    return out


# -- the agent ------------------------------------------------------------------------


class DataAgent(BaseAgent):
    name = "data"
    description = "Computes monthly cost, cost per request, latency figures and target deltas."

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        triage = inputs.get("triage")
        entities = entities_of(triage if isinstance(triage, Mapping) else None)
        request = str(inputs.get("request", self.context.request))
        await self.think("Reading the figures in the request", progress=10)
        figures: dict[str, Any] = {}
        assumptions: list[str] = []
        notes: list[str] = []

        models = [str(m) for m in entities.get("models") or [] if isinstance(m, str)]
        current, candidates = split_models(request, models)
        if current is not None:
            figures["current_model"] = current
        if candidates:
            figures["candidate_models"] = candidates
        entry: dict[str, Any] | None = None
        if current is not None:
            found = await self.use_tool("catalogue_lookup", model=current)
            if found.ok:
                entry = found.value
                figures["current_model"] = entry["id"]
            else:
                notes.append(f"{current} is not in the catalogue, so its list prices are unknown")
        prices = self._prices(entities, entry)
        if prices is not None:
            figures["prices_per_million_usd"] = prices

        await self.think("Computing monthly cost and cost per request", progress=40)
        spend, spend_notes = monthly_spend(entities)
        assumptions += spend_notes
        if spend is not None:
            figures["reported_monthly_spend_usd"] = spend
        volumes = monthly_volumes(entities)
        assumptions += volumes.assumptions
        volumes = self._implied_volumes(volumes, spend, prices, assumptions)
        pair = volumes.tokens
        if pair is not None:
            figures["monthly_tokens"] = {
                "input": pair[0],
                "output": pair[1],
                "total": pair[0] + pair[1],
                "basis": volumes.basis,
            }
        if volumes.requests is not None:
            figures["monthly_requests"] = volumes.requests
        cost = await self._monthly_cost(figures, volumes, entry, prices, spend, notes)
        per_request = metric_value(entities, "cost_per_request")
        if cost is None and per_request is not None and volumes.requests is not None:
            cost = money(Decimal(repr(per_request)) * Decimal(repr(volumes.requests)))
            figures["monthly_cost_usd"] = cost
            figures["monthly_cost_basis"] = "cost per request x requests"
        if per_request is not None:
            figures["cost_per_request_usd"] = per_request
        elif cost is not None and volumes.requests is not None and volumes.requests >= 1:
            figures["cost_per_request_usd"] = money(
                Decimal(repr(cost)) / Decimal(repr(volumes.requests))
            )

        await self.think("Latency percentiles and deltas to the targets", progress=70)
        given, raw = latency_figures(entities)
        if given:
            figures["latency_ms"] = given
        if len(raw) >= 2:
            summary = await self.use_tool("latency_summary", values_ms=raw)
            if summary.ok:
                figures["latency_summary_ms"] = summary.value
                given = {**{k: summary.value[f"{k}_ms"] for k in ("p50", "p95", "p99")}, **given}
            else:
                notes.append(f"the latency values could not be summarised: {summary.error}")
        elif raw:
            figures["latency_ms"] = {**given, "latency": raw[0]}
            given = {**given, "latency": raw[0]}
        indicative: dict[str, float] = {}
        if entry is not None:
            indicative = {"p50": entry["p50_latency_ms"], "p95": entry["p95_latency_ms"]}
            figures["catalogue_latency_ms"] = {**indicative, "note": entry["latency_note"]}
        deltas = target_deltas(_items(entities, "targets"), given, indicative, cost)
        if deltas:
            figures["target_deltas"] = deltas
        await self.think(f"{len(figures)} figures computed", progress=100)
        return {"figures": figures, "assumptions": assumptions, "notes": notes}

    @staticmethod
    def _prices(
        entities: Mapping[str, Any], entry: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        """USD per 1M tokens: the user's where stated, else the catalogue's list prices."""
        price_in, price_out = given_prices(entities)
        if entry is None and (price_in is None or price_out is None):
            return None
        catalogue = load_catalogue()
        basis = "given" if price_in is not None and price_out is not None else "list prices"
        if basis == "list prices" and (price_in is not None or price_out is not None):
            basis = "given and list prices"

        def pick(given: float | None, key: str) -> float:
            if given is not None:
                return given
            assert entry is not None
            return float(entry[key])

        out: dict[str, Any] = {
            "input": pick(price_in, "input_per_million"),
            "output": pick(price_out, "output_per_million"),
            "basis": basis,
        }
        if basis != "given" and entry is not None:
            out.update(as_of=catalogue.as_of, source=entry["source_name"])
        return out

    async def _monthly_cost(
        self,
        figures: dict[str, Any],
        volumes: Volumes,
        entry: Mapping[str, Any] | None,
        prices: Mapping[str, Any] | None,
        spend: float | None,
        notes: list[str],
    ) -> float | None:
        pair = volumes.tokens
        if volumes.basis == IMPLIED or (pair is None and spend is not None):
            figures["monthly_cost_usd"] = spend
            figures["monthly_cost_basis"] = "reported spend"
            return spend
        if pair is None or prices is None:
            if prices is not None and pair is None:
                notes.append("no token volume was given, so no monthly cost is computed")
            return None
        params: dict[str, Any] = {"input_tokens": pair[0], "output_tokens": pair[1]}
        if entry is not None:
            params["model"] = entry["id"]
        if prices["basis"] != "list prices":
            params.update(input_per_million=prices["input"], output_per_million=prices["output"])
        computed = await self.use_tool("cost_calculator", **params)
        if not computed.ok:
            notes.append(f"the cost could not be computed: {computed.error}")
            return spend
        cost: float = computed.value["total_cost_usd"]
        figures["monthly_cost_usd"] = cost
        figures["monthly_cost_basis"] = (
            "list prices" if prices["basis"] == "list prices" else "your prices"
        )
        figures["monthly_cost_breakdown_usd"] = {
            "input": computed.value["input_cost_usd"],
            "output": computed.value["output_cost_usd"],
        }
        return cost

    @staticmethod
    def _implied_volumes(
        volumes: Volumes,
        spend: float | None,
        prices: Mapping[str, Any] | None,
        assumptions: list[str],
    ) -> Volumes:
        """Without token volumes, the volume a reported spend buys at the prices (3:1)."""
        if volumes.tokens is not None or spend is None or prices is None:
            return volumes
        blended = (
            INPUT_SHARE * Decimal(repr(prices["input"]))
            + (1 - INPUT_SHARE) * Decimal(repr(prices["output"]))
        ) / Decimal(1_000_000)
        if not blended:
            return volumes
        total = Decimal(repr(spend)) / blended
        assumptions.append(
            "the token volume is what the reported spend buys at "
            f"{'your' if prices['basis'] == 'given' else 'list'} prices, split 3:1"
        )
        return attrs.evolve(
            volumes,
            input_tokens=float(round(total * INPUT_SHARE)),
            output_tokens=float(round(total * (1 - INPUT_SHARE))),
            basis=IMPLIED,
        )


# -- formatting (shared by the agents that write text) -------------------------------


def fmt_usd(amount: float) -> str:
    """``$1,234.56``; amounts under a cent keep four significant digits."""
    sign = "-" if amount < 0 else ""
    value = abs(amount)
    if value and value < 0.01:
        return f"{sign}${value:.4g}"
    return f"{sign}${value:,.2f}"


def fmt_tokens(count: float) -> str:
    """``40M``, ``1.25B``, ``750k`` or ``999``."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(count) >= size:
            return (
                f"{count / size:,.3g}{suffix}"
                if count / size < 1000
                else f"{count / size:,.0f}{suffix}"
            )
    return f"{count:,.0f}"


def fmt_ms(value: float) -> str:
    return f"{value:,.0f} ms" if abs(value) >= 1 or value == 0 else f"{value:.3g} ms"
