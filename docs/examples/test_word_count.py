"""The example's test: a real server in the test's nursery, a real client."""

from __future__ import annotations

import trio

from agents.builtin import default_registry, default_tools
from docs.examples.word_count import count_words, register
from server.testing import open_chat_client, start_test_server


def test_count_words_tool() -> None:
    assert count_words("a bb ccc", min_length=2) == {"words": 2, "longest": "ccc"}


async def test_word_count_agent_answers(nursery: trio.Nursery) -> None:
    agents, tools = default_registry(), default_tools()
    register(agents, tools)
    server = await start_test_server(nursery, registry=agents, tools=tools)
    async with open_chat_client(server, user_id="docs") as client:
        run = await client.run("How do we cut our gpt-4o bill?", agent_name="word_count")
    assert run.status == "completed"  # collect() has already checked the invariants
    assert run.result is not None
    assert run.result["words"] == 7
    assert "cost_optimization" in run.result["answer"]
    assert run.agents() == ["word_count", "triage"]
    assert "tool_executing" in run.types()
