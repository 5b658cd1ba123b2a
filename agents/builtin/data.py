"""Data: compute figures from the numbers the user gave.

Monthly token volumes and requests (from any period, or requests x tokens per
request, or a request rate sustained all month), the monthly cost (tokens x the
user's prices or the current model's list prices; else the reported spend in
its currency, or cost per request x requests; for self-hosting, GPUs x price
per GPU-hour x hours), cost per request, the user's latency figures
(percentiles as given, or a summary of raw values or of a pasted log), the
reliability facts (status codes with what they mean, error and timeout rates)
and the deltas to their targets. A reported spend (or cost per request) that
differs from the cost of the stated volumes by more than 2x is flagged in
``figures["spend_check"]`` for the answer to say. Every figure says where it comes from in
``figures["provenance"]`` (your message, an earlier message of the thread,
the catalogue, a computation) and every assumption made on the way is listed
in the result; a failed tool call becomes a note, not a failure.

Amounts in euros or pounds stay in their currency; where they must be compared
with USD list prices they are converted at the catalogue's dated ECB rate,
which is stated.

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
    "quarter": Decimal(1) / Decimal(3),
    "year": Decimal(1) / Decimal(12),
}
#: Largest token count of one request (the longest context windows); a periodless count
#: no larger than this, and smaller than the monthly requests, is per request.
PER_REQUEST_MAX = 2_000_000
#: Seconds in a month of 30 days (a request rate sustained all month).
MONTH_SECONDS = Decimal(2_592_000)
#: Days in a month.
MONTH_DAYS = Decimal(30)
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}
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
    """(current model, candidates) among the models the request mentions (see
    :func:`_split_models`; cached: the data and optimization steps ask the same)."""
    current, candidates = _split_models(request, tuple(models))
    return current, list(candidates)


@functools.lru_cache(maxsize=64)
def _split_models(request: str, models: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
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
        return None, ()
    current = next((m for _, _, m, marked in placed if not marked), placed[0][2])
    return current, tuple(m for _, _, m, _ in placed if m != current)


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
    if given_in is None and given_out is not None and total is not None and total > given_out:
        # "~1.2k tokens a message, ~200 of them output": the rest of the total is input.
        assumptions.append("input tokens are the total you gave less the output")
        return total - given_out, given_out
    if given_out is None and given_in is not None and total is not None and total > given_in:
        assumptions.append("output tokens are the total you gave less the input")
        return given_in, total - given_in
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
    per request; a missing side comes from a 3:1 input/output split. Requests
    come from a request volume, else from a request rate (rps) sustained all
    month, which is said.
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
    for name in ("throughput", "peak_throughput"):
        rate = next(
            (
                value
                for m in _items(entities, "metrics")
                if m.get("name") == name
                and m.get("unit") == "rps"
                and (value := _number(m.get("value"))) is not None
            ),
            None,
        )
        if requests is None and rate is not None:
            requests = Decimal(repr(rate)) * MONTH_SECONDS
            if name == "throughput":
                assumptions.append(
                    f"{rate:g} requests per second are sustained around the clock, 30 days a month"
                )
            else:
                assumptions.append(
                    f"only a peak was given: {rate:g} requests per second sustained around the "
                    "clock, 30 days a month, an upper bound of the volume"
                )
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
    if (
        requests is not None
        and first
        and not any(periods)
        and all(float(i["tokens"]) <= min(PER_REQUEST_MAX, float(requests)) for i in first.values())
    ):
        # "10M requests/month x (700 input + 90 output tokens)": counts this small beside
        # millions of requests are per request.
        assumptions.remove("token volumes given without a period are taken as per month")
        assumptions.append("token counts given without a period are per request")
        entities = {
            **entities,
            "metrics": [
                *_items(entities, "metrics"),
                *(
                    {
                        "name": f"{'' if kind == 'total' else kind + '_'}tokens_per_request",
                        "value": float(item["tokens"]),
                    }
                    for kind, item in first.items()
                ),
            ],
        }
        first = {}
    if not first and requests is not None:
        per = per_request_tokens(entities)
        if any(v is not None for v in per.values()):
            given_in, given_out, total = (
                None if v is None else requests * Decimal(repr(v)) for v in per.values()
            )
            basis = "requests x tokens per request"
    split = given_in is None or given_out is None
    given_in, given_out = _split(given_in, given_out, total, assumptions)
    if basis == "given" and split and given_in is not None:
        basis = "your figure, split 3:1"  # a total, or one side, given: the rest assumed
    if given_in is not None and any(p in ("day", "hour", "minute", "second") for p in periods):
        assumptions.append("a month is 30 days")
    return Volumes(
        input_tokens=None if given_in is None else float(round(given_in)),
        output_tokens=None if given_out is None else float(round(given_out)),
        requests=None if requests is None else float(requests),
        basis=basis if given_in is not None else "not given",
        assumptions=tuple(assumptions),
    )


def per_request_tokens(entities: Mapping[str, Any]) -> dict[str, float | None]:
    """Tokens per request the user gave: input, output and total (None: not given)."""
    return {
        kind: metric_value(entities, name)
        for kind, name in (
            ("input", "input_tokens_per_request"),
            ("output", "output_tokens_per_request"),
            ("total", "tokens_per_request"),
        )
    }


@attrs.frozen
class Amount:
    """Money in its own currency, with its USD value where a rate is known."""

    amount: float
    currency: str
    usd: float | None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"amount": self.amount, "currency": self.currency}
        if self.currency != "USD" and self.usd is not None:
            out["usd"] = self.usd
        return out


def to_usd(amount: Decimal, currency: str) -> Decimal | None:
    """``amount`` of ``currency`` in USD at the catalogue's reference rate (None: no rate)."""
    if currency == "USD":
        return amount
    rate = load_catalogue().usd_per_unit.get(currency)
    return None if rate is None else amount * Decimal(repr(rate))


