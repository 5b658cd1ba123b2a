"""Which model the user runs now and which one they ask about (``triage._model_roles``).

The order of the names does not decide: "We currently send 40M tokens a month
to gpt-4o. How much would gpt-4o-mini save?" costs gpt-4o and prices the switch
to gpt-4o-mini, and so does the same question asked the other way round, in
German or in French. The labelled evaluation set (tests/test_answers.py) checks
the savings these roles lead to; here are the roles themselves.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.builtin.triage import read_request
from agents.builtin.triage._history import merge_history
from agents.builtin.triage._model_roles import Roles, model_roles, roles_among
from agents.builtin.triage._models import family_readings

pytestmark = pytest.mark.timeout(30)

# (request, current, candidates)
PHRASINGS = [
    # English: the model in use, from "currently", "we're on", "send ... to", "runs on"
    ("We currently send 40M tokens a month to gpt-4o. How much would gpt-4o-mini save?",
     "gpt-4o", ["gpt-4o-mini"]),
    ("How much would gpt-4o-mini save? We currently send 40M tokens a month to gpt-4o.",
     "gpt-4o", ["gpt-4o-mini"]),
    ("What would we save by switching from gpt-4o to gpt-4o-mini at 40M tokens a month?",
     "gpt-4o", ["gpt-4o-mini"]),
    ("gpt-4o-mini instead of gpt-4o for 40M tokens a month: how much cheaper?",
     "gpt-4o", ["gpt-4o-mini"]),
    ("We're on gpt-4o with 40M tokens a month; would moving to gpt-4o-mini be worth it?",
     "gpt-4o", ["gpt-4o-mini"]),
    ("Our app runs on gpt-4o, 40M tokens a month. Compared to claude 3.5 haiku, what do we pay?",
     "gpt-4o", ["claude-3-5-haiku"]),
    ("Is gpt-4o-mini cheaper than gpt-4o for 40M tokens a month?", "gpt-4o", ["gpt-4o-mini"]),
    ("Replace gpt-4o with gpt-4o-mini: what happens to our $3k monthly bill?",
     "gpt-4o", ["gpt-4o-mini"]),
    ("If we used claude 3.5 haiku instead of gpt-4o for 40M tokens a month, what would we pay?",
     "gpt-4o", ["claude-3-5-haiku"]),
    ("gpt-4o costs us too much at 40M tokens a month, would gpt-4o-mini be enough?",
     "gpt-4o", ["gpt-4o-mini"]),
    ("We'd like to try gpt-4o-mini. Right now everything goes to gpt-4o, about 40M tokens a month.",
     "gpt-4o", ["gpt-4o-mini"]),
    ("We're on gpt-4.1 and wonder about gpt-4.1-mini.", "gpt-4.1", ["gpt-4.1-mini"]),
    # German
    ("Wir nutzen derzeit gpt-4o mit 40 Mio. Tokens pro Monat. Wie viel würden wir mit "
     "gpt-4o-mini sparen?", "gpt-4o", ["gpt-4o-mini"]),
    ("Was würde ein Wechsel von gpt-4o auf gpt-4o-mini bei 40 Mio. Tokens im Monat sparen?",
     "gpt-4o", ["gpt-4o-mini"]),
    ("Lohnt sich der Umstieg auf Claude 3.5 Haiku? Wir senden 40 Mio. Tokens im Monat an GPT-4o.",
     "gpt-4o", ["claude-3-5-haiku"]),
    ("Statt gpt-4o könnten wir gpt-4o-mini nehmen. Wir haben 40 Mio. Tokens im Monat.",
     "gpt-4o", ["gpt-4o-mini"]),
    ("Wir zahlen für gpt-4o 2.000 € im Monat. Was spart gpt-4o-mini?", "gpt-4o", ["gpt-4o-mini"]),
    # French
    ("Nous utilisons gpt-4o avec 40 millions de tokens par mois. Combien économiserions-nous en "
     "passant à gpt-4o-mini ?", "gpt-4o", ["gpt-4o-mini"]),
    ("Est-ce que gpt-4o-mini serait moins cher que gpt-4o pour 40 millions de tokens par mois ?",
     "gpt-4o", ["gpt-4o-mini"]),
    # No word says which is in use: the first named is costed, the others compared.
    ("Compare gpt-4o and claude 3.5 sonnet for 500 documents a day.",
     "gpt-4o", ["claude-3-5-sonnet"]),
    ("Price o3-mini against gpt-4.1 for 10M input tokens a week.", "o3-mini", ["gpt-4.1"]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "current", "candidates"), PHRASINGS)
def test_the_model_in_use_and_the_one_asked_about_come_from_the_words(
    text: str, current: str, candidates: list[str]
) -> None:
    roles = model_roles(read_request(text).english)

    assert (roles.current, list(roles.candidates)) == (current, candidates)


def test_a_question_about_a_model_alone_names_no_current_one() -> None:
    roles = model_roles("At 80M tokens a month, how much would claude 3.5 haiku save?")

    assert roles == Roles(None, ("claude-3-5-haiku",), stated=False)


def test_only_words_of_use_make_the_current_model_stated() -> None:
    assert model_roles("We use gpt-4o. What about gpt-4o-mini?").stated
    assert not model_roles("Compare gpt-4o and gpt-4o-mini.").stated


def test_roles_keep_to_the_models_triage_found_and_place_the_others_as_candidates() -> None:
    text = "We currently use gpt-4o. Would gpt-4o-mini save?"

    assert roles_among(text, ["gpt-4o-mini", "claude-3-5-haiku"]) == Roles(
        None, ("gpt-4o-mini", "claude-3-5-haiku"), stated=False
    )


class _Turn:
    def __init__(self, memory: dict[str, object]) -> None:
        self.run_id = "r-1"
        self.memory = memory


EARLIER = _Turn(
    {
        "category": "cost_optimization",
        "current_model": "gpt-4o",
        "entities": {"models": ["gpt-4o"], "providers": ["openai"]},
    }
)
OWN_WORKLOAD = {"token_volumes": [{"tokens": 8e7, "period": "month", "kind": "total"}]}


def test_a_follow_up_with_its_own_workload_asking_about_a_model_compares_with_the_earlier() -> None:
    text = "At 80M tokens a month, how much would claude 3.5 haiku save?"
    entities = {**OWN_WORKLOAD, "models": ["claude-3-5-haiku"], "providers": ["anthropic"]}

    merged = merge_history(text, entities, [EARLIER], model_roles(text))

    assert merged.current_model == "gpt-4o"
    assert merged.candidate_models == ["claude-3-5-haiku"]


def test_a_follow_up_that_says_which_model_it_runs_now_is_not_compared_with_the_earlier() -> None:
    text = "Actually we currently use claude 3.5 haiku."
    entities = {"models": ["claude-3-5-haiku"], "providers": ["anthropic"]}

    merged = merge_history(text, entities, [EARLIER], model_roles(text))

    assert merged.current_model is None
    assert merged.entities["models"] == ["claude-3-5-haiku"]


NAMES = ["gpt-4o", "gpt-4o-mini", "claude 3.5 haiku", "gemini 2.0 flash", "llama 3.1 70b"]
WORDS = [
    "we", "currently", "use", "send", "to", "switch", "from", "instead", "of", "would",
    "save", "or", "vs", "than", "what", "about", "nutzen", "statt", "auf", "passer", "à",
    "40M", "tokens", "a", "month", ".", "?", ",",
]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(NAMES + WORDS), max_size=30))
def test_every_model_named_gets_exactly_one_role(words: list[str]) -> None:
    text = " ".join(words)
    roles = model_roles(text)

    assert len(set(roles.models)) == len(roles.models)
    assert roles.current not in roles.candidates
    assert len(roles.models) == len({w for w in words if w in NAMES})
    assert roles.stated <= (roles.current is not None)


def test_a_claude_family_named_without_a_version_is_its_newest_model_and_said() -> None:
    text = "Would haiku be faster than claude sonnet?"
    assert model_roles(text) == Roles("claude-3-7-sonnet", ("claude-3-5-haiku",), stated=True)
    assert family_readings(text) == [
        "“haiku” is read as claude-3-5-haiku, the newest Haiku in the catalogue",
        "“claude sonnet” is read as claude-3-7-sonnet, the newest Sonnet in the catalogue",
    ]
    assert family_readings("claude 3.5 haiku or claude") == []
