"""HTTP status codes and failure ratios: reliability facts, never latencies (pure).

"we get 429s" names the status code 429, not a duration of 429 seconds: a
status code is a three-digit number from :data:`KNOWN_CODES` written with a
plural ``s`` ("429s"), a hyphen ("429-errors") or within a few words of an
error word ("HTTP 503", "502 and 504 errors", "returns 500 Internal Server
Error"). "1 in 20 requests" near an error word is an error rate of 5%.
:func:`reliability_facts` returns them with the spans they take, which the
number reader then skips.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

_I = re.IGNORECASE
#: Status codes a user of a model API meets (4xx client errors, 5xx server errors,
#: Anthropic's 529 "overloaded").
KNOWN_CODES = frozenset(
    {400, 401, 402, 403, 404, 408, 409, 413, 422, 424, 429, 500, 502, 503, 504, 520, 524, 529}
)
_DIGITS3 = re.compile(r"[1-5]\d\d")
_CODE = re.compile(
    r"(?<![\w.$€£/:-])(?P<code>[1-5]\d\d)(?P<plural>s)?(?:-(?=errors?\b))?(?![\w%.]\d|[\w%])"
)
_CUE_BEFORE = re.compile(
    r"\b(?:http|status|errors?|codes?|get|gets|getting|got|see|seeing|saw|hit|hitting|"
    r"receive|receiving|received|return|returns|returned|returning|throws?|throwing|"
    r"lots\sof|constantly|occasional|frequent|fail\w*\swith|mostly)\W{0,3}\Z",
    _I,
)
_CUE_AFTER = re.compile(
    r"\A\W{0,3}(?:errors?|responses?|codes?|status|too\smany\srequests|internal\sserver\serror|"
    r"bad\sgateway|service\sunavailable|gateway\stime-?out|overloaded|rate[\s_]limit\w*|"
    r"quota|from\s(?:the\s)?(?:api|openai|anthropic|google|azure|aws|bedrock|provider))",
    _I,
)
_ERROR_WORDS = re.compile(
    r"\b(?:fail\w*|errors?|error\srate|rate[\s_-]limit\w*|429|5xx|time\s?outs?|timed\sout|"
    r"throttl\w*|rejected|dropped)\b",
    _I,
)
_RATIO = re.compile(
    r"(?<![\w.])(?P<a>\d+)\s(?:in|out\sof)\s(?P<b>\d+)\s(?:requests?|calls?|queries|tries|attempts)\b",
    _I,
)
_UNIT_AFTER = re.compile(
    r"\A\s?(?:input|output|prompt|completion|tokens?|toks?|ms|s\b|secs?|seconds?|minutes?|"
    r"requests?|calls|queries|users|rps|qps|%|percent|k\b|m\b|gpus?|documents?|dollars|"
    r"euros?|[$€£]|per\b|a\s(?:day|month|week|year)|chunks|times)",
    _I,
)
_JOIN = re.compile(r"\s*(?:,|/|&|\band\b|\bor\b|,\s*and\b)\s*", _I)
#: Status codes kept in one request's facts at most.
MAX_CODES = 12


@attrs.frozen
class ReliabilityFacts:
    status_codes: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    spans: list[tuple[int, int]]


def reliability_facts(scan: str) -> ReliabilityFacts:
    """The status codes and failure ratios of ``scan``, and the spans they occupy."""
    candidates: list[tuple[re.Match[str], bool]] = []
    for digits in _DIGITS3.finditer(scan):
        # A cheap scan for three digits first; the full pattern only where one is.
        if int(digits.group(0)) not in KNOWN_CODES:
            continue
        m = _CODE.match(scan, digits.start())  # its lookbehind sees the text before
        if m is None:
            continue
        before = scan[max(0, m.start() - 24) : m.start()]
        after = scan[m.end() : m.end() + 30]
        hyphen = m.group(0).endswith("-")
        if _UNIT_AFTER.match(after):
            continue  # "400 output tokens", "500 ms": a quantity
        cued = bool(m["plural"] or hyphen or _CUE_BEFORE.search(before) or _CUE_AFTER.match(after))
        candidates.append((m, cued))
        if len(candidates) >= 4 * MAX_CODES:
            break
    # "502 and 504 errors": a code joined to a status code is one too.
    accepted = [cued for _, cued in candidates]
    for _ in range(2):
        for i in range(len(candidates) - 1):
            joined = _JOIN.fullmatch(scan[candidates[i][0].end() : candidates[i + 1][0].start()])
            if joined and (accepted[i] or accepted[i + 1]):
                accepted[i] = accepted[i + 1] = True
    counts: dict[int, int] = {}
    spans: list[tuple[int, int]] = []
    for (m, _), ok in zip(candidates, accepted, strict=True):
        code = int(m["code"])
        if not ok or (code not in counts and len(counts) >= MAX_CODES):
            continue
        counts[code] = counts.get(code, 0) + 1
        spans.append(m.span())
    metrics: list[dict[str, Any]] = []
    lowered = scan.lower()
    ratios = _RATIO.finditer(scan) if (" in " in lowered or " out of " in lowered) else ()
    for m in ratios:
        a, b = int(m["a"]), int(m["b"])
        sentence = scan[max(0, m.start() - 120) : m.end() + 60]
        if 0 < a <= b and _ERROR_WORDS.search(sentence):
            metrics.append({"name": "error_rate", "value": round(a / b * 100, 4), "unit": "%"})
            spans.append(m.span())
            break
    codes = [{"code": code, "mentions": n} for code, n in counts.items()]
    return ReliabilityFacts(codes, metrics, spans)
