"""The model catalogue: list prices and indicative latencies, shipped as package data.

``data/catalogue.json`` holds the vendors' public list prices (USD per 1M
tokens) as of its ``as_of`` date, with the sources they were read from, and
latencies that are indicative only; and, each dated and sourced: exchange
rates (to compare euro and pound amounts with USD prices), indicative GPU
prices per hour (self-hosting), what HTTP status codes of model APIs mean
(reliability) and the providers' batch discounts. :func:`load_catalogue`
parses it once per process into frozen objects; nothing can change it
afterwards.
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
class GpuEntry:
    """An indicative on-demand price of one GPU model (USD per GPU-hour)."""

    id: str
    name: str
    memory_gb: int
    hourly_usd: float


@attrs.frozen
class StatusCode:
    """What an HTTP status means for a model API, and whether a retry can succeed."""

    code: int
    meaning: str
    retry: bool
    source: str


@attrs.frozen
class Dated:
    """When a table of the catalogue was read, and from where."""

    as_of: str
    source: str = ""


@attrs.frozen
class Catalogue:
    as_of: str
    currency: str
    notes: tuple[str, ...]
    sources: Mapping[str, Source]
    models: tuple[ModelEntry, ...]
    _index: Mapping[str, ModelEntry] = attrs.field(repr=False)
    #: USD per unit of another currency ("EUR", "GBP"), as of ``rates_dated``.
    usd_per_unit: Mapping[str, float] = attrs.field(factory=lambda: MappingProxyType({}))
    rates_dated: Dated = Dated("")
    gpus: tuple[GpuEntry, ...] = ()
    default_gpu: str = ""
    gpus_dated: Dated = Dated("")
    status_codes: Mapping[int, StatusCode] = attrs.field(factory=lambda: MappingProxyType({}))
    status_dated: Dated = Dated("")
    #: provider -> (discount as a fraction, source id)
    batch_discounts: Mapping[str, tuple[float, str]] = attrs.field(
        factory=lambda: MappingProxyType({})
    )
    batch_dated: Dated = Dated("")
    #: provider id -> its name as written ("openai" -> "OpenAI")
    provider_names: Mapping[str, str] = attrs.field(factory=lambda: MappingProxyType({}))

    def provider_name(self, provider: str) -> str:
        """How ``provider`` (an id such as ``"openai"``) is spelled in an answer."""
        return self.provider_names.get(provider, provider)

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

    def cite_source(self, source_id: str, as_of: str) -> str:
        """``"<name> (<url>), as of <date>"`` for one of the catalogue's sources."""
        source = self.sources.get(source_id)
        if source is None:
            return f"as of {as_of}"
        return f"{source.name} ({source.url}), as of {as_of}"

    def gpu(self, name: str | None) -> GpuEntry | None:
        """The GPU entry called ``name`` (or the default one for None)."""
        wanted = (name or self.default_gpu).lower().replace(" ", "")
        return next((g for g in self.gpus if g.id == wanted), None)


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


def _dated(raw: Any, what: str, sources: Mapping[str, Source]) -> Dated:
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"catalogue: {what} must be an object")
    as_of = raw.get("as_of")
    if not isinstance(as_of, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", as_of):
        raise ConfigurationError(f"catalogue: {what}.as_of must be a YYYY-MM-DD date")
    source = raw.get("source", "")
    if source and source not in sources:
        raise ConfigurationError(f"catalogue: {what}.source names no source")
    return Dated(as_of, str(source))


def _tables(data: Mapping[str, Any], sources: Mapping[str, Source]) -> dict[str, Any]:
    """The dated tables besides the models; each is optional."""
    out: dict[str, Any] = {}
    rates = data.get("exchange_rates")
    if rates is not None:
        out["rates_dated"] = _dated(rates, "exchange_rates", sources)
        per = rates.get("usd_per_unit")
        if not isinstance(per, Mapping) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in per.values()
        ):
            raise ConfigurationError("catalogue: exchange_rates.usd_per_unit must map to numbers")
        out["usd_per_unit"] = MappingProxyType({str(k): float(v) for k, v in per.items()})
    gpus = data.get("gpus")
    if gpus is not None:
        out["gpus_dated"] = _dated(gpus, "gpus", sources)
        entries = tuple(
            GpuEntry(
                id=str(g["id"]),
                name=str(g["name"]),
                memory_gb=int(g["memory_gb"]),
                hourly_usd=_number(g, "hourly_usd"),
            )
            for g in gpus.get("models", [])
        )
        if gpus.get("default") not in {g.id for g in entries}:
            raise ConfigurationError("catalogue: gpus.default names no GPU")
        out["gpus"] = entries
        out["default_gpu"] = str(gpus["default"])
    codes = data.get("status_codes")
    if codes is not None:
        out["status_dated"] = _dated(codes, "status_codes", sources)
        table: dict[int, StatusCode] = {}
        for c in codes.get("codes", []):
            if c.get("source") not in sources or not isinstance(c.get("code"), int):
                raise ConfigurationError(f"catalogue: status code {c.get('code')!r} is malformed")
            table[c["code"]] = StatusCode(
                c["code"], str(c["meaning"]), bool(c["retry"]), c["source"]
            )
        out["status_codes"] = MappingProxyType(table)
    batch = data.get("batch_discounts")
    if batch is not None:
        out["batch_dated"] = _dated(batch, "batch_discounts", sources)
        discounts: dict[str, tuple[float, str]] = {}
        for b in batch.get("providers", []):
            discount = b.get("discount")
            if (
                b.get("source") not in sources
                or not isinstance(discount, float | int)
                or not (0 < discount < 1)
            ):
                raise ConfigurationError(f"catalogue: batch discount {b!r} is malformed")
            discounts[str(b["provider"])] = (float(discount), str(b["source"]))
        out["batch_discounts"] = MappingProxyType(discounts)
    return out


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
    names = data.get("providers") or {}
    if not isinstance(names, Mapping) or not all(isinstance(v, str) and v for v in names.values()):
        raise ConfigurationError("catalogue: providers must map each id to its name")
    unnamed = sorted({m.provider for m in models} - set(names))
    if names and unnamed:
        raise ConfigurationError(f"catalogue: providers without a name: {', '.join(unnamed)}")
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
        provider_names=MappingProxyType({str(k): str(v) for k, v in names.items()}),
        **_tables(data, sources),
    )


@functools.cache
def load_catalogue() -> Catalogue:
    """The shipped catalogue, read and validated once per process."""
    text = resources.files("agents.builtin").joinpath("data/catalogue.json").read_text("utf-8")
    return parse_catalogue(json.loads(text))
