"""Triage: classify a request and pull out its figures, without any network.

:func:`classify` is pure and deterministic; :class:`TriageAgent` wraps it with
events and gets the entities through the ``extract_entities`` tool (the
module-level :func:`extract_entities`).

Result (``TriageResult.as_dict()``, the ``result`` of triage's ``agent_completed``)
----------------------------------------------------------------------------------
``category`` (``cost_optimization``, ``latency_optimization``, ``model_selection``,
``monitoring``, ``quality`` or ``general``), ``sub_category`` (snake_case, e.g.
``model_switch``, ``caching``, ``tail_latency``, ``alerting``, ``unclear``),
``priority``, ``complexity``, ``intent`` (one per category: ``reduce_cost``,
``reduce_latency``, ``choose_model``, ``set_up_monitoring``, ``improve_quality``,
``ask_question`` for ``general``), ``confidence`` in [0, 1], ``data_sufficiency``,
``missing_data`` and ``entities``.

Category: whole-word keywords score points per category (1 to 3 each, e.g.
"which model" 3, "cost" 2, "price" 1), and the figures found add to it (money:
cost; a latency: latency; a threshold: monitoring; two models: model
selection; ...). The highest score wins, ties go to the earlier category in
the list above; no point at all is ``general``. Confidence grows with the
winning score and its margin over the runner-up (0.2 for ``general``).

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

Sufficiency rule
----------------
A *figure* is a model or any number the entities hold (money, metric,
volume, threshold, target). No figure at all: ``insufficient``. Otherwise
``sufficient`` when the category's needs are met, else ``partial``, with
``missing_data`` naming each unmet need (empty exactly when sufficient):

* cost: a model or a price ("current model") AND a volume: tokens, a spend,
  or requests (a request volume or rps) with tokens per request; a cost per
  request with a request volume also does ("monthly token volume").
* latency: a latency or throughput figure ("latency percentiles") AND a model
  or a target ("current model", "latency target").
* model selection: a workload (tokens, requests or a spend) ("monthly token
  volume") AND a model or a target ("current model").
* monitoring: a threshold or a target ("alert thresholds").
* quality: a model ("current model") AND a quality figure: accuracy, an eval
  score, a hallucination, error or success rate, or a target ("quality measure").
* general: never sufficient ("goal").

Priority: words ("outage", "is down": critical; "urgent", "asap": high; "no
rush", "curious": low; "not urgent" is low), else medium. Complexity: high with
signals of 3+ categories, 3+ models or 6+ figures; low with at most one
category and 2 figures; medium otherwise.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from .._base import BaseAgent

CATEGORIES = (
    "cost_optimization",
    "latency_optimization",
    "model_selection",
    "monitoring",
    "quality",
    "general",
)
PRIORITIES = ("critical", "high", "medium", "low")
COMPLEXITIES = ("low", "medium", "high")
SUFFICIENCY = ("sufficient", "partial", "insufficient")
INTENTS: Mapping[str, str] = {
    "cost_optimization": "reduce_cost",
    "latency_optimization": "reduce_latency",
    "model_selection": "choose_model",
    "monitoring": "set_up_monitoring",
    "quality": "improve_quality",
    "general": "ask_question",
}
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

# -- keywords ---------------------------------------------------------------------------

# (word, weight) per category, matched as whole words on the lower-cased text.
_CATEGORIES: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = (
    (
        "cost_optimization",
        (
            *((w, 2) for w in ("cost", "costs", "costly", "spend", "spending", "spent")),
            *((w, 2) for w in ("bill", "billing", "invoice", "budget", "expensive")),
            *((w, 2) for w in ("overspending", "save money", "cheaper", "cheapest", "save")),
            *((w, 2) for w in ("saving", "savings", "prompt caching")),
            *((w, 1) for w in ("price", "prices", "pricing", "caching", "cache", "cached")),
            *((w, 1) for w in ("cheap", "money", "afford", "pay", "paying", "token usage")),
        ),
    ),
    (
        "latency_optimization",
        (
            *((w, 2) for w in ("latency", "latencies", "slow", "slower", "sluggish")),
            *((w, 2) for w in ("response time", "response times", "ttft", "faster")),
            *((w, 2) for w in ("time to first token", "tail latency", "speed up")),
            *((w, 1) for w in ("fast", "speed", "p50", "p90", "p95", "p99", "lag", "laggy")),
            *((w, 1) for w in ("timeout", "timeouts", "throughput", "rps", "qps")),
            *((w, 1) for w in ("concurrency", "rate limit", "rate limits", "takes too long")),
        ),
    ),
    (
        "model_selection",
        (
            *((w, 3) for w in ("which model", "what model", "best model", "right model")),
            *((w, 3) for w in ("which llm", "what llm", "best llm", "which provider")),
            *((w, 2) for w in ("choose", "choosing", "pick", "compare", "comparison")),
            *((w, 2) for w in ("vs", "versus", "alternatives", "pick between")),
            *((w, 1) for w in ("switch", "switching", "migrate", "migration", "alternative")),
            *((w, 1) for w in ("upgrade", "replace", "open source", "open-source", "self-host")),
            *((w, 1) for w in ("self-hosted", "self-hosting", "open-weight", "recommend")),
        ),
    ),
    (
        "monitoring",
        (
            *((w, 3) for w in ("monitor", "monitoring", "alert", "alerts", "alerting")),
            *((w, 3) for w in ("observability", "dashboard", "dashboards", "alarm", "alarms")),
            *((w, 2) for w in ("on-call", "slo", "slos", "trace", "traces", "tracing", "paged")),
            *((w, 1) for w in ("metric", "metrics", "track", "tracking", "log", "logs")),
            *((w, 1) for w in ("logging", "uptime", "incident", "incidents", "notify")),
            *((w, 1) for w in ("anomaly", "anomalies", "error rate", "visibility", "sla")),
        ),
    ),
    (
        "quality",
        (
            *((w, 2) for w in ("quality", "hallucination", "hallucinations", "hallucinate")),
            *((w, 2) for w in ("hallucinates", "hallucinating", "accuracy", "inaccurate")),
            *((w, 2) for w in ("eval", "evals", "evaluation", "wrong answers", "correctness")),
            *((w, 2) for w in ("made up", "makes up", "making up")),
            *((w, 1) for w in ("accurate", "evaluate", "benchmark", "relevance", "relevant")),
            *((w, 1) for w in ("grounded", "grounding", "ground truth", "regression", "judge")),
            *((w, 1) for w in ("test set", "golden set", "fine-tune", "fine-tuning", "rag")),
            *((w, 1) for w in ("wrong", "worse", "answers")),
        ),
    ),
)

# Checked in order; the first level with a match wins (negations first).
_PRIORITY_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("low", ("not urgent", "not critical", "non-critical", "no rush", "no hurry")),
    (
        "critical",
        (
            "outage",
            "is down",
            "are down",
            "went down",
            "was down",
            "emergency",
            "critical",
            "sev1",
            "sev-1",
            "sev 1",
            "production incident",
            "completely broken",
        ),
    ),
    (
        "high",
        (
            "urgent",
            "urgently",
            "asap",
            "as soon as possible",
            "immediately",
            "right away",
            "blocking",
            "blocker",
            "high priority",
            "by tomorrow",
            "by end of day",
            "by eod",
        ),
    ),
    (
        "low",
        (
            "when you can",
            "when you get a chance",
            "curious",
            "someday",
            "low priority",
            "just wondering",
            "eventually",
            "nice to have",
        ),
    ),
)


def _keyword(word: str) -> re.Pattern[str]:
    # Whole words only ("down" must not match "download"); symbols match as they are.
    escaped = re.escape(word)
    if word[0].isalnum():
        escaped = r"\b" + escaped
    if word[-1].isalnum():
        escaped += r"\b"
    return re.compile(escaped)


_CATEGORY_PATTERNS = tuple(
    (category, tuple((w, weight, _keyword(w)) for w, weight in words))
    for category, words in _CATEGORIES
)
_PRIORITY_PATTERNS = tuple(
    (level, tuple(_keyword(w) for w in words)) for level, words in _PRIORITY_WORDS
)

# Sub-categories: per category, the first rule whose pattern occurs wins.
_SUB_RULES: Mapping[str, tuple[tuple[str, str], ...]] = {
    "cost_optimization": (
        ("caching", r"\bcach(?:e|es|ed|ing)\b"),
        ("batching", r"\bbatch(?:es|ed|ing)?\b"),
        ("model_switch", r"\b(?:switch\w*|migrat\w*|cheaper model|smaller model|downgrade)\b"),
        ("prompt_size", r"\b(?:prompts?|context (?:length|window|size)|tokens per request)\b"),
        ("budget", r"\b(?:budget\w*|forecast\w*|projection)\b"),
    ),
    "latency_optimization": (
        ("time_to_first_token", r"\b(?:ttft|first token|streaming|stream)\b"),
        ("throughput", r"\b(?:throughput|rps|qps|concurrency|rate limits?|per second)\b"),
        ("tail_latency", r"\b(?:p9[059]|p99\.9|tail|spikes?|outliers?)\b"),
        ("timeouts", r"\btime-?outs?\b"),
    ),
    "model_selection": (
        (
            "self_hosting",
            r"\b(?:self-host\w*|self host\w*|on-prem\w*|open[- ]source|open[- ]weights?)\b",
        ),
        ("model_switch", r"\b(?:switch\w*|migrat\w*|move to|moving to|replace)\b"),
        ("model_comparison", r"\b(?:compar\w*|vs|versus|benchmark\w*)\b"),
    ),
    "monitoring": (
        ("alerting", r"\b(?:alert\w*|alarms?|pag(?:e|ed|ing)|notify|thresholds?|on-call)\b"),
        ("dashboards", r"\bdashboards?\b"),
        ("tracing", r"\b(?:trac(?:e|es|ing)|log|logging|logs|observability)\b"),
        ("cost_tracking", r"\b(?:costs?|spend\w*|budget|bill\w*|token usage)\b"),
    ),
    "quality": (
        ("hallucination", r"\bhallucinat\w*|\bmak(?:es|ing) (?:things )?up\b|\bmade up\b"),
        ("evaluation", r"\b(?:evals?|evaluat\w*|benchmark\w*|test set|golden set|judge)\b"),
        ("regression", r"\b(?:regress\w*|worse|degrad\w*)\b"),
    ),
}
_SUB_DEFAULTS: Mapping[str, str] = {
    "cost_optimization": "spend_reduction",
    "latency_optimization": "response_time",
    "model_selection": "model_choice",
    "monitoring": "metrics",
    "quality": "answer_quality",
    "general": "unclear",
}
_SUB_PATTERNS = {
    category: tuple((name, re.compile(pattern)) for name, pattern in rules)
    for category, rules in _SUB_RULES.items()
}

# -- models -----------------------------------------------------------------------------

_I = re.IGNORECASE
# Date stamps and tags after a model name ("-2024-08-06", "-20241022", "-latest").
_TAIL = r"(?:-(?:[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8}|[0-9]{4}|[0-9]{3}|latest|preview|exp))?"
_V = r"[0-9](?:[.-][0-9](?![0-9]))?"  # "3", "3.5", "3-5" (not the "2" of "-2024")


def _version(text: str) -> tuple[str, str]:
    major, _, minor = text.replace("-", ".").partition(".")
    return major, minor


def _gpt(m: re.Match[str]) -> str | None:
    version = m["ver"].replace("35", "3.5")
    if version == "3.5":
        return "gpt-3.5-turbo"
    base = f"gpt-{version}" + ("o" if m["o"] else "")
    return f"{base}-{m['var'].lower()}" if m["var"] else base


def _four_o(m: re.Match[str]) -> str | None:
    return "gpt-4o-mini" if m["var"] else "gpt-4o"


def _o_series(m: re.Match[str]) -> str | None:
    return f"o{m['n']}" + (f"-{m['var'].lower()}" if m["var"] else "")


def _claude(m: re.Match[str]) -> str | None:
    variant = (m["var"] or "").lower()
    if m["v"] is None:
        return None
    major, minor = _version(m["v"])
    minor = "" if minor == "0" else minor
    dotted = f"{major}-{minor}" if minor else major
    if not variant:
        return f"claude-{dotted}" if int(major) <= 2 else None
    if int(major) >= 4:
        return f"claude-{variant}-{dotted}"
    return f"claude-{dotted}-{variant}"


def _gemini(m: re.Match[str]) -> str | None:
    if m["v"] is None or m["var"] is None:
        return None
    version = m["v"] if "." in m["v"] or m["v"] not in ("1", "2") else m["v"] + ".0"
    variant = re.sub(r"[-\s]+", "-", m["var"].lower())
    return f"gemini-{version}-{variant}"


def _llama(m: re.Match[str]) -> str | None:
    if m["v"] is None or (m["size"] is None and m["var"] is None):
        return None
    tail = f"{int(m['size'])}b" if m["size"] else m["var"].lower()
    return f"llama-{m['v']}-{tail}"


def _named(group: str, prefix: str = "") -> Callable[[re.Match[str]], str | None]:
    def build(m: re.Match[str]) -> str | None:
        value = m[group]
        if value is None:
            return None
        return prefix + re.sub(r"[-\s]+", "-", value.lower()).replace("+", "-plus")

    return build


def _none(m: re.Match[str]) -> str | None:
    return None


# (pattern, provider, id builder). A builder returning None names the provider only.
_MODEL_RULES: tuple[tuple[re.Pattern[str], str, Callable[[re.Match[str]], str | None]], ...] = (
    (
        re.compile(
            r"\b(?:chat)?gpt[-\s]?(?P<ver>[0-9](?:\.[0-9])?|35)(?![0-9])(?:-?(?P<o>o))?"
            r"(?:[-\s]?(?P<var>mini|nano|turbo))?(?![\w])" + _TAIL,
            _I,
        ),
        "openai",
        _gpt,
    ),
    (re.compile(r"\b4o(?:[-\s]?(?P<var>mini))?\b", _I), "openai", _four_o),
    (
        re.compile(r"\bo(?P<n>[1345])(?:[-\s]?(?P<var>mini|pro))?\b" + _TAIL, _I),
        "openai",
        _o_series,
    ),
    (re.compile(r"\b(?:chatgpt|gpts?)\b", _I), "openai", _none),
    (
        re.compile(
            rf"\bclaude[-\s]?(?P<v>{_V})(?:[-\s]?(?P<var>opus|sonnet|haiku))?\b" + _TAIL, _I
        ),
        "anthropic",
        _claude,
    ),
    (
        re.compile(
            rf"\bclaude[-\s]?(?P<var>opus|sonnet|haiku)(?:[-\s]?(?P<v>{_V}))?\b" + _TAIL, _I
        ),
        "anthropic",
        _claude,
    ),
    (
        re.compile(r"\b(?P<var>opus|sonnet|haiku)[-\s]?(?P<v>[0-9](?:\.[0-9])?)(?![0-9.])\b", _I),
        "anthropic",
        _claude,
    ),
    (
        re.compile(r"(?<![\w.])(?P<v>[0-9](?:\.[0-9])?)[-\s](?P<var>opus|sonnet|haiku)\b", _I),
        "anthropic",
        _claude,
    ),
    (re.compile(r"\b(?:claude|sonnet|haiku|opus)\b", _I), "anthropic", _none),
    (
        re.compile(
            r"\bgemini(?:[-\s]?(?P<v>[0-9](?:\.[0-9])?)(?![0-9]))?"
            r"(?:[-\s]?(?P<var>pro|flash[-\s]?lite|flash|ultra|nano))?\b" + _TAIL,
            _I,
        ),
        "google",
        _gemini,
    ),
    (
        re.compile(
            r"\bgemini[-\s](?P<var>pro|flash[-\s]?lite|flash|ultra)[-\s](?P<v>[0-9]\.[0-9])\b"
            + _TAIL,
            _I,
        ),
        "google",
        _gemini,
    ),
    (
        re.compile(
            r"\b(?:meta[-\s]?)?llama(?:[-\s]?(?P<v>[0-9](?:\.[0-9])?)(?![0-9]))?"
            r"(?:[-\s:](?P<size>[0-9]{1,3})\s?b\b|[-\s](?P<var>scout|maverick))?"
            r"(?:[-\s](?:instruct|chat|versatile|it))?(?:-turbo)?\b",
            _I,
        ),
        "meta",
        _llama,
    ),
    (
        re.compile(
            r"\bmistral[-\s](?P<var>large|medium|small|tiny|nemo|saba)"
            r"(?:[-\s]?(?:latest|[0-9]+(?:\.[0-9]+)?)(?![\w.]))?",
            _I,
        ),
        "mistral",
        _named("var", "mistral-"),
    ),
    (re.compile(r"\bmistral[-\s]?(?P<var>7b)\b", _I), "mistral", _named("var", "mistral-")),
    (
        re.compile(r"\bmixtral(?:[-\s](?P<var>8x7b|8x22b))?\b", _I),
        "mistral",
        _named("var", "mixtral-"),
    ),
    (
        re.compile(r"\b(?P<name>codestral|ministral[-\s]?(?:3b|8b)|pixtral(?:[-\s]large)?)\b", _I),
        "mistral",
        _named("name"),
    ),
    (re.compile(r"\bmistral\b", _I), "mistral", _none),
    (
        re.compile(r"\bdeepseek(?:[-\s](?P<v>v[0-9](?:\.[0-9])?|r1|coder|chat))?\b", _I),
        "deepseek",
        _named("v", "deepseek-"),
    ),
    (
        re.compile(r"\b(?P<name>command[-\s]r(?:\+|[-\s]plus)?)(?![\w+])", _I),
        "cohere",
        _named("name"),
    ),
)

_PROVIDER_WORDS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, _I), provider)
    for pattern, provider in (
        (r"\bopen\s?ai\b", "openai"),
        (r"\banthropic\b", "anthropic"),
        (r"\b(?:google|vertex(?:\s?ai)?)\b", "google"),
        (r"\bmeta\b", "meta"),
        (r"\bcohere\b", "cohere"),
        (r"\bazure\b", "azure"),
        (r"\b(?:aws|bedrock|amazon)\b", "aws"),
        (r"\bgroq\b", "groq"),
        (r"\btogether(?:\.ai|\s?ai)\b", "together"),
        (r"\bfireworks(?:\.ai|\s?ai)?\b", "fireworks"),
        (r"\bhugging\s?face\b", "huggingface"),
    )
)


@attrs.frozen
class _ModelMention:
    start: int
    end: int
    model: str | None
    provider: str


def _model_mentions(text: str) -> list[_ModelMention]:
    """Non-overlapping model mentions, leftmost-longest first."""
    found = [
        _ModelMention(m.start(), m.end(), build(m), provider)
        for pattern, provider, build in _MODEL_RULES
        for m in pattern.finditer(text)
        if m.end() > m.start()
    ]
    found.sort(key=lambda f: (f.start, -(f.end - f.start), f.model is None))
    kept: list[_ModelMention] = []
    for mention in found:
        if not kept or mention.start >= kept[-1].end:
            kept.append(mention)
    return kept


def normalise_model(name: str) -> str | None:
    """The catalogue id ``name`` stands for, if the whole of ``name`` is one model name."""
    text = name.strip()
    mentions = _model_mentions(text)
    if len(mentions) == 1 and (mentions[0].start, mentions[0].end) == (0, len(text)):
        return mentions[0].model
    return None


# -- numbers ----------------------------------------------------------------------------

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
_COST_WORDS = re.compile(r"\bcosts?\b|\bspend\w*|\bbill\w*|\binvoice\b|\bbudget\b", _I)
_PHRASE_END = re.compile(r",|\b(?:and|but|while|whereas)\b", _I)
_CONTEXT_AFTER = re.compile(r"\A\s?(?:tokens?\s)?(?:context|ctx)\b", _I)
_CONTEXT_BEFORE = re.compile(r"\b(?:context|window)\b", _I)
_TOKEN_CUE = re.compile(r"\btokens?\b", _I)
_REQUEST_CUE = re.compile(r"\b(?:requests?|calls|queries|conversations)\b", _I)
_KIND_WORDS = re.compile(
    r"\b(?P<input>input|prompt)|(?P<output>output|completion|generated|responses?)\b", _I
)

# -- roles: thresholds and targets -------------------------------------------------------

_FILLER = re.compile(
    r"(?:\b(?:about|around|approximately|approx|roughly|nearly|almost|some|only|just)\b\.?"
    r"|~|≈)\s*\Z",
    _I,
)
_ABOVE = re.compile(
    r"(?:\b(?:above|over|exceeds?|exceeding|exceeded|more\sthan|greater\sthan|higher\sthan|"
    r"past|beyond|crosses|passes|hits|reaches|tops)|[>≥]=?)\s*\Z",
    _I,
)
_BELOW = re.compile(
    r"(?:\b(?:below|under|less\sthan|lower\sthan|fewer\sthan|at\smost|no\smore\sthan|"
    r"not\smore\sthan|max(?:imum)?(?:\sof)?|within|sub)|[<≤]=?)\s*\Z",
    _I,
)
_AT_LEAST = re.compile(r"\b(?:at\sleast|minimum(?:\sof)?|no\sless\sthan)\s*\Z", _I)
_AT = re.compile(r"(?:\b(?:at|of)|[=:])\s*\Z", _I)
_STATE = re.compile(
    r"\b(?:is|are|was|were|currently|already|sits?|runs?|running|averages?|hovers?|been)"
    r"(?:\s(?:at|still|now|usually|typically))?\s*\Z",
    _I,
)
_ALERT = re.compile(
    r"\b(?:alerts?|alerting|alarms?|page|paged|paging|pager|notify|notified|notifications?|"
    r"warn|warning|trigger|triggers|thresholds?|escalate|let\sus\sknow|tell\sus|ping\sus)\b",
    _I,
)
_GOAL_WORDS = re.compile(
    r"\b(?:need|needs|want|wants|must|should|require|requires|required|target|goal|aim|"
    r"keep|achieve|reach|hit|support|sustain|handle|guarantee)\b",
    _I,
)
_GOAL_PHRASE = re.compile(
    r"\b(?:target(?:ed|ing)?|goal|slo|sla|objective|aim(?:ing)?\sfor)\b[^;!?]{0,30}\Z", _I
)
_DOWN_VERBS = re.compile(
    r"\b(?:reduce|reducing|reduced|cut|cutting|lower|lowering|bring|bringing|get|getting|"
    r"drop|decrease|decreasing|trim|trimming|shrink|slash|halve|minimi[sz]e|save|saving|"
    r"optimi[sz]e|shave|speed\sup)\b",
    _I,
)
_UP_VERBS = re.compile(
    r"\b(?:increase|increasing|raise|raising|improve|improving|boost|boosting|push|scale|"
    r"grow|lift)\b",
    _I,
)
_NEED = re.compile(r"\b(?:need|needs|want|wants|require|requires|expect|expects)\s*(?:an?)?\Z", _I)
_MEASURES = frozenset({"ms", "s", "min", "percent", "rps", "tps"})
_BY = re.compile(r"\bby\s*\Z", _I)
_TO = re.compile(r"(?<!\bup\s)\bto\s*\Z", _I)
_DIRECT_SAVE = re.compile(r"\b(?:save|saving|cut|reduce|shave|slash|trim)\s*\Z", _I)

# Subjects a figure can be about: (name, pattern, family). Nearest mention wins.
_SUBJECTS: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (name, re.compile(pattern, _I), family)
    for name, pattern, family in (
        ("p50_latency", r"\bp50\b|\bmedian\b|\b50th\b", "latency"),
        ("p90_latency", r"\bp90\b|\b90th\b", "latency"),
        ("p95_latency", r"\bp95\b|\b95th\b", "latency"),
        ("p99_latency", r"\bp99\b|\b99th\b", "latency"),
        ("ttft", r"\bttft\b|\btime\sto\sfirst\stoken\b|\bfirst[-\s]token\b", "latency"),
        ("avg_latency", r"\baverag\w*|\bavg\b|\bmean\b", "latency"),
        ("timeout", r"\btime[-\s]?outs?\b|\btim(?:e|es|ing)\sout\b", "latency"),
        (
            "latency",
            r"\blatenc(?:y|ies)\b|\bresponse\stimes?\b|\btakes?\b|\btaking\b"
            r"|\bround[-\s]trip\b|\bslow\w*|\bfast\w*|\bspeed\b",
            "generic_latency",
        ),
        ("error_rate", r"\berrors?\b|\berror\srate\b|\bfail\w*|\b5xx\b", "rate"),
        ("cache_hit_rate", r"\bcach\w*|\bhit\srate\b", "rate"),
        ("hallucination_rate", r"\bhallucinat\w*", "rate"),
        ("accuracy", r"\baccura\w*|\bcorrect\w*", "rate"),
        ("eval_score", r"\bscor(?:e|es|ed|ing)\b|\bpass\s?rate\b|\bwin\s?rate\b", "rate"),
        ("success_rate", r"\bsuccess\w*|\bsucceed\w*", "rate"),
        ("availability", r"\buptime\b|\bavailab\w*", "rate"),
        ("utilization", r"\butili[sz]ation\b|\bgpus?\b", "rate"),
        (
            "cost",
            r"\bcosts?\b|\bspend\w*|\bbill\w*|\binvoice\w*|\bprices?\b|\bbudget\b"
            r"|\bexpens\w*",
            "other",
        ),
        ("tokens", r"\btokens?\b|\btoken\susage\b|\bprompt\ssize\b", "other"),
        ("requests", r"\brequests?\b|\btraffic\b|\bvolume\b|\bcalls\b", "other"),
        ("throughput", r"\bthroughput\b", "other"),
    )
)
_QUALITY_RATES = {"accuracy", "hallucination_rate", "error_rate", "success_rate", "eval_score"}

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


def _mask(text: str, spans: Iterable[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _period(m: re.Match[str] | None) -> str | None:
    if m is None:
        return None
    word = (m["adj"] or m["unit"] or "").lower()
    return _PERIOD_WORDS.get(word)


@attrs.frozen
class _Around:
    """The text around a figure, where its subject is looked for."""

    segment: str  # since the previous figure, within the clause
    clause: str  # from the start of the clause (at most _WINDOW characters)
    after: str  # up to the next figure or the end of the clause (at most _AHEAD)


_Accept = Callable[[str, str], bool]


def _closest_before(text: str, accept: _Accept) -> str | None:
    best: tuple[int, str] | None = None
    for name, pattern, family in _SUBJECTS:
        if accept(name, family):
            for m in pattern.finditer(text):
                if best is None or m.end() > best[0]:
                    best = (m.end(), name)
    return best[1] if best is not None else None


def _soonest_after(text: str, accept: _Accept) -> str | None:
    best: tuple[int, str] | None = None
    for name, pattern, family in _SUBJECTS:
        hit = pattern.search(text) if accept(name, family) else None
        if hit is not None and (best is None or hit.start() < best[0]):
            best = (hit.start(), name)
    return best[1] if best is not None else None


def _specific(name: str, family: str) -> bool:
    return family == "latency"


def _generic(name: str, family: str) -> bool:
    return name == "latency"


def _rate(name: str, family: str) -> bool:
    return family == "rate" or name == "timeout"  # "3% of requests time out"


def _any(name: str, family: str) -> bool:
    return True


def _latency_name(around: _Around) -> str:
    """``p95_latency`` etc. when a percentile is named near the figure, else ``latency``."""
    return (
        _closest_before(around.segment, _specific)
        or _soonest_after(around.after, _specific)
        or _closest_before(around.segment, _generic)
        or _closest_before(around.clause, _specific)
        or "latency"
    )


def _not_requests(name: str, family: str) -> bool:
    return name != "requests"  # "3% of requests time out": the verb says what


def _percent_subject(around: _Around) -> str | None:
    name = (
        _closest_before(around.segment, _not_requests)
        or _soonest_after(around.after, _rate)
        or _soonest_after(around.after, _not_requests)
        or _closest_before(around.clause, _rate)
        or _closest_before(around.clause, _not_requests)
        or _closest_before(around.segment, _any)
    )
    return "timeout_rate" if name == "timeout" else name


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


def _kind_before(segment: str) -> str | None:
    last: re.Match[str] | None = None
    for m in _KIND_WORDS.finditer(segment):
        last = m
    if last is None:
        return None
    return "input" if last["input"] else "output"


def _role(clause: str, segment: str, *, measure: bool = False) -> str | None:
    """``"threshold"``, ``"target"``, ``"reduction"``, ``"increase"`` or None (a plain figure).

    ``measure``: the figure is a latency, rate or throughput, so "we need 99.9%"
    is a target (while "we need 2M tokens a day" is a workload).
    """
    tail = _FILLER.sub("", segment.rstrip()).rstrip()
    above = _ABOVE.search(tail)
    below = _BELOW.search(tail)
    at_least = _AT_LEAST.search(tail)
    comparator = above or below or at_least
    if _ALERT.search(clause) and (comparator is not None or _AT.search(tail)):
        return "threshold"
    if _BY.search(tail):
        if _DOWN_VERBS.search(clause):
            return "reduction"
        if _UP_VERBS.search(clause):
            return "increase"
    if _DIRECT_SAVE.search(tail):
        return "reduction"
    if _TO.search(tail) and (
        _DOWN_VERBS.search(clause) or _UP_VERBS.search(clause) or _GOAL_WORDS.search(segment)
    ):
        return "target"
    if below is not None:
        return None if _STATE.search(tail[: below.start()].rstrip() + " ") else "target"
    if at_least is not None or (above is not None and _GOAL_WORDS.search(segment)):
        return "target"
    if _GOAL_PHRASE.search(segment) or (measure and _NEED.search(tail)):
        return "target"
    return None


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


def _base_name(raw: _Raw, around: _Around) -> str | None:
    """What ``raw`` measures, from its unit and the words around it (None: unknown)."""
    if raw.unit == "currency":
        return "cost"
    if raw.unit in ("rps", "tps"):
        return "throughput"
    if raw.unit == "tokens":
        return "tokens"
    if raw.unit in ("requests", "rpm"):
        return "requests"
    if raw.unit in ("ms", "s", "min"):
        return _latency_name(around)
    return _percent_subject(around)


def _metric_name(raw: _Raw, around: _Around) -> str:
    """A metric's name: a rate as itself, any other percentage as ``<subject>_change``."""
    base = _base_name(raw, around)
    if raw.unit != "percent":
        return base or "latency"
    if base is None:
        return "percentage"
    family = next((f for n, _, f in _SUBJECTS if n == base), "rate")
    return base if family == "rate" else f"{base}_change"


