"""Entity extraction: the models, providers, figures and time ranges of a request.

:func:`extract_entities` is pure and deterministic; its result has the keys
:data:`ENTITY_KEYS`.

Entities
--------
* ``models``: catalogue ids in order of first mention ("GPT-4o", "gpt4o" ->
  ``gpt-4o``; "4o-mini" -> ``gpt-4o-mini``; "Claude 3.5 Sonnet", "sonnet 3.5"
  -> ``claude-3-5-sonnet``; "Llama 3.1 70B" -> ``llama-3.1-70b``). A Claude
  family named without a version ("haiku", "claude sonnet") is the catalogue's
  newest of it, and triage says so (``model_notes``); another family without a
  version ("Claude", "Llama 70B", "Gemini") gives its provider only.
  ``providers``: named or implied by a model, in order of mention.
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
* ``gpus``: GPUs in use (``{"count": 8, "type": "h100" or null}``);
  ``status_codes``: HTTP status codes named as such ("we get 429s", "HTTP 503",
  "502 and 504 errors": ``{"code": 429, "mentions": 1}``), never read as
  durations (``_reliability``).
* Verbal targets: "halve it", "by half", "by a third" are a ``<subject>_reduction``
  target of 50%, 33.3%, ... on the cost or latency the sentence is about.
* Work and size are bounded: at most ``MAX_NUMBERS`` numbers are read (the
  count of the others is in ``omitted["numbers"]``) and each list keeps at most
  :data:`MAX_ITEMS` entries (the count of the others in ``omitted[key]``).
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ._models import _model_mentions, provider_words
from ._numbers import (
    _NUM,
    _PERIOD_AFTER,
    _PERIOD_BEFORE,
    _SCALES,
    MAX_NUMBERS,
    _clean,
    _metric_unit,
    _period,
    _raw_numbers,
    _token_kind,
)
from ._reliability import reliability_facts
from ._roles import _MEASURES, _Around, _change_name, _metric_name, _role, subject_of

if TYPE_CHECKING:
    from ._numbers import _Raw

_I = re.IGNORECASE

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
    "gpus",
    "status_codes",
)
#: Entries kept per entity list (the rest are counted in ``omitted``).
MAX_ITEMS = 16

# -- cues around a figure ------------------------------------------------------------

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
    r"\A\s?(?:(?:of\s\w+\s)?(?:per|/|a|each|every|in\s(?:a|each))\s?(?:request|call|query|"
    r"conversation|message|chat|completion|prompt|response|ticket|document|doc|turn|pdf|"
    r"classification|question|session|email|page|file|pr|pull\srequest)s?\b|each\b|apiece\b"
    # "300-token summaries", "a 2k-token answer": the size of each item produced
    r"|(?:summar(?:y|ies)|answers?|responses?|repl(?:y|ies)|completions?|outputs?)\b)",
    _I,
)
_TOKENS_PER_REQUEST_BEFORE = re.compile(
    r"\b(?:each|per\srequest|per\scall|averag\w*|avg|typical|typically|on\saverage|"
    r"prompts?|responses?|answers?|requests?|calls?|conversations?|summary|summaries|"
    r"tickets?|documents?|a\ssingle|single|(?:tokens\s)?per\srequest:?)\b",
    _I,
)
_A_REQUEST = re.compile(
    r"\b(?:each|every|per|a|one)\s(?:single\s)?(?:api\s)?(?:request|call|query|conversation|"
    r"message|chat|ticket|document)\b",
    _I,
)
_BUSY_BEFORE = re.compile(
    r"\b(?:busy|used|in\suse|utili[sz]ed|active|working|loaded|serving|doing\swork)\b"
    r"[^.;!?\d]{0,20}\Z",
    _I,
)
# "documents, each about 6,000 tokens": the size of an item read, so input tokens.
_ITEM_SIZE_BEFORE = re.compile(
    r"\b(?:documents?|docs?|pages?|articles?|files?|transcripts?|emails?|pdfs?|contracts?|"
    r"reports?)\b,?\s(?:each|every\sone)\s(?:is\s|has\s|of\s)?(?:about\s|around\s|roughly\s|"
    r"~|≈)?\Z",
    _I,
)
# "a document is ~8k tokens", "each transcript has about 5k tokens": an item's size, read in.
_ITEM_IS_BEFORE = re.compile(
    r"\b(?:a|an|each|every|one|the\saverage|the\stypical|our)\s(?:typical\s|average\s)?"
    r"(?:document|doc|page|article|file|transcript|email|pdf|contract|report|ticket|call\s"
    r"transcript)\s(?:is|has|averages?|runs?|of)\s(?:about\s|around\s|roughly\s|~|≈)?\Z",
    _I,
)
# "2,000 users, each sending ~30 messages a day": a population and what each one does.
_POPULATION = re.compile(
    r"(?<![\w.,])(?P<n>\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s?(?P<scale>k|m)?\s"
    r"(?:(?:active|daily|monthly|paying|internal|concurrent|support|sales)\s)?"
    r"(?P<who>users?|customers?|clients?|employees?|agents?|seats?|members?|tenants?|accounts?|"
    r"people|staff|students?|teams?|stores?|devices?|reps?|analysts?|developers?|engineers?|"
    r"lawyers?|doctors?|sites?|shops?|bots?|workers?)\b(?P<gap>[^.;!?\d]{0,60})\Z",
    _I,
)
_AVERAGE_BEFORE = re.compile(
    r"\b(?:averag\w*|avg|typically|usually|normally|on\saverage|mean)\s(?:of\s|at\s|is\s|"
    r"about\s|around\s|roughly\s|~)*\Z",
    _I,
)
_OUTPUT_ITEM = re.compile(
    r"\A\s?(?:summar(?:y|ies)|answers?|responses?|repl(?:y|ies)|completions?|outputs?)\b", _I
)
_EACH_OF_BEFORE = re.compile(r"\b(?:each|every\sone|all)\sof\s(?:our|the|their|its|my)?\s*\Z", _I)
# "500k conversations a month, ~6 turns each": calls per item of the request volume.
_SUB_REQUESTS_AFTER = re.compile(
    r"\A\s?(?:model\s|llm\s|api\s)?(?P<what>turns?|calls?|messages?|requests?|steps?|exchanges?|"
    r"round[-\s]?trips?|completions?)\s(?:each|apiece|per\s(?:conversation|session|chat|"
    r"ticket|task|document|run|job|item|query|request|user))\b",
    _I,
)
# "120M input + 30M output a month": a large count beside a side of tokens is tokens.
_SIDE_WORD_AFTER = re.compile(
    r"\A\s?(?:(?P<input>input|prompt)|(?P<output>output|completion))s?\b", _I
)
#: Smallest bare count read as tokens from the side word after it alone.
_SIDE_ONLY_MIN = 100_000
_EACH_OF = re.compile(r"\b(?:each|every\sone|apiece)\b", _I)
_PER_MEMBER_AFTER = re.compile(
    r"\A[^.;!?\d]{0,30}?\b(?:each|apiece|per\s(?:user|customer|client|employee|agent|seat|"
    r"member|tenant|account|person|student|team|store|device|rep|analyst|developer|engineer|"
    r"site|shop|bot|worker))\b",
    _I,
)
# "Budget is $2,500 a month", "a budget of €8,000": an amount the spend must fit (a target
# when another amount is the spend).
_BUDGET_BEFORE = re.compile(
    r"\b(?:budget|allowance|spending\s(?:cap|limit)|cost\s(?:cap|ceiling|limit))\b"
    r"(?:\s(?:is|was|of|for\s\w+|would\sbe|will\sbe|should\sbe|is\sonly|is\sjust|"
    r"is\sset\sat|at|now|caps?\sat))*[\s:~≈]*(?:about\s|around\s|roughly\s)?\Z",
    _I,
)
# "top-20 chunks of 1k tokens": tokens per retrieved chunk, and how many chunks.
_CHUNKS_BEFORE = re.compile(
    r"(?<![\w.])(?P<n>\d{1,3})\s?(?:retrieved\s)?(?:chunks?|passages?|snippets?)\s"
    r"(?:of\s)?(?:about\s|around\s|roughly\s|~|≈)?\Z",
    _I,
)
# "with each 1,800 input tokens": per request, whatever period the sentence opened with.
_EACH_BEFORE = re.compile(r"\b(?:each|apiece|per\s(?:request|call))\b[^.;!?\d]{0,12}\Z", _I)
_PER_BEFORE = re.compile(r"(?:\b(?:per|every)\s*|/)\Z", _I)
#: Most tokens one request can hold (the longest context windows): a larger count is a volume.
PER_REQUEST_MAX = 2_000_000
_JOINED = re.compile(
    r"\s*(?:,|and|plus|&|,\s*and|to|or|-|vs\.?|\+|/)\s*"
    r"(?:(?:about|around|roughly|approx\.?|approximately|~|≈)\s*)?",
    _I,
)
_CONNECTOR = re.compile(r"\s*(?:and|or|to|-|vs\.?|,|/|\+)?\s*", _I)
_PHRASE_END = re.compile(r",|\b(?:and|but|while|whereas)\b", _I)
_SPEND_CUE = re.compile(
    r"\b(?:spend\w*|spent|pay|paying|paid|bill\w*|invoice\w*|costs?\sus|burn\w*|budget|"
    r"cost\w*|came\sto|amounts?\sto)\b",
    _I,
)
_TARGET_CUE = re.compile(r"\b(?:to|under|below|by|than|max(?:imum)?|of)\s*\Z", _I)
_SCALED = re.compile(r"[0-9][kmb]\b|[0-9]\s(?:k|m|b|thousand|million|billion)\b", _I)
_CONTEXT_AFTER = re.compile(r"\A\s?(?:tokens?\s)?(?:context|ctx)\b", _I)
_CONTEXT_BEFORE = re.compile(r"\b(?:context|window)\b", _I)
_TOKEN_CUE = re.compile(r"\btokens?\b", _I)
_SIDE_AFTER = re.compile(
    r"\A\s?(?:(?P<input>input|prompt|in)|(?P<output>output|completion|out))\b", _I
)
_REQUEST_CUE = re.compile(r"\b(?:requests?|calls|queries|conversations)\b", _I)
_KIND_WORDS = re.compile(
    r"\b(?P<input>input|prompt)|(?P<output>output|completion|generated|responses?|answers?|"
    r"summary|summaries|back|returns?|returned|returning|repl(?:y|ies)|generates?|generating|"
    r"produces?|producing|emits?|writes?)\b",
    _I,
)
# "output is only 60M", "completion about 2B": a bare amount right after a side of tokens.
_SIDE_BEFORE = re.compile(
    r"\b(?:(?P<input>input|prompt)|(?P<output>output|completion)s?)"
    r"(?:\s(?:is|are|was|were|of|at|about|around|roughly|only|just|maybe|another|totals?|"
    r"comes?\sto))*[\s:~≈]*\Z",
    _I,
)
# "6,000 tokens of context", "tokens of input": the kind after the tokens.
_KIND_AFTER = re.compile(r"\A\s?of\s(?:(?P<input>context|input|prompt)|(?P<output>output))\b", _I)

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
_MAX_MENTIONS = 64  # model mentions and time ranges read at most
_VERBAL_TARGET = re.compile(
    r"\b(?P<half>halve|halving|cut\s(?:\w+\s){0,3}?in\shalf|by\s(?:a\s)?half|half\sthe\s"
    r"(?:cost|costs|bill|spend|price|latency))\b"
    r"|\bby\s(?:a|one)\s(?P<third>third)\b|\bby\s(?P<two_thirds>two\sthirds)\b"
    r"|\bby\sa\s(?P<quarter>quarter)\b|\b(?:a|one)\s(?P<third_less>third)\s(?:less|cheaper|lower)\b",
    _I,
)
_VERBAL_SHARES = {
    "half": 50.0,
    "third": 100 / 3,
    "two_thirds": 200 / 3,
    "quarter": 25.0,
    "third_less": 100 / 3,
}
_AHEAD = 40  # characters looked ahead for a metric's name ("850 ms at p95")

# -- extraction ---------------------------------------------------------------------------


def _mask(
    text: str, spans: Iterable[tuple[int, int]], fill: Callable[[str], str] | None = None
) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = fill(text[start:end]) if fill is not None else " " * (end - start)
    return "".join(chars)


@attrs.frozen
class _Volume:
    """A token or request volume, where it is in the text (for sharing periods)."""

    item: dict[str, Any]
    start: int
    end: int
    #: The period was read from words before the figure, not written with it.
    inferred: bool = False


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
    gpus: list[dict[str, Any]] = attrs.Factory(list)
    status_codes: list[dict[str, Any]] = attrs.Factory(list)
    volumes: list[_Volume] = attrs.Factory(list)  # both kinds, in text order
    #: Numbers not read (beyond MAX_NUMBERS).
    numbers_omitted: int = 0
    #: The currency of amounts written without one: the first currency of the text.
    currency: str | None = None
    #: End of the last tokens-per-request figure ("2,500 input and 300 output tokens").
    per_request_end: int = -1
    #: The tokens-per-request figures, where they are in the text.
    per_request: list[_Volume] = attrs.Factory(list)

    def add_tokens(
        self, raw: _Raw, period: str | None, kind: str, *, inferred: bool = False
    ) -> None:
        item = {"tokens": raw.value, "period": period, "kind": kind}
        self.token_volumes.append(item)
        self.volumes.append(_Volume(item, raw.start, raw.end, inferred))

    def add_requests(self, raw: _Raw, period: str | None, around: _Around | None = None) -> None:
        item: dict[str, Any] = {"requests": raw.value, "period": period}
        members = _population(around) if around is not None else None
        if members is not None:
            # "2,000 users, each sending ~30 messages a day": 60,000 a day.
            count, who = members
            item.update(requests=_clean(raw.value * count), each=raw.value, of=count, who=who)
        self.request_volumes.append(item)
        self.volumes.append(_Volume(item, raw.start, raw.end))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        omitted: dict[str, int] = {}
        for key in ENTITY_KEYS:
            items = list(getattr(self, key))
            if len(items) > MAX_ITEMS:
                omitted[key] = len(items) - MAX_ITEMS
                items = items[:MAX_ITEMS]
            out[key] = items
        if self.numbers_omitted:
            omitted["numbers"] = self.numbers_omitted
        out["omitted"] = omitted
        return out


def _population(around: _Around) -> tuple[float, str] | None:
    """(how many, of whom) when the figure is what each of a population does."""
    found = _POPULATION.search(around.clause)
    if found is None:
        return None
    each_of = _EACH_OF_BEFORE.search(around.clause[: found.start()])
    if not (
        each_of
        or _EACH_OF.search(found["gap"] + around.segment)
        or _PER_MEMBER_AFTER.match(around.after)
    ):
        return None
    count = float(found["n"].replace(",", "")) * _SCALES.get((found["scale"] or "").lower(), 1.0)
    if not (count >= 2 and math.isfinite(count)):
        return None
    return count, found["who"].lower()


def _budgets(out: _Extraction) -> None:
    """A budget beside a spend, or beside volumes whose cost can be computed, is the
    target the spend must fit ("we spend $4,000 a month; the budget is $2,500";
    "budget: $800/month, 2k requests a day ..."); alone, it stays an amount (what
    they spend)."""
    budgets = [m for m in out.money if m.get("budget")]
    for item in out.money:
        item.pop("budget", None)
    volumes = bool(out.token_volumes or out.request_volumes)
    if not budgets or (len(budgets) == len(out.money) and not volumes):
        return
    for item in budgets:
        out.money.remove(item)
        target = {
            "metric": "cost",
            "value": item["amount"],
            "unit": item["currency"],
            "period": item.get("period"),
        }
        if item.get("currency_assumed"):
            target["currency_assumed"] = True
        out.targets.append(target)


def _kind_before(segment: str) -> str | None:
    last: re.Match[str] | None = None
    for m in _KIND_WORDS.finditer(segment):
        last = m
    if last is None:
        return None
    return "input" if last["input"] else "output"


def _extract(text: str) -> _Extraction:
    mentions = _model_mentions(text)[:_MAX_MENTIONS]
    ranges = list(itertools.islice(_TIME_RANGE.finditer(text), _MAX_MENTIONS))
    reliability = reliability_facts(text)
    spans = [(m.start, m.end) for m in mentions]
    spans += [r.span() for r in ranges if any(c.isdigit() for c in r.group(0))]
    scan = _mask(text, spans) if spans else text
    if reliability.spans:
        # A status code reads as "ERR": not a number, but still an error for the words around.
        scan = _mask(scan, reliability.spans, fill=lambda part: "ERR" + " " * (len(part) - 3))
    out = _Extraction(scan=scan)
    out.status_codes = reliability.status_codes
    out.metrics.extend(reliability.metrics)
    placed = [(m.start, m.provider) for m in mentions]
    placed += provider_words(text)[:_MAX_MENTIONS]
    out.models = list(dict.fromkeys(m.model for m in mentions if m.model is not None))
    out.providers = list(dict.fromkeys(p for _, p in sorted(placed)))
    out.time_ranges = list(dict.fromkeys(" ".join(r.group(0).lower().split()) for r in ranges))
    boundaries = [m.end() for m in _CLAUSE_END.finditer(scan)]
    raws, out.numbers_omitted = _raw_numbers(scan, MAX_NUMBERS)
    out.currency = next((r.currency for r in raws if r.currency), None)
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
            window=scan[max(0, raw.start - _WINDOW) : raw.start],
        )
        consumed = _place(out, raw, around)
    _share_per_request(scan, out)
    _share_periods(scan, out.volumes)
    _verbal_targets(scan, out)
    _budgets(out)
    return out


def _leading_period(clause: str) -> str | None:
    """A period word that opens a clause before any figure ("Every day we send 1M input
    tokens and receive 800k output tokens")."""
    found = _PERIOD_BEFORE.search(clause)
    if found is None:
        return None
    first_digit = next((i for i, c in enumerate(clause) if c.isdigit()), len(clause))
    return _period(found) if found.end() <= first_digit else None


def _share_per_request(scan: str, out: _Extraction) -> None:
    """ "4,000 input tokens and 600 output tokens per call": a periodless token volume
    joined to a per-request figure is per request too."""
    if not out.per_request:
        return
    for volume in list(out.volumes):
        item = volume.item
        if "tokens" not in item or (item.get("period") is not None and not volume.inferred):
            continue
        if item["tokens"] > PER_REQUEST_MAX:
            continue
        for other in out.per_request:
            gap = (
                scan[volume.end : other.start]
                if volume.end <= other.start
                else scan[other.end : volume.start]
            )
            if _JOINED.fullmatch(gap):
                kind = item.get("kind")
                prefix = f"{kind}_" if kind in ("input", "output") else ""
                out.token_volumes.remove(item)
                out.volumes.remove(volume)
                metric = {
                    "name": f"{prefix}tokens_per_request",
                    "value": item["tokens"],
                    "unit": "tokens",
                }
                out.metrics.append(metric)
                out.per_request.append(_Volume(metric, volume.start, volume.end))
                break


def _verbal_targets(scan: str, out: _Extraction) -> None:
    """ "halve it", "by a third": a relative reduction of what the sentence is about."""
    lowered = scan.lower()
    if not any(word in lowered for word in ("half", "halv", "third", "quarter")):
        return
    for m in itertools.islice(_VERBAL_TARGET.finditer(scan), 4):
        value = next(v for name, v in _VERBAL_SHARES.items() if m[name])
        subject = subject_of(scan[max(0, m.start() - 200) : m.start()]) or "cost"
        metric = f"{subject}_reduction"
        if not any(t.get("metric") == metric for t in out.targets):
            out.targets.append({"metric": metric, "value": value, "unit": "%"})


def _share_periods(scan: str, volumes: Sequence[_Volume]) -> None:
    """Volumes joined by "and" share a period: "2M input and 500k output tokens a day"."""
    pairs = [
        (earlier, later)
        for earlier, later in itertools.pairwise(volumes)
        if _JOINED.fullmatch(scan[earlier.end : later.start])
    ]
    for earlier, later in reversed(pairs):
        # "nightly jobs: 200M input and 20M output tokens a month": the period written
        # with the pair wins over one read from the words before it.
        written_later = not later.inferred and later.item["period"] is not None
        if earlier.item["period"] is None or (earlier.inferred and written_later):
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
    if raw.unit == "gpus":
        out.gpus.append({"count": raw.value, "type": raw.gpu})
        return raw.end
    if raw.unit == "hours_per_day":
        # "rented 24/7 but only busy 6 hours a day": hours of work, not of rental.
        busy = _BUSY_BEFORE.search(around.segment)
        name = "busy_hours_per_day" if busy else "hours_per_day"
        out.metrics.append({"name": name, "value": raw.value, "unit": "hours"})
        return raw.end
    role = _role(around.clause, around.segment, measure=raw.unit in _MEASURES, after=around.after)
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
            if raw.currency_assumed:
                item["currency_assumed"] = True
        elif raw.unit == "requests" and period:
            item["unit"] = f"requests/{period}"
        (out.thresholds if role == "threshold" else out.targets).append(item)
        return claimed
    if raw.unit == "currency":
        item = {"amount": raw.value, "currency": raw.currency, "period": period}
        if raw.currency_assumed:
            item["currency_assumed"] = True
        if _BUDGET_BEFORE.search(around.segment):
            item["budget"] = True
        out.money.append(item)
        return claimed
    if raw.unit == "rpm":
        out.add_requests(raw, "minute")
        return raw.end
    if raw.unit == "requests":
        out.add_requests(raw, period, around)
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
    side = _SIDE_BEFORE.search(around.segment)
    if (
        tokens is None
        and requests is None
        and side is not None
        and _TOKEN_CUE.search(around.window)
    ):
        kind = "input" if side["input"] else "output"
        tokens_raw = attrs.evolve(raw, unit="tokens", token_kind=kind)
        return _place_tokens(out, tokens_raw, around, rest, kind)
    sub = _SUB_REQUESTS_AFTER.match(rest)
    if tokens is None and requests is None and sub is not None and out.request_volumes:
        # "500k conversations a month, ~6 turns each": each one is 6 calls.
        item = out.request_volumes[-1]
        if item.get("each") is None and isinstance(item.get("requests"), int | float):
            item.update(
                requests=_clean(item["requests"] * raw.value),
                each=raw.value,
                of=item["requests"],
                who="requests",
                unit=sub["what"].lower(),
            )
        return raw.end + sub.end()
    side_word = _SIDE_WORD_AFTER.match(rest)
    if (
        tokens is None
        and requests is None
        and side_word is not None
        and raw.value >= _SIDE_ONLY_MIN
    ):
        kind = "input" if side_word["input"] else "output"
        tokens_raw = attrs.evolve(
            raw, unit="tokens", end=raw.end + side_word.end(), token_kind=kind
        )
        return _place_tokens(out, tokens_raw, around, out.scan[tokens_raw.end :][:120], kind)
    peak = next((m for m in reversed(out.metrics) if m.get("name") == "peak_throughput"), None)
    if tokens is None and requests is None and peak is not None and _AVERAGE_BEFORE.search(cues):
        # "peaks at 50 requests per second but averages 12": the average rate, same unit.
        out.metrics.append({"name": "throughput", "value": raw.value, "unit": peak.get("unit")})
        return raw.end
    if tokens is None and requests is None:
        if _is_spend(out, raw, around, rest):
            money = attrs.evolve(
                raw,
                unit="currency",
                currency=out.currency or "USD",
                currency_assumed=out.currency is None,
            )
            return _place(out, money, around)
        return raw.end
    side = _SIDE_AFTER.match(rest)
    if tokens is not None and side is not None:  # "tokens per request: 1800 input / 250 output"
        kind = "input" if side["input"] else "output"
        tokens_raw = attrs.evolve(raw, unit="tokens", end=raw.end + side.end(), token_kind=kind)
        return _place_tokens(out, tokens_raw, around, out.scan[tokens_raw.end :][:120], kind)
    if tokens is not None and (requests is None or tokens.end() >= requests.end()):
        return _place_tokens(out, raw, around, rest, _kind_before(cues))
    period_match = _PERIOD_AFTER.match(rest)
    out.add_requests(
        raw, _period(period_match) or _period(_last(_PERIOD_BEFORE, around.segment)), around
    )
    return raw.end + (period_match.end() if period_match else 0)


def _is_spend(out: _Extraction, raw: _Raw, around: _Around, rest: str) -> bool:
    """A bare amount is money when spend words or other amounts surround it
    ("we spend 18k a month", "bring it down to 150k", "reduce by 1k")."""
    if raw.value < 1:
        return False
    if _SPEND_CUE.search(around.segment) and (
        _PERIOD_AFTER.match(rest)
        or raw.value >= 100
        or _SCALED.search(out.scan, raw.start, raw.end)
    ):
        return True
    money_nearby = bool(out.money) or out.currency is not None or _SPEND_CUE.search(around.window)
    return bool(money_nearby and _TARGET_CUE.search(around.segment[-30:]))


def _place_tokens(out: _Extraction, raw: _Raw, around: _Around, rest: str, kind: str | None) -> int:
    segment = around.segment
    if _PER_BEFORE.search(segment):
        return raw.end  # "cheaper per 1M tokens": a unit of price, not a volume
    after_kind = _KIND_AFTER.match(rest)
    if kind is None and after_kind is not None:
        kind = "input" if after_kind["input"] else "output"
        raw = attrs.evolve(raw, end=raw.end + after_kind.end())
        rest = out.scan[raw.end : raw.end + 120]
        if after_kind["input"] == "context" and not _A_REQUEST.search(around.clause):
            # "gpt-4o with 12k tokens of context": the size of a request's context.
            out.metrics.append({"name": "context_length", "value": raw.value, "unit": "tokens"})
            return raw.end
    kind = kind or _kind_before(segment)
    if kind is None and (
        _ITEM_SIZE_BEFORE.search(around.clause[-60:]) or _ITEM_IS_BEFORE.search(segment[-60:])
    ):
        kind = "input"  # "15k documents, each about 6,000 tokens": what is read in
    chunks = _CHUNKS_BEFORE.search(segment)
    if chunks is not None and raw.value * float(chunks["n"]) <= PER_REQUEST_MAX:
        # "top-20 chunks of 1k tokens each": a request's retrieved context is 20k tokens.
        out.metrics.append(
            {
                "name": "context_length",
                "value": _clean(raw.value * float(chunks["n"])),
                "unit": "tokens",
                "chunks": float(chunks["n"]),
                "tokens_per_chunk": raw.value,
            }
        )
        per_chunk = _TOKENS_PER_REQUEST_AFTER.match(rest)
        return raw.end + (per_chunk.end() if per_chunk is not None else 0)
    if _CONTEXT_BEFORE.search(segment[-40:]) or _CONTEXT_AFTER.match(rest):
        out.metrics.append({"name": "context_length", "value": raw.value, "unit": "tokens"})
        return raw.end
    period_match = _PERIOD_AFTER.match(rest)
    period = (
        raw.period
        or _period(period_match)
        or _period(_last(_PERIOD_BEFORE, segment))
        or _leading_period(around.clause)
    )
    claimed = raw.end + (period_match.end() if period_match else 0)
    written = raw.period is not None or period_match is not None
    if not written and _EACH_BEFORE.search(segment):
        period = None  # "per day 25000 requests with each 1800 input tokens"
    per_request = None if period_match else _TOKENS_PER_REQUEST_AFTER.match(rest)
    if kind is None and per_request is not None and _OUTPUT_ITEM.match(per_request.group(0)):
        kind = "output"  # "~500-token answers": the size of each item produced
    joined = out.per_request_end >= 0 and _JOINED.fullmatch(
        out.scan[out.per_request_end : raw.start]
    )
    if per_request is not None or (
        raw.value <= PER_REQUEST_MAX
        and (
            joined
            or (
                period is None
                and (
                    _TOKENS_PER_REQUEST_BEFORE.search(segment[-40:])
                    or _A_REQUEST.search(around.clause)  # "every request sends ... gets back"
                )
            )
        )
    ):
        prefix = f"{kind}_" if kind in ("input", "output") else ""
        name = f"{prefix}tokens_per_request"
        item = {"name": name, "value": raw.value, "unit": "tokens"}
        out.metrics.append(item)
        end = raw.end + (per_request.end() if per_request is not None else 0)
        out.per_request_end = end
        out.per_request.append(_Volume(item, raw.start, end))
        return end
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
    out.add_tokens(raw, period, kind or "total", inferred=not written)
    return claimed


def entities_of_text(text: str) -> dict[str, Any]:
    """The entities of English ``text`` (see the module's docstring); no bounding of the input."""
    return _extract(text).as_dict()
