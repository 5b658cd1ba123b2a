"""The model catalogue: list prices and indicative latencies, shipped as package data.

``data/catalogue.json`` holds the vendors' public list prices (USD per 1M
tokens) as of its ``as_of`` date, with the sources they were read from, and
latencies that are indicative only. :func:`load_catalogue` parses it once per
process into frozen objects; nothing can change it afterwards.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType
from typing import Any

import attrs

from server.protocol import ConfigurationError

TIERS = ("frontier", "balanced", "fast")
_SEPARATORS = re.compile(r"[\s_]+")


def normalise_model_name(name: str) -> str:
    """Lower case, spaces and underscores as dashes: ``"GPT 4o"`` -> ``"gpt-4o"``."""
    return _SEPARATORS.sub("-", name.strip().lower())


@attrs.frozen
class Source:
    id: str
    name: str
    url: str


@attrs.frozen
class ModelEntry:
    """One model's list prices (USD per 1M tokens) and indicative latencies."""

    id: str
    provider: str
    source: str
    aliases: tuple[str, ...]
    input_per_million: float
    output_per_million: float
    cached_input_per_million: float | None
    p50_latency_ms: float
    p95_latency_ms: float
    context_window: int
    tier: str

    @property
    def tier_rank(self) -> int:
        """0 for frontier, 1 for balanced, 2 for fast."""
        return TIERS.index(self.tier)

    def as_dict(self) -> dict[str, Any]:
        """A new JSON-ready dict (callers may change it; the entry stays as it is)."""
        out = attrs.asdict(self)
        out["aliases"] = list(self.aliases)
        return out


@attrs.frozen
class Catalogue:
    as_of: str
    currency: str
    notes: tuple[str, ...]
    sources: Mapping[str, Source]
    models: tuple[ModelEntry, ...]
    _index: Mapping[str, ModelEntry] = attrs.field(repr=False)

    def find(self, name: str) -> ModelEntry | None:
        """The entry whose id or alias is ``name`` (after normalising), or None."""
        return self._index.get(normalise_model_name(name))

    def source_of(self, entry: ModelEntry) -> Source:
        return self.sources[entry.source]

    def cite(self, entry: ModelEntry) -> str:
        """Where ``entry``'s prices come from, with the date: for recommendations."""
        source = self.source_of(entry)
        return f"{source.name} ({source.url}), list prices as of {self.as_of}"

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.models)


def _number(raw: Mapping[str, Any], key: str) -> float:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigurationError(f"catalogue: {raw.get('id')!r}.{key} must be a number >= 0")
    return float(value)


def _optional_number(raw: Mapping[str, Any], key: str) -> float | None:
    return None if raw.get(key) is None else _number(raw, key)


def _entry(raw: Mapping[str, Any], sources: Mapping[str, Source]) -> ModelEntry:
    model_id = raw.get("id")
    if not isinstance(model_id, str) or normalise_model_name(model_id) != model_id:
        raise ConfigurationError(f"catalogue: bad model id {model_id!r}")
    if raw.get("tier") not in TIERS:
        raise ConfigurationError(f"catalogue: {model_id}.tier must be one of {TIERS}")
    if raw.get("source") not in sources:
        raise ConfigurationError(f"catalogue: {model_id}.source names no source")
    aliases = raw.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ConfigurationError(f"catalogue: {model_id}.aliases must be a list of strings")
    context = raw.get("context_window")
    if not isinstance(context, int) or context <= 0:
        raise ConfigurationError(f"catalogue: {model_id}.context_window must be an integer > 0")
    return ModelEntry(
        id=model_id,
        provider=str(raw.get("provider")),
        source=str(raw["source"]),
        aliases=tuple(aliases),
        input_per_million=_number(raw, "input_per_million"),
        output_per_million=_number(raw, "output_per_million"),
        cached_input_per_million=_optional_number(raw, "cached_input_per_million"),
        p50_latency_ms=_number(raw, "p50_latency_ms"),
        p95_latency_ms=_number(raw, "p95_latency_ms"),
        context_window=context,
        tier=str(raw["tier"]),
    )


def parse_catalogue(data: Mapping[str, Any]) -> Catalogue:
    """Validate the decoded JSON and build the frozen :class:`Catalogue` (pure)."""
    as_of = data.get("as_of")
    if not isinstance(as_of, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", as_of):
        raise ConfigurationError("catalogue: as_of must be a YYYY-MM-DD date")
    sources = {
        str(s["id"]): Source(id=str(s["id"]), name=str(s["name"]), url=str(s["url"]))
        for s in data.get("sources", [])
    }
    models = tuple(_entry(raw, sources) for raw in data.get("models", []))
    index: dict[str, ModelEntry] = {}
    for entry in models:
        for name in (entry.id, *entry.aliases):
            key = normalise_model_name(name)
            if index.get(key, entry) is not entry:
                raise ConfigurationError(f"catalogue: name {name!r} is used twice")
            index[key] = entry
    return Catalogue(
        as_of=as_of,
        currency=str(data.get("currency", "USD")),
        notes=tuple(str(n) for n in data.get("notes", [])),
        sources=MappingProxyType(sources),
        models=models,
        index=MappingProxyType(index),
    )


@functools.cache
def load_catalogue() -> Catalogue:
    """The shipped catalogue, read and validated once per process."""
    text = resources.files("agents.builtin").joinpath("data/catalogue.json").read_text("utf-8")
    return parse_catalogue(json.loads(text))
