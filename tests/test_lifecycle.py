"""agents/_lifecycle.py: tool time limits and how cancellation causes are told apart.

Runs go through the server's own ``Run`` and ``RunTable`` (``tests/_run_owner.py``),
in virtual time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio
import trio.testing
from _run_owner import RecordingOwner, execute_in_table

from agents import AgentClassRegistry, AgentRuntime, BaseAgent, Tool, ToolRegistry
from server.testing import check_run_invariants


async def never_answers(query: str) -> dict[str, Any]:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


def slow_tools(timeout: float | None) -> ToolRegistry:
    schema = {"type": "object", "properties": {"query": {"type": "string"}}}
    return ToolRegistry((Tool("lookup", "never answers", schema, never_answers, timeout),))


class Asker(BaseAgent):
    """Calls the slow tool and reports what came back (a result, never an exception)."""

    name = "asker"
    top_level = True

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        result = await self.use_tool("lookup", query="anything")
        return {"ok": result.ok, "error": result.error}


async def test_a_tool_call_over_its_own_time_limit_fails_as_a_result_and_the_run_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = AgentClassRegistry()
    registry.register(Asker)
    runtime = AgentRuntime(registry, tools=slow_tools(2.0), agent_timeout=60, run_timeout=60)
    owner = RecordingOwner("ask")
    status = await execute_in_table(owner, runtime, "asker")

    assert status == "completed"
    check_run_invariants(owner.events)
    owner.check_retired("completed")
    tool = next(e for e in owner.events if e["type"] == "tool_completed")
    assert tool["data"]["status"] == "failed"
    assert tool["data"]["result"] == {"error": "TimeoutError: lookup took longer than 2 s"}
    assert tool["at"] == 2.0
    assert owner.events[-1]["data"]["result"] == {
        "ok": False,
        "error": "TimeoutError: lookup took longer than 2 s",
    }
    assert trio.current_time() == 2.0
