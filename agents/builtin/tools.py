"""The built-in tools the built-in agents use.

Each is a plain function with a JSON-schema ``parameters`` declaration, so a
real model could call it too. A tool signals a problem (an unknown model, a
negative token count, text it cannot parse) by raising: the agent sees a
``failed`` result naming the problem and decides what to do.

Money is computed with :class:`decimal.Decimal` from the catalogue's prices
and rounded to a millionth of a dollar, so ``40M tokens x $2.50 per 1M`` is
exactly ``100.0``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .._tools import Tool, ToolRegistry
from ._stats import summarise
from .catalogue import ModelEntry, load_catalogue
from .triage import extract_entities

_MICRO = Decimal("0.000001")
#: Largest count or price a tool accepts (a million billion: beyond any real workload).
MAX_QUANTITY = 1e15
_MILLION = Decimal(1_000_000)
LATENCY_NOTE = "latencies are indicative (public benchmarks), not measured"
#: Most values latency_summary accepts (its cost is n log n).
MAX_VALUES = 100_000
#: Longest text parse_quantity and model names accept.
MAX_TEXT = 200
#: GPU utilisation a right-sized fleet aims for (headroom for peaks).
TARGET_UTILISATION = Decimal(70)


def money(value: Decimal) -> float:
    """A dollar amount as a float rounded (half up) to a millionth of a dollar."""
    return float(value.quantize(_MICRO, rounding=ROUND_HALF_UP))


def _decimal(value: float) -> Decimal:
    return Decimal(repr(float(value)))


def _count(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if not 0 <= value <= MAX_QUANTITY:
        raise ValueError(f"{name} must be a number from 0 to {MAX_QUANTITY:g}, not {value!r}")
    return float(value)


def _entry(model: str) -> ModelEntry:
    if len(model) > MAX_TEXT:
        raise ValueError(f"a model name is at most {MAX_TEXT} characters")
    catalogue = load_catalogue()
    entry = catalogue.find(model)
    if entry is None:
        raise LookupError(
            f"model {model!r} is not in the catalogue (prices as of {catalogue.as_of})"
        )
    return entry


# -- catalogue_lookup ------------------------------------------------------------


def catalogue_lookup(model: str) -> dict[str, Any]:
    """The catalogue entry of ``model`` (id or alias), with its source and date."""
    catalogue = load_catalogue()
    entry = _entry(model)
    source = catalogue.source_of(entry)
    out = entry.as_dict()
    out.update(
        {
            "currency": catalogue.currency,
            "as_of": catalogue.as_of,
            "source_name": source.name,
            "source_url": source.url,
            "latency_note": LATENCY_NOTE,
        }
    )
    return out


CATALOGUE_LOOKUP = Tool(
    name="catalogue_lookup",
    description=(
        "List prices (USD per 1M input/output tokens), indicative p50/p95 latency, context "
        "window and tier of a model, from the shipped catalogue."
    ),
    parameters={
        "type": "object",
        "properties": {
            "model": {"type": "string", "description": "model id or alias, e.g. gpt-4o"},
        },
        "required": ["model"],
    },
    func=catalogue_lookup,
)


# -- cost_calculator ---------------------------------------------------------------


def cost_calculator(
    input_tokens: float,
    output_tokens: float,
    model: str | None = None,
    input_per_million: float | None = None,
    output_per_million: float | None = None,
) -> dict[str, Any]:
    """Cost of ``input_tokens`` + ``output_tokens`` (e.g. a month's volume).

    Prices come from the catalogue entry of ``model``; explicit prices (USD
    per 1M tokens) override them, and with both prices given ``model`` may
    be omitted or unknown.
    """
    tokens_in = _count("input_tokens", input_tokens)
    tokens_out = _count("output_tokens", output_tokens)
    price_in, price_out = input_per_million, output_per_million
    entry = load_catalogue().find(model) if model is not None else None
    if price_in is None or price_out is None:
        if model is None:
            raise ValueError(
                "give a catalogue model or both input_per_million and output_per_million"
            )
        entry = _entry(model)
        price_in = entry.input_per_million if price_in is None else price_in
        price_out = entry.output_per_million if price_out is None else price_out
        given = input_per_million is not None or output_per_million is not None
        price_source = "given and catalogue" if given else "catalogue"
    else:
        price_source = "given"
    price_in = _count("input_per_million", price_in)
    price_out = _count("output_per_million", price_out)
    cost_in = _decimal(tokens_in) * _decimal(price_in) / _MILLION
    cost_out = _decimal(tokens_out) * _decimal(price_out) / _MILLION
    return {
        "model": entry.id if entry is not None else model,
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "input_per_million": price_in,
        "output_per_million": price_out,
        "price_source": price_source,
        "input_cost_usd": money(cost_in),
        "output_cost_usd": money(cost_out),
        "total_cost_usd": money(cost_in + cost_out),
    }


COST_CALCULATOR = Tool(
    name="cost_calculator",
    description=(
        "Cost in USD of a number of input and output tokens (e.g. a month's volume) at a "
        "catalogue model's list prices, or at explicit prices per 1M tokens."
    ),
    parameters={
        "type": "object",
        "properties": {
            "input_tokens": {"type": "number", "description": "input (prompt) tokens"},
            "output_tokens": {"type": "number", "description": "output (completion) tokens"},
            "model": {"type": "string", "description": "catalogue model id or alias"},
            "input_per_million": {"type": "number", "description": "USD per 1M input tokens"},
            "output_per_million": {"type": "number", "description": "USD per 1M output tokens"},
        },
        "required": ["input_tokens", "output_tokens"],
    },
    func=cost_calculator,
)


# -- parse_quantity ----------------------------------------------------------------

_QUANTITY = re.compile(
    r"^\s*(?P<currency>[$€])?\s*(?P<number>\d[\d,]*(?:\.\d+)?|\.\d+)\s*"
    r"(?P<scale>k|m|b|thousand|million|billion|bn)?\b\.?\s*(?P<unit>[a-z%/ ]*?)\s*$",
    re.IGNORECASE,
)
_SCALES = {
    "": 1,
    "k": 1_000,
    "thousand": 1_000,
    "m": 1_000_000,
    "million": 1_000_000,
    "b": 1_000_000_000,
    "bn": 1_000_000_000,
    "billion": 1_000_000_000,
}
# unit text -> (canonical unit, factor to it)
_UNITS: dict[str, tuple[str, float]] = {
    "": ("", 1.0),
    "tokens": ("tokens", 1.0),
    "token": ("tokens", 1.0),
    "tok": ("tokens", 1.0),
    "ms": ("ms", 1.0),
    "millisecond": ("ms", 1.0),
    "milliseconds": ("ms", 1.0),
    "s": ("ms", 1000.0),
    "sec": ("ms", 1000.0),
    "secs": ("ms", 1000.0),
    "second": ("ms", 1000.0),
    "seconds": ("ms", 1000.0),
    "min": ("ms", 60_000.0),
    "mins": ("ms", 60_000.0),
    "minute": ("ms", 60_000.0),
    "minutes": ("ms", 60_000.0),
    "usd": ("USD", 1.0),
    "dollar": ("USD", 1.0),
    "dollars": ("USD", 1.0),
    "eur": ("EUR", 1.0),
    "euro": ("EUR", 1.0),
    "euros": ("EUR", 1.0),
    "%": ("%", 1.0),
    "percent": ("%", 1.0),
    "rps": ("rps", 1.0),
    "req/s": ("rps", 1.0),
    "requests/s": ("rps", 1.0),
    "requests": ("requests", 1.0),
    "request": ("requests", 1.0),
    "calls": ("requests", 1.0),
}


def parse_quantity(text: str) -> dict[str, Any]:
    """One quantity with its unit: ``"2M tokens"``, ``"900 ms"``, ``"1.2 s"``, ``"$4k"``.

    Durations come back in ms, money in its currency, counts as numbers.
    """
    if len(text) > MAX_TEXT:
        raise ValueError(f"the text is longer than {MAX_TEXT} characters")
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"no quantity in {text!r}")
    scale = _SCALES[(match["scale"] or "").lower()]
    unit_text = " ".join(match["unit"].lower().split())
    currency = match["currency"]
    if currency is not None:
        if unit_text not in ("", "usd" if currency == "$" else "eur"):
            raise ValueError(f"unexpected unit {unit_text!r} after {currency} in {text!r}")
        unit, factor = ("USD" if currency == "$" else "EUR"), 1.0
    elif unit_text in _UNITS:
        unit, factor = _UNITS[unit_text]
    else:
        raise ValueError(f"unknown unit {unit_text!r} in {text!r}")
    number = _decimal(float(match["number"].replace(",", ""))) * scale * _decimal(factor)
    value = float(number)
    return {"value": int(value) if value.is_integer() else value, "unit": unit, "text": text}


PARSE_QUANTITY = Tool(
    name="parse_quantity",
    description=(
        "Parse one quantity with its unit, e.g. '2M tokens', '900 ms', '1.2 s', '$4k', "
        "'30%': durations in ms, money in its currency."
    ),
    parameters={
        "type": "object",
        "properties": {"text": {"type": "string", "description": "the quantity as written"}},
        "required": ["text"],
    },
    func=parse_quantity,
)


# -- latency_summary ---------------------------------------------------------------


def latency_summary(values_ms: Sequence[float]) -> dict[str, Any]:
    """Count, min, mean, p50, p95, p99 and max of latencies in ms."""
    if not isinstance(values_ms, list | tuple) or not values_ms:
        raise ValueError("values_ms must be a non-empty list of numbers")
    if len(values_ms) > MAX_VALUES:
        raise ValueError(f"values_ms may hold at most {MAX_VALUES:,} values")
    return summarise([_count("values_ms item", v) for v in values_ms])


LATENCY_SUMMARY = Tool(
    name="latency_summary",
    description="p50/p95/p99 (linear interpolation), mean, min and max of latencies in ms.",
    parameters={
        "type": "object",
        "properties": {
            "values_ms": {
                "type": "array",
                "items": {"type": "number"},
                "description": "observed latencies in milliseconds",
            }
        },
        "required": ["values_ms"],
    },
    func=latency_summary,
)


# -- compare_models ----------------------------------------------------------------


def compare_models(
    current: str, candidate: str, input_tokens: float, output_tokens: float
) -> dict[str, Any]:
    """Cost and (indicative) latency of ``candidate`` against ``current`` for one volume."""
    catalogue = load_catalogue()
    now, new = _entry(current), _entry(candidate)
    costs = [cost_calculator(input_tokens, output_tokens, model=e.id) for e in (now, new)]
    before = _decimal(costs[0]["total_cost_usd"])
    after = _decimal(costs[1]["total_cost_usd"])
    savings = before - after
    pct = round(float(savings / before * 100), 2) if before else 0.0

    def side(entry: ModelEntry, cost: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": entry.id,
            "provider": entry.provider,
            "tier": entry.tier,
            "total_cost_usd": cost["total_cost_usd"],
            "input_per_million": entry.input_per_million,
            "output_per_million": entry.output_per_million,
            "p50_latency_ms": entry.p50_latency_ms,
            "p95_latency_ms": entry.p95_latency_ms,
            "context_window": entry.context_window,
            "source": catalogue.cite(entry),
        }

    return {
        "input_tokens": costs[0]["input_tokens"],
        "output_tokens": costs[0]["output_tokens"],
        "current": side(now, costs[0]),
        "candidate": side(new, costs[1]),
        "monthly_savings_usd": money(savings),
        "savings_pct": pct,
        "p50_latency_change_ms": new.p50_latency_ms - now.p50_latency_ms,
        "p95_latency_change_ms": new.p95_latency_ms - now.p95_latency_ms,
        #: Tiers down from the current model's (negative: up).
        "tier_change": new.tier_rank - now.tier_rank,
        "latency_note": LATENCY_NOTE,
    }


COMPARE_MODELS = Tool(
    name="compare_models",
    description=(
        "Monthly cost of a token volume on two catalogue models, the savings of switching, "
        "and the (indicative) latency and tier differences."
    ),
    parameters={
        "type": "object",
        "properties": {
            "current": {"type": "string", "description": "model in use"},
            "candidate": {"type": "string", "description": "model to switch to"},
            "input_tokens": {"type": "number", "description": "input tokens per month"},
            "output_tokens": {"type": "number", "description": "output tokens per month"},
        },
        "required": ["current", "candidate", "input_tokens", "output_tokens"],
    },
    func=compare_models,
)


# -- gpu_cost ---------------------------------------------------------------------------


def gpu_cost(
    gpus: float,
    gpu_type: str | None = None,
    hourly_price: float | None = None,
    currency: str = "USD",
    hours_per_day: float = 24.0,
    utilisation_pct: float | None = None,
    requests_per_month: float | None = None,
) -> dict[str, Any]:
    """What self-hosted GPUs cost a month (30 days) and how much of it is used.

    Without ``hourly_price`` the catalogue's indicative on-demand price of
    ``gpu_type`` (or of its default GPU) is used, and said. With a utilisation,
    the cost per GPU-hour actually used, and how many GPUs the same load needs
    at 70% utilisation (the saving if it can be packed onto them).
    """
    count = _count("gpus", gpus)
    if count < 1 or count != int(count):
        raise ValueError("gpus must be a whole number of at least 1")
    hours = _count("hours_per_day", hours_per_day)
    if not 0 < hours <= 24:
        raise ValueError("hours_per_day must be from 0 to 24")
    catalogue = load_catalogue()
    assumptions: list[str] = []
    if hourly_price is None:
        entry = catalogue.gpu(gpu_type)
        missing = ""  # a GPU type the catalogue lacks ("A10G"): say which price stands in
        if entry is None:
            entry = catalogue.gpu(None)
            assert entry is not None
            missing = (gpu_type or "").upper()
        price, currency = _decimal(entry.hourly_usd), "USD"
        where = catalogue.cite_source(catalogue.gpus_dated.source, catalogue.gpus_dated.as_of)
        source = f"catalogue: {entry.name} on demand, {where}"
        unknown = ""
        if missing:
            source = f"catalogue: no {missing} price, {entry.name} used instead, {where}"
            unknown = f" and the catalogue has no {missing}, so it is priced as"
        seller = catalogue.sources[catalogue.gpus_dated.source].name
        assumptions.append(
            f"no GPU price was given{unknown or ':'} {entry.name} at the indicative on-demand "
            f"${entry.hourly_usd:g} per GPU-hour ({seller}, {catalogue.gpus_dated.as_of})"
        )
    else:
        price, source = _decimal(_count("hourly_price", hourly_price)), "given"
    if hours_per_day == 24.0:
        assumptions.append("the GPUs run 24 hours a day, 30 days a month")
    gpu_hours = _decimal(count) * _decimal(hours) * 30
    monthly = gpu_hours * price
    out: dict[str, Any] = {
        "count": int(count),
        "type": gpu_type,
        "hourly": {"amount": float(price), "currency": currency, "source": source},
        "hours_per_day": hours,
        "gpu_hours_per_month": float(gpu_hours),
        "monthly_cost": {"amount": money(monthly), "currency": currency},
    }
    rate = catalogue.usd_per_unit.get(currency) if currency != "USD" else 1.0
    if rate is not None:
        out["monthly_cost_usd"] = money(monthly * _decimal(rate))
    if utilisation_pct is not None:
        used = _decimal(_count("utilisation_pct", utilisation_pct))
        if not 0 < used <= 100:
            raise ValueError("utilisation_pct must be from 0 to 100")
        out["utilisation_pct"] = float(used)
        out["idle_cost"] = {"amount": money(monthly * (1 - used / 100)), "currency": currency}
        out["cost_per_used_gpu_hour"] = {"amount": money(price * 100 / used), "currency": currency}
        if used < TARGET_UTILISATION:
            needed = max(1, math.ceil(count * float(used / TARGET_UTILISATION)))
            if needed < count:
                saved = (_decimal(count) - needed) * _decimal(hours) * 30 * price
                out["right_sized"] = {
                    "gpus": needed,
                    "target_utilisation_pct": float(TARGET_UTILISATION),
                    "monthly_saving": {"amount": money(saved), "currency": currency},
                }
    if requests_per_month:
        requests = _decimal(_count("requests_per_month", requests_per_month))
        if requests >= 1 and currency == "USD":
            out["cost_per_request"] = money(monthly / requests)
    out["assumptions"] = assumptions
    return out


GPU_COST = Tool(
    name="gpu_cost",
    description=(
        "Monthly cost of self-hosted GPUs (count x price per GPU-hour x hours, 30 days), the "
        "cost per GPU-hour actually used at a utilisation, and the GPUs the same load needs at "
        "70% utilisation."
    ),
    parameters={
        "type": "object",
        "properties": {
            "gpus": {"type": "number", "description": "number of GPUs"},
            "gpu_type": {"type": "string", "description": "e.g. h100, a100"},
            "hourly_price": {"type": "number", "description": "price per GPU-hour"},
            "currency": {"type": "string", "enum": ["USD", "EUR", "GBP"]},
            "hours_per_day": {"type": "number", "description": "hours a day the GPUs run"},
            "utilisation_pct": {"type": "number", "description": "average GPU utilisation"},
            "requests_per_month": {"type": "number", "description": "requests served a month"},
        },
        "required": ["gpus"],
    },
    func=gpu_cost,
)


# -- extract_entities (triage's) -------------------------------------------------

EXTRACT_ENTITIES = Tool(
    name="extract_entities",
    description=(
        "Find model names, providers, metrics with units, money, token and request volumes, "
        "time ranges, thresholds, targets, GPUs and HTTP status codes in a request; its "
        "language; and a summary of a pasted log."
    ),
    parameters={
        "type": "object",
        "properties": {"text": {"type": "string", "description": "the user's request"}},
        "required": ["text"],
    },
    func=extract_entities,
    cpu_bound=True,
)

BUILTIN_TOOLS = (
    EXTRACT_ENTITIES,
    CATALOGUE_LOOKUP,
    COST_CALCULATOR,
    PARSE_QUANTITY,
    LATENCY_SUMMARY,
    COMPARE_MODELS,
    GPU_COST,
)


def default_tools() -> ToolRegistry:
    """A new, unfrozen registry with the built-in tools."""
    return ToolRegistry(BUILTIN_TOOLS)
