"""A ``--plugin`` for tests of several ``python -m server`` processes (not a test module).

``paced`` (top level) thinks three times, then, if its request contains
``gate``, connects to ``127.0.0.1:$GATE_PORT``, writes its run id and a
newline, and waits until the test sends a byte on that connection (or closes
it); then it thinks three more times and completes. A run therefore has
exactly :data:`PACED_EVENTS` events, the test knows when one is in flight on
which process (it accepted the agent's connection), and decides when it
ends, without sleeping.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import trio

from agents import AgentClassRegistry, BaseAgent, ToolRegistry

#: Thoughts before and after the gate.
STEPS = 3
#: agent_started, STEPS + STEPS agent_thinking, agent_completed.
PACED_EVENTS = 2 + 2 * STEPS
#: Events a gated run has sent when it reaches its gate.
AT_GATE = 1 + STEPS


class PacedAgent(BaseAgent):
    name = "paced"
    top_level = True
    description = "Thinks, waits at the test's gate if asked to, thinks again."

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        for step in range(STEPS):
            await self.think(f"before {step}")
        if "gate" in self.context.request:
            stream = await trio.open_tcp_stream("127.0.0.1", int(os.environ["GATE_PORT"]))
            async with stream:
                await stream.send_all(f"{self.context.run_id}\n".encode())
                await stream.receive_some(1)
        for step in range(STEPS):
            await self.think(f"after {step}")
        return {"answer": f"paced {self.context.run_id}"}


def register(agents: AgentClassRegistry, tools: ToolRegistry) -> None:
    agents.register(PacedAgent)
