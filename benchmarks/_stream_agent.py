"""A plug-in for ``python -m benchmarks.compare``: the event path without agent work.

    python -m server --plugin benchmarks._stream_agent

Registers the top-level agent ``stream``: its request is ``"COUNT SIZE"`` and it
emits COUNT ``agent_thinking`` events whose text is SIZE bytes, then completes.
Everything between an agent and the socket is exercised (run start, agent
lifecycle, sequence numbers, envelope, JSON, queue, writer); nothing else is,
so its CPU per frame is what the server adds to a bare WebSocket server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents import AgentClassRegistry, BaseAgent, ToolRegistry


class StreamAgent(BaseAgent):
    name = "stream"
    top_level = True
    description = "Emits COUNT agent_thinking events of SIZE bytes (benchmarks only)."

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        count, size = (int(part) for part in self.context.request.split())
        text = "x" * size
        for _ in range(count):
            await self.think(text)
        return {"events": count}


def register(agents: AgentClassRegistry, tools: ToolRegistry) -> None:
    agents.register(StreamAgent)
