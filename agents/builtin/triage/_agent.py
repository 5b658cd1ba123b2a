"""The ``triage`` agent: :func:`~._classify.classify_entities` with events around it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..._base import BaseAgent
from ._classify import classify, classify_entities
from ._entities import ENTITY_KEYS


def _looks_like_entities(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(value.get(key), list) for key in ENTITY_KEYS
    )


class TriageAgent(BaseAgent):
    name = "triage"
    description = (
        "Classifies a request (category, priority, intent), extracts its figures and says "
        "whether they suffice."
    )

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        text = str(inputs.get("request", self.context.request))
        await self.think(
            "Reading the request: models, prices, volumes, latencies, targets", progress=10
        )
        found = await self.use_tool("extract_entities", text=text)
        if found.ok and _looks_like_entities(found.value):
            result = classify_entities(text, found.value)
        else:
            result = classify(text)
        note = f"; missing: {', '.join(result.missing_data)}" if result.missing_data else ""
        await self.think(
            f"{result.category} / {result.sub_category} (confidence {result.confidence}), "
            f"priority {result.priority}, data {result.data_sufficiency}{note}",
            progress=90,
        )
        return result.as_dict()
