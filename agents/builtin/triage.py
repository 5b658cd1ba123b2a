"""Triage: classify a request (category, priority, entities) without any network."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from .._base import BaseAgent

# Keyword weights per category; the highest total wins, ties go to the earlier one.
_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "cost_optimization",
        (
            "cost",
            "spend",
            "bill",
            "budget",
            "price",
            "pricing",
            "expensive",
            "cheap",
            "save",
            "saving",
            "$",
            "usd",
            "eur",
            "invoice",
            "token usage",
        ),
    ),
    (
        "latency_optimization",
        (
            "latency",
            "slow",
            "fast",
            "p95",
            "p99",
            "p50",
            "response time",
            "throughput",
            "timeout",
            "ms",
            "speed",
            "lag",
        ),
    ),
    (
        "model_selection",
        (
            "which model",
            "switch",
            "compare",
            "model",
            "gpt",
            "claude",
            "llama",
            "mistral",
            "gemini",
            "upgrade",
            "migrate",
            "alternative",
        ),
    ),
    (
        "monitoring",
        (
            "monitor",
            "alert",
            "dashboard",
            "metric",
            "observability",
            "error rate",
            "logging",
            "trace",
            "uptime",
            "incident",
        ),
    ),
)

_PRIORITY_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("critical", ("outage", "down", "production is", "emergency", "critical")),
    ("high", ("urgent", "asap", "immediately", "today", "blocking", "high priority")),
    ("low", ("when you can", "no rush", "curious", "someday", "low priority")),
)

_MODEL = re.compile(
    r"\b(gpt-?4o(?:-mini)?|gpt-?4(?:\.1)?(?:-turbo)?|gpt-?3\.5(?:-turbo)?|o[134](?:-mini)?"
    r"|claude(?:[- ]?\d(?:\.\d)?)?(?:[- ](?:opus|sonnet|haiku))?"
    r"|llama[- ]?\d(?:\.\d)?(?:[- ]\d+b)?|mistral(?:[- ](?:large|medium|small))?"
    r"|mixtral|gemini(?:[- ]\d(?:\.\d)?)?(?:[- ](?:pro|flash))?)\b",
    re.IGNORECASE,
)
_MONEY = re.compile(
    r"(?:\$\s?(\d[\d,]*(?:\.\d+)?)\s?([kKmM])?)|(?:\b(\d[\d,]*(?:\.\d+)?)\s?(usd|dollars|eur)\b)",
    re.IGNORECASE,
)
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s?%")
_DURATION = re.compile(r"\b(\d+(?:\.\d+)?)\s?(ms|milliseconds?|s|secs?|seconds?)\b", re.IGNORECASE)
_TOKENS = re.compile(r"\b(\d+(?:\.\d+)?)\s?([kKmMbB])?\s?tokens\b", re.IGNORECASE)
_PERIOD = re.compile(
    r"\b(per|a|each|every|last|past)\s+(\d+\s+)?(day|days|week|weeks|month|months|year|years|hour|hours)\b",
    re.IGNORECASE,
)
_MULTIPLIER = {"k": 1e3, "m": 1e6, "b": 1e9}


def _keyword(word: str) -> re.Pattern[str]:
    # Whole words only ("down" must not match "download"); symbols match as they are.
    escaped = re.escape(word)
    if word[0].isalnum():
        escaped = r"\b" + escaped
    if word[-1].isalnum():
        escaped += r"\b"
    return re.compile(escaped)


_CATEGORY_PATTERNS = tuple(
    (category, tuple((w, _keyword(w)) for w in words)) for category, words in _CATEGORIES
)
_PRIORITY_PATTERNS = tuple(
    (level, tuple(_keyword(w) for w in words)) for level, words in _PRIORITY_WORDS
)


@attrs.frozen
class TriageResult:
    category: str
    priority: str
    confidence: float
    entities: dict[str, list[Any]]
    keywords: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "priority": self.priority,
            "confidence": self.confidence,
            "entities": self.entities,
            "keywords": list(self.keywords),
        }


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def extract_entities(text: str) -> dict[str, list[Any]]:
    """Model names, money, percentages, durations, token volumes and periods in ``text``."""
    models = sorted({m.group(0).lower().replace(" ", "-") for m in _MODEL.finditer(text)})
    money = []
    for m in _MONEY.finditer(text):
        if m.group(1) is not None:
            amount = _number(m.group(1)) * _MULTIPLIER.get((m.group(2) or "").lower(), 1)
            money.append({"amount": amount, "currency": "USD"})
        else:
            cur = "EUR" if m.group(4).lower() == "eur" else "USD"
            money.append({"amount": _number(m.group(3)), "currency": cur})
    durations = []
    for m in _DURATION.finditer(text):
        unit = m.group(2).lower()
        factor = 1.0 if unit.startswith("m") else 1000.0
        durations.append({"value_ms": float(m.group(1)) * factor, "text": m.group(0)})
    tokens = [
        _number(m.group(1)) * _MULTIPLIER.get((m.group(2) or "").lower(), 1)
        for m in _TOKENS.finditer(text)
    ]
    return {
        "models": models,
        "money": money,
        "percentages": [float(m.group(1)) for m in _PERCENT.finditer(text)],
        "durations": durations,
        "token_volumes": tokens,
        "periods": [m.group(0).lower() for m in _PERIOD.finditer(text)],
    }


def classify(text: str) -> TriageResult:
    """Deterministic triage of ``text`` (pure; the agent adds events around it)."""
    lowered = text.lower()
    best, best_score, hits = "general", 0, tuple[str, ...]()
    for category, patterns in _CATEGORY_PATTERNS:
        found = tuple(w for w, pattern in patterns if pattern.search(lowered))
        if len(found) > best_score:
            best, best_score, hits = category, len(found), found
    priority = "medium"
    for level, priority_patterns in _PRIORITY_PATTERNS:
        if any(p.search(lowered) for p in priority_patterns):
            priority = level
            break
    confidence = round(min(0.95, 0.35 + 0.15 * best_score), 2) if best_score else 0.2
    return TriageResult(
        category=best,
        priority=priority,
        confidence=confidence,
        entities=extract_entities(text),
        keywords=hits,
    )


class TriageAgent(BaseAgent):
    name = "triage"
    description = "Classifies a request: category, priority and the entities it mentions."

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        text = str(inputs.get("request", self.context.request))
        await self.think("Reading the request and looking for figures and model names", progress=10)
        found = await self.use_tool("extract_entities", text=text)
        result = classify(text)
        entities = found.value if found.ok else result.entities
        await self.think(
            f"Category {result.category} (confidence {result.confidence}), "
            f"priority {result.priority}",
            progress=90,
        )
        out = result.as_dict()
        out["entities"] = entities
        return out
