"""Reading a request: bound it, set a pasted log apart, detect its language, rewrite it in
the English the parser reads, and extract its entities (pure, cached per text).

:func:`extract_entities` is triage's tool: whatever the size of the input, it
reads at most ``DETAIL_HEAD + DETAIL_TAIL`` characters of prose in detail and
at most ``MAX_LOG_LINES`` log lines, and its result has a bounded size.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import attrs

from ._entities import entities_of_text
from ._input import prepare
from ._language import detect_language
from ._locale import to_english
from ._logs import summarise_log


@attrs.frozen
class Reading:
    """What triage reads of one request."""

    #: The prose read in detail, as written (bounded).
    detail: str
    #: The same prose rewritten in the English the parser reads.
    english: str
    language: str
    #: A summary of the pasted log lines, if there were any.
    log: dict[str, Any] | None
    chars: int
    #: Characters of prose not read in detail.
    omitted_chars: int


@functools.lru_cache(maxsize=64)
def read_request(text: str) -> Reading:
    """How triage reads ``text`` (see the module's docstring)."""
    prepared = prepare(text)
    language = detect_language(prepared.detail)
    english = to_english(prepared.detail, language)
    log = summarise_log(prepared.log_lines) if prepared.log_lines else None
    return Reading(
        detail=prepared.detail,
        english=english,
        language=language,
        log=log,
        chars=prepared.chars,
        omitted_chars=prepared.omitted_chars,
    )


def extract_entities(text: str) -> dict[str, Any]:
    """The entities of ``text`` (``ENTITY_KEYS`` lists, ``omitted`` counts), its
    ``language`` and a summary of its pasted ``log`` (or None)."""
    reading = read_request(text)
    entities = entities_of_text(reading.english)
    if reading.omitted_chars:
        entities["omitted"]["characters"] = reading.omitted_chars
    entities["language"] = reading.language
    entities["log"] = copy.deepcopy(reading.log)
    return entities
