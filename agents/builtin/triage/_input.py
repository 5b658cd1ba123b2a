"""What of a request is read in detail: a bounded stretch of prose, and the log lines apart.

Every analysis of triage works on :attr:`Prepared.detail`, at most
:data:`DETAIL_HEAD` characters from the start and :data:`DETAIL_TAIL` from the
end of the prose (a question usually comes first or last), so its cost has a
fixed ceiling whatever the input. Lines that look like a pasted log are set
apart when there are at least :data:`LOG_MIN_LINES` of them, and summarised
(``_logs``) instead of being read as prose.
"""

from __future__ import annotations

import attrs

from ._logs import is_log_line

DETAIL_HEAD = 6_000
DETAIL_TAIL = 2_000
#: Log-like lines needed before lines are read as a log.
LOG_MIN_LINES = 5
#: Lines of an input examined for log-likeness (the rest count as prose or log
#: by their share in the lines examined).
_MAX_LINES = 20_000
_GAP = "\n...\n"  # ASCII: model-name hints skip their patterns only on ASCII text


@attrs.frozen
class Prepared:
    """A request split for reading: bounded prose, and log lines if there are any."""

    detail: str
    log_lines: tuple[str, ...]
    #: Characters of the input.
    chars: int
    #: Characters of prose left out of ``detail`` (between its head and its tail).
    omitted_chars: int


def _bounded(prose: str) -> tuple[str, int]:
    if len(prose) <= DETAIL_HEAD + DETAIL_TAIL + len(_GAP):
        return prose, 0
    omitted = len(prose) - DETAIL_HEAD - DETAIL_TAIL
    return prose[:DETAIL_HEAD] + _GAP + prose[-DETAIL_TAIL:], omitted


def prepare(text: str) -> Prepared:
    """Split ``text`` into the prose read in detail and the log lines (linear, capped)."""
    lines = text.splitlines()
    if len(lines) < LOG_MIN_LINES:
        detail, omitted = _bounded(text)
        return Prepared(detail, (), len(text), omitted)
    prose: list[str] = []
    log: list[str] = []
    for line in lines[:_MAX_LINES]:
        (log if is_log_line(line) else prose).append(line)
    if len(log) < LOG_MIN_LINES:
        detail, omitted = _bounded(text)
        return Prepared(detail, (), len(text), omitted)
    if len(lines) > _MAX_LINES:
        log.extend(lines[_MAX_LINES:])  # beyond the lines examined: counted with the log
    detail, omitted = _bounded("\n".join(line for line in prose if line.strip()))
    return Prepared(detail, tuple(log), len(text), omitted)
