"""Pasted logs: which lines are log lines, and a bounded summary of them (pure).

A log line starts with a timestamp, an IP address, a log level or is a JSON
object. :func:`summarise_log` reads at most :data:`MAX_LOG_LINES` lines of at
most :data:`MAX_LINE` characters each, so its work is linear in its input and
capped, and its result has a fixed maximum size: counts, distributions (the
:data:`TOP` most common), latency percentiles (of the successful lines: a fast
429 or a 30 s gateway timeout is not a response time; the failed lines' own in
``failed_latency_ms``) and the most repeated warnings and failures (lines with a
level word or a status of 400 or more, one message per status).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .._stats import summarise

#: Lines of a log read at most (the rest are counted, not read): a 64 KB log of
#: realistic lines has about 1,400.
MAX_LOG_LINES = 2_000
#: Characters of one log line read at most.
MAX_LINE = 400
#: Entries kept in each distribution of the summary.
TOP = 8
#: Distinct messages tracked for the most-repeated list.
_MAX_MESSAGES = 200

_I = re.IGNORECASE
_LOG_START = re.compile(
    r"\s*(?:"
    r"\[?\d{4}-\d{2}-\d{2}[T\s]\d{2}:\d{2}"  # 2025-05-01T10:00 / [2025-05-01 10:00
    r"|\[\d{2}/[A-Za-z]{3}/\d{4}"  # [01/May/2025
    r"|[A-Z][a-z]{2}\s{1,2}\d{1,2}\s\d{2}:\d{2}:\d{2}"  # May 07 12:00:00 (syslog)
    r"|\d{1,3}(?:\.\d{1,3}){3}\s"  # an IP address (access logs)
    r"|\d{2}:\d{2}:\d{2}"  # 10:00:01
    r"|\[?(?:INFO|WARN|WARNING|ERROR|DEBUG|TRACE|FATAL|CRITICAL)\]?[\s:]"
    r"|\{\s*\"[^\"]{1,40}\"\s*:"  # a JSON object
    r")"
)
_STATUS = (
    re.compile(r"\bstatus(?:_?code)?[\"']?\s*[=:]\s*[\"']?([1-5]\d\d)\b", _I),
    re.compile(r"\"\s([1-5]\d\d)\s\d+"),  # access log: "POST /x HTTP/1.1" 200 512
    re.compile(r"\b(?:error\scode|http)[:\s]+([1-5]\d\d)\b", _I),
    re.compile(
        r"\b([1-5]\d\d)\s(?:too\smany\srequests|internal\sserver\serror|bad\sgateway|"
        r"service\sunavailable|gateway\stime-?out|overloaded)",
        _I,
    ),
    # "POST /v1/chat 429 1234 ms": a status right after a method and a path.
    re.compile(r"\b(?:GET|POST|PUT|PATCH|DELETE)\s+\S+\s+(?:HTTP/[\d.]+\s+)?\"?\s*([1-5]\d\d)\b"),
)
_LATENCY = re.compile(
    r"\b(?:latency|duration|took|elapsed|response_time|request_time|total_time)"
    r"(?:_(?P<key_unit>ms|s|sec|secs|seconds|millis))?[\"']?\s*[=:]?\s*"
    r"(?P<value>\d+(?:\.\d+)?)\s?(?P<unit>ms|s|sec|secs|seconds)?\b",
    _I,
)
_DURATION = re.compile(r"(?<![\w.:])(?P<value>\d+(?:\.\d+)?)\s?(?P<unit>ms|s)\b", _I)
_ACCESS_TIME = re.compile(r"\"\s[1-5]\d\d\s\d+\s.*\s(\d+\.\d+)\s*$")
_IN_TOKENS = re.compile(r"\b(?:prompt|input|in)_tokens[\"']?\s*[=:]\s*(\d+)", _I)
_OUT_TOKENS = re.compile(r"\b(?:completion|output|out)_tokens[\"']?\s*[=:]\s*(\d+)", _I)
_MODEL = re.compile(
    r"\bmodel[\"']?\s*[=:]\s*[\"']?([\w.:/-]{2,60})|\(model\s([\w.:/-]{2,60})\)", _I
)
_LEVEL = re.compile(r"\b(ERROR|WARN(?:ING)?|FATAL|CRITICAL)\b")
_LEVELS = ("ERROR", "WARN", "FATAL", "CRITICAL")
_DIGITS = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")


def is_log_line(line: str) -> bool:
    """Whether ``line`` looks like a line of a log (checked on its first 60 characters)."""
    return _LOG_START.match(line[:60]) is not None


# Per pattern of _STATUS: words one of which a line must hold for it to match (cheap
# substring tests first: most lines of most logs match few of the patterns).
_STATUS_HINTS: tuple[tuple[str, ...], ...] = (
    ("status",),
    ('"',),
    ("code", "http"),
    ("many", "server", "gateway", "unavailable", "overloaded"),
    ("get ", "post ", "put ", "patch ", "delete "),
)
_LATENCY_HINTS = ("latency", "duration", "took", "elapsed", "_time")


def _status(line: str, lowered: str) -> int | None:
    for pattern, hints in zip(_STATUS, _STATUS_HINTS, strict=True):
        if any(hint in lowered for hint in hints):
            m = pattern.search(line)
            if m is not None:
                return int(m.group(1))
    return None


def _latency_ms(line: str, lowered: str) -> float | None:
    m = _LATENCY.search(line) if any(hint in lowered for hint in _LATENCY_HINTS) else None
    if m is not None:
        unit = (m["key_unit"] or m["unit"] or "ms").lower()
        value = float(m["value"])
        return value if unit in ("ms", "millis") else value * 1000.0
    m = _ACCESS_TIME.search(line) if '"' in line else None
    if m is not None:
        return float(m.group(1)) * 1000.0
    m = _DURATION.search(line)  # any "1234 ms" or "1.2 s" in the line
    if m is not None:
        value = float(m["value"])
        return value if m["unit"].lower() == "ms" else value * 1000.0
    return None


_LEAD = re.compile(r"\A[\s\[(]*(?:[A-Z][a-z]{2}\s+)?[\d][\d\-/:.TZ,+\s]*[\])]?\s*")


def _message(line: str, status: int | None) -> str:
    """A line without its timestamp and with its numbers as ``#``: lines that differ only
    in numbers are the same message. The model's name keeps its digits, and the status
    leads, so a 429 and a 504 are two messages."""
    text = _LEAD.sub("", line, count=1)
    model = _MODEL.search(text) if "model" in text.lower() else None
    if model is None:
        text = _DIGITS.sub("#", text)
    else:
        head, tail = text[: model.start()], text[model.end() :]
        text = _DIGITS.sub("#", head) + model.group(0) + _DIGITS.sub("#", tail)
    text = _SPACES.sub(" ", text).strip()
    return (f"HTTP {status}: {text}" if status is not None else text)[:120]


def summarise_log(lines: Sequence[str]) -> dict[str, Any]:
    """A bounded summary of log ``lines`` (see the module's docstring)."""
    statuses: Counter[int] = Counter()
    models: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    latencies: list[float] = []
    failed_latencies: list[float] = []
    tokens_in = tokens_out = with_tokens = 0
    for raw in lines[:MAX_LOG_LINES]:
        line = raw[:MAX_LINE]
        lowered = line.lower()
        status = _status(line, lowered)
        if status is not None:
            statuses[status] += 1
        latency = _latency_ms(line, lowered)
        if latency is not None:
            # A failure's time (a fast 429, a 30 s gateway timeout) is not a response time.
            (failed_latencies if status is not None and status >= 400 else latencies).append(
                latency
            )
        if "_tokens" in lowered:
            m_in, m_out = _IN_TOKENS.search(line), _OUT_TOKENS.search(line)
            if m_in is not None or m_out is not None:
                with_tokens += 1
                tokens_in += int(m_in.group(1)) if m_in is not None else 0
                tokens_out += int(m_out.group(1)) if m_out is not None else 0
        model = _MODEL.search(line) if "model" in lowered else None
        if model is not None:
            models[(model.group(1) or model.group(2)).lower()] += 1
        level = _LEVEL.search(line) if any(w in line for w in _LEVELS) else None
        if level is not None:
            levels[level.group(1).upper().replace("WARNING", "WARN")] += 1
        if level is not None or (status is not None and status >= 400):
            # The findings: warnings and failures, grouped by message.
            message = _message(line, status)
            if message in messages or len(messages) < _MAX_MESSAGES:
                messages[message] += 1
    read = min(len(lines), MAX_LOG_LINES)
    summary: dict[str, Any] = {"lines": len(lines), "lines_read": read}
    if statuses:
        with_status = sum(statuses.values())
        failed = sum(n for code, n in statuses.items() if code >= 400)
        summary["status_codes"] = {str(c): n for c, n in sorted(statuses.most_common(TOP))}
        summary["lines_with_status"] = with_status
        summary["error_rate_pct"] = round(failed / with_status * 100, 2)
    if latencies:
        summary["latency_ms"] = summarise(latencies)
        if failed_latencies:
            summary["latency_ms"]["of"] = (
                f"successful lines only; {len(failed_latencies)} failed lines "
                f"(status 400 or more) left out"
            )
            summary["failed_latency_ms"] = summarise(failed_latencies)
    elif failed_latencies:
        summary["latency_ms"] = summarise(failed_latencies)
        summary["latency_ms"]["of"] = "failed lines only (status 400 or more)"
    if with_tokens:
        summary["tokens"] = {
            "lines": with_tokens,
            "input": tokens_in,
            "output": tokens_out,
            "input_per_line": round(tokens_in / with_tokens, 1),
            "output_per_line": round(tokens_out / with_tokens, 1),
        }
    if models:
        summary["models"] = dict(models.most_common(TOP))
    if levels:
        summary["levels"] = dict(levels.most_common(TOP))
    repeated = [(m, n) for m, n in messages.most_common(3) if n >= 2 and m]
    if repeated:
        summary["top_messages"] = [{"message": m, "count": n} for m, n in repeated]
    return summary
