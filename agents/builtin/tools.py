"""The built-in tools the built-in agents use."""

from __future__ import annotations

from .._tools import Tool, ToolRegistry
from .triage import extract_entities

EXTRACT_ENTITIES = Tool(
    name="extract_entities",
    description="Find model names, money, percentages, durations, token volumes and periods.",
    parameters={
        "type": "object",
        "properties": {"text": {"type": "string", "description": "the user's request"}},
        "required": ["text"],
    },
    func=extract_entities,
)


def default_tools() -> ToolRegistry:
    """A new, unfrozen registry with the built-in tools."""
    return ToolRegistry((EXTRACT_ENTITIES,))
