"""The short replies: small talk, gibberish, injection attempts and unclear requests, in
English, German, French, Spanish, Italian, Dutch and Portuguese (pure).

Each says what the assistant can do and gives two example questions; gibberish
asks to rephrase; an injection attempt is refused and the help goes on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_THANKS = re.compile(
    r"\b(?:thanks|thank\syou|thx|cheers|danke|merci|gracias|grazie|bedankt|dank\sje|obrigad[oa])\b",
    re.IGNORECASE,
)

HELLO: Mapping[str, str] = {
    "en": "Hello!",
    "de": "Hallo!",
    "fr": "Bonjour !",
    "es": "¡Hola!",
    "it": "Ciao!",
    "nl": "Hallo!",
    "pt": "Olá!",
}
WELCOME: Mapping[str, str] = {
    "en": "You're welcome!",
    "de": "Gern geschehen!",
    "fr": "Avec plaisir !",
    "es": "¡De nada!",
    "it": "Prego!",
    "nl": "Graag gedaan!",
    "pt": "De nada!",
}
CAN_DO: Mapping[str, str] = {
    "en": "I help teams cut the cost and latency of their AI workloads, make them more "
    "reliable, choose models and size self-hosted GPUs. Ask me with your figures, for example:",
    "de": "Ich helfe Teams, Kosten und Latenz ihrer KI-Anwendungen zu senken, sie "
    "zuverlässiger zu machen, Modelle auszuwählen und eigene GPUs richtig zu dimensionieren. "
    "Fragen Sie mich mit Ihren Zahlen, zum Beispiel:",
    "fr": "J'aide les équipes à réduire le coût et la latence de leurs applications d'IA, à "
    "les rendre plus fiables, à choisir leurs modèles et à dimensionner leurs GPU. Posez-moi "
    "votre question avec vos chiffres, par exemple :",
    "es": "Ayudo a los equipos a reducir el coste y la latencia de sus aplicaciones de IA, a "
    "hacerlas más fiables, a elegir modelos y a dimensionar sus GPU. Pregúnteme con sus "
    "cifras, por ejemplo:",
    "it": "Aiuto i team a ridurre costi e latenza delle loro applicazioni di IA, a renderle "
    "più affidabili, a scegliere i modelli e a dimensionare le GPU. Mi faccia una domanda con "
    "i suoi numeri, per esempio:",
    "nl": "Ik help teams de kosten en latentie van hun AI-toepassingen te verlagen, ze "
    "betrouwbaarder te maken, modellen te kiezen en eigen GPU's goed te dimensioneren. Stel "
    "uw vraag met uw cijfers, bijvoorbeeld:",
    "pt": "Ajudo equipas a reduzir o custo e a latência das suas aplicações de IA, a torná-las "
    "mais fiáveis, a escolher modelos e a dimensionar GPUs próprias. Pergunte-me com os seus "
    "números, por exemplo:",
}
EXAMPLES: Mapping[str, tuple[str, str]] = {
    "en": (
        "We send 40M input and 10M output tokens a month to gpt-4o. How much would "
        "gpt-4o-mini save?",
        "Our p95 latency is 3 s on claude 3.5 sonnet. How do we get it under 1.5 s?",
    ),
    "de": (
        "Wir senden 40 Mio. Eingabe-Tokens und 10 Mio. Ausgabe-Tokens pro Monat an gpt-4o. "
        "Wie viel spart gpt-4o-mini?",
        "Unsere p95-Latenz liegt bei 3 s mit claude 3.5 sonnet. Wie kommen wir unter 1,5 s?",
    ),
    "fr": (
        "Nous envoyons 40 M de tokens en entrée et 10 M en sortie par mois à gpt-4o. "
        "Combien économiserait gpt-4o-mini ?",
        "Notre latence p95 est de 3 s avec claude 3.5 sonnet. Comment passer sous 1,5 s ?",
    ),
    "es": (
        "Enviamos 40 M de tokens de entrada y 10 M de salida al mes a gpt-4o. ¿Cuánto "
        "ahorraría gpt-4o-mini?",
        "Nuestra latencia p95 es de 3 s con claude 3.5 sonnet. ¿Cómo la bajamos a menos de 1,5 s?",
    ),
    "it": (
        "Inviamo 40 milioni di token in ingresso e 10 milioni in uscita al mese a gpt-4o. "
        "Quanto risparmieremmo con gpt-4o-mini?",
        "La nostra latenza p95 è di 3 s con claude 3.5 sonnet. Come la portiamo sotto 1,5 s?",
    ),
    "nl": (
        "We sturen 40 miljoen invoertokens en 10 miljoen uitvoertokens per maand naar "
        "gpt-4o. Hoeveel bespaart gpt-4o-mini?",
        "Onze p95-latentie is 3 s met claude 3.5 sonnet. Hoe komen we onder 1,5 s?",
    ),
    "pt": (
        "Enviamos 40 milhões de tokens de entrada e 10 milhões de saída por mês para o "
        "gpt-4o. Quanto pouparia o gpt-4o-mini?",
        "A nossa latência p95 é de 3 s com o claude 3.5 sonnet. Como a baixamos para menos "
        "de 1,5 s?",
    ),
}
REPHRASE: Mapping[str, str] = {
    "en": "I could not make out a question in that message. Could you rephrase it?",
    "de": "Ich konnte in dieser Nachricht keine Frage erkennen. Können Sie sie umformulieren?",
    "fr": "Je n'ai pas compris de question dans ce message. Pouvez-vous la reformuler ?",
    "es": "No he encontrado una pregunta en ese mensaje. ¿Puede reformularla?",
    "it": "Non ho trovato una domanda in questo messaggio. Può riformularla?",
    "nl": "Ik kon in dit bericht geen vraag herkennen. Kunt u het anders formuleren?",
    "pt": "Não encontrei uma pergunta nessa mensagem. Pode reformulá-la?",
}
REFUSE: Mapping[str, str] = {
    "en": "I can't change my instructions or share my configuration, prompts or keys.",
    "de": "Ich kann meine Anweisungen nicht ändern und weder meine Konfiguration noch "
    "Prompts oder Schlüssel weitergeben.",
    "fr": "Je ne peux pas changer mes instructions ni partager ma configuration, mes prompts "
    "ou mes clés.",
    "es": "No puedo cambiar mis instrucciones ni compartir mi configuración, mis prompts o "
    "mis claves.",
    "it": "Non posso cambiare le mie istruzioni né condividere la mia configurazione, i "
    "prompt o le chiavi.",
    "nl": "Ik kan mijn instructies niet wijzigen en mijn configuratie, prompts of sleutels "
    "niet delen.",
    "pt": "Não posso alterar as minhas instruções nem partilhar a minha configuração, os "
    "prompts ou as chaves.",
}
UNCLEAR: Mapping[str, str] = {
    "en": "What would you like to improve?",
    "de": "Was möchten Sie verbessern?",
    "fr": "Que souhaitez-vous améliorer ?",
    "es": "¿Qué le gustaría mejorar?",
    "it": "Che cosa vorrebbe migliorare?",
    "nl": "Wat wilt u verbeteren?",
    "pt": "O que gostaria de melhorar?",
}


def _examples(language: str) -> str:
    first, second = EXAMPLES.get(language, EXAMPLES["en"])
    return f'- "{first}"\n- "{second}"'


def short_reply(kind: str, language: str, request: str) -> str:
    """The whole answer to a ``smalltalk``, ``gibberish`` or ``injection`` message."""
    lang = language if language in CAN_DO else "en"
    if kind == "injection":
        return f"{REFUSE[lang]} {CAN_DO[lang]}\n\n{_examples(lang)}\n"
    if kind == "gibberish":
        return f"{REPHRASE[lang]} {CAN_DO[lang]}\n\n{_examples(lang)}\n"
    opener = WELCOME[lang] if _THANKS.search(request[:300]) else HELLO[lang]
    return f"{opener} {CAN_DO[lang]}\n\n{_examples(lang)}\n"


def refusal_line(language: str) -> str:
    """The first line of an answer to a question that also tried an injection."""
    return REFUSE.get(language, REFUSE["en"])


def unclear_heading(language: str) -> str:
    return UNCLEAR.get(language, UNCLEAR["en"])


def can_do(language: str) -> str:
    lang = language if language in CAN_DO else "en"
    return f"{CAN_DO[lang]}\n\n{_examples(lang)}"
