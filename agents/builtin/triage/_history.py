"""Follow-ups: figures a request does not give are taken from the thread's earlier turns.

A turn's ``memory`` (what the supervisor kept of it) holds the entities of that
turn. For each group of figures below that the new request does not give, the
most recent turn that has some lends them, and the reuse is recorded so the
answer can say so:

* workload: token and request volumes, tokens per request, prices, spend;
* models: the models named. A follow-up that names a model without saying it
  is the one run now compares it with the earlier current model: "what about
  gpt-4o-mini?", or with a workload of its own, "at 80M tokens a month, how much
  would gpt-4o-mini save?" (``_model_roles`` reads which model is which);
* latency: latency figures; GPUs: GPU counts, utilisation, hours a day;
* reliability: status codes and error rates.

Targets are never reused: a new target is a new question. "3x the volume",
"double the traffic" scale a reused workload; "sorry, those volumes are per
day" re-reads its volumes given per month (or without a period) per day. The earlier category gets a
small bonus, and the earlier language is the prior for a short follow-up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from ._model_roles import Roles

_I = re.IGNORECASE
#: Points the thread's earlier category gets in a follow-up.
CATEGORY_BONUS = 2
_VOLUME_WORDS = r"(?:volume|traffic|usage|load|requests|tokens|calls|users)"
_SCALE = re.compile(
    r"(?<![\w.])(?P<n>\d+(?:\.\d+)?)\s?x\s(?:the\s|our\s)?" + _VOLUME_WORDS + r"\b"
    r"|\b(?P<word>double|twice|triple|three\stimes|half)\s(?:the\s|our\s|as\s"
    r"(?:much|many)\s)?" + _VOLUME_WORDS + r"\b"
    # "if traffic doubles", "when usage grows 3x", "volume x2"
    r"|\b" + _VOLUME_WORDS + r"\s(?:(?P<verb>doubles|doubled|triples|tripled|halves|halved)\b"
    r"|(?:grows?|grew|goes\sup|increases?|rises?)\s(?:by\s)?(?P<n2>\d+(?:\.\d+)?)\s?x\b"
    r"|x\s?(?P<n3>\d+(?:\.\d+)?)\b)",
    _I,
)
# "those volumes are per day", "sorry, that's per day", "I meant per hour": a correction of
# the period of the earlier volumes.
_REPERIOD = re.compile(
    r"\b(?:(?:those|these|the|our|my|that|this|they|it|that's|those\snumbers|all\sof\sthat)"
    r"(?:\s(?:volumes?|numbers?|figures?|tokens?|token\scounts?|counts?|requests?))?"
    r"\s(?:are|were|is|was|'re|'s)?\s?|\b(?:i|we)\smeant\s|that's\s)"
    r"(?:actually\s|really\s|all\s|in\sfact\s)?(?:per|a|each|every)\s"
    r"(?P<unit>day|hour|week|minute)\b",
    _I,
)
_WORD_SCALE = {
    "double": 2.0,
    "twice": 2.0,
    "triple": 3.0,
    "three times": 3.0,
    "half": 0.5,
    "doubles": 2.0,
    "doubled": 2.0,
    "triples": 3.0,
    "tripled": 3.0,
    "halves": 0.5,
    "halved": 0.5,
}

Metric = Mapping[str, Any]


def _workload_metric(m: Metric) -> bool:
    name = str(m.get("name", ""))
    return (
        name.endswith(("tokens_per_request", "price_per_1m_tokens"))
        or name == "cost_per_request"
        or m.get("unit") == "rps"
    )


def _latency_metric(m: Metric) -> bool:
    return m.get("unit") == "ms" and m.get("name") != "timeout"


def _gpu_metric(m: Metric) -> bool:
    return m.get("name") in ("utilization", "hours_per_day", "busy_hours_per_day")


def _error_metric(m: Metric) -> bool:
    return m.get("name") in ("error_rate", "timeout_rate", "success_rate")


#: group -> (label, ((entity key, metric filter or None), ...))
GROUPS: tuple[tuple[str, tuple[tuple[str, Callable[[Metric], bool] | None], ...]], ...] = (
    (
        "workload",
        (
            ("token_volumes", None),
            ("request_volumes", None),
            ("money", None),
            ("metrics", _workload_metric),
        ),
    ),
    ("models", (("models", None), ("providers", None))),
    ("latency", (("metrics", _latency_metric),)),
    ("GPUs", (("gpus", None), ("metrics", _gpu_metric))),
    ("reliability", (("status_codes", None), ("metrics", _error_metric))),
)


@attrs.frozen
class Merged:
    """The entities with what was reused, and what the thread says about the request."""

    entities: dict[str, Any]
    #: [{"what": group, "from_run": run id, "items": n}], in GROUPS order.
    reused: list[dict[str, Any]]
    current_model: str | None
    candidate_models: list[str]
    bonus: dict[str, int]
    language: str | None
    scale: float | None
    #: The period the follow-up says the reused volumes are in ("day"), if it corrects it.
    period: str | None = None


def _items(
    entities: Mapping[str, Any], key: str, keep: Callable[[Metric], bool] | None
) -> list[Any]:
    value = entities.get(key)
    if not isinstance(value, list):
        return []
    if keep is None:
        return list(value)
    return [v for v in value if isinstance(v, Mapping) and keep(v)]


def _group_items(entities: Mapping[str, Any], group: int) -> dict[str, list[Any]]:
    _, parts = GROUPS[group]
    return {key: _items(entities, key, keep) for key, keep in parts}


def _scale_of(text: str) -> float | None:
    m = _SCALE.search(text[:2000])
    if m is None:
        return None
    number = m["n"] or m["n2"] or m["n3"]
    if number:
        value = float(number)
        return value if 0 < value <= 1000 else None
    return _WORD_SCALE[" ".join((m["word"] or m["verb"]).lower().split())]


def _reperiod_of(text: str) -> str | None:
    m = _REPERIOD.search(text[:2000])
    return m["unit"].lower() if m is not None else None


def _reperiodised(key: str, item: Any, period: str | None) -> Any:
    """A reused volume given per month (or without a period) read per ``period``."""
    if period is None or key not in ("token_volumes", "request_volumes"):
        return item
    if not isinstance(item, Mapping) or item.get("period") not in (None, "month"):
        return item
    return {**item, "period": period}


def _scaled(key: str, item: Any, scale: float | None) -> Any:
    if scale is None or not isinstance(item, Mapping):
        return item
    field = {"token_volumes": "tokens", "request_volumes": "requests", "money": "amount"}.get(key)
    if field is None or not isinstance(item.get(field), int | float):
        return item
    return {**item, field: item[field] * scale}


def _compares(roles: Roles | None, own_workload: bool) -> bool:
    """Whether the models the follow-up names are compared with the earlier current one:
    none of them is said to be run now, and either the follow-up gives no workload or
    every model it names is a candidate ("how much would gpt-4o-mini save?")."""
    if roles is None:
        return not own_workload
    if roles.stated:
        return False
    return not own_workload or roles.current is None


def merge_history(
    text: str, entities: Mapping[str, Any], history: Sequence[Any], roles: Roles | None = None
) -> Merged:
    """``entities`` completed from the most recent earlier turns (see the module's docstring).

    ``history`` holds :class:`agents.Turn` objects (anything with ``run_id``
    and a ``memory`` mapping), oldest first; ``roles``, the models of ``text``
    by role.
    """
    memories = [
        (str(getattr(turn, "run_id", "")), turn.memory)
        for turn in history
        if isinstance(getattr(turn, "memory", None), Mapping) and turn.memory
    ]
    if not memories:  # a first turn: nothing to merge
        return Merged(dict(entities), [], None, [], {}, None, None)
    merged: dict[str, Any] = {
        k: (list(v) if isinstance(v, list) else v) for k, v in entities.items()
    }
    latest = next((m for _, m in reversed(memories) if m.get("category")), None)
    bonus: dict[str, int] = {}
    language = None
    if latest is not None:
        if latest.get("category") not in (None, "general"):
            bonus[str(latest["category"])] = CATEGORY_BONUS
        language = latest.get("language") if isinstance(latest.get("language"), str) else None
    scale = _scale_of(text)
    period = _reperiod_of(text)
    reperiodised = False
    reused: list[dict[str, Any]] = []
    own_workload = any(_group_items(entities, 0).values())
    current_model: str | None = None
    for group, (label, parts) in enumerate(GROUPS):
        own = _group_items(entities, group)
        for run_id, memory in reversed(memories):
            earlier = memory.get("entities")
            if not isinstance(earlier, Mapping):
                continue
            found = _group_items(earlier, group)
            if not any(found.values()):
                continue
            if label == "models" and any(own.values()):
                if _compares(roles, own_workload) and isinstance(memory.get("current_model"), str):
                    # "what about gpt-4o-mini?": compare with the earlier current model.
                    current_model = memory["current_model"]
                    models = [current_model, *own["models"], *found["models"]]
                    merged["models"] = list(dict.fromkeys(models))
                    merged["providers"] = list(dict.fromkeys(found["providers"] + own["providers"]))
                    reused.append({"what": "current model", "from_run": run_id, "items": 1})
                break
            if any(own.values()):
                break
            for key, _ in parts:
                items = [_scaled(key, item, scale if label == "workload" else None)
                         for item in found[key]]  # fmt: skip
                if label == "workload" and period is not None:
                    moved = [_reperiodised(key, item, period) for item in items]
                    reperiodised = reperiodised or moved != items
                    items = moved
                merged[key] = [*merged.get(key, []), *items]
            if label == "models" and isinstance(memory.get("current_model"), str):
                current_model = memory["current_model"]
            reused.append(
                {"what": label, "from_run": run_id, "items": sum(len(v) for v in found.values())}
            )
            break
    models = [m for m in merged.get("models") or [] if isinstance(m, str)]
    candidates = [m for m in models if m != current_model] if current_model else []
    return Merged(
        entities=merged,
        reused=reused,
        current_model=current_model,
        candidate_models=candidates,
        bonus=bonus,
        language=language,
        scale=scale if any(r["what"] == "workload" for r in reused) else None,
        period=period if reperiodised else None,
    )
