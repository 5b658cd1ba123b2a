"""Model names: from the ways people write them to catalogue ids, with their providers.

:func:`normalise_model` maps one name ("GPT-4o", "sonnet 3.5", "Llama 3.1 70B");
``_model_mentions`` finds every model or family named in a text, and
``_PROVIDER_WORDS`` the providers named outright.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import attrs

from ..catalogue import load_catalogue

#: Claude families people name without a version ("would haiku be faster?").
FAMILIES = ("haiku", "sonnet", "opus")


@functools.cache
def newest_of_family(family: str) -> str | None:
    """The catalogue's newest Claude model of ``family`` ("haiku": ``claude-3-5-haiku``)."""
    found: list[tuple[tuple[int, ...], str]] = []
    for entry in load_catalogue().models:
        parts = entry.id.split("-")
        if entry.provider == "anthropic" and family in parts:
            found.append((tuple(int(p) for p in parts if p.isdigit()), entry.id))
    return max(found)[1] if found else None


_I = re.IGNORECASE
# Date stamps and tags after a model name ("-2024-08-06", "-20241022", "-latest").
_TAIL = r"(?:-(?:[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8}|[0-9]{4}|[0-9]{3}|latest|preview|exp))?"
_V = r"[0-9](?:[.-][0-9](?![0-9]))?"  # "3", "3.5", "3-5" (not the "2" of "-2024")


def _version(text: str) -> tuple[str, str]:
    major, _, minor = text.replace("-", ".").partition(".")
    return major, minor


def _gpt(m: re.Match[str]) -> str | None:
    version = m["ver"].replace("35", "3.5")
    if version == "3.5":
        return "gpt-3.5-turbo"
    base = f"gpt-{version}" + ("o" if m["o"] else "")
    return f"{base}-{m['var'].lower()}" if m["var"] else base


def _four_o(m: re.Match[str]) -> str | None:
    return "gpt-4o-mini" if m["var"] else "gpt-4o"


def _o_series(m: re.Match[str]) -> str | None:
    return f"o{m['n']}" + (f"-{m['var'].lower()}" if m["var"] else "")


def _claude(m: re.Match[str]) -> str | None:
    variant = (m["var"] or "").lower()
    if m["v"] is None:
        return newest_of_family(variant) if variant else None
    major, minor = _version(m["v"])
    minor = "" if minor == "0" else minor
    dotted = f"{major}-{minor}" if minor else major
    if not variant:
        return f"claude-{dotted}" if int(major) <= 2 else None
    if int(major) >= 4:
        return f"claude-{variant}-{dotted}"
    return f"claude-{dotted}-{variant}"


def _gemini(m: re.Match[str]) -> str | None:
    if m["v"] is None or m["var"] is None:
        return None
    version = m["v"] if "." in m["v"] or m["v"] not in ("1", "2") else m["v"] + ".0"
    variant = re.sub(r"[-\s]+", "-", m["var"].lower())
    return f"gemini-{version}-{variant}"


def _llama(m: re.Match[str]) -> str | None:
    if m["v"] is None or (m["size"] is None and m["var"] is None):
        return None
    tail = f"{int(m['size'])}b" if m["size"] else m["var"].lower()
    return f"llama-{m['v']}-{tail}"


def _named(group: str, prefix: str = "") -> Callable[[re.Match[str]], str | None]:
    def build(m: re.Match[str]) -> str | None:
        value = m[group]
        if value is None:
            return None
        return prefix + re.sub(r"[-\s]+", "-", value.lower()).replace("+", "-plus")

    return build


def _none(m: re.Match[str]) -> str | None:
    return None


def _family(m: re.Match[str]) -> str | None:
    """A bare family word: its newest model ("haiku"); "claude" alone names the provider."""
    word = m.group(0).lower()
    return newest_of_family(word) if word in FAMILIES else None


