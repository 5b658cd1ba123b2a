"""A ``--plugin`` for tests of ``python -m server`` (not a test module): an agent the test releases.

``gated`` (top level) connects to ``127.0.0.1:$GATE_PORT`` and waits until the
test sends a byte on that connection (or closes it), then completes. A test
thereby knows the run is in flight (it accepted the agent's connection) and
decides when it ends, without sleeping.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import trio

from agents import AgentClassRegistry, BaseAgent, ToolRegistry


class GatedAgent(BaseAgent):
    name = "gated"
    top_level = True
    description = "Waits until the test that started the server lets it finish."

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        port = int(os.environ["GATE_PORT"])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            released = await stream.receive_some(1)
        return {"released": released == b"!"}


def register(agents: AgentClassRegistry, tools: ToolRegistry) -> None:
    agents.register(GatedAgent)
