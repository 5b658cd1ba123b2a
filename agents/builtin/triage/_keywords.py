"""The words triage looks for: category keywords and weights, sub-category and priority words.

All are matched on the lower-cased request, whole words only (see ``_keyword``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

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
            *((w, 1) for w in ("concurrency", "takes too long", "rag", "retrieval")),
            *((w, 1) for w in ("reranker", "reranking", "vector search", "embeddings")),
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
            *((w, 1) for w in ("upgrade", "replace", "open source", "open-source")),
            *((w, 1) for w in ("open-weight", "recommend", "against")),
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
    (
        "reliability",
        (
            *((w, 3) for w in ("rate limit", "rate limits", "rate-limit", "rate limited")),
            *((w, 3) for w in ("rate limiting", "too many requests", "429", "429s", "quota")),
            *((w, 3) for w in ("retry", "retries", "retrying", "backoff", "overloaded")),
            *((w, 3) for w in ("rate_limit_exceeded", "ratelimiterror")),
            *((w, 2) for w in ("5xx", "fallback", "failover", "fail", "failing")),
            *((w, 2) for w in ("failures", "failed requests", "unavailable", "flaky")),
            *((w, 2) for w in ("time out", "timed out", "throttled", "throttling")),
            *((w, 2) for w in ("circuit breaker", "status code", "status codes", "reliability")),
            *((w, 1) for w in ("timeout", "timeouts", "error", "errors", "outage", "down")),
        ),
    ),
    (
        "self_hosting",
        (
            *((w, 3) for w in ("self-host", "self-hosted", "self-hosting", "self host")),
            *((w, 3) for w in ("self hosted", "self hosting", "on-prem", "on-premise")),
            *((w, 3) for w in ("gpu", "gpus", "h100", "h100s", "a100", "a100s", "vllm")),
            *((w, 3) for w in ("gpu-hour", "gpu hour", "inference cluster", "our own gpus")),
            *((w, 2) for w in ("l4", "tgi", "triton", "quantise", "quantize", "quantization")),
            *((w, 2) for w in ("quantisation", "host our own", "we host", "hosting")),
            *((w, 1) for w in ("utilisation", "utilization", "cluster", "idle", "busy")),
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


@attrs.frozen
class Keyword:
    """A whole-word pattern for ``word``, tried only when ``word`` occurs at all.

    Most keywords are absent from any one request, and a substring test is far
    cheaper than a regular-expression search; the answer is the same.
    """

    word: str
    pattern: re.Pattern[str]

    def search(self, text: str) -> bool:
        return self.word in text and self.pattern.search(text) is not None


def _keyword(word: str) -> Keyword:
    # Whole words only ("down" must not match "download"); symbols match as they are.
    escaped = re.escape(word)
    if word[0].isalnum():
        escaped = r"\b" + escaped
    if word[-1].isalnum():
        escaped += r"\b"
    return Keyword(word, re.compile(escaped))


_CATEGORY_PATTERNS = tuple(
    (category, tuple((w, weight, _keyword(w)) for w, weight in words))
    for category, words in _CATEGORIES
)
_PRIORITY_PATTERNS = tuple(
    (level, tuple(_keyword(w) for w in words)) for level, words in _PRIORITY_WORDS
)
#: Per category: keyword -> weight.
CATEGORY_WEIGHTS: Mapping[str, Mapping[str, int]] = {
    category: dict(words) for category, words in _CATEGORIES
}
_ALL_WORDS = {w for _, words in _CATEGORIES for w, _ in words} | {
    w for _, words in _PRIORITY_WORDS for w in words
}
_TOKEN = re.compile(r"\w+")
# Keywords that are one word (letters, digits, underscores) match as whole words exactly
# when they are among the text's \w+ tokens; the others are phrases, searched one by one.
_SINGLE_WORDS = frozenset(w for w in _ALL_WORDS if _TOKEN.fullmatch(w))
# Each phrase with a word it starts with (a phrase can only match if that word is there).
_PHRASES = tuple(
    (_keyword(w), (_TOKEN.findall(w) or [""])[0]) for w in sorted(_ALL_WORDS - _SINGLE_WORDS)
)


def keywords_in(lowered: str) -> frozenset[str]:
    """Every category or priority keyword of the lower-cased ``lowered``, as whole words.

    One pass over the text's words instead of one search per keyword: the same
    answer as each keyword's own whole-word pattern.
    """
    tokens = set(_TOKEN.findall(lowered))
    found = tokens & _SINGLE_WORDS
    found.update(k.word for k, first in _PHRASES if first in tokens and k.search(lowered))
    return frozenset(found)


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
        (
            "retrieval",
            r"\b(?:rag|retriev\w*|rerank\w*|vector\s(?:db|search|store|database)|embeddings?|"
            r"pgvector|top-k|chunks|knowledge[- ]base|semantic search|search \+ llm)\b",
        ),
        ("time_to_first_token", r"\b(?:ttft|first token|streaming|stream)\b"),
        ("throughput", r"\b(?:throughput|rps|qps|concurrency|rate limits?|per second)\b"),
        ("tail_latency", r"\b(?:p9[059]|p99\.9|tail|spikes?|outliers?)\b"),
        ("timeouts", r"\btime-?outs?\b"),
    ),
    "model_selection": (
        ("open_weights", r"\b(?:open[- ]source|open[- ]weights?)\b"),
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
    "reliability": (
        ("rate_limits", r"\b(?:429s?|rate[ _-]?limit\w*|too many requests|quota|tpm|rpm)\b"),
        ("server_errors", r"\b(?:5xx|50[0-4]s?|529s?|overloaded|internal server error)\b"),
        ("timeouts", r"\b(?:time ?outs?|timed out|time out)\b"),
        ("fallback", r"\b(?:fallback|failover|backup provider)\b"),
    ),
    "self_hosting": (
        ("quantisation", r"\bquanti[sz]\w*"),
        ("batching", r"\bbatch\w*"),
        ("api_break_even", r"\b(?:api|break-even|cheaper than|instead)\b"),
        ("utilisation", r"\b(?:utili[sz]ation|idle|busy|util)\b"),
    ),
}
_SUB_DEFAULTS: Mapping[str, str] = {
    "cost_optimization": "spend_reduction",
    "latency_optimization": "response_time",
    "model_selection": "model_choice",
    "monitoring": "metrics",
    "quality": "answer_quality",
    "reliability": "errors",
    "self_hosting": "gpu_cost",
    "general": "unclear",
}
_SUB_PATTERNS = {
    category: tuple((name, re.compile(pattern)) for name, pattern in rules)
    for category, rules in _SUB_RULES.items()
}