# (pattern, provider, id builder). A builder returning None names the provider only.
_MODEL_RULES: tuple[tuple[re.Pattern[str], str, Callable[[re.Match[str]], str | None]], ...] = (
    (
        re.compile(
            r"\b(?:chat)?gpt[-\s]?(?P<ver>[0-9](?:\.[0-9])?|35)(?![0-9])(?:-?(?P<o>o))?"
            r"(?:[-\s]?(?P<var>mini|nano|turbo))?(?![\w])" + _TAIL,
            _I,
        ),
        "openai",
        _gpt,
    ),
    (re.compile(r"\b4o(?:[-\s]?(?P<var>mini))?\b", _I), "openai", _four_o),
    (
        re.compile(r"\bo(?P<n>[1345])(?:[-\s]?(?P<var>mini|pro))?\b" + _TAIL, _I),
        "openai",
        _o_series,
    ),
    (re.compile(r"\b(?:chatgpt|gpts?)\b", _I), "openai", _none),
    (
        re.compile(
            rf"\bclaude[-\s]?(?P<v>{_V})(?:[-\s]?(?P<var>opus|sonnet|haiku))?\b" + _TAIL, _I
        ),
        "anthropic",
        _claude,
    ),
    (
        re.compile(
            rf"\bclaude[-\s]?(?P<var>opus|sonnet|haiku)(?:[-\s]?(?P<v>{_V}))?\b" + _TAIL, _I
        ),
        "anthropic",
        _claude,
    ),
    (
        re.compile(r"\b(?P<var>opus|sonnet|haiku)[-\s]?(?P<v>[0-9](?:\.[0-9])?)(?![0-9.])\b", _I),
        "anthropic",
        _claude,
    ),
    (
        re.compile(r"(?<![\w.])(?P<v>[0-9](?:\.[0-9])?)[-\s](?P<var>opus|sonnet|haiku)\b", _I),
        "anthropic",
        _claude,
    ),
    (re.compile(r"\b(?:claude|sonnet|haiku|opus)\b", _I), "anthropic", _family),
    (
        re.compile(
            r"\bgemini(?:[-\s]?(?P<v>[0-9](?:\.[0-9])?)(?![0-9]))?"
            r"(?:[-\s]?(?P<var>pro|flash[-\s]?lite|flash|ultra|nano))?\b" + _TAIL,
            _I,
        ),
        "google",
        _gemini,
    ),
    (
        re.compile(
            r"\bgemini[-\s](?P<var>pro|flash[-\s]?lite|flash|ultra)[-\s](?P<v>[0-9]\.[0-9])\b"
            + _TAIL,
            _I,
        ),
        "google",
        _gemini,
    ),
    (
        re.compile(
            r"\b(?:meta[-\s]?)?llama(?:[-\s]?(?P<v>[0-9](?:\.[0-9])?)(?![0-9]))?"
            r"(?:[-\s:](?P<size>[0-9]{1,3})\s?b\b|[-\s](?P<var>scout|maverick))?"
            r"(?:[-\s](?:instruct|chat|versatile|it))?(?:-turbo)?\b",
            _I,
        ),
        "meta",
        _llama,
    ),
    (
        re.compile(
            r"\bmistral[-\s](?P<var>large|medium|small|tiny|nemo|saba)"
            r"(?:[-\s]?(?:latest|[0-9]+(?:\.[0-9]+)?)(?![\w.]))?",
            _I,
        ),
        "mistral",
        _named("var", "mistral-"),
    ),
    (re.compile(r"\bmistral[-\s]?(?P<var>7b)\b", _I), "mistral", _named("var", "mistral-")),
    (
        re.compile(r"\bmixtral(?:[-\s](?P<var>8x7b|8x22b))?\b", _I),
        "mistral",
        _named("var", "mixtral-"),
    ),
    (
        re.compile(r"\b(?P<name>codestral|ministral[-\s]?(?:3b|8b)|pixtral(?:[-\s]large)?)\b", _I),
        "mistral",
        _named("name"),
    ),
    (re.compile(r"\bmistral\b", _I), "mistral", _none),
    (
        re.compile(r"\bdeepseek(?:[-\s](?P<v>v[0-9](?:\.[0-9])?|r1|coder|chat))?\b", _I),
        "deepseek",
        _named("v", "deepseek-"),
    ),
    (
        re.compile(r"\b(?P<name>command[-\s]r(?:\+|[-\s]plus)?)(?![\w+])", _I),
        "cohere",
        _named("name"),
    ),
)

# Per rule of _MODEL_RULES, in order: words of which every match contains at
# least one (lower-cased). A rule whose words are all absent cannot match, and
# a substring test costs far less than a case-insensitive search (~3 us each
# on a typical request). tests/test_triage.py checks the words against matches.
_MODEL_HINTS: tuple[tuple[str, ...], ...] = (
    ("gpt",),  # gpt-4o, chatgpt-4o
    ("4o",),  # 4o, 4o-mini
    ("o1", "o3", "o4", "o5"),  # o1, o3-mini
    ("gpt",),  # chatgpt, gpts
    ("claude",),  # claude 3.5 sonnet
    ("claude",),  # claude sonnet 4
    ("opus", "sonnet", "haiku"),  # sonnet 3.5
    ("opus", "sonnet", "haiku"),  # 3.5 sonnet
    ("claude", "sonnet", "haiku", "opus"),  # claude (the family)
    ("gemini",),  # gemini 1.5 pro
    ("gemini",),  # gemini pro 1.5
    ("llama",),  # llama 3.1 70b
    ("mistral",),  # mistral large
    ("mistral",),  # mistral 7b
    ("mixtral",),  # mixtral 8x7b
    ("codestral", "ministral", "pixtral"),
    ("mistral",),  # mistral (the family)
    ("deepseek",),
    ("command",),  # command r+
)
assert len(_MODEL_HINTS) == len(_MODEL_RULES)

