"""The ``triage`` agent: reading a request (offline, or with the model), then
:func:`~._classify.classify_entities`, with the thread's earlier turns merged in.

Offline (and whenever the model fails), the entities come from the
``extract_entities`` tool. With a provider that calls functions, the model
reads the request (``_understanding``); if its call fails or its arguments do
not fit the schema, triage falls back to the offline reading and says why in
``degraded`` (the supervisor marks the run degraded and the answer says so).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from server.protocol import ProviderError, ToolParameterError

from ..._base import BaseAgent
from ..._providers import ChatMessage
from ._classify import CATEGORIES, TriageResult, classify_entities
from ._entities import ENTITY_KEYS
from ._history import merge_history
from ._language import detect_language
from ._model_roles import Roles, roles_among
from ._models import family_readings
from ._read import extract_entities, read_request
from ._understanding import SYSTEM_PROMPT, Understanding, record_request_schema, understanding_from

#: Characters of a request sent to the model for understanding.
MODEL_INPUT = 8_000


def _looks_like_entities(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(value.get(key), list) for key in ENTITY_KEYS
    )


def _model_input(text: str) -> str:
    """The bounded request the model reads: the prose, and a summary of a pasted log."""
    reading = read_request(text)
    body = reading.detail[:MODEL_INPUT]
    if reading.log is not None:
        body += "\n\n(A pasted log, summarised: " + json.dumps(reading.log) + ")"
    return body


class TriageAgent(BaseAgent):
    name = "triage"
    description = (
        "Classifies a request (category, priority, intent, kind of reply, language), extracts "
        "its figures and says whether they suffice."
    )

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        text = str(inputs.get("request", self.context.request))
        await self.think(
            "Reading the request: models, prices, volumes, latencies, targets", progress=10
        )
        understood: Understanding | None = None
        degraded: str | None = None
        if self.model.tool_calling:
            try:
                understood = await self._understand(text)
            except (ProviderError, ToolParameterError, ValueError) as exc:
                degraded = f"the model could not read the request ({exc})"
                await self.think(f"{degraded}; reading it offline instead", progress=30)
        if understood is not None:
            entities: dict[str, Any] = dict(understood.entities)
            reading = read_request(text)
            entities["log"] = reading.log
            entities["language"] = understood.language
        else:
            found = await self.use_tool("extract_entities", text=text)
            value = found.value if found.ok and _looks_like_entities(found.value) else None
            entities = dict(value) if value is not None else extract_entities(text)
        roles = self._roles(text, entities, understood)
        merged = merge_history(text, entities, self.context.history, roles)
        result = classify_entities(
            text,
            merged.entities,
            bonus=merged.bonus,
            category=understood.category if understood is not None else None,
            reply=understood.reply if understood is not None else None,
        )
        language = result.language
        if understood is None and merged.language is not None:
            language = detect_language(read_request(text).detail, prior=merged.language)
        out = result.as_dict()
        out["language"] = language
        out["understood_by"] = "model" if understood is not None else "offline"
        if merged.current_model is not None:
            out["current_model"] = merged.current_model
            out["candidate_models"] = merged.candidate_models
        elif roles.models:
            # With every model a candidate and none earlier, the first named is costed.
            out["current_model"], *out["candidate_models"] = roles.models
        else:
            out["current_model"] = None
        readings = family_readings(read_request(text).english) if understood is None else []
        if readings:
            out["model_notes"] = readings[:4]
        if merged.reused:
            out["reused"] = merged.reused
        if merged.scale is not None:
            out["scale"] = merged.scale
        if merged.period is not None:
            out["period_corrected"] = merged.period
        if understood is not None and understood.dropped:
            out["dropped"] = understood.dropped[:8]
        if degraded is not None:
            out["degraded"] = degraded
        await self.think(self._summary(result, merged.reused), progress=90)
        return out

    @staticmethod
    def _roles(text: str, entities: Mapping[str, Any], understood: Understanding | None) -> Roles:
        """The models of the request by role: as the model read them, else from its words
        (``_model_roles``), kept to the models the entities hold."""
        if understood is not None:
            current = understood.current_model
            return Roles(current, tuple(understood.candidate_models), current is not None)
        named = [m for m in entities.get("models") or () if isinstance(m, str)]
        return roles_among(read_request(text).english, named)

    async def _understand(self, text: str) -> Understanding:
        schema = record_request_schema(CATEGORIES)
        await self.think("Asking the model to read the request", progress=20)
        result = await self.model.chat(
            [ChatMessage("system", SYSTEM_PROMPT), ChatMessage("user", _model_input(text))],
            tools=[schema],
            tool_choice=schema["name"],
        )
        call = next((c for c in result.tool_calls if c.name == schema["name"]), None)
        if call is None:
            raise ValueError("the model did not call record_request")
        return understanding_from(call.arguments, text, CATEGORIES)

    @staticmethod
    def _summary(result: TriageResult, reused: list[dict[str, Any]]) -> str:
        if result.reply != "answer":
            return f"{result.reply}: a short reply, no analysis"
        note = f"; missing: {', '.join(result.missing_data)}" if result.missing_data else ""
        again = (
            "; reused from earlier turns: " + ", ".join(r["what"] for r in reused) if reused else ""
        )
        return (
            f"{result.category} / {result.sub_category} (confidence {result.confidence}), "
            f"priority {result.priority}, data {result.data_sufficiency}{note}{again}"
        )
