"""Classification: category, priority, complexity, intent, confidence and sufficiency.

:func:`classify` is pure and deterministic: it extracts the entities
(:func:`~._entities.extract_entities`) and hands them to :func:`classify_entities`,
which scores the words (``_keywords``) and the figures.

Result (``TriageResult.as_dict()``, the ``result`` of triage's ``agent_completed``)
----------------------------------------------------------------------------------
``category`` (``cost_optimization``, ``latency_optimization``, ``model_selection``,
``monitoring``, ``quality``, ``reliability``, ``self_hosting`` or ``general``),
``sub_category`` (snake_case, e.g. ``model_switch``, ``caching``, ``tail_latency``,
``retrieval``, ``rate_limits``, ``quantisation``, ``unclear``), ``priority``,
``complexity``, ``intent`` (one per category: ``reduce_cost``, ``reduce_latency``,
``choose_model``, ``set_up_monitoring``, ``improve_quality``, ``improve_reliability``,
``optimise_gpus``, ``ask_question`` for ``general``), ``confidence`` in [0, 1],
``data_sufficiency``, ``missing_data``, ``entities`` (described in ``_entities``;
with ``omitted`` counts), ``reply`` (``_replies``: ``answer``, ``smalltalk``,
``gibberish`` or ``injection``), ``language`` and ``log`` (a summary of a pasted
log, or null).

Category: whole-word keywords score points per category (1 to 3 each, e.g.
"which model" 3, "cost" 2, "price" 1), and the figures found add to it (money:
cost; a latency: latency; a threshold: monitoring; two models: model
selection; ...). The highest score wins, ties go to the earlier category in
the list above; no point at all is ``general``. Confidence grows with the
winning score and its margin over the runner-up (0.2 for ``general``).

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
* reliability: a status code, an error, success or timeout rate, or a log with
  status codes ("error figures").
* self-hosting: a GPU count, or a workload and a model for the API break-even
  ("GPU count").
* general: never sufficient ("goal").

Priority: words ("outage", "is down": critical; "urgent", "asap": high; "no
rush", "curious": low; "not urgent" is low), else medium. Complexity: high with
signals of 3+ categories, 3+ models or 6+ figures; low with at most one
category and 2 figures; medium otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ._entities import ENTITY_KEYS
from ._keywords import (
    _CATEGORY_PATTERNS,
    _PRIORITY_PATTERNS,
    _SUB_DEFAULTS,
    _SUB_PATTERNS,
    CATEGORY_WEIGHTS,
    keywords_in,
)
from ._read import extract_entities, read_request
from ._replies import reply_kind

CATEGORIES = (
    "cost_optimization",
    "latency_optimization",
    "model_selection",
    "monitoring",
    "quality",
    "reliability",
    "self_hosting",
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
    "reliability": "improve_reliability",
    "self_hosting": "optimise_gpus",
    "general": "ask_question",
}
_COMPARISON = re.compile(
    r"\b(?:vs\.?|versus|or|against|compare\w*|between|which\s(?:is|one|model|llm|provider))\b"
)
_ERROR_RATES = {"error_rate", "timeout_rate", "success_rate"}
# Metric names (``_roles._SUBJECTS``) that are quality figures for the sufficiency rule.
_QUALITY_RATES = {"accuracy", "hallucination_rate", "error_rate", "success_rate", "eval_score"}


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
    entities: Mapping[str, Any]
    #: The category keywords found (not part of the result on the wire).
    keywords: tuple[str, ...] = ()
    reply: str = "answer"
    language: str = "en"
    log: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        entities = {k: v for k, v in self.entities.items() if k not in ("language", "log")}
        return {
            "category": self.category,
            "sub_category": self.sub_category,
            "priority": self.priority,
            "complexity": self.complexity,
            "intent": self.intent,
            "confidence": self.confidence,
            "data_sufficiency": self.data_sufficiency,
            "missing_data": list(self.missing_data),
            "entities": _copy(entities),
            "reply": self.reply,
            "language": self.language,
            "log": _copy(dict(self.log)) if self.log is not None else None,
        }


def _copy(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, tuples, scalars), as deepcopy
    makes but several times faster; anything else is shared, as it is immutable here."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_copy(item) for item in value)
    return value


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
    gpus: bool
    errors: bool
    status_codes: bool
    log_errors: bool
    log_latency: bool

    @classmethod
    def of(cls, entities: Mapping[str, Any]) -> _Facts:
        metrics = _items(entities, "metrics")
        names = [str(m.get("name", "")) for m in metrics]
        targets = _items(entities, "targets")
        models = entities.get("models")
        count = len(models) if isinstance(models, list) else 0
        log = entities.get("log") if isinstance(entities.get("log"), Mapping) else {}
        figures = count + sum(
            len(_items(entities, key))
            for key in ENTITY_KEYS
            if key not in ("models", "providers", "time_ranges")
        )
        figures += bool(log and (log.get("latency_ms") or log.get("status_codes")))
        log_error_rate = log.get("error_rate_pct") if log else None
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
            latency=any(m.get("unit") == "ms" and m.get("name") != "timeout" for m in metrics),
            performance=any(m.get("unit") in ("ms", "rps", "tokens/s") for m in metrics)
            or bool(log and log.get("latency_ms")),
            quality_figure=any(n in _QUALITY_RATES for n in names) or bool(targets),
            thresholds=bool(_items(entities, "thresholds")),
            targets=bool(targets),
            cost_target=any(str(t.get("metric", "")).startswith("cost") for t in targets),
            gpus=bool(_items(entities, "gpus")),
            errors=bool(_items(entities, "status_codes")) or bool(_ERROR_RATES & set(names)),
            status_codes=bool(_items(entities, "status_codes")),
            log_errors=isinstance(log_error_rate, int | float) and log_error_rate >= 1,
            log_latency=bool(log and log.get("latency_ms")),
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
    elif category == "reliability":
        if not (f.errors or f.log_errors or f.log_latency):
            missing.append("error figures")
    elif category == "self_hosting":
        # GPUs to size, or a workload and a model to price against an API (the break-even).
        if not (f.gpus or ((f.tokens or f.requests) and f.models)):
            missing.append("GPU count")
    else:
        missing.append("goal")
    return missing


def _scores(
    lowered: str, f: _Facts, entities: Mapping[str, Any], words: frozenset[str]
) -> dict[str, tuple[int, tuple[str, ...]]]:
    scores: dict[str, tuple[int, tuple[str, ...]]] = {}
    metrics = _items(entities, "metrics")
    targets = _items(entities, "targets")
    for category, patterns in _CATEGORY_PATTERNS:
        weights = CATEGORY_WEIGHTS[category]
        found = tuple(w for w, _, _ in patterns if w in words)
        score = sum(weights[w] for w in found)
        if category == "cost_optimization":
            score += 2 * (f.spend or f.cost_target) + (f.price or f.cost_per_request)
            score += (f.tokens or f.tokens_per_request) + (f.requests and f.tokens_per_request)
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
        elif category == "reliability":
            score += 3 * (f.status_codes or f.log_errors) or 2 * f.errors
        elif category == "self_hosting":
            score += 3 * f.gpus
        if category == "latency_optimization":
            score += 2 * f.log_latency
        if category == "model_selection" and f.models >= 2 and _COMPARISON.search(lowered):
            score += 3
        scores[category] = (score, found)
    return scores


def _first_match(patterns: Sequence[tuple[str, re.Pattern[str]]], text: str) -> str | None:
    return next((name for name, pattern in patterns if pattern.search(text)), None)


def classify_entities(
    text: str,
    entities: Mapping[str, Any],
    *,
    bonus: Mapping[str, int] | None = None,
    category: str | None = None,
    reply: str | None = None,
) -> TriageResult:
    """Triage of ``text`` given its ``entities`` (pure; :func:`classify` extracts them).

    ``bonus``: points added to categories (a thread's earlier category);
    ``category`` and ``reply``: decided elsewhere (by the model), not by the rules.
    """
    reading = read_request(text)
    lowered = reading.english.lower()
    facts = _Facts.of(entities)
    words = keywords_in(lowered)
    scores = _scores(lowered, facts, entities, words)
    for favoured, points in (bonus or {}).items():
        if favoured in scores:
            score, found = scores[favoured]
            scores[favoured] = (score + points, found)
    ranked = sorted(scores.items(), key=lambda kv: -kv[1][0])  # stable: ties keep order
    (best, (best_score, hits)), (_, (second_score, _)) = ranked[0], ranked[1]
    chosen = category
    category = best if best_score > 0 else "general"
    if chosen is not None and chosen in INTENTS:
        category = chosen
        best_score, hits = scores.get(chosen, (best_score, hits))
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
        if any(p.word in words for p in priority_patterns):
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
    on_topic = (
        category != "general"
        or facts.figures > 0
        or bool(entities.get("providers"))
        or isinstance(entities.get("log"), Mapping)
    )
    language = entities.get("language")
    log = entities.get("log")
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
        reply=reply if reply is not None else reply_kind(reading.detail, on_topic=on_topic),
        language=language if isinstance(language, str) else reading.language,
        log=log if isinstance(log, Mapping) else None,
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
    if category == "reliability" and any(
        s.get("code") == 429 for s in _items(entities, "status_codes")
    ):
        return "rate_limits"
    if category == "monitoring" and f.thresholds:
        return "alerting"
    return None


def classify(text: str) -> TriageResult:
    """Deterministic triage of ``text`` (pure; the agent adds events around it)."""
    return classify_entities(text, extract_entities(text))