def from_usd(amount: Decimal, currency: str) -> Decimal | None:
    if currency == "USD":
        return amount
    rate = load_catalogue().usd_per_unit.get(currency)
    return None if rate is None else amount / Decimal(repr(rate))


def rate_note(currency: str) -> str:
    catalogue = load_catalogue()
    rate = catalogue.usd_per_unit.get(currency)
    dated = catalogue.rates_dated
    return (
        f"1 {currency} = {rate:g} USD (ECB reference rate of {dated.as_of}) where {currency} "
        "amounts are compared with USD list prices"
    )


def hourly_prices(entities: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Money given per hour: prices of GPUs or instances, not a spend."""
    return [m for m in _items(entities, "money") if _period(m.get("period")) == "hour"]


def monthly_spend(entities: Mapping[str, Any]) -> tuple[Amount | None, list[str]]:
    """(the first spend the user gave, per month, in its currency; the assumptions made).

    Money given per hour is a price (of a GPU), not a spend.
    """
    notes: list[str] = []
    for item in _items(entities, "money"):
        amount = _number(item.get("amount"))
        if amount is None or _period(item.get("period")) == "hour":
            continue
        currency = str(item.get("currency") or "USD")
        if not _period(item.get("period")):
            notes.append("a spend given without a period is taken as monthly")
        if item.get("currency_assumed"):
            notes.append(f"the amount {amount:,.10g} given without a currency is in {currency}")
        monthly = _monthly(amount, item.get("period"))
        usd = to_usd(monthly, currency)
        if currency != "USD" and usd is not None:
            notes.append(rate_note(currency))
        return Amount(money(monthly), currency, None if usd is None else money(usd)), notes
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
    if name.startswith("ttft"):
        return "ttft"
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
    if current is None and which == "latency" and len(latency) == 1:
        which, current = next(iter(latency.items()))  # "p95 is 3.2 s; get it below 2 s"
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
    spend: Amount | None = None,
) -> list[dict[str, Any]]:
    """How far each target is from the figures (latency in ms, cost a month).

    ``<metric>_reduction`` targets are relative ("cut cost by 30%") or absolute
    ("cut p95 by 200 ms"); other targets are levels ("p95 under 500 ms",
    "$3,000 a month"). A cost target is measured against the reported spend in
    its currency when there is one, else against ``monthly_cost`` (USD).
    """
    out: list[dict[str, Any]] = []
    for target in targets:
        metric = str(target.get("metric", ""))
        value = _number(target.get("value"))
        unit = str(target.get("unit") or "")
        kind = _target_kind(metric)
        if kind is None and metric == "reduction" and unit == "%":
            # "can we cut it by 40%?" with nothing named: the cost, if there is one.
            kind = "cost" if (monthly_cost or spend) else ("latency" if latency else None)
            metric = f"{kind}_reduction" if kind == "cost" else "latency_reduction"
        if value is None or kind is None:
            continue
        if kind == "latency":
            found = _latency_delta(metric, value, unit, latency, indicative)
            if found is not None:
                out.append(found)
            continue
        found = _cost_delta(metric, value, unit, target.get("period"), monthly_cost, spend)
        if found is not None:
            out.append(found)
    return out


def _cost_delta(
    metric: str,
    value: float,
    unit: str,
    period: Any,
    monthly_cost: float | None,
    spend: Amount | None,
) -> dict[str, Any] | None:
    currency = unit if unit in SYMBOLS else "USD"
    if unit == "%":
        base = spend or (Amount(monthly_cost, "USD", monthly_cost) if monthly_cost else None)
    elif spend is not None and spend.currency == currency:
        base = spend
    elif monthly_cost is not None:
        converted = from_usd(Decimal(repr(monthly_cost)), currency)
        base = None if converted is None else Amount(money(converted), currency, monthly_cost)
    else:
        base = None
    if base is None or unit not in ("%", "USD", "$", "", "EUR", "GBP"):
        return None
    cost = Decimal(repr(base.amount))
    if unit == "%":
        goal = cost * (1 - Decimal(repr(value)) / 100)
        entry: dict[str, Any] = {"metric": metric, "reduction_pct": value}
    elif metric.endswith("_reduction"):
        goal = cost - _monthly(value, period)
        entry = {"metric": metric, "reduction_usd" if currency == "USD" else "reduction": value}
    else:
        goal = _monthly(value, period)
        entry = {"metric": metric}
    goal = max(goal, Decimal(0))
    if base.currency == "USD":
        entry.update(
            current_monthly_cost_usd=base.amount,
            target_monthly_cost_usd=money(goal),
            savings_needed_usd=money(max(cost - goal, Decimal(0))),
        )
        return entry
    entry.update(
        currency=base.currency,
        current_monthly_cost={"amount": base.amount, "currency": base.currency},
        target_monthly_cost={"amount": money(goal), "currency": base.currency},
        savings_needed={"amount": money(max(cost - goal, Decimal(0))), "currency": base.currency},
    )
    usd_goal = to_usd(goal, base.currency)
    if usd_goal is not None:
        entry["target_monthly_cost_usd"] = money(usd_goal)
    return entry


# -- does the reported spend match the volumes? ------------------------------------------

#: A reported spend and the cost of the stated volumes that differ by more than this
#: factor (either way) are said to disagree.
MISMATCH = 2.0


def spend_check(
    cost: float | None,
    basis: Any,
    spend: Amount | None,
    entities: Mapping[str, Any],
    *,
    requests: float | None = None,
    per_request: float | None = None,
) -> dict[str, Any] | None:
    """When the reported spend and the cost of the stated volumes disagree (over 2x).

    ``cost`` is the monthly cost computed from the user's volumes (``basis``
    "list prices" or "your prices"); nothing is said when the cost is the spend
    itself, or when they agree within :data:`MISMATCH`. Without a monthly spend,
    a cost per request the user gave (``per_request``, USD) times the monthly
    ``requests`` is compared instead. ``if_per_day_usd`` is the cost if the
    volumes (given per month or without a period) were per day, where that
    would come within 3x of the spend; ``volumes_per_month`` says whether the
    volumes were written per month (or without a period).
    """
    if per_request is not None and spend is None and requests:
        reported = money(Decimal(repr(per_request)) * Decimal(repr(requests)))
        spend = Amount(reported, "USD", reported)
    else:
        per_request = None
    if (
        cost is None
        or cost <= 0
        or spend is None
        or spend.usd is None
        or spend.usd <= 0
        or basis not in ("list prices", "your prices")
    ):
        return None
    ratio = Decimal(repr(spend.usd)) / Decimal(repr(cost))
    if 1 / Decimal(repr(MISMATCH)) <= ratio <= Decimal(repr(MISMATCH)):
        return None
    volumes = _items(entities, "token_volumes")
    monthly = bool(volumes) and all(_period(v.get("period")) in (None, "month") for v in volumes)
    out: dict[str, Any] = {
        "computed_monthly_cost_usd": cost,
        "cost_basis": basis,
        "reported_monthly_spend": spend.as_dict(),
        "reported_monthly_spend_usd": spend.usd,
        "spend_to_cost": float(round(ratio, 4)),
        "larger": "spend" if ratio > 1 else "cost",
        "volumes_per_month": monthly,
    }
    if per_request is not None and requests:
        out.update(
            reported_cost_per_request_usd=per_request,
            computed_cost_per_request_usd=float(Decimal(repr(cost)) / Decimal(repr(requests))),
            monthly_requests=requests,
        )
    if monthly and MONTH_DAYS / 3 <= ratio <= MONTH_DAYS * 3:
        out["if_per_day_usd"] = money(Decimal(repr(cost)) * MONTH_DAYS)
    return out


# -- reliability -----------------------------------------------------------------------


def reliability_figures(
    entities: Mapping[str, Any], log: Mapping[str, Any], assumptions: list[str]
) -> dict[str, Any]:
    """Status codes (with what they mean, from the catalogue), error and timeout rates."""
    catalogue = load_catalogue()
    codes: dict[str, dict[str, Any]] = {}
    for item in _items(entities, "status_codes"):
        if isinstance(item.get("code"), int):
            codes[str(item["code"])] = {"mentions": item.get("mentions", 1), "source": "request"}
    log_codes = log.get("status_codes")
    if isinstance(log_codes, Mapping):
        for code, count in log_codes.items():
            codes.setdefault(str(code), {"source": "log"})["log_lines"] = count
    for code, info in codes.items():
        known = catalogue.status_codes.get(int(code))
        if int(code) < 400:
            info.update(meaning="success" if int(code) < 300 else "not an error", retry=False)
        elif known is not None:
            info.update(
                meaning=known.meaning,
                retry=known.retry,
                reference=catalogue.cite_source(known.source, catalogue.status_dated.as_of),
            )
    out: dict[str, Any] = {}
    if codes:
        out["status_codes"] = dict(sorted(codes.items()))
    error = metric_value(entities, "error_rate")
    success = metric_value(entities, "success_rate")
    if error is None and success is not None and success <= 100:
        error = round(100 - success, 4)
        assumptions.append(f"the {error:g}% of requests that did not succeed failed")
    if error is None and isinstance(log.get("error_rate_pct"), int | float):
        error = float(log["error_rate_pct"])
    if error is not None:
        out["error_rate_pct"] = error
    timeout = metric_value(entities, "timeout_rate")
    if timeout is not None:
        out["timeout_rate_pct"] = timeout
    setting = metric_value(entities, "timeout")
    if setting is not None:
        out["timeout_ms"] = setting
    return out


# -- the agent ------------------------------------------------------------------------


def models_of(triage: Mapping[str, Any] | None, request: str) -> tuple[str | None, list[str]]:
    """(current model, candidates): triage's when it decided them (a follow-up), else
    from where the models appear in the request."""
    entities = entities_of(triage)
    models = [str(m) for m in entities.get("models") or [] if isinstance(m, str)]
    chosen = (triage or {}).get("current_model")
    if isinstance(chosen, str) and chosen:
        candidates = (triage or {}).get("candidate_models")
        if isinstance(candidates, list):
            return chosen, [str(c) for c in candidates if isinstance(c, str) and c != chosen]
        return chosen, [m for m in models if m != chosen]
    return split_models(request, models)


def _log_of(triage: Mapping[str, Any] | None) -> Mapping[str, Any]:
    log = (triage or {}).get("log")
    return log if isinstance(log, Mapping) else {}


def _sources(triage: Mapping[str, Any] | None) -> dict[str, str]:
    """Entity group -> where its figures come from: this message or an earlier one."""
    out: dict[str, str] = {}
    for reused in (triage or {}).get("reused") or ():
        if isinstance(reused, Mapping):
            out[str(reused.get("what"))] = (
                f"your earlier message in this thread (run {reused.get('from_run')})"
            )
    return out


class DataAgent(BaseAgent):
    name = "data"
    description = (
        "Computes monthly cost, cost per request, GPU cost, reliability and latency figures "
        "and target deltas, saying where each figure comes from."
    )

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        raw_triage = inputs.get("triage")
        triage = raw_triage if isinstance(raw_triage, Mapping) else None
        entities = entities_of(triage)
        request = str(inputs.get("request", self.context.request))
        await self.think("Reading the figures in the request", progress=10)
        figures: dict[str, Any] = {}
        assumptions: list[str] = []
        notes: list[str] = []
        origin = _sources(triage)
        yours = "your message"
        provenance: dict[str, str] = {}

        current, candidates = models_of(triage, request)
        assumptions += [str(n) for n in (triage or {}).get("model_notes") or () if n]
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
            provenance["prices_per_million_usd"] = (
                yours
                if prices["basis"] == "given"
                else f"catalogue: {prices.get('source')}, list prices as of {prices.get('as_of')}"
            )

        await self.think("Computing monthly cost and cost per request", progress=40)
        spend, spend_notes = monthly_spend(entities)
        assumptions += spend_notes
        if spend is not None:
            provenance["reported_monthly_spend"] = origin.get("workload", yours)
            if spend.currency == "USD":
                figures["reported_monthly_spend_usd"] = spend.amount
            else:
                figures["reported_monthly_spend"] = spend.as_dict()
        volumes = monthly_volumes(entities)
        assumptions += volumes.assumptions
        spend_usd = spend.usd if spend is not None else None
        volumes = self._implied_volumes(volumes, spend_usd, prices, assumptions)
        pair = volumes.tokens
        if pair is not None:
            figures["monthly_tokens"] = {
                "input": pair[0],
                "output": pair[1],
                "total": pair[0] + pair[1],
                "basis": volumes.basis,
            }
            provenance["monthly_tokens"] = (
                origin.get("workload", yours)
                if volumes.basis == "given"
                else f"computed: {volumes.basis}"
            )
        if volumes.requests is not None:
            figures["monthly_requests"] = volumes.requests
            given = next(iter(_items(entities, "request_volumes")), None)
            as_given = (
                given is not None
                and _period(given.get("period")) in (None, "month")
                and given.get("each") is None
            )
            how = "a month is 30 days"
            if given is not None and given.get("each") is not None:
                how = (
                    f"{_fmt_count(given.get('of'))} {given.get('who') or 'users'} x "
                    f"{_fmt_count(given.get('each'))}"
                    f"{' ' + str(given['unit']) if given.get('unit') else ''} each"
                    + ("" if _period(given.get("period")) in (None, "month") else f", {how}")
                )
            provenance["monthly_requests"] = origin.get(
                "workload", yours if as_given else f"computed from {yours}: {how}"
            )
        if _items(entities, "gpus"):
            figures["gpus_given"] = True  # the GPUs' cost is the monthly cost
        cost = await self._monthly_cost(figures, volumes, entry, prices, spend, notes)
        figures.pop("gpus_given", None)
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
        elif volumes.requests is None and prices is not None:
            await self._cost_of_one_request(figures, entities, entry, prices, assumptions)
        if figures.get("monthly_cost_basis") == "reported spend":
            provenance["monthly_cost"] = provenance["reported_monthly_spend"]
        elif "monthly_cost_usd" in figures:
            provenance["monthly_cost"] = "computed"
        if figures.get("cost_per_request_usd") is not None:
            provenance["cost_per_request"] = "computed" if per_request is None else yours
        if current is not None and cost is not None and entry is not None and pair is not None:
            figures["model_costs"] = {entry["id"]: cost}
        check = spend_check(
            cost,
            figures.get("monthly_cost_basis"),
            spend,
            entities,
            requests=volumes.requests,
            per_request=per_request,
        )
        if check is not None:
            figures["spend_check"] = check
            provenance["spend_check"] = "computed: your volumes at the prices vs your spend"

        gpus = _items(entities, "gpus")
        if gpus:
            if (triage or {}).get("category") == "self_hosting":
                # The GPUs are what they pay today; an API's price is the alternative.
                for key in (
                    "monthly_cost_usd",
                    "monthly_cost",
                    "monthly_cost_breakdown_usd",
                    "spend_check",
                ):
                    figures.pop(key, None)
                if per_request is None:
                    figures.pop("cost_per_request_usd", None)
                figures.pop("monthly_cost_basis", None)
            await self._gpus(figures, entities, gpus, volumes, assumptions, provenance, origin)

        await self.think("Latency, reliability and targets", progress=70)
        given, raw = latency_figures(entities)
        if given:
            figures["latency_ms"] = given
            provenance["latency_ms"] = origin.get("latency", yours)
        log = _log_of(triage)
        log_latency = log.get("latency_ms")
        if isinstance(log_latency, Mapping) and log_latency:
            figures["latency_summary_ms"] = dict(log_latency)
            given = {**{k: log_latency[f"{k}_ms"] for k in ("p50", "p95", "p99")}, **given}
            provenance["latency_summary_ms"] = "computed: percentiles of the pasted log"
        elif len(raw) >= 2:
            summary = await self.use_tool("latency_summary", values_ms=raw)
            if summary.ok:
                figures["latency_summary_ms"] = summary.value
                given = {**{k: summary.value[f"{k}_ms"] for k in ("p50", "p95", "p99")}, **given}
                provenance["latency_summary_ms"] = "computed: percentiles of your values"
            else:
                notes.append(f"the latency values could not be summarised: {summary.error}")
        elif raw:
            figures["latency_ms"] = {**given, "latency": raw[0]}
            given = {**given, "latency": raw[0]}
            provenance["latency_ms"] = origin.get("latency", yours)
        if log:
            figures["log"] = {k: v for k, v in log.items() if k != "latency_ms"}
            provenance["log"] = "computed: a summary of the pasted log"
        reliability = reliability_figures(entities, log, assumptions)
        if reliability:
            figures["reliability"] = reliability
            from_log = any(
                i.get("source") == "log" for i in (reliability.get("status_codes") or {}).values()
            )
            provenance["reliability"] = (
                "your message and the pasted log" if from_log else origin.get("reliability", yours)
            )
        indicative: dict[str, float] = {}
        if entry is not None:
            indicative = {"p50": entry["p50_latency_ms"], "p95": entry["p95_latency_ms"]}
            figures["catalogue_latency_ms"] = {**indicative, "note": entry["latency_note"]}
        base_cost = figures.get("monthly_cost_usd")
        deltas = target_deltas(
            _items(entities, "targets"),
            given,
            indicative,
            base_cost if isinstance(base_cost, int | float) else cost,
            spend,
        )
        if deltas:
            figures["target_deltas"] = deltas
        if provenance:
            figures["provenance"] = provenance
        await self.think(f"{len(figures)} figures computed", progress=100)
        return {"figures": figures, "assumptions": assumptions, "notes": notes}

    async def _cost_of_one_request(
        self,
        figures: dict[str, Any],
        entities: Mapping[str, Any],
        entry: Mapping[str, Any] | None,
        prices: Mapping[str, Any],
        assumptions: list[str],
    ) -> None:
        """Without a request volume, the cost of one request from its tokens."""
        per = per_request_tokens(entities)
        tokens_in, tokens_out = per["input"], per["output"]
        if tokens_in is None and tokens_out is None:
            return
        if tokens_in is None or tokens_out is None:
            return  # a 3:1 guess for one request says too little to be worth it
        params: dict[str, Any] = {
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "input_per_million": prices["input"],
            "output_per_million": prices["output"],
        }
        if entry is not None:
            params["model"] = entry["id"]
        computed = await self.use_tool("cost_calculator", **params)
        if computed.ok:
            figures["cost_per_request_usd"] = computed.value["total_cost_usd"]
            assumptions.append("no request volume was given, so only one request is priced")

    async def _gpus(
        self,
        figures: dict[str, Any],
        entities: Mapping[str, Any],
        gpus: list[Mapping[str, Any]],
        volumes: Volumes,
        assumptions: list[str],
        provenance: dict[str, str],
        origin: Mapping[str, str],
    ) -> None:
        """Self-hosting: what the GPUs cost a month and how well they are used."""
        count = sum(float(g.get("count") or 0) for g in gpus)
        kind = next((str(g["type"]) for g in gpus if g.get("type")), None)
        params: dict[str, Any] = {"gpus": count}
        if kind is not None:
            params["gpu_type"] = kind
        hourly = hourly_prices(entities)
        if hourly:
            params["hourly_price"] = float(hourly[0]["amount"])
            params["currency"] = str(hourly[0].get("currency") or "USD")
        hours = metric_value(entities, "hours_per_day")
        if hours is not None:
            params["hours_per_day"] = hours
        utilisation = metric_value(entities, "utilization")
        busy = metric_value(entities, "busy_hours_per_day")
        if utilisation is None and busy is not None:
            paid = hours if hours is not None else 24.0
            if 0 < busy <= paid:
                utilisation = round(busy / paid * 100, 2)
                assumptions.append(
                    f"busy {busy:g} of the {paid:g} hours a day the GPUs are paid for: "
                    f"utilisation {utilisation:g}%"
                )
        if utilisation is not None:
            params["utilisation_pct"] = utilisation
        if volumes.requests is not None:
            params["requests_per_month"] = volumes.requests
        computed = await self.use_tool("gpu_cost", **params)
        if not computed.ok:
            return
        gpu = computed.value
        figures["gpu"] = gpu
        assumptions.extend(gpu.get("assumptions", ()))
        provenance["gpu"] = origin.get("GPUs", "your message")
        if busy is not None and metric_value(entities, "utilization") is None:
            provenance["gpu_utilisation"] = "computed: busy hours / hours paid for"
        if "monthly_cost_usd" not in figures:
            monthly = gpu["monthly_cost"]
            if monthly["currency"] == "USD":
                figures["monthly_cost_usd"] = monthly["amount"]
            else:
                figures["monthly_cost"] = dict(monthly)
                if gpu.get("monthly_cost_usd") is not None:
                    figures["monthly_cost_usd"] = gpu["monthly_cost_usd"]
            figures["monthly_cost_basis"] = "GPUs x price per GPU-hour x hours"
            if gpu.get("cost_per_request") is not None:
                figures["cost_per_request_usd"] = gpu["cost_per_request"]

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
        spend: Amount | None,
        notes: list[str],
    ) -> float | None:
        pair = volumes.tokens
        if volumes.basis == IMPLIED or (pair is None and spend is not None):
            assert spend is not None
            if spend.currency != "USD":
                figures["monthly_cost"] = {"amount": spend.amount, "currency": spend.currency}
            if spend.usd is not None:
                figures["monthly_cost_usd"] = spend.usd
            figures["monthly_cost_basis"] = "reported spend"
            return spend.usd
        if pair is None or prices is None:
            if prices is not None and pair is None and not figures.get("gpus_given"):
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
            return spend.usd if spend is not None else None
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


def _fmt_count(value: Any) -> str:
    return f"{value:,.10g}" if isinstance(value, int | float) else "?"


def fmt_usd(amount: float) -> str:
    """``$1,234.56``; amounts under a cent keep four significant digits."""
    return fmt_money(amount, "USD")


def fmt_money(amount: float, currency: str) -> str:
    """``$1,234.56``, ``€5,000.00``, ``£850.00``; under a cent, four significant digits
    (``$0.009250``: a cost per request is never shown as ``$0.00``)."""
    sign = "-" if amount < 0 else ""
    value = abs(amount)
    symbol = SYMBOLS.get(currency, f"{currency} ")
    if value and value < 0.01:
        return f"{sign}{symbol}{value:.4g}"
    if value and value < 0.1:
        return f"{sign}{symbol}{value:.4f}"
    return f"{sign}{symbol}{value:,.2f}"


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