def _change_name(raw: _Raw, around: _Around, role: str) -> str:
    """``cost_reduction``, ``p95_latency_reduction``, ``accuracy_increase``, ..."""
    base = _base_name(raw, around)
    if raw.unit == "percent" and base is None and _mentions_cost(around.clause):
        base = "cost"
    return f"{base}_{role}" if base else role


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
    placed += [(m.start(), p) for pattern, p in _PROVIDER_WORDS for m in pattern.finditer(text)]
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


def _mentions_cost(clause: str) -> bool:
    return bool(_COST_WORDS.search(clause))


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


# -- classification ---------------------------------------------------------------------


@attrs.frozen
class TriageResult:
    category: str
    sub_category: str
    priority: str
    complexity: str
    intent: str
    confidence: float
    data_sufficiency: str
    missing_data: tuple[str, ...]
    entities: Mapping[str, list[Any]]
    #: The category keywords found (not part of the result on the wire).
    keywords: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "sub_category": self.sub_category,
            "priority": self.priority,
            "complexity": self.complexity,
            "intent": self.intent,
            "confidence": self.confidence,
            "data_sufficiency": self.data_sufficiency,
            "missing_data": list(self.missing_data),
            "entities": copy.deepcopy(dict(self.entities)),
        }


def _items(entities: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = entities.get(key)
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


@attrs.frozen
class _Facts:
    """What the entities say, in the terms of the sufficiency rule."""

    models: int
    figures: int
    price: bool
    cost_per_request: bool
    spend: bool
    tokens: bool
    tokens_per_request: bool
    requests: bool
    latency: bool
    performance: bool
    quality_figure: bool
    thresholds: bool
    targets: bool
    cost_target: bool

    @classmethod
    def of(cls, entities: Mapping[str, Any]) -> _Facts:
        metrics = _items(entities, "metrics")
        names = [str(m.get("name", "")) for m in metrics]
        targets = _items(entities, "targets")
        models = entities.get("models")
        count = len(models) if isinstance(models, list) else 0
        figures = count + sum(
            len(_items(entities, key))
            for key in ENTITY_KEYS
            if key not in ("models", "providers", "time_ranges")
        )
        return cls(
            models=count,
            figures=figures,
            price=any("price_per" in n for n in names),
            cost_per_request="cost_per_request" in names,
            spend=bool(_items(entities, "money")),
            tokens=bool(_items(entities, "token_volumes")),
            tokens_per_request=any(n.endswith("tokens_per_request") for n in names),
            requests=bool(_items(entities, "request_volumes"))
            or any(m.get("unit") == "rps" for m in metrics),
            latency=any(m.get("unit") == "ms" for m in metrics),
            performance=any(m.get("unit") in ("ms", "rps", "tokens/s") for m in metrics),
            quality_figure=any(n in _QUALITY_RATES for n in names) or bool(targets),
            thresholds=bool(_items(entities, "thresholds")),
            targets=bool(targets),
            cost_target=any(str(t.get("metric", "")).startswith("cost") for t in targets),
        )


def _needs(category: str, f: _Facts) -> list[str]:
    """The unmet needs of ``category`` (empty: sufficient)."""
    missing: list[str] = []
    if category == "cost_optimization":
        volume = (
            f.tokens
            or f.spend
            or (f.requests and f.tokens_per_request)
            or (f.requests and f.cost_per_request)
        )
        if not (f.models or f.price or f.cost_per_request):
            missing.append("current model")
        if not volume:
            missing.append("monthly token volume")
    elif category == "latency_optimization":
        if not f.performance:
            missing.append("latency percentiles")
        if not (f.models or f.targets):
            missing += ["current model", "latency target"]
    elif category == "model_selection":
        if not (f.tokens or f.requests or f.spend):
            missing.append("monthly token volume")
        if not (f.models or f.targets):
            missing.append("current model")
    elif category == "monitoring":
        if not (f.thresholds or f.targets):
            missing.append("alert thresholds")
    elif category == "quality":
        if not f.models:
            missing.append("current model")
        if not f.quality_figure:
            missing.append("quality measure")
    else:
        missing.append("goal")
    return missing


def _scores(
    lowered: str, f: _Facts, entities: Mapping[str, Any]
) -> dict[str, tuple[int, tuple[str, ...]]]:
    scores: dict[str, tuple[int, tuple[str, ...]]] = {}
    metrics = _items(entities, "metrics")
    targets = _items(entities, "targets")
    for category, patterns in _CATEGORY_PATTERNS:
        found = tuple(w for w, _, pattern in patterns if pattern.search(lowered))
        weights = {w: weight for w, weight, _ in patterns}
        score = sum(weights[w] for w in found)
        if category == "cost_optimization":
            score += 2 * (f.spend or f.cost_target) + (f.price or f.cost_per_request)
            score += f.tokens or f.tokens_per_request
        elif category == "latency_optimization":
            latency_target = any(t.get("unit") == "ms" for t in targets)
            score += 2 * (f.latency or latency_target)
            score += any(m.get("unit") in ("rps", "tokens/s") for m in metrics)
        elif category == "model_selection":
            score += 2 * (f.models >= 2)
        elif category == "monitoring":
            score += 2 * f.thresholds
        elif category == "quality":
            score += 2 * any(m.get("name") in ("accuracy", "hallucination_rate") for m in metrics)
        scores[category] = (score, found)
    return scores


def _first_match(patterns: Sequence[tuple[str, re.Pattern[str]]], text: str) -> str | None:
    return next((name for name, pattern in patterns if pattern.search(text)), None)


def classify_entities(text: str, entities: Mapping[str, Any]) -> TriageResult:
    """Triage of ``text`` given its ``entities`` (pure; :func:`classify` extracts them)."""
    lowered = text.lower()
    facts = _Facts.of(entities)
    scores = _scores(lowered, facts, entities)
    ranked = sorted(scores.items(), key=lambda kv: -kv[1][0])  # stable: ties keep order
    (best, (best_score, hits)), (_, (second_score, _)) = ranked[0], ranked[1]
    category = best if best_score > 0 else "general"
    if category == "general":
        confidence, hits = 0.2, ()
    else:
        margin = min(best_score - second_score, 3)
        confidence = round(min(0.95, 0.45 + 0.06 * min(best_score, 6) + 0.05 * margin), 2)
    sub = _SUB_DEFAULTS[category]
    if category in _SUB_PATTERNS:
        sub = _first_match(_SUB_PATTERNS[category], lowered) or sub
        if sub == _SUB_DEFAULTS[category]:
            sub = _sub_from_facts(category, facts, entities) or sub
    priority = "medium"
    for level, priority_patterns in _PRIORITY_PATTERNS:
        if any(p.search(lowered) for p in priority_patterns):
            priority = level
            break
    dimensions = sum(1 for score, _ in scores.values() if score > 0)
    if dimensions >= 3 or facts.models >= 3 or facts.figures >= 6:
        complexity = "high"
    elif dimensions <= 1 and facts.figures <= 2:
        complexity = "low"
    else:
        complexity = "medium"
    missing = _needs(category, facts)
    if facts.figures == 0:
        sufficiency = "insufficient"
    elif missing:
        sufficiency = "partial"
    else:
        sufficiency = "sufficient"
    return TriageResult(
        category=category,
        sub_category=sub,
        priority=priority,
        complexity=complexity,
        intent=INTENTS[category],
        confidence=confidence,
        data_sufficiency=sufficiency,
        missing_data=tuple(missing),
        entities=entities,
        keywords=hits,
    )


def _sub_from_facts(category: str, f: _Facts, entities: Mapping[str, Any]) -> str | None:
    names = {str(m.get("name", "")) for m in _items(entities, "metrics")}
    names |= {str(t.get("metric", "")) for t in _items(entities, "targets")}
    if category == "cost_optimization" and f.models >= 2:
        return "model_switch"
    if category == "latency_optimization":
        if names & {"p95_latency", "p99_latency", "p90_latency"}:
            return "tail_latency"
        if "ttft" in names:
            return "time_to_first_token"
    if category == "model_selection" and f.models >= 2:
        return "model_comparison"
    if category == "monitoring" and f.thresholds:
        return "alerting"
    return None


def classify(text: str) -> TriageResult:
    """Deterministic triage of ``text`` (pure; the agent adds events around it)."""
    return classify_entities(text, extract_entities(text))


def _looks_like_entities(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(value.get(key), list) for key in ENTITY_KEYS
    )


class TriageAgent(BaseAgent):
    name = "triage"
    description = (
        "Classifies a request (category, priority, intent), extracts its figures and says "
        "whether they suffice."
    )

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        text = str(inputs.get("request", self.context.request))
        await self.think(
            "Reading the request: models, prices, volumes, latencies, targets", progress=10
        )
        found = await self.use_tool("extract_entities", text=text)
        if found.ok and _looks_like_entities(found.value):
            result = classify_entities(text, found.value)
        else:
            result = classify(text)
        note = f"; missing: {', '.join(result.missing_data)}" if result.missing_data else ""
        await self.think(
            f"{result.category} / {result.sub_category} (confidence {result.confidence}), "
            f"priority {result.priority}, data {result.data_sufficiency}{note}",
            progress=90,
        )
        return result.as_dict()
