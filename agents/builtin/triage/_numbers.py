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
    "quarter": "quarter",
    "quarterly": "quarter",
}
_PERIOD_UNIT = (
    r"(?:(?:gpu|node)[-\s]?)?"
    r"(?P<unit>second|sec|minute|min|hour|hr|h|day|d|night|week|wk|month|mo|quarter|year|yr|annum)s?"
)
# A period right after a figure, possibly after up to three words ("$5k on it per month").
_PERIOD_AFTER = re.compile(
    r"\A(?:\s+(?:of|on|in|for|across|with|through|the|our|all|it|them|us|back|out|[a-z]+ing|"
    r"[a-z]+ed))"
    r"{0,3}?\s*(?:(?:/\s?|\bper\s|\ba\s|\ban\s|\beach\s|\bevery\s|\bin\sa\s|\blast\s|\bthis\s)"
    + _PERIOD_UNIT
    + r"\b|\b(?P<adj>monthly|daily|nightly|hourly|weekly|quarterly|yearly|annually)\b)",
    _I,
)
# A period word earlier in the same stretch ("monthly spend is $5k", "per day we send 2M").
_PERIOD_BEFORE = re.compile(
    r"\b(?:(?P<adj>monthly|daily|nightly|hourly|weekly|quarterly|yearly|annual(?:ly)?)"
    r"|(?:per|a|an|each|every|this|last|past)\s(?P<unit>month|day|hour|week|quarter|year))\b",
    _I,
)


def _period(m: re.Match[str] | None) -> str | None:
    if m is None:
        return None
    word = (m["adj"] or m["unit"] or "").lower()
    return _PERIOD_WORDS.get(word)


#: GPU models people name ("4 H100s", "2 x A100").
GPU_TYPES = r"h100|h200|a100|a10g?|l40s?|l4|t4|v100|mi300x?|rtx\s?\d{4}"
# Units right after a number (and its scale); the first that matches wins.
_UNIT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(r"\A(?:\s|-(?=tokens?\b|toks?\b))?(?:" + pattern + ")", _I))
    for kind, pattern in (
        (
            "currency",
            r"(?P<cur>usd|us dollars|dollars|bucks|eur|euros?|gbp|pounds?(?:\ssterling)?)\b"
            r"|(?P<sym>[€£$])",
        ),
        (
            "rps",
            r"(?:rps|qps|req/s|reqs/s|requests?/s(?:ec)?|"
            r"(?:requests?|queries|calls)\s(?:per|a|/)\s?(?:second|sec|s))\b",
        ),
        ("tps", r"(?:tokens?/s(?:ec)?|toks?/s|tps|tokens?\s(?:per|a)\s(?:second|sec))\b"),
        ("rpm", r"(?:rpm|(?:requests?|queries|calls)\s?(?:per|a|/)\s?(?:minute|min))\b"),
        ("ms", r"(?:ms|msecs?|millis(?:econds?)?|milliseconds?)\b"),
        ("hours_per_day", r"(?:hours?|hrs?|h)\s(?:a|per|each|every)\sday\b"),
        ("s", r"(?:s|secs?|seconds?)\b"),
        ("min", r"(?:mins?|minutes?)\b"),
        ("percent", r"(?:%|percent\b|pct\b)"),
        (
            "tokens",
            r"(?:(?P<padj>daily|monthly|weekly|hourly|nightly)\s)?"
            r"(?:(?P<kind>input|prompt|output|completion|generated|total|in|out)\s)?"
            r"(?:tokens?|toks?)\b"
            # "12k tokens in", "800 tokens of review out per PR"
            r"(?:\s(?:of\s[a-z]+\s)?(?P<after>in|out)\b"
            r"(?=\s*(?:and\b|&|\+|,|/|;|\.|\)|$|each\b|per\b)))?",
        ),
        ("tokens", r"(?P<kind>input|prompt|output|completion)\b(?=[^.;!?\n]{0,60}\btokens?\b)"),
        ("tokens", r"(?P<kind>in|out)\b(?=\s*(?:and\b|&|\+|,|/|;|\.|\)|$|each\b|per\b))"),
        (
            "requests",
            r"(?:(?P<padj>daily|monthly|weekly|hourly|nightly)\s)?(?:active\s)?"
            r"(?:(?:api|llm|model|chat|user|support)\s)?(?:requests?|reqs?|calls|queries|"
            r"conversations|chats|chat\sturns|messages|completions|inferences|invocations|"
            r"generations|documents|docs|tickets|pdfs|prompts|classifications|sessions|emails|"
            r"questions|searches|jobs|transcripts|articles|files|images|prs|pull\srequests|"
            r"merge\srequests|commits)\b"
            # "80,000 product descriptions", "5k customer reviews": things processed one by one
            r"|(?:[a-z]+[\s-])?(?:descriptions|summaries|translations|reviews|records|pages|"
            r"orders|posts|comments|listings|invoices|contracts|receipts|reports|abstracts)\b"
            r"|times\b(?=\s(?:a|per|each|every)\s(?:second|minute|hour|day|week|month|year)\b)",
        ),
        (
            "gpus",
            rf"(?:x\s?)?(?:(?P<gpu>{GPU_TYPES})s?(?:\s(?:gpus?|cards?))?|gpus?|graphics\scards?)\b",
        ),
        (
            "ignore",
            r"(?:x|times|hours?|hrs?|days?|weeks?|months?|years?|users?|people|"
            r"engineers|cores?|nodes?|replicas?|steps?|chunks?|instances?)\b",
        ),
    )
)
_CURRENCY_BEFORE = re.compile(r"(?:(?P<sym>us\$|\$|€|£)\s?|\b(?P<code>usd|eur|gbp)\s?)\Z", _I)
#: Numbers examined in one text at most (a request has a dozen or two at most).
MAX_NUMBERS = 40


