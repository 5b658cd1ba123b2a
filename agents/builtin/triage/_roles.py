"""What a figure measures and the role it plays: a plain figure, a threshold or a target.

Both are read from the words before the figure (its clause and the segment since
the previous figure) and just after it: "alert if p95 is above 2 s" is a
``p95_latency`` threshold, "cut costs by 30%" a ``cost_reduction`` target.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from ._numbers import _Raw

_I = re.IGNORECASE

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
    r"not\smore\sthan|max(?:imum)?(?:\sof)?|within|sub-?)|[<≤]=?)\s*\Z",
    _I,
)
_PEAK = re.compile(
    r"\b(?:peak\w*|at\s(?:the\s)?peak|max(?:imum)?|bursts?|bursting|spikes?|spiking|"
    r"top\sspeed)\b[^,;]{0,20}\Z",
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
    r"optimi[sz]e|shave|speed\sup|down)\b",
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
_DIRECT_SAVE = re.compile(
    r"\b(?:save|saving|cut|reduce|shave|slash|trim)"
    r"(?:\s(?:it|them|this|that|costs?|spend|spending|the\s(?:bill|cost|costs|spend)|our\sbill))?"
    r"\s*\Z",
    _I,
)
# Words right after a figure that make it a reduction ("30% less", "50% cheaper").
_LESS_AFTER = re.compile(
    r"\A\s*(?:less|cheaper|lower|fewer|off|smaller|shorter|faster|reduction|cut|decrease|"
    r"save|saved|savings)\b",
    _I,
)
# Words right after a figure that make it a ceiling ("$1,500 max").
_MAX_AFTER = re.compile(r"\A\s*(?:max(?:imum)?|at\smost|or\sless|tops)\b", _I)
# A verb of reduction just after a figure ("die Kosten um 30 % senken", normalised).
_DOWN_AFTER = re.compile(r"\A[^.;!?]{0,30}?\b(?:cut|reduce|lower|save|halve|decrease)\b", _I)
_COST_WORDS = re.compile(
    r"\bcosts?\b|\bspend\w*|\bspent\b|\bbill\w*|\binvoice\w*|\bbudget\b|\bpay\w*|\bprice\w*"
    r"|\bexpens\w*|\bdollars?\b|\beuros?\b|\bpounds?\b|\busd\b|\beur\b|\bgbp\b|[$€£]",
    _I,
)
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
        ("error_rate", r"\berrors?\b|\berror\srate\b|\bfail\w*|\b5xx\b|\bERR\b", "rate"),
        ("cache_hit_rate", r"\bcach\w*|\bhit\srate\b", "rate"),
        ("hallucination_rate", r"\bhallucinat\w*", "rate"),
        ("accuracy", r"\baccura\w*|\bcorrect\w*", "rate"),
        ("eval_score", r"\bscor(?:e|es|ed|ing)\b|\bpass\s?rate\b|\bwin\s?rate\b", "rate"),
        ("success_rate", r"\bsuccess\w*|\bsucceed\w*", "rate"),
        ("availability", r"\buptime\b|\bavailab\w*", "rate"),
        ("utilization", r"\butili[sz]ation\b|\bgpus?\b|\bbusy\b", "rate"),
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


@attrs.frozen
class _Around:
    """The text around a figure, where its subject is looked for."""

    segment: str  # since the previous figure, within the clause
    clause: str  # from the start of the clause (at most _WINDOW characters)
    after: str  # up to the next figure or the end of the clause (at most _AHEAD)
    window: str = ""  # the _WINDOW characters before the figure, across clauses


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


_AT_PERCENTILE = re.compile(
    r"\A\s*(?:at|@|for|in|on|as)?\s*(?:the\s)?(?:p50|p90|p95|p99|median|ttft|50th|90th|95th|99th)\b",
    _I,
)


def _latency_name(around: _Around) -> str:
    """``p95_latency`` etc. when a percentile is named near the figure, else ``latency``."""
    if _AT_PERCENTILE.match(around.after):  # "3 s at p95 and 7 s at p99"
        found = _soonest_after(around.after, _specific)
        if found is not None:
            return found
    return (
        _closest_before(around.segment, _specific)
        or _soonest_after(around.after, _specific)
        or _closest_before(around.segment, _generic)
        or _closest_before(around.clause, _specific)
        or _closest_before(around.window, _specific)
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


def _role(clause: str, segment: str, *, measure: bool = False, after: str = "") -> str | None:
    """``"threshold"``, ``"target"``, ``"reduction"``, ``"increase"`` or None (a plain figure).

    ``measure``: the figure is a latency, rate or throughput, so "we need 99.9%"
    is a target (while "we need 2M tokens a day" is a workload). ``after``: the
    words right after the figure ("30% less", "$1,500 max").
    """
    tail = _FILLER.sub("", segment.rstrip()).rstrip()
    above = _ABOVE.search(tail)
    below = _BELOW.search(tail)
    at_least = _AT_LEAST.search(tail)
    comparator = above or below or at_least
    if _ALERT.search(clause) and (comparator is not None or _AT.search(tail)):
        return "threshold"
    if _BY.search(tail):
        if _DOWN_VERBS.search(clause) or _DOWN_AFTER.match(after):
            return "reduction"
        if _UP_VERBS.search(clause):
            return "increase"
    if _DIRECT_SAVE.search(tail) or _LESS_AFTER.match(after):
        return "reduction"
    if _TO.search(tail) and (
        _DOWN_VERBS.search(clause) or _UP_VERBS.search(clause) or _GOAL_WORDS.search(segment)
    ):
        return "target"
    if below is not None:
        state = _STATE.search(tail[: below.start()].rstrip() + " ")
        return None if state and not _GOAL_PHRASE.search(segment) else "target"
    if at_least is not None or (above is not None and _GOAL_WORDS.search(segment)):
        return "target"
    if _MAX_AFTER.match(after):
        return "target"
    if _GOAL_PHRASE.search(segment) or (measure and _NEED.search(tail)):
        return "target"
    return None


def _base_name(raw: _Raw, around: _Around) -> str | None:
    """What ``raw`` measures, from its unit and the words around it (None: unknown)."""
    if raw.unit == "currency":
        return "cost"
    if raw.unit in ("rps", "tps"):
        # "we peak at 35 req/s but average 8": the peak is not the volume.
        return "peak_throughput" if _PEAK.search(around.segment) else "throughput"
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
    if raw.unit == "percent" and base is None:
        base = subject_of(around.clause) or subject_of(around.window)
    return f"{base}_{role}" if base else role


def _mentions_cost(clause: str) -> bool:
    return bool(_COST_WORDS.search(clause))


def subject_of(text: str) -> str | None:
    """What "it" is about at the end of ``text``: ``cost``, a latency metric, or None.

    The nearest mention wins: "our bill is $5,000 ... can we halve it" is cost,
    "median response time is 1.8 s ... halve it" is ``p50_latency``.
    """
    cost_at = max((m.end() for m in _COST_WORDS.finditer(text)), default=-1)
    latency_at = -1
    for name, pattern, family in _SUBJECTS:
        if family in ("latency", "generic_latency") and name != "timeout":
            latency_at = max(latency_at, max((m.end() for m in pattern.finditer(text)), default=-1))
    if cost_at < 0 and latency_at < 0:
        return None
    if cost_at >= latency_at:
        return "cost"
    return _closest_before(text, _specific) or "latency"
