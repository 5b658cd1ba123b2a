"""Prometheus text exposition: parse the workers' /metrics, sum them, render the total (pure).

The parent of ``--workers N`` reads each worker's /metrics as text rather
than asking for a second, JSON form: the text is what the workers already
serve, and it carries each family's type, so whatever series a worker gains
later (store, broker) is summed correctly here without this module knowing
it exists.

How families are combined (:func:`aggregate_expositions`):

- counters, histograms (every ``_bucket``, ``_sum`` and ``_count``) and the
  ``_sum`` and ``_count`` of summaries are summed by sample name and labels;
  a summary's quantiles cannot be summed and are left out;
- gauges (and untyped samples) are summed the same way, and each worker's
  own series follows with a ``worker="i"`` label.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

import attrs

#: Label added to each worker's own gauge series.
WORKER_LABEL = "worker"
CUMULATIVE_KINDS = frozenset({"counter", "histogram", "summary"})
_KINDS = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}

Labels = tuple[tuple[str, str], ...]


@attrs.frozen
class Sample:
    name: str
    labels: Labels
    value: float


@attrs.frozen
class MetricFamily:
    name: str
    #: counter, gauge, histogram, summary or untyped.
    kind: str
    #: As written after ``# HELP name`` (escapes kept).
    help: str
    samples: tuple[Sample, ...]


def parse_exposition(text: str) -> list[MetricFamily]:
    """The families of a Prometheus text exposition (format 0.0.4), in their order.

    Raises ValueError, naming the line, for anything malformed. A sample with
    no ``# TYPE`` before it is untyped.
    """
    kinds: dict[str, str] = {}
    helps: dict[str, str] = {}
    samples: dict[str, list[Sample]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            if line.startswith("#"):
                _parse_comment(line, kinds, helps, samples)
                continue
            sample = _parse_sample(line)
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}: {line[:200]!r}") from None
        samples.setdefault(_family_of(sample.name, kinds), []).append(sample)
    return [
        MetricFamily(name, kinds.get(name, "untyped"), helps.get(name, ""), tuple(found))
        for name, found in samples.items()
    ]


def _parse_comment(
    line: str, kinds: dict[str, str], helps: dict[str, str], samples: dict[str, list[Sample]]
) -> None:
    parts = line[1:].lstrip().split(None, 2)
    if len(parts) < 2 or parts[0] not in ("HELP", "TYPE"):
        return  # any other comment
    keyword, name = parts[0], parts[1]
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad metric name {name!r}")
    rest = parts[2] if len(parts) > 2 else ""
    if keyword == "HELP":
        helps[name] = rest
        return
    kind = rest.strip()
    if kind not in _KINDS:
        raise ValueError(f"unknown metric type {kind!r}")
    if name in kinds or name in samples:
        raise ValueError(f"TYPE of {name} after its samples, or twice")
    kinds[name] = kind
    samples[name] = []


def _family_of(sample_name: str, kinds: Mapping[str, str]) -> str:
    if sample_name in kinds:
        return sample_name
    for family, kind in kinds.items():
        for suffix in _SUFFIXES.get(kind, ()):
            if sample_name == family + suffix:
                return family
    return sample_name


def _parse_sample(line: str) -> Sample:
    match = _NAME.match(line)
    if match is None:
        raise ValueError("no metric name")
    name, pos = match.group(), match.end()
    labels: Labels = ()
    if pos < len(line) and line[pos] == "{":
        labels, pos = _parse_labels(line, pos + 1)
    fields = line[pos:].split()
    if not fields or len(fields) > 2 or (pos < len(line) and not line[pos].isspace()):
        raise ValueError("expected a value (and an optional timestamp)")
    return Sample(name, labels, float(fields[0]))


def _parse_labels(line: str, pos: int) -> tuple[Labels, int]:
    """The labels from just after ``{`` and the position after the closing ``}``."""
    labels: list[tuple[str, str]] = []
    while True:
        while pos < len(line) and line[pos] == " ":
            pos += 1
        if pos < len(line) and line[pos] == "}":
            return tuple(labels), pos + 1
        match = _LABEL_NAME.match(line, pos)
        if match is None or not line.startswith('="', match.end()):
            raise ValueError("bad label")
        pos = match.end() + 2
        value: list[str] = []
        while True:
            if pos >= len(line):
                raise ValueError("unterminated label value")
            char = line[pos]
            if char == '"':
                pos += 1
                break
            if char == "\\":
                if pos + 1 >= len(line) or line[pos + 1] not in _UNESCAPE:
                    raise ValueError("bad escape in a label value")
                value.append(_UNESCAPE[line[pos + 1]])
                pos += 2
                continue
            value.append(char)
            pos += 1
        labels.append((match.group(), "".join(value)))
        if pos < len(line) and line[pos] == ",":
            pos += 1
        elif pos >= len(line) or line[pos] != "}":
            raise ValueError("expected , or } after a label")


class _Sums:
    """Families being added up, in the order they were first seen."""

    def __init__(self) -> None:
        self.meta: dict[str, tuple[str, str]] = {}
        self.totals: dict[str, dict[tuple[str, Labels], float]] = {}
        self.own: dict[str, list[Sample]] = {}

    def add(self, family: MetricFamily, worker: int | None) -> None:
        """Add ``family`` of worker ``worker`` (None: totals of workers that have exited)."""
        kind = self.meta.get(family.name, (family.kind, ""))[0]
        cumulative = kind in CUMULATIVE_KINDS
        if worker is None and not cumulative:
            return  # the gauges of a worker that has gone are gone with it
        self.meta.setdefault(family.name, (family.kind, family.help))
        totals = self.totals.setdefault(family.name, {})
        own = self.own.setdefault(family.name, [])
        for sample in family.samples:
            if kind == "summary" and sample.name == family.name:
                continue  # a quantile
            key = (sample.name, sample.labels)
            totals[key] = totals.get(key, 0.0) + sample.value
            if not cumulative and worker is not None:
                labels = (*sample.labels, (WORKER_LABEL, str(worker)))
                own.append(Sample(sample.name, labels, sample.value))

    def families(self) -> list[MetricFamily]:
        out = []
        for name, (kind, help_text) in self.meta.items():
            summed = [Sample(n, labels, v) for (n, labels), v in self.totals[name].items()]
            out.append(MetricFamily(name, kind, help_text, (*summed, *self.own[name])))
        return out


def aggregate_expositions(
    workers: Mapping[int, Sequence[MetricFamily]], retired: Iterable[MetricFamily] = ()
) -> list[MetricFamily]:
    """The families of ``workers`` (by worker index) combined as this module describes.

    ``retired`` holds the counters and histograms of workers that have
    exited (see :func:`sum_cumulative`): they are added to the sums, so a
    replaced worker does not make a total go backwards.
    """
    sums = _Sums()
    for index in sorted(workers):
        for family in workers[index]:
            sums.add(family, index)
    for family in retired:
        sums.add(family, None)
    return sums.families()


def sum_cumulative(*expositions: Iterable[MetricFamily]) -> list[MetricFamily]:
    """The counters, histograms and summary sums of ``expositions``, summed; no gauges."""
    sums = _Sums()
    for families in expositions:
        for family in families:
            sums.add(family, None)
    return [family for family in sums.families() if family.kind in CUMULATIVE_KINDS]


def render_exposition(families: Iterable[MetricFamily]) -> str:
    """Prometheus text (format 0.0.4) of ``families``."""
    out: list[str] = []
    for family in families:
        if family.help:
            out.append(f"# HELP {family.name} {family.help}")
        out.append(f"# TYPE {family.name} {family.kind}")
        for sample in family.samples:
            if sample.labels:
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels)
                out.append(f"{sample.name}{{{labels}}} {format_value(sample.value)}")
            else:
                out.append(f"{sample.name} {format_value(sample.value)}")
    return "\n".join(out) + "\n"


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it; whole numbers without a fraction."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