_PROVIDER_WORDS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, _I), provider)
    for pattern, provider in (
        (r"\bopen\s?ai\b", "openai"),
        (r"\banthropic\b", "anthropic"),
        (r"\b(?:google|vertex(?:\s?ai)?)\b", "google"),
        (r"\bmeta\b", "meta"),
        (r"\bcohere\b", "cohere"),
        (r"\bazure\b", "azure"),
        (r"\b(?:aws|bedrock|amazon)\b", "aws"),
        (r"\bgroq\b", "groq"),
        (r"\btogether(?:\.ai|\s?ai)\b", "together"),
        (r"\bfireworks(?:\.ai|\s?ai)?\b", "fireworks"),
        (r"\bhugging\s?face\b", "huggingface"),
    )
)
_PROVIDER_HINTS: tuple[tuple[str, ...], ...] = (
    ("open",),
    ("anthropic",),
    ("google", "vertex"),
    ("meta",),
    ("cohere",),
    ("azure",),
    ("aws", "bedrock", "amazon"),
    ("groq",),
    ("together",),
    ("fireworks",),
    ("hugging",),
)
assert len(_PROVIDER_HINTS) == len(_PROVIDER_WORDS)


def _present(text: str, hints: tuple[tuple[str, ...], ...]) -> list[bool]:
    """Per rule, whether it can match ``text`` at all.

    Only for ASCII text: case-insensitive matching also equates some non-ASCII
    letters with ASCII ones (the Kelvin sign with k, the long s with s), which
    a lower-cased substring test would miss; other text tries every rule.
    """
    if not text.isascii():
        return [True] * len(hints)
    lowered = text.lower()
    return [any(word in lowered for word in words) for words in hints]


def provider_words(text: str) -> list[tuple[int, str]]:
    """(position, provider) of every provider named outright in ``text``."""
    return [
        (m.start(), provider)
        for (pattern, provider), present in zip(
            _PROVIDER_WORDS, _present(text, _PROVIDER_HINTS), strict=True
        )
        if present
        for m in pattern.finditer(text)
    ]


@attrs.frozen
class _ModelMention:
    start: int
    end: int
    model: str | None
    provider: str


def _model_mentions(text: str) -> list[_ModelMention]:
    """Non-overlapping model mentions, leftmost-longest first."""
    found = [
        _ModelMention(m.start(), m.end(), build(m), provider)
        for (pattern, provider, build), present in zip(
            _MODEL_RULES, _present(text, _MODEL_HINTS), strict=True
        )
        if present
        for m in pattern.finditer(text)
        if m.end() > m.start()
    ]
    found.sort(key=lambda f: (f.start, -(f.end - f.start), f.model is None))
    kept: list[_ModelMention] = []
    for mention in found:
        if not kept or mention.start >= kept[-1].end:
            kept.append(mention)
    return kept


def normalise_model(name: str) -> str | None:
    """The catalogue id ``name`` stands for, if the whole of ``name`` is one model name."""
    text = name.strip()
    mentions = _model_mentions(text)
    if len(mentions) == 1 and (mentions[0].start, mentions[0].end) == (0, len(text)):
        return mentions[0].model
    return None


def family_readings(text: str) -> list[str]:
    """What each Claude family named without a version in ``text`` was read as, to say so:
    "“haiku” is read as claude-3-5-haiku, the newest Haiku in the catalogue"."""
    notes: dict[str, None] = {}
    for mention in _model_mentions(text)[:64]:  # as many as the entities read
        written = text[mention.start : mention.end]
        if mention.model is None or any(c.isdigit() for c in written):
            continue
        family = next((f for f in FAMILIES if f in written.lower()), None)
        if family is not None and mention.model == newest_of_family(family):
            notes[
                f"“{written}” is read as {mention.model}, the newest "
                f"{family.capitalize()} in the catalogue"
            ] = None
    return list(notes)
