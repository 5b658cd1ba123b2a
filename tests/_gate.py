"""An agent that waits at a gate the test opens: runs paused mid-way, on purpose.

The gate agent thinks, calls a tool, says it is waiting at the gate its
request names (``gate:NAME``), waits until the test opens that gate, then
thinks and calls a tool again and completes: nine events. A request without
a gate goes straight through. Tests cut connections, open other clients or
stop the run while it waits, without sleeping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import trio

from agents import BaseAgent
from agents.builtin import default_registry
from server import ChatServer
from server.testing import start_test_server

#: Named gates; a fixture of each test module that uses them clears them.
GATES: dict[str, trio.Event] = {}
#: Events of a run that passes its gate: started, thinking, tool call and result,
#: "waiting at gate", thinking, tool call and result, completed.
GATE_EVENTS = 9
#: Events up to and including "waiting at gate NAME".
AT_GATE = 5


class GateAgent(BaseAgent):
    """Thinks, calls a tool, waits at the gate its request names, goes on."""

    name = "gate"
    top_level = True

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        request = self.context.request
        await self.think("before the gate", progress=25)
        await self.use_tool("extract_entities", text=request)
        gate = re.search(r"gate:(\w+)", request)
        await self.think(f"waiting at gate {gate[1] if gate else '-'}")
        if gate:
            await GATES.setdefault(gate[1], trio.Event()).wait()
        await self.think("after the gate", progress=75)
        await self.use_tool("extract_entities", text="after the gate")
        return {"answer": f"**passed** {request}"}


def open_gate(name: str) -> None:
    GATES.setdefault(name, trio.Event()).set()


async def start_gate_server(nursery: trio.Nursery, **settings: Any) -> ChatServer:
    """A test server with the default agents and the gate agent."""
    registry = default_registry()
    registry.register(GateAgent)
    return await start_test_server(nursery, registry=registry, **settings)
