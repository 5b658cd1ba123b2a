"""Triage: classify a request and pull out its figures, without any network.

:func:`classify` is pure and deterministic; :class:`TriageAgent` wraps it with
events and gets the entities through the ``extract_entities`` tool (the
package-level :func:`extract_entities`).

Modules, one concern each: ``_numbers`` (amounts, units, periods), ``_models``
(model names to catalogue ids), ``_roles`` (what a figure measures; thresholds
and targets), ``_entities`` (:func:`extract_entities`; the entity format),
``_keywords`` (category, sub-category and priority words), ``_classify``
(:func:`classify`; the result format and every rule) and ``_agent``
(:class:`TriageAgent`).

Sufficiency rule, in short (in full in ``_classify``): a *figure* is a model or
any number the entities hold. No figure at all: ``insufficient``; otherwise
``sufficient`` when the category's needs are met (e.g. cost: a model or a price
AND a volume), else ``partial``, with ``missing_data`` naming each unmet need.
"""

from __future__ import annotations

from ._agent import TriageAgent as TriageAgent
from ._classify import CATEGORIES as CATEGORIES
from ._classify import COMPLEXITIES as COMPLEXITIES
from ._classify import INTENTS as INTENTS
from ._classify import PRIORITIES as PRIORITIES
from ._classify import SUFFICIENCY as SUFFICIENCY
from ._classify import TriageResult as TriageResult
from ._classify import classify as classify
from ._classify import classify_entities as classify_entities
from ._entities import ENTITY_KEYS as ENTITY_KEYS
from ._models import normalise_model as normalise_model
from ._numbers import parse_amount as parse_amount
from ._read import extract_entities as extract_entities
from ._read import read_request as read_request

__all__ = [
    "CATEGORIES",
    "COMPLEXITIES",
    "ENTITY_KEYS",
    "INTENTS",
    "PRIORITIES",
    "SUFFICIENCY",
    "TriageAgent",
    "TriageResult",
    "classify",
    "classify_entities",
    "extract_entities",
    "normalise_model",
    "parse_amount",
    "read_request",
]
