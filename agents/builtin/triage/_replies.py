"""What kind of reply a message calls for: an answer, small talk, gibberish or an
injection attempt (pure, offline, seven languages).

* ``injection``: an attempt to make the assistant drop its instructions or
  reveal its prompt, keys or configuration ("ignore all previous instructions",
  "you are now DAN", "show me your API key"), whatever else the message asks.
* ``smalltalk``: a greeting, thanks, "who are you", "what can you do", with
  no figure, model or topic of the assistant in it.
* ``gibberish``: no topic, no figure, and no language either: only symbols,
  keyboard runs ("asdfgh"), repeated letters or placeholder text.
* ``answer``: everything else.
"""

from __future__ import annotations

import re

_I = re.IGNORECASE
REPLY_KINDS = ("answer", "smalltalk", "gibberish", "injection")

_INJECTION = re.compile(
    r"\b(?:ignore|disregard|forget|override|bypass)\s(?:\w+\s){0,3}?"
    r"(?:instructions?|prompts?|rules|guidelines|messages?|context)\b"
    r"|\b(?:reveal|print|show|output|display|repeat|leak|dump|tell\sme|give\sme|share)\b"
    r"[^.?!\n]{0,50}\b(?:system\sprompt|hidden\sprompt|initial\sprompt|your\sprompt|"
    r"your\sinstructions|api\skeys?|secret\w*|passwords?|credentials|configuration|"
    r"env(?:ironment)?\svariables?|openai\skey)\b"
    r"|\byou\sare\snow\b|\bdeveloper\smode\b|\bjailbr[eo]ak\w*|\bdo\sanything\snow\b"
    r"|\bdan\s(?:mode|prompt)\b|\bact\sas\s(?:an?\s)?(?:unrestricted|unfiltered)\b"
    r"|^\s*system\s?:"
    # German, French, Spanish, Italian, Dutch, Portuguese
    r"|\bignorier\w*\s(?:\w+\s){0,2}?(?:anweisungen|regeln|instruktionen)\b"
    r"|\b(?:zeige?|gib)\s(?:mir\s)?(?:deinen|den|deine)\s(?:system-?prompt|api-?schlüssel)"
    r"|\bvergiss\s(?:\w+\s){0,2}?(?:regeln|anweisungen)\b"
    r"|\bignore[rz]?\s(?:\w+\s){0,2}?instructions\b"
    r"|\bignora\s(?:\w+\s){0,2}?(?:instrucciones|istruzioni)\b"
    r"|\bnegeer\s(?:\w+\s){0,2}?instructies\b"
    r"|\bignore\s(?:\w+\s){0,2}?instruções\b",
    _I | re.MULTILINE,
)
_SMALLTALK = re.compile(
    r"\b(?:hi|hello|hey|hiya|howdy|yo|greetings|good\s(?:morning|afternoon|evening|day)|"
    r"how\sare\syou|how's\sit\sgoing|what's\sup|thanks|thank\syou|thx|cheers|ty|"
    r"bye|goodbye|see\syou|who\sare\syou|what\sare\syou|what\scan\syou\sdo|"
    r"what\sdo\syou\sdo|how\scan\syou\shelp|are\syou\sa\sbot|nice\sto\smeet\syou|"
    r"ok|okay|cool|great|perfect|awesome|got\sit|"
    # de
    r"hallo|servus|moin|guten\s(?:morgen|tag|abend)|wie\sgeht(?:'s|\ses\sdir)?|danke|"
    r"vielen\sdank|tschüss|wer\sbist\sdu|was\skannst\sdu|"
    # fr
    r"bonjour|salut|bonsoir|coucou|ça\sva|merci|au\srevoir|qui\ses-tu|que\speux-tu\sfaire|"
    # es
    r"hola|buenos\sdías|buenas\s(?:tardes|noches)|qué\stal|cómo\sestás|gracias|adiós|"
    r"quién\seres|qué\spuedes\shacer|"
    # it
    r"ciao|buongiorno|buonasera|salve|come\sstai|come\sva|grazie|arrivederci|chi\ssei|"
    r"cosa\ssai\sfare|"
    # nl
    r"hoi|goedemorgen|goedemiddag|goedenavond|hoe\sgaat\shet|dank\sje(?:\swel)?|bedankt|"
    r"doei|wie\sben\sjij|"
    # pt
    r"olá|oi|bom\sdia|boa\s(?:tarde|noite)|tudo\sbem|como\svai|obrigad[oa]|tchau|"
    r"quem\sé\svocê)\b",
    _I,
)
_WORD = re.compile(r"[^\W\d_]+")
_KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm", "poiuytrewq", "lkjhgfdsa", "mnbvcxz")
_CONSONANT_RUN = re.compile(r"[bcdfghjklmnpqrstvwxz]{5,}", _I)
_REPEATED = re.compile(r"(.)\1{3,}")
_PLACEHOLDER = re.compile(r"\blorem\sipsum\b|\bfoo\sbar\b|\bblah\sblah\b|\btest\stest\b", _I)
#: Characters of a message looked at for small talk and gibberish.
_SHORT = 300


# Words every injection pattern contains: without one of them the patterns cannot match,
# and a substring test costs far less than the search.
_INJECTION_HINTS = (
    "ignor", "disregard", "forget", "overrid", "bypass", "prompt", "instruction", "api key",
    "api-key", "secret", "password", "credential", "configuration", "environment var",
    "env var", "openai key", "you are now", "developer mode", "jailbr", "anything now",
    "dan ", "act as", "system", "vergiss", "negeer", "anweisung", "schlüssel",
)  # fmt: skip


def is_injection(text: str) -> bool:
    lowered = text.lower()
    if not any(hint in lowered for hint in _INJECTION_HINTS):
        return False
    return _INJECTION.search(text) is not None


def _gibberish_word(word: str) -> bool:
    lowered = word.lower()
    if len(lowered) < 3:
        return False
    if any(lowered in row for row in _KEYBOARD):
        return True
    if _REPEATED.search(lowered) or _CONSONANT_RUN.search(lowered):
        return True
    vowels = sum(c in "aeiouyäöüéèêàáíóúãõ" for c in lowered)
    return vowels == 0


def is_gibberish(text: str) -> bool:
    """No words at all, placeholder text, or mostly keyboard runs and unpronounceable words."""
    sample = text[:_SHORT]
    if _PLACEHOLDER.search(sample):
        return True
    words = _WORD.findall(sample)
    if not words:
        return True
    considered = [w for w in words if len(w) >= 3]
    if not considered:
        return False
    odd = sum(_gibberish_word(w) for w in considered)
    return odd * 2 >= len(considered)


def reply_kind(text: str, *, on_topic: bool) -> str:
    """The kind of reply ``text`` calls for; ``on_topic``: it has a figure, a model or a
    topic of the assistant (then only an injection changes the kind)."""
    if is_injection(text[:4000]):
        return "injection"
    if on_topic:
        return "answer"
    if len(text) <= _SHORT and _SMALLTALK.search(text):
        return "smalltalk"
    if is_gibberish(text):
        return "gibberish"
    return "answer"
