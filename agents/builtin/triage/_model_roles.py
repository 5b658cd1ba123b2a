"""Which named model the user runs now and which they are thinking of (pure).

"We currently send 40M tokens a month to gpt-4o. How much would gpt-4o-mini
save?" names gpt-4o as the *current* model and gpt-4o-mini as a *candidate*;
the order of the names, or the word "to" before one, does not say which is
which. Each mention is read from the words around it, in this order:

1. Current, from the words just before it: "instead of X", "rather than X",
   "from X" ("move from X to Y"), "cheaper than X", "replace X", "statt X",
   "von X (auf Y)", "au lieu de X".
2. Candidate, from the words just after it: "Y instead", "Y would/could ...",
   "Y save(s)", "Y as an alternative", "auf Y umsteigen/wechseln".
3. Candidate, from the words just before it: a switch verb before "to/auf/à"
   ("switch to Y", "moving from X to Y", "Umstieg auf Y", "passer à Y"),
   "vs/versus/or/compared to/against/what about/try/consider Y", "im Vergleich
   zu Y", "par rapport à Y"; or a hypothetical since the previous model or the
   start of the sentence ("how much would Y save", "what if we used Y",
   "wie viel würden wir mit Y sparen", "combien économiserions-nous avec Y")
   with no word of the present ("currently", "today", "derzeit", ...).
4. Current, from a word of use or the present before it in its sentence: "we
   use/run/are on/send to X", "currently X", "wir nutzen/senden an X",
   "derzeit", "aktuell", "nous utilisons X", "actuellement".
5. Otherwise neither.

The current model is the first mention read as current, else the first read as
neither; the others are candidates. When every mention is a candidate there is
no current model here: a follow-up takes the thread's, and a first message
falls back to the first model named. The text is the English rewrite of
``_locale`` (so "wechseln" already reads "switch", "oder" "or", "mit" "with"),
and the German and French words that rewrite keeps are matched as they are.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import attrs

from ._models import _model_mentions

_I = re.IGNORECASE
#: Characters before a mention (since the previous one) and after it that are read.
_BEFORE = 90
_AFTER = 40
#: Model mentions read at most (as many as the entities read).
MAX_MENTIONS = 64
_SENTENCE_END = re.compile(r"[!?;\n]|\.(?!\d)")

_CURRENT_BEFORE_END = re.compile(
    r"\b(?:instead\s+of|rather\s+than|in\s+place\s+of|replac(?:e|es|ed|ing)|than|from|"
    r"(?:an)?statt|anstelle\s+von|von|au\s+lieu\s+de|(?:plut[ôo]t|cher|ch[èe]re|moins|plus)\s+que|de)"
    r"(?:\s+(?:the|our|using|unser\w*|notre))?\s*\Z",
    _I,
)
_CANDIDATE_AFTER = re.compile(
    r"\A\s*(?:instead|as\s+(?:an?\s+)?(?:alternative|replacement|substitute)|would|could|might|"
    r"saves?\b|be\s+cheaper|switch|umsteig\w*|stattdessen|wäre|würde\w*|könnte\w*|serait|"
    r"pourrait|à\s+la\s+place)",
    _I,
)
_SWITCH_VERBS = re.compile(
    r"\b(?:switch\w*|mov(?:e|es|ed|ing)|migrat\w+|go|going|went|chang(?:e|es|ed|ing)|swap\w*|"
    r"upgrad\w+|downgrad\w+|port|porting|transition\w*|shift\w*|jump\w*|umsteig\w*|umstieg|"
    r"wechsel\w*|umzieh\w*|umstell\w*|pass(?:er|ant|ons|ions|erions)|migrer|bascul\w+)\b",
    _I,
)
_TO_END = re.compile(r"\b(?:to|into|onto|over\s+to|auf|zu|at|à|vers)(?:\s+(?:the|a))?\s*\Z", _I)
_CANDIDATE_BEFORE_END = re.compile(
    r"(?:\bvs\.?|\bversus|\bor|\boder|\bou|\bagainst|\bcompared?\s+(?:to|with)|"
    r"\bcomparison\s+with|\bwhat\s+about|\bhow\s+about|\babout|\btry(?:ing)?|\btest(?:ing)?|"
    r"\bconsider(?:ing)?|\bevaluat\w+|\balternatives?\s+(?:like|such\s+as)|"
    r"\bim\s+vergleich\s+(?:zu|mit)|\bverglichen\s+mit|\bpar\s+rapport\s+(?:à|at)|"
    r"\bcompar[ée]\s+(?:à|at))\s*\Z",
    _I,
)
_HYPOTHETICAL = re.compile(
    r"\b(?:would|could|might|if|should|wonder\w*|würde\w*|könnte\w*|wenn|falls|lohnt|"
    r"si|pourri\w*|serai\w*|économiser\w*)\b|'d\b",
    _I,
)
_PRESENT = re.compile(
    r"\b(?:currently|today|right\s+now|at\s+the\s+moment|at\s+present|presently|"
    r"derzeit|aktuell|momentan|zurzeit|gerade|actuellement)\b",
    _I,
)
_USE = re.compile(
    r"\b(?:use|uses|using|used|run|runs|running|on|send|sends|sending|sent|call|calls|calling|"
    r"spend|spending|pay|paying|serv(?:e|es|ed|ing)|deployed|hosted|we're|we\s+are|"
    r"nutze\w*|verwende\w*|benutze\w*|einsetze\w*|setzen|laufen|läuft|sende\w*|schicke\w*|"
    r"an|bei|utilis\w+|sur)\b",
    _I,
)

CURRENT = "current"
CANDIDATE = "candidate"


def _role(before: str, sentence: str, after: str) -> str | None:
    """The role of one mention (see the module's docstring), or None."""
    if _CURRENT_BEFORE_END.search(before):
        return CURRENT
    if _CANDIDATE_AFTER.match(after):
        return CANDIDATE
    if _TO_END.search(before) and _SWITCH_VERBS.search(sentence):
        return CANDIDATE
    if _CANDIDATE_BEFORE_END.search(before):
        return CANDIDATE
    present = _PRESENT.search(before)
    if _HYPOTHETICAL.search(before) and not present:
        return CANDIDATE
    if present or _USE.search(sentence):
        return CURRENT
    return None


@attrs.frozen
class Roles:
    """The models of a request by role, in order of first mention."""

    #: The model run now (None: none named, or every model named is a candidate).
    current: str | None
    candidates: tuple[str, ...]
    #: Whether words of the request say ``current`` is run now (not just named first).
    stated: bool = False

    @property
    def models(self) -> tuple[str, ...]:
        return (self.current, *self.candidates) if self.current else self.candidates


@functools.lru_cache(maxsize=64)
def model_roles(text: str) -> Roles:
    """The current and candidate models of ``text`` (see the module's docstring)."""
    mentions = [m for m in _model_mentions(text) if m.model is not None][:MAX_MENTIONS]
    roles: dict[str, str | None] = {}
    previous_end = 0
    for index, mention in enumerate(mentions):
        floor = max(previous_end, mention.start - _BEFORE)
        sentence_start = max(
            (m.end() for m in _SENTENCE_END.finditer(text, floor, mention.start)), default=floor
        )
        # The words since the previous model or the sentence's start, whichever is later,
        # and the sentence up to the mention (across earlier models).
        before = text[sentence_start : mention.start]
        reach = max(0, mention.start - _BEFORE)
        opening = max(
            (m.end() for m in _SENTENCE_END.finditer(text, reach, mention.start)), default=reach
        )
        sentence = text[opening : mention.start]
        following = mentions[index + 1].start if index + 1 < len(mentions) else len(text)
        after = text[mention.end : min(following, mention.end + _AFTER)]
        role = _role(before, sentence, after)
        model = mention.model
        assert model is not None
        if model not in roles or (roles[model] != CURRENT and role == CURRENT):
            roles[model] = role
        previous_end = mention.end
    current = next((m for m, r in roles.items() if r == CURRENT), None)
    stated = current is not None
    if current is None:
        current = next((m for m, r in roles.items() if r is None), None)
    return Roles(current, tuple(m for m in roles if m != current), stated)


def roles_among(text: str, named: Sequence[str]) -> Roles:
    """:func:`model_roles` of ``text`` kept to the models ``named`` (triage's entities);
    a named model the text's words do not place is a candidate."""
    read = model_roles(text)
    current = read.current if read.current in named else None
    candidates = [m for m in read.candidates if m in named and m != current]
    candidates += [m for m in named if m != current and m not in candidates]
    return Roles(current, tuple(dict.fromkeys(candidates)), read.stated and current is not None)
