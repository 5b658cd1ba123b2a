"""Entity extraction: the models, providers, figures and time ranges of a request.

:func:`extract_entities` is pure and deterministic; its result has the keys
:data:`ENTITY_KEYS`.

Entities
--------
* ``models``: catalogue ids in order of first mention ("GPT-4o", "gpt4o" ->
  ``gpt-4o``; "4o-mini" -> ``gpt-4o-mini``; "Claude 3.5 Sonnet", "sonnet 3.5"
  -> ``claude-3-5-sonnet``; "Llama 3.1 70B" -> ``llama-3.1-70b``). A family
  named without a version ("Claude", "Llama 70B", "Gemini") gives its provider
  only. ``providers``: named or implied by a model, in order of mention.
* Numbers: ``2M``, ``2 million``, ``2,000,000``, ``1.5k``, ``3B``. Each figure
  is reported once, under the first of these that claims it:
  a price (``$2.50 per 1M input tokens`` -> metric ``input_price_per_1m_tokens``),
  a cost per request (metric ``cost_per_request``), a threshold (an alerting
  word earlier in the clause and a comparison right before the number:
  "alert if p95 is above 2 s"), a target ("under/below X", "at most X",
  "reduce ... to X", "cut ... by N%" -> ``<metric>_reduction`` with unit ``%``
  (relative), "need ... at least X", "target/SLO of X", "we need 99.9%" for a
  latency, rate or throughput), then by unit: ``money`` (USD, EUR, with a
  period), ``metrics`` (durations in ms, percentages, rps, tokens/s, tokens per
  request, context length), ``token_volumes`` (kind input/output/total, period),
  ``request_volumes``. A bare number counts only after "tokens" or "requests"
  in the same clause ("input tokens: 30M") or before "context"; other bare
  numbers (years, counts of engineers, "5xx", digits of model names) are ignored.
  Money targets and thresholds carry the currency as unit and a ``period`` key.
* Periods are ``minute``, ``hour``, ``day``, ``week``, ``month``, ``year`` or
  null (per-second figures are rps or tokens/s metrics); volumes joined by
  "and"/"to" share one ("2M input and 500k output tokens a day").
  ``time_ranges`` are the phrases as written ("last 30 days", "per month").
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ._models import _model_mentions, provider_words
from ._numbers import (
    _NUM,
    _PERIOD_AFTER,
    _PERIOD_BEFORE,
    _SCALES,
    _clean,
    _metric_unit,
    _period,
    _raw_numbers,
    _token_kind,
)
from ._roles import _MEASURES, _Around, _change_name, _metric_name, _role

if TYPE_CHECKING:
    from ._numbers import _Raw

_I = re.IGNORECASE

ENTITY_KEYS = (
    "models",
    "providers",
    "metrics",
    "money",
    "token_volumes",
    "request_volumes",
    "time_ranges",
    "thresholds",
    "targets",
)

# -- cues around a figure ------------------------------------------------------------

# A price: money per a number of tokens ("$2.50 per 1M input tokens", "$3/MTok").
_PRICE_AFTER = re.compile(
    rf"\A\s?(?:per|/|for|every|a)\s?(?:(?P<num>{_NUM})\s?(?P<scale>k|m|thousand|million)?\s?"
    r"|(?P<word>thousand|million|mtok|m|k)\s?)?"
    r"(?:(?P<kind>input|prompt|output|completion)\s)?(?:tokens?|toks?|mtok)?\b",
    _I,
)
_PER_REQUEST_AFTER = re.compile(
    rf"\A\s?(?:per|/|for|every|a|each)\s?(?:(?P<num>{_NUM})\s?(?P<scale>k|m|thousand|million)?\s)?"
    r"(?:api\s)?(?:requests?|calls?|quer(?:y|ies)|conversations?|messages?|chats?|completions?)\b",
    _I,
)
_PER_REQUEST_BEFORE = re.compile(
    r"\b(?:per|each|every|a|one)\s(?:api\s)?(?:request|call|query|conversation|message|chat)\b"
    r"[^.;!?]{0,25}\Z",
    _I,
)
_TOKENS_PER_REQUEST_AFTER = re.compile(
    r"\A\s?(?:(?:per|/|a|each|every|in\s(?:a|each))\s?(?:request|call|query|conversation|"
    r"message|chat|completion|prompt|response|ticket|document|doc|turn)s?\b|each\b|apiece\b)",
    _I,
)
_TOKENS_PER_REQUEST_BEFORE = re.compile(
    r"\b(?:each|per\srequest|per\scall|averag\w*|avg|typical|typically|on\saverage|"
    r"prompts?|responses?|answers?|requests?|calls?|conversations?)\b",
    _I,
)
_PER_BEFORE = re.compile(r"(?:\b(?:per|every)|/)\s*\Z", _I)
_JOINED = re.compile(r"\s*(?:,|and|plus|&|,\s*and|to|or|-|vs\.?)\s*", _I)
_CONNECTOR = re.compile(r"\s*(?:and|or|to|-|vs\.?|,)?\s*", _I)
_PHRASE_END = re.compile(r",|\b(?:and|but|while|whereas)\b", _I)
_CONTEXT_AFTER = re.compile(r"\A\s?(?:tokens?\s)?(?:context|ctx)\b", _I)
_CONTEXT_BEFORE = re.compile(r"\b(?:context|window)\b", _I)
_TOKEN_CUE = re.compile(r"\btokens?\b", _I)
_REQUEST_CUE = re.compile(r"\b(?:requests?|calls|queries|conversations)\b", _I)
_KIND_WORDS = re.compile(
    r"\b(?P<input>input|prompt)|(?P<output>output|completion|generated|responses?)\b", _I
)

# -- time ranges --------------------------------------------------------------------------

_TIME_UNITS = r"(?:seconds?|minutes?|hours?|days?|weeks?|months?|quarters?|years?)"
_TIME_RANGE = re.compile(
    r"\b(?:(?:last|past|previous|next)\s(?:(?:[0-9]+|few|couple\sof|two|three|six|twelve)\s)?"
    + _TIME_UNITS
    + r"|(?:per|a|an|each|every)\s(?:[0-9]+\s)?"
    + _TIME_UNITS
    + r"|(?:this|last|next)\s(?:week|month|quarter|year)"
    r"|since\s(?:last\s(?:week|month|year)|yesterday|january|february|march|april|may|june"
    r"|july|august|september|october|november|december|monday|tuesday|wednesday|thursday"
    r"|friday)"
    r"|yesterday|q[1-4](?:\s[0-9]{4})?"
    r"|daily|weekly|monthly|quarterly|yearly|annually|hourly)\b",
    _I,
)
_CLAUSE_END = re.compile(r"[;!?\n]|\.(?=\s|\Z)")
_WINDOW = 160  # characters looked back from a figure (bounds the work per figure)
_AHEAD = 40  # characters looked ahead for a metric's name ("850 ms at p95")

# -- extraction ---------------------------------------------------------------------------


def _mask(text: str, spans: Iterable[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


@attrs.frozen
class _Volume:
    """A token or request volume, where it is in the text (for sharing periods)."""

    item: dict[str, Any]
    start: int
    end: int


@attrs.define
class _Extraction:
    scan: str  # the text with model names and numeric time ranges blanked out
    models: list[str] = attrs.Factory(list)
    providers: list[str] = attrs.Factory(list)
    metrics: list[dict[str, Any]] = attrs.Factory(list)
    money: list[dict[str, Any]] = attrs.Factory(list)
    token_volumes: list[dict[str, Any]] = attrs.Factory(list)
    request_volumes: list[dict[str, Any]] = attrs.Factory(list)
    time_ranges: list[str] = attrs.Factory(list)
    thresholds: list[dict[str, Any]] = attrs.Factory(list)
    targets: list[dict[str, Any]] = attrs.Factory(list)
    volumes: list[_Volume] = attrs.Factory(list)  # both kinds, in text order

    def add_tokens(self, raw: _Raw, period: str | None, kind: str) -> None:
        item = {"tokens": raw.value, "period": period, "kind": kind}
        self.token_volumes.append(item)
        self.volumes.append(_Volume(item, raw.start, raw.end))

    def add_requests(self, raw: _Raw, period: str | None) -> None:
        item = {"requests": raw.value, "period": period}
        self.request_volumes.append(item)
        self.volumes.append(_Volume(item, raw.start, raw.end))

    def as_dict(self) -> dict[str, list[Any]]:
        return {key: list(getattr(self, key)) for key in ENTITY_KEYS}


def _kind_before(segment: str) -> str | None:
    last: re.Match[str] | None = None
    for m in _KIND_WORDS.finditer(segment):
        last = m
    if last is None:
        return None
    return "input" if last["input"] else "output"


def _extract(text: str) -> _Extraction:
    mentions = _model_mentions(text)
    ranges = list(_TIME_RANGE.finditer(text))
    scan = _mask(
        text,
        [(m.start, m.end) for m in mentions]
        + [r.span() for r in ranges if any(c.isdigit() for c in r.group(0))],
    )
    out = _Extraction(scan=scan)
    placed = [(m.start, m.provider) for m in mentions]
    placed += provider_words(text)
    out.models = list(dict.fromkeys(m.model for m in mentions if m.model is not None))
    out.providers = list(dict.fromkeys(p for _, p in sorted(placed)))
    out.time_ranges = list(dict.fromkeys(" ".join(r.group(0).lower().split()) for r in ranges))
    boundaries = [m.end() for m in _CLAUSE_END.finditer(scan)]
    raws = _raw_numbers(scan)
    consumed = 0  # end of the text claimed by earlier figures
    for index, raw in enumerate(raws):
        if raw.start < consumed:
            continue  # part of an earlier figure ("per 1M tokens" of a price)
        at = bisect.bisect_right(boundaries, raw.start)
        clause_start = max(boundaries[at - 1] if at else 0, raw.start - _WINDOW)
        at = bisect.bisect_right(boundaries, raw.end)
        clause_end = boundaries[at] if at < len(boundaries) else len(scan)
        next_start = raws[index + 1].start if index + 1 < len(raws) else len(scan)
        around = _Around(
            segment=scan[max(clause_start, consumed) : raw.start],
            clause=scan[clause_start : raw.start],
            after=_PHRASE_END.split(scan[raw.end : min(clause_end, next_start, raw.end + _AHEAD)])[
                0
            ],
        )
        consumed = _place(out, raw, around)
    _share_periods(scan, out.volumes)
    return out


def _share_periods(scan: str, volumes: Sequence[_Volume]) -> None:
    """Volumes joined by "and" share a period: "2M input and 500k output tokens a day"."""
    pairs = [
        (earlier, later)
        for earlier, later in itertools.pairwise(volumes)
        if _JOINED.fullmatch(scan[earlier.end : later.start])
    ]
    for earlier, later in reversed(pairs):
        if earlier.item["period"] is None:
            earlier.item["period"] = later.item["period"]
    for earlier, later in pairs:
        if later.item["period"] is None:
            later.item["period"] = earlier.item["period"]


def _place(out: _Extraction, raw: _Raw, around: _Around) -> int:
    """File ``raw`` under one entity list; return the end of the text it claimed."""
    rest = out.scan[raw.end : raw.end + 120]
    if raw.unit == "currency":
        claimed = _place_price(out, raw, around, rest)
        if claimed is not None:
            return claimed
    if raw.unit == "":
        return _place_bare(out, raw, around, rest)
    if raw.unit == "tokens":
        return _place_tokens(out, raw, around, rest, raw.token_kind)
    role = _role(around.clause, around.segment, measure=raw.unit in _MEASURES)
    period_match = _PERIOD_AFTER.match(rest)
    period = raw.period or _period(period_match) or _period(_last(_PERIOD_BEFORE, around.segment))
    claimed = raw.end + (period_match.end() if period_match else 0)
    value, unit = _metric_unit(raw)
    if role is not None:
        if role in ("reduction", "increase"):
            name = _change_name(raw, around, role)
        else:
            name = _metric_name(raw, around)
        item: dict[str, Any] = {"metric": name, "value": value, "unit": unit}
        if raw.unit == "currency":
            item["unit"] = raw.currency
            item["period"] = period
        elif raw.unit == "requests" and period:
            item["unit"] = f"requests/{period}"
        (out.thresholds if role == "threshold" else out.targets).append(item)
        return claimed
    if raw.unit == "currency":
        out.money.append({"amount": raw.value, "currency": raw.currency, "period": period})
        return claimed
    if raw.unit == "rpm":
        out.add_requests(raw, "minute")
        return raw.end
    if raw.unit == "requests":
        out.add_requests(raw, period)
        return claimed
    out.metrics.append({"name": _metric_name(raw, around), "value": value, "unit": unit})
    return raw.end


def _place_price(out: _Extraction, raw: _Raw, around: _Around, rest: str) -> int | None:
    """A price per tokens or a cost per request; None if the money is neither."""
    per_request = _PER_REQUEST_AFTER.match(rest)
    price = _PRICE_AFTER.match(rest)
    if per_request is None and price is not None and price.group(0).strip() and _is_price(price):
        kind = _token_kind(price["kind"])
        prefix = f"{kind}_" if kind in ("input", "output") else ""
        value = _clean(raw.value * 1e6 / _price_per(price))
        if math.isfinite(value):
            name = f"{prefix}price_per_1m_tokens"
            out.metrics.append({"name": name, "value": value, "unit": raw.currency})
        return raw.end + price.end()
    if per_request is None and not _PER_REQUEST_BEFORE.search(around.segment):
        return None
    count = 1.0
    if per_request is not None and per_request["num"]:
        scale = (per_request["scale"] or "").lower()
        count = float(per_request["num"].replace(",", "")) * _SCALES.get(scale, 1.0)
    if not (count > 0 and math.isfinite(count)):
        return None
    value = _clean(raw.value / count)
    out.metrics.append({"name": "cost_per_request", "value": value, "unit": raw.currency})
    return raw.end + (per_request.end() if per_request is not None else 0)


def _is_price(m: re.Match[str]) -> bool:
    # "per 1M tokens", "/1M", "per million", "/MTok", "per token": not "per month".
    return bool(m["num"] or m["word"] or re.search(r"tok", m.group(0), _I))


def _price_per(m: re.Match[str]) -> float:
    if m["num"]:
        scale = (m["scale"] or "").lower()
        return float(m["num"].replace(",", "")) * _SCALES.get(scale, 1.0) or 1.0
    word = (m["word"] or "").lower()
    if word in ("m", "million", "mtok"):
        return 1e6
    if word in ("k", "thousand"):
        return 1e3
    return 1.0


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for m in pattern.finditer(text):
        last = m
    return last


def _place_bare(out: _Extraction, raw: _Raw, around: _Around, rest: str) -> int:
    """A number without a unit counts only after "tokens" or "requests" in its stretch."""
    if _CONTEXT_AFTER.match(rest):
        return _place_tokens(out, raw, around, rest, None)
    # "from 40M to 95M": the cue is before the first number of the pair.
    cues = around.clause if _CONNECTOR.fullmatch(around.segment) else around.segment
    tokens = _last(_TOKEN_CUE, cues)
    requests = _last(_REQUEST_CUE, cues)
    if tokens is None and requests is None:
        return raw.end
    if tokens is not None and (requests is None or tokens.end() >= requests.end()):
        return _place_tokens(out, raw, around, rest, _kind_before(cues))
    period_match = _PERIOD_AFTER.match(rest)
    out.add_requests(raw, _period(period_match) or _period(_last(_PERIOD_BEFORE, around.segment)))
    return raw.end + (period_match.end() if period_match else 0)


def _place_tokens(out: _Extraction, raw: _Raw, around: _Around, rest: str, kind: str | None) -> int:
    segment = around.segment
    if _PER_BEFORE.search(segment):
        return raw.end  # "cheaper per 1M tokens": a unit of price, not a volume
    kind = kind or _kind_before(segment)
    if _CONTEXT_BEFORE.search(segment[-40:]) or _CONTEXT_AFTER.match(rest):
        out.metrics.append({"name": "context_length", "value": raw.value, "unit": "tokens"})
        return raw.end
    period_match = _PERIOD_AFTER.match(rest)
    period = raw.period or _period(period_match) or _period(_last(_PERIOD_BEFORE, segment))
    claimed = raw.end + (period_match.end() if period_match else 0)
    per_request = None if period_match else _TOKENS_PER_REQUEST_AFTER.match(rest)
    if per_request is not None or (period is None and _TOKENS_PER_REQUEST_BEFORE.search(segment)):
        prefix = f"{kind}_" if kind in ("input", "output") else ""
        name = f"{prefix}tokens_per_request"
        out.metrics.append({"name": name, "value": raw.value, "unit": "tokens"})
        return raw.end + (per_request.end() if per_request is not None else 0)
    if period == "second":
        out.metrics.append({"name": "throughput", "value": raw.value, "unit": "tokens/s"})
        return claimed
    role = _role(around.clause, segment)
    if role is not None:
        name = _change_name(raw, around, role) if role in ("reduction", "increase") else "tokens"
        unit = f"tokens/{period}" if period else "tokens"
        item = {"metric": name, "value": raw.value, "unit": unit}
        (out.thresholds if role == "threshold" else out.targets).append(item)
        return claimed
    out.add_tokens(raw, period, kind or "total")
    return claimed


def extract_entities(text: str) -> dict[str, list[Any]]:
    """The entities of ``text``: models, providers, figures, time ranges, thresholds, targets."""
    return _extract(text).as_dict()
