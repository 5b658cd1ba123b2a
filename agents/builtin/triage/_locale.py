"""Reading numbers and words of other languages: a request rewritten the way the English
parser reads it (pure, linear in its input).

:func:`canonical_numbers` rewrites every number without thousands separators
and with a decimal point: by the language's convention (``5.000,50`` is
5000.50 in German, ``8 000`` is 8000 in French) and, in English text, the
forms people also write (``EUR 5.000``, ``3,6k``, ``3 000 €``).
:func:`to_english` then replaces the phrases triage needs from German,
French, Spanish, Italian, Dutch and Portuguese (periods, token kinds,
requests, units, targets, spend) with their English words, so one parser
reads them all. Positions in the result do not match the input's.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

_I = re.IGNORECASE
# Only numbers written with a separator need rewriting ("5.000", "2,5", "8 000").
_NUMBER = re.compile(
    r"(?<![\w.,])\d+(?:(?:[.,'\u00a0\u202f]|\s(?=\d{3}(?!\d)))\d+)+(?![\d_])(?![^\W\d_]{2})"
)
_SEPARATED = re.compile(r"\d[.,'\u00a0\u202f ]\d")
_DIGIT_RUN = re.compile(r"\d+")
_SEPARATOR = re.compile(r"[^\d]")
_MONEY_BEFORE = re.compile(r"(?:[€$£]|\b(?:eur|usd|gbp))\s?\Z", _I)
_COUNTABLE_AFTER = re.compile(
    r"\A\s?(?:[€$£]|(?:eur|usd|gbp|euros?|dollars?|pounds?|tokens?|requests?|calls|"
    r"documents?|messages?|queries)\b)",
    _I,
)
_SPACES = "\u00a0\u202f' "


def _groups(token: str) -> tuple[list[str], list[str]]:
    return _DIGIT_RUN.findall(token), _SEPARATOR.findall(token)


def _thousands(digits: list[str]) -> bool:
    """Digit groups that can be one number with thousands separators ("0.500" cannot)."""
    head = digits[0]
    return 1 <= len(head) <= 3 and head[0] != "0" and all(len(d) == 3 for d in digits[1:])


def _canonical(token: str, decimal_comma: bool, before: str, after: str) -> str:
    digits, seps = _groups(token)
    if not seps:
        return token
    last = seps[-1]
    if all(s in _SPACES for s in seps):
        return "".join(digits) if _thousands(digits) else token
    if len(set(seps)) > 1:
        # "12.500,50" or "1,234.5": the last separator is the decimal mark.
        whole = digits[:-1]
        if _thousands(whole) and all(s != last for s in seps[:-1]):
            return "".join(whole) + "." + digits[-1]
        return token
    if len(seps) > 1:  # "1.234.567" or "1,234,567"
        return "".join(digits) if _thousands(digits) else token
    head, tail = digits
    grouped = _thousands(digits)
    if last in _SPACES:
        return head + tail if grouped else token
    if decimal_comma:
        if last == ",":
            return f"{head}.{tail}"
        return head + tail if grouped else f"{head}.{tail}"
    if last == ",":
        return head + tail if grouped else f"{head}.{tail}"
    # English "5.000": a thousands dot next to money or a count, else a decimal point.
    if grouped and (_MONEY_BEFORE.search(before) or _COUNTABLE_AFTER.match(after)):
        return head + tail
    return token


def canonical_numbers(text: str, language: str) -> str:
    """``text`` with every number written ``1234.5`` (see the module's docstring)."""
    if _SEPARATED.search(text) is None:
        return text  # no number with a separator: nothing to rewrite
    decimal_comma = language != "en"
    parts: list[str] = []
    last = 0
    for m in _NUMBER.finditer(text):
        start, end = m.span()
        parts.append(text[last:start])
        parts.append(
            _canonical(
                m.group(0), decimal_comma, text[max(0, start - 5) : start], text[end : end + 12]
            )
        )
        last = end
    parts.append(text[last:])
    return "".join(parts)


# -- words ------------------------------------------------------------------------------

_PHRASES: Mapping[str, Mapping[str, str]] = {
    "de": {
        "eingabe-tokens": "input tokens",
        "eingabetokens": "input tokens",
        "eingabe tokens": "input tokens",
        "input-tokens": "input tokens",
        "ausgabe-tokens": "output tokens",
        "ausgabetokens": "output tokens",
        "ausgabe tokens": "output tokens",
        "output-tokens": "output tokens",
        "eingabe": "input",
        "ausgabe": "output",
        "nur": "only",
        "pro monat": "per month",
        "im monat": "per month",
        "je monat": "per month",
        "monatlich": "per month",
        "pro tag": "per day",
        "am tag": "per day",
        "täglich": "per day",
        "pro woche": "per week",
        "wöchentlich": "per week",
        "pro jahr": "per year",
        "im jahr": "per year",
        "jährlich": "per year",
        "pro stunde": "per hour",
        "stündlich": "per hour",
        "stunde": "hour",
        "stunden": "hours",
        "pro sekunde": "per second",
        "pro gpu-stunde": "per gpu-hour",
        "gpu-stunde": "gpu-hour",
        "pro anfrage": "per request",
        "je anfrage": "per request",
        "anfragen": "requests",
        "anfrage": "request",
        "aufrufe": "calls",
        "dokumente": "documents",
        "millisekunden": "ms",
        "sekunden": "seconds",
        "sekunde": "second",
        "minuten": "minutes",
        "latenz": "latency",
        "antwortzeit": "response time",
        "kosten": "costs",
        "rechnung": "bill",
        "ausgaben": "spend",
        "geben": "spend",
        "zahlen": "pay",
        "beträgt": "is",
        "liegt bei": "is",
        "unter": "under",
        "weniger als": "less than",
        "weniger": "less",
        "mehr als": "more than",
        "über": "over",
        "senken": "cut",
        "reduzieren": "reduce",
        "halbieren": "halve",
        "sparen": "save",
        "ziel": "target",
        "brauchen": "need",
        "wollen": "want",
        "wir": "we",
        "unsere": "our",
        "unser": "our",
        "unseren": "our",
        "jede": "each",
        "jeder": "each",
        "jedes": "each",
        "je": "each",
        "etwa": "about",
        "ca.": "about",
        "circa": "about",
        "ungefähr": "about",
        "rund": "about",
        "mit": "with",
        "für": "for",
        "und": "and",
        "oder": "or",
        "vergleiche": "compare",
        "was kostet": "what does it cost",
        "wie viel": "how much",
        "auslastung": "utilisation",
        "fehler": "errors",
        "ständig": "constantly",
        "bekommen": "get",
        "langsam": "slow",
        "schneller": "faster",
        "warum": "why",
        "günstiger": "cheaper",
        "wechseln": "switch",
        "betreiben": "run",
        "mio.": "M",
        "mio": "M",
        "millionen": "M",
        "million": "M",
        "mrd.": "B",
        "milliarden": "B",
        "tsd.": "k",
        "tausend": "k",
    },
    "fr": {
        "tokens d'entrée": "input tokens",
        "tokens en entrée": "input tokens",
        "de tokens en entrée": "input tokens",
        "jetons d'entrée": "input tokens",
        "tokens de sortie": "output tokens",
        "tokens en sortie": "output tokens",
        "de tokens en sortie": "output tokens",
        "jetons de sortie": "output tokens",
        "en entrée": "input tokens",
        "en sortie": "output tokens",
        "par mois": "per month",
        "chaque mois": "per month",
        "mensuellement": "per month",
        "par jour": "per day",
        "par semaine": "per week",
        "par an": "per year",
        "par année": "per year",
        "par heure": "per hour",
        "de l'heure": "per hour",
        "par seconde": "per second",
        "requêtes": "requests",
        "requête": "request",
        "demandes": "requests",
        "appels": "calls",
        "millisecondes": "ms",
        "secondes": "seconds",
        "seconde": "second",
        "latence": "latency",
        "moins de": "under",
        "passer sous": "get under",
        "sous": "under",
        "objectif": "target",
        "réduire": "reduce",
        "la facture": "the bill",
        "facture": "bill",
        "de moitié": "by half",
        "par deux": "in half",
        "diviser": "cut",
        "dépensons": "spend",
        "dépense": "spend",
        "dépensent": "spend",
        "nous": "we",
        "notre": "our",
        "nos": "our",
        "utilisons": "use",
        "chaque": "each",
        "environ": "about",
        "pour": "for",
        "avec": "with",
        "sur": "on",
        "et": "and",
        "combien coûte": "how much does it cost",
        "coûte": "costs",
        "coûts": "costs",
        "coût": "cost",
        "hébergeons": "host",
        "à": "at",
        "d'utilisation": "utilisation",
        "erreurs": "errors",
        "recevons": "get",
        "beaucoup d'": "many ",
        "millions de": "M",
        "million de": "M",
        "millions": "M",
        "million": "M",
        "milliards de": "B",
        "milliards": "B",
        "de tokens": "tokens",
    },
    "es": {
        "tokens de entrada": "input tokens",
        "tokens de salida": "output tokens",
        "de entrada": "input tokens",
        "de salida": "output tokens",
        "entrada": "input tokens",
        "salida": "output tokens",
        "al mes": "per month",
        "por mes": "per month",
        "cada mes": "per month",
        "mensuales": "per month",
        "mensual": "per month",
        "al día": "per day",
        "por día": "per day",
        "diarios": "per day",
        "diarias": "per day",
        "al año": "per year",
        "por año": "per year",
        "por semana": "per week",
        "por hora": "per hour",
        "por segundo": "per second",
        "solicitudes": "requests",
        "solicitud": "request",
        "peticiones": "requests",
        "llamadas": "calls",
        "consultas": "queries",
        "segundos": "seconds",
        "latencia": "latency",
        "menos de": "under",
        "queremos": "we want",
        "bajarla": "reduce it",
        "bajarlo": "reduce it",
        "reducirlo un": "reduce it by",
        "reducirla un": "reduce it by",
        "reducir un": "reduce by",
        "reducirlo": "reduce it",
        "reducir": "reduce",
        "a la mitad": "by half",
        "gastamos": "we spend",
        "hacemos": "we do",
        "usamos": "we use",
        "recibimos": "we get",
        "cada": "each",
        "con": "with",
        "en": "on",
        "y": "and",
        "nuestra": "our",
        "nuestro": "our",
        "errores": "errors",
        "es de": "is",
        "muchos": "many",
        "mil millones de": "B",
        "millones de": "M",
        "millones": "M",
        "millón": "M",
        "mil": "k",
    },
    "it": {
        "token in ingresso": "input tokens",
        "token in uscita": "output tokens",
        "in ingresso": "input tokens",
        "in uscita": "output tokens",
        "al mese": "per month",
        "ogni mese": "per month",
        "mensili": "per month",
        "al giorno": "per day",
        "giornalieri": "per day",
        "all'anno": "per year",
        "alla settimana": "per week",
        "all'ora": "per hour",
        "richieste": "requests",
        "richiesta": "request",
        "chiamate": "calls",
        "secondi": "seconds",
        "latenza": "latency",
        "meno di": "under",
        "sotto": "under",
        "dimezzare": "halve",
        "il costo": "the cost",
        "costo": "cost",
        "spendiamo": "we spend",
        "usiamo": "we use",
        "utilizziamo": "we use",
        "ogni": "each",
        "circa": "about",
        "con": "with",
        "sulla nostra": "on our",
        "nella nostra": "in our",
        "su": "on",
        "e": "and",
        "è di": "is",
        "la nostra": "our",
        "nostra": "our",
        "nostro": "our",
        "milioni di": "M",
        "milioni": "M",
        "miliardi": "B",
        "mila": "k",
        "token": "tokens",
    },
    "nl": {
        "invoertokens": "input tokens",
        "invoer-tokens": "input tokens",
        "inputtokens": "input tokens",
        "uitvoertokens": "output tokens",
        "uitvoer-tokens": "output tokens",
        "outputtokens": "output tokens",
        "per maand": "per month",
        "maandelijks": "per month",
        "elke maand": "per month",
        "per dag": "per day",
        "dagelijks": "per day",
        "per jaar": "per year",
        "jaarlijks": "per year",
        "per week": "per week",
        "wekelijks": "per week",
        "per uur": "per hour",
        "aanvragen": "requests",
        "aanvraag": "request",
        "verzoeken": "requests",
        "seconden": "seconds",
        "seconde": "second",
        "latentie": "latency",
        "onder de": "under",
        "onder": "under",
        "minder dan": "less than",
        "doel": "target",
        "besparen": "save",
        "geven": "spend",
        "uit aan": "on",
        "rekening": "bill",
        "willen": "want",
        "komen": "get",
        "elke": "each",
        "gebruikt": "uses",
        "doen": "do",
        "met": "with",
        "voor": "for",
        "en": "and",
        "onze": "our",
        "hoe": "how",
        "miljoen": "M",
        "miljard": "B",
        "duizend": "k",
    },
    "pt": {
        "tokens de entrada": "input tokens",
        "tokens de saída": "output tokens",
        "de entrada": "input tokens",
        "de saída": "output tokens",
        "entrada": "input tokens",
        "saída": "output tokens",
        "por mês": "per month",
        "ao mês": "per month",
        "mensais": "per month",
        "mensal": "per month",
        "por dia": "per day",
        "ao dia": "per day",
        "por ano": "per year",
        "ao ano": "per year",
        "por semana": "per week",
        "por hora": "per hour",
        "pedidos": "requests",
        "pedido": "request",
        "requisições": "requests",
        "chamadas": "calls",
        "segundos": "seconds",
        "segundo": "second",
        "latência": "latency",
        "menos de": "under",
        "precisamos de": "we need",
        "pela metade": "by half",
        "é de": "is",
        "reduzir": "reduce",
        "o custo": "the cost",
        "custo": "cost",
        "gastamos": "we spend",
        "usamos": "we use",
        "cada": "each",
        "com o": "with",
        "com": "with",
        "no": "on",
        "e": "and",
        "a nossa": "our",
        "nossa": "our",
        "nosso": "our",
        "milhões de": "M",
        "milhões": "M",
        "milhão": "M",
        "bilhões": "B",
        "mil": "k",
    },
}
# Rewrites that need a number next to them ("um 30 %": by 30 %).
_NUMBER_PHRASES: Mapping[str, tuple[tuple[str, str], ...]] = {
    "de": (
        (r"\bum(?=\s+\d)", "by"),
        (r"(?<=\d)-fehler\b", " errors"),
        (r"\b(p\d\d)-", r"\1 "),
        # "1.800 Eingabe- und 400 Ausgabe-Tokens": the elided half of a compound.
        (
            r"\b(eingabe|ausgabe|input|output|prompt)-(?=\s+(?:und|oder|sowie|bzw\.?|/)\s)",
            r"\1-Tokens",
        ),
    ),
    "nl": ((r"\b(p\d\d)-", r"\1 "),),
    "it": ((r"\bdel(?=\s+\d[\d.]*\s?%)", "by"),),
    # "40 M de tokens": the scale of a number, then "of"
    "pt": ((r"\bem(?=\s+\d[\d.]*\s?%)", "by"), (r"(?<=\d)\s?([MkB])\s+de\b", r" \1")),
    "es": ((r"(?<=\d)\s?([MkB])\s+de\b", r" \1"),),
    "fr": ((r"(?<=\d)\s?([MkB])\s+de\b", r" \1"),),
}


@functools.cache
def _phrase_pattern(language: str) -> re.Pattern[str] | None:
    phrases = _PHRASES.get(language)
    if not phrases:
        return None
    alternatives = sorted(phrases, key=len, reverse=True)
    body = "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in alternatives)
    return re.compile(r"(?<![\w-])(?:" + body + r")(?![\w])", _I)


# "1 in 50 requests", "one out of 20 calls": a share of the requests, as a percentage.
_ONE_IN = re.compile(
    r"\b(?P<a>\d+|one)\s(?:in|out\sof)\s(?P<b>\d+(?:\.\d+)?)\s"
    r"(?=(?:of\s(?:our|the|all)\s)?(?:requests|calls|queries|responses|completions|jobs|"
    r"runs|attempts|messages)\b)",
    _I,
)


def _share(m: re.Match[str]) -> str:
    a = 1.0 if m["a"].lower() == "one" else float(m["a"])
    b = float(m["b"])
    if not 0 < a <= b:
        return m.group(0)
    return f"{100 * a / b:.4g}% of "


def to_english(text: str, language: str) -> str:
    """``text`` with its numbers made canonical and, for another language, its
    phrases replaced by English ones (see the module's docstring)."""
    text = canonical_numbers(text, language)
    if " in " in text or " out of " in text:
        text = _ONE_IN.sub(_share, text)
    pattern = _phrase_pattern(language)
    if pattern is None:
        return text
    for rule, replacement in _NUMBER_PHRASES.get(language, ()):
        text = re.sub(rule, replacement, text, flags=_I)
    phrases = _PHRASES[language]

    def english(m: re.Match[str]) -> str:
        return phrases[" ".join(m.group(0).lower().split())]

    return pattern.sub(english, text)
