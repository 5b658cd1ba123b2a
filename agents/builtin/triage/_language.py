"""Which language a request is written in: English, German, French, Spanish, Italian,
Dutch or Portuguese (pure, deterministic, offline).

Each language has a list of frequent short words; the words of the request's
first :data:`SAMPLE` characters vote, and a few letters only some languages
use (``ß``, ``ñ``, ``ã`` ...) add to the vote. No vote at all, or a tie with
English, is English. :data:`ENGLISH_NOTE` holds, per language, the line that
tells the reader (in that language) that the detailed answer is in English.
"""

from __future__ import annotations

from collections.abc import Mapping

LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "pt")
#: Characters of a request looked at.
SAMPLE = 2_000


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_WORDS: Mapping[str, frozenset[str]] = {
    "en": _words(
        "the and is are our how what with for of can does it you this that which would "
        "should much many each month day get have about hi hello hey thanks thank please "
        "why who us my me your cost costs spend per year week just there cut we want on "
        "it's we're today now need to in an at be do not no if or from by has was were "
        "will i am all time some than then so get getting keep"
    ),
    "de": _words(
        "der die das und ist wir unsere unser unseren wie mit für im ein eine nicht auf "
        "bei können kostet monat tag jahr sind haben zahlen liegt brauchen jede jeder jedes "
        "etwa hallo danke bitte warum mehr weniger geht's geht ich sie zu von dem den des "
        "auch aus ziel vergleiche und wird werden sollen sollten kosten rechnung anfragen "
        "mio ständig bekommen betreiben auslastung gibt senken halbieren beträgt du kannst "
        "kann was machst hilfst mir dir uns guten morgen abend servus moin tschüss"
    ),
    "fr": _words(
        "le la les des du et est nous notre nos pour avec par une sur dans comment combien "
        "pas que qui coûte coût mois jour réduire facture moitié bonjour merci salut "
        "objectif moins environ chaque requête requêtes utilisons dépensons recevons "
        "hébergeons erreurs sortie entrée latence ça va vous je au aux tu peux faire quoi "
        "bonsoir aide aider on dépense veut"
    ),
    "es": _words(
        "el los las y es nuestro nuestra nuestros cómo qué cuánto para una al del mes día "
        "gastamos hacemos usamos recibimos solicitudes solicitud queremos bajarla menos "
        "hola gracias tal reducirlo muchos errores salida segundos latencia podemos "
        "cuesta año está estamos"
    ),
    "it": _words(
        "il lo gli della delle degli è nostro nostra nostri quanto mese giorno spendiamo "
        "usiamo ogni richiesta richieste ciao grazie stai possiamo dimezzare costo latenza "
        "ingresso uscita secondi sulla nella nel di che come sono anno al"
    ),
    "nl": _words(
        "de het een en wij onze ons hoe wat met voor maand dag geven uit aan kunnen "
        "besparen elke gebruikt doen aanvragen aanvraag latentie doel onder seconde "
        "seconden goedemorgen hallo dank bedankt rekening willen komen zijn van jaar "
        "per we is"
    ),
    "pt": _words(
        "o os as é nosso nossa como quanto com para por um uma mês dia gastamos usamos "
        "cada pedido pedidos reduzir metade custo latência segundos precisamos menos olá "
        "obrigado tudo bem saída entrada não do da no na em ao"
    ),
}
_LETTERS: Mapping[str, str] = {"de": "ßäöü", "fr": "çàèêëœ", "es": "ñ¿¡", "pt": "ãõ"}
_PUNCTUATION = '.,;:!?()[]{}"«»¿¡“”„…-\u2013\u2014/*_#<>|~`'

ENGLISH_NOTE: Mapping[str, str] = {
    "de": "Hinweis: Die ausführliche Antwort unten ist auf Englisch.",
    "fr": "Remarque : la réponse détaillée ci-dessous est en anglais.",
    "es": "Nota: la respuesta detallada a continuación está en inglés.",
    "it": "Nota: la risposta dettagliata qui sotto è in inglese.",
    "nl": "Let op: het uitgebreide antwoord hieronder is in het Engels.",
    "pt": "Nota: a resposta detalhada abaixo está em inglês.",
}
NAMES: Mapping[str, str] = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "nl": "Dutch",
    "pt": "Portuguese",
}


def _index() -> dict[str, tuple[str, ...]]:
    index: dict[str, list[str]] = {}
    for language, words in _WORDS.items():
        for word in words:
            index.setdefault(word, []).append(language)
    return {word: tuple(languages) for word, languages in index.items()}


#: word -> the languages that use it
_INDEX = _index()


def language_votes(text: str) -> dict[str, int]:
    """Votes per language for the first :data:`SAMPLE` characters of ``text``."""
    sample = text[:SAMPLE].lower()
    votes = dict.fromkeys(LANGUAGES, 0)
    for word in sample.replace("/", " ").split():  # words without the punctuation around
        for language in _INDEX.get(word.strip(_PUNCTUATION), ()):
            votes[language] += 1
    if not sample.isascii():
        for language, letters in _LETTERS.items():
            if any(letter in sample for letter in letters):
                votes[language] += 2
    return votes


def detect_language(text: str, *, prior: str | None = None) -> str:
    """The language of ``text`` (one of :data:`LANGUAGES`); ``prior`` wins a tie."""
    votes = language_votes(text)
    if prior in votes:
        votes[prior] += 1  # a thread's language carries over short follow-ups
    best = max(votes.values())
    if best == 0:
        return prior if prior in votes else "en"
    leaders = [lang for lang in LANGUAGES if votes[lang] == best]
    if prior in leaders:
        return prior
    return "en" if "en" in leaders else leaders[0]
