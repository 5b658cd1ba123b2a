"""Numbers in a request: amounts ("2M", "1.5k", "$2.50"), their units and periods.

:func:`parse_amount` reads one amount; ``_raw_numbers`` finds every number of a
text with the unit written after it (or a currency sign before it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import attrs

_I = re.IGNORECASE

_NUM = r"(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+"
_SCALES: Mapping[str, float] = {
    "k": 1e3,
    "thousand": 1e3,
    "m": 1e6,
    "mn": 1e6,
    "mil": 1e6,
    "million": 1e6,
    "b": 1e9,
    "bn": 1e9,
    "billion": 1e9,
}
_AMOUNT = re.compile(
    rf"(?<![\w.,/])(?P<num>{_NUM})(?![0-9])"
    r"(?:\s?(?P<scale>k|mn|m|bn|b)(?![a-z0-9])|\s(?P<word>thousand|million|billion|mil)\b)?",
    _I,
)


def _clean(value: float) -> float:
    """Drop float noise (1.1 * 1e3 is 1100.0000000000002)."""
    return float(f"{value:.12g}")


def parse_amount(text: str) -> float | None:
    """The number ``text`` spells ("2M", "2 million", "2,000,000", "1.5k", "3B"), or None."""
    m = _AMOUNT.fullmatch(text.strip())
    return None if m is None else _amount_value(m)


def _amount_value(m: re.Match[str]) -> float | None:
    scale = (m["scale"] or m["word"] or "").lower()
    value = float(m["num"].replace(",", "")) * _SCALES.get(scale, 1.0)
    return _clean(value) if math.isfinite(value) else None


_PERIOD_WORDS: Mapping[str, str] = {
    "second": "second",
    "sec": "second",
    "s": "second",
    "minute": "minute",
    "min": "minute",
    "hour": "hour",
    "hr": "hour",
    "h": "hour",
    "hourly": "hour",
    "day": "day",
    "daily": "day",
    "night": "day",
    "nightly": "day",
    "d": "day",
    "week": "week",
    "wk": "week",
    "weekly": "week",
    "month": "month",
    "mo": "month",
    "monthly": "month",
    "year": "year",
    "yr": "year",
    "yearly": "year",
    "annual": "year",
    "annually": "year",
    "annum": "year",
}
_PERIOD_UNIT = (
    r"(?P<unit>second|sec|minute|min|hour|hr|h|day|d|night|week|wk|month|mo|year|yr|annum)s?"
)
# A period right after a figure, possibly after up to three words ("$5k on it per month").
_PERIOD_AFTER = re.compile(
    r"\A(?:\s+(?:of|on|in|for|across|with|through|the|our|all|it|them|us|[a-z]+ing|[a-z]+ed))"
    r"{0,3}?\s*(?:(?:/\s?|\bper\s|\ba\s|\ban\s|\beach\s|\bevery\s|\bin\sa\s|\blast\s|\bthis\s)"
    + _PERIOD_UNIT
    + r"\b|\b(?P<adj>monthly|daily|nightly|hourly|weekly|yearly|annually)\b)",
    _I,
)
# A period word earlier in the same stretch ("monthly spend is $5k", "per day we send 2M").
_PERIOD_BEFORE = re.compile(
    r"\b(?:(?P<adj>monthly|daily|nightly|hourly|weekly|yearly|annual(?:ly)?)"
    r"|(?:per|a|an|each|every|this|last|past)\s(?P<unit>month|day|hour|week|year))\b",
    _I,
)


def _period(m: re.Match[str] | None) -> str | None:
    if m is None:
        return None
    word = (m["adj"] or m["unit"] or "").lower()
    return _PERIOD_WORDS.get(word)


# Units right after a number (and its scale); the first that matches wins.
_UNIT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(r"\A\s?(?:" + pattern + ")", _I))
    for kind, pattern in (
        ("currency", r"(?P<cur>usd|us dollars|dollars|bucks|eur|euros?)\b|(?P<sym>€)"),
        (
            "rps",
            r"(?:rps|qps|req/s|reqs/s|requests?/s(?:ec)?|"
            r"(?:requests?|queries|calls)\s(?:per|a|/)\s?(?:second|sec|s))\b",
        ),
        ("tps", r"(?:tokens?/s(?:ec)?|toks?/s|tps|tokens?\s(?:per|a)\s(?:second|sec))\b"),
        ("rpm", r"(?:rpm|(?:requests?|queries|calls)\s?(?:per|a|/)\s?(?:minute|min))\b"),
        ("ms", r"(?:ms|msecs?|millis(?:econds?)?|milliseconds?)\b"),
        ("s", r"(?:s|secs?|seconds?)\b"),
        ("min", r"(?:mins?|minutes?)\b"),
        ("percent", r"(?:%|percent\b|pct\b)"),
        (
            "tokens",
            r"(?:(?P<padj>daily|monthly|weekly|hourly|nightly)\s)?"
            r"(?:(?P<kind>input|prompt|output|completion|generated|total)\s)?"
            r"(?:tokens?|toks?)\b",
        ),
        ("tokens", r"(?P<kind>input|prompt|output|completion)\b(?=[^.;!?\n]{0,60}\btokens?\b)"),
        (
            "requests",
            r"(?:(?P<padj>daily|monthly|weekly|hourly|nightly)\s)?(?:active\s)?"
            r"(?:(?:api|llm|model|chat|user)\s)?(?:requests?|reqs?|calls|queries|"
            r"conversations|chats|messages|completions|inferences|invocations|generations|"
            r"documents|tickets)\b",
        ),
        (
            "ignore",
            r"(?:x|times|hours?|hrs?|days?|weeks?|months?|years?|users?|people|"
            r"engineers|gpus?|cores?|nodes?|replicas?|steps?)\b",
        ),
    )
)
_CURRENCY_BEFORE = re.compile(r"(?:(?P<sym>us\$|\$|€)|\b(?P<code>usd|eur)\s?)\Z", _I)


@attrs.frozen
class _Raw:
    """A number in the text, with its unit as written."""

    start: int  # including a currency sign before it
    end: int  # after the unit
    value: float
    unit: str  # a _UNIT_RULES kind, or "" for a bare number
    currency: str | None
    token_kind: str | None
    period: str | None = None  # from the unit itself: "daily requests"


def _raw_numbers(scan: str) -> list[_Raw]:
    found: list[_Raw] = []
    for m in _AMOUNT.finditer(scan):
        value = _amount_value(m)
        if value is None:
            continue
        rest = scan[m.end() : m.end() + 80]
        unit, end, currency, token_kind, period = "", m.end(), None, None, None
        for kind, pattern in _UNIT_RULES:
            u = pattern.match(rest)
            if u is not None:
                unit, end = kind, m.end() + u.end()
                period = _PERIOD_WORDS.get((u.groupdict().get("padj") or "").lower())
                if kind == "currency":
                    currency = "EUR" if (u["sym"] or u["cur"].lower().startswith("eur")) else "USD"
                elif kind == "tokens":
                    token_kind = _token_kind(u["kind"])
                break
        if unit == "" and rest[:1].isalpha():
            continue  # "5xx", "3rd", "2FA": not a quantity
        start = m.start()
        before = _CURRENCY_BEFORE.search(scan, max(0, start - 5), start)
        if before is not None and unit in ("", "currency"):
            start = before.start()
            sym = (before["sym"] or before["code"] or "").lower()
            currency = "EUR" if sym in ("€", "eur") else "USD"
            unit = "currency"
        if unit == "ignore":
            continue
        found.append(_Raw(start, end, value, unit, currency, token_kind, period))
    return found


def _token_kind(word: str | None) -> str | None:
    if not word:
        return None
    word = word.lower()
    if word in ("input", "prompt"):
        return "input"
    if word in ("output", "completion", "generated") or word.startswith("response"):
        return "output"
    return "total"


def _metric_unit(raw: _Raw) -> tuple[float, str]:
    """A figure's value and unit as reported (durations in ms)."""
    if raw.unit == "s":
        return _clean(raw.value * 1000.0), "ms"
    if raw.unit == "min":
        return _clean(raw.value * 60_000.0), "ms"
    if raw.unit == "percent":
        return raw.value, "%"
    if raw.unit == "tps":
        return raw.value, "tokens/s"
    return raw.value, raw.unit  # "ms", "rps", "tokens", "requests", "currency"