def currency_of(word: str) -> str:
    """``USD``, ``EUR`` or ``GBP`` for a symbol or a word as written."""
    word = word.lower()
    if word.startswith(("€", "eur")):
        return "EUR"
    if word.startswith(("£", "gbp", "pound")):
        return "GBP"
    return "USD"


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
    gpu: str | None = None  # the GPU model of a "gpus" figure ("h100")
    currency_assumed: bool = False  # money written without a currency ("18k a month")


def _raw_numbers(scan: str, limit: int = MAX_NUMBERS) -> tuple[list[_Raw], int]:
    """The first ``limit`` numbers of ``scan`` with their units; and how many more there are."""
    found: list[_Raw] = []
    more = 0
    for m in _AMOUNT.finditer(scan):
        if len(found) >= limit:
            more += 1
            if more >= limit:  # counting the rest is work too: stop at a bound
                break
            continue
        value = _amount_value(m)
        if value is None:
            continue
        rest = scan[m.end() : m.end() + 80]
        unit, end, currency, token_kind, period = "", m.end(), None, None, None
        gpu: str | None = None
        for kind, pattern in _UNIT_RULES:
            u = pattern.match(rest)
            if u is not None:
                unit, end = kind, m.end() + u.end()
                groups = u.groupdict()
                period = _PERIOD_WORDS.get((groups.get("padj") or "").lower())
                if kind == "currency":
                    currency = currency_of(u["sym"] or u["cur"])
                elif kind == "tokens":
                    token_kind = _token_kind(groups.get("kind") or groups.get("after"))
                elif kind == "gpus":
                    gpu = (u["gpu"] or "").lower().replace(" ", "") or None
                break
        if unit == "" and rest[:1].isalpha():
            continue  # "5xx", "3rd", "2FA": not a quantity
        start = m.start()
        before = _CURRENCY_BEFORE.search(scan, max(0, start - 6), start)
        if before is not None and unit in ("", "currency"):
            start = before.start()
            currency = currency_of(before["sym"] or before["code"] or "")
            unit = "currency"
        if unit == "ignore":
            continue
        found.append(_Raw(start, end, value, unit, currency, token_kind, period, gpu))
    return found, more


def _token_kind(word: str | None) -> str | None:
    if not word:
        return None
    word = word.lower()
    if word in ("input", "prompt", "in"):
        return "input"
    if word in ("output", "completion", "generated", "out") or word.startswith("response"):
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
