"""What one run can send is bounded (issue 10): each event, and the run's whole output."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import AgentClassRegistry, BaseAgent
from server.protocol import encode_run_event
from server.testing import open_memory_client, start_test_server

ENVELOPE: dict[str, Any] = {
    "run_id": "r-1", "thread_id": "t-1", "user_id": "u-1", "agent_name": "a", "seq": 7,
}  # fmt: skip


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.text("abcdefgh", max_size=6)
    return st.lists(inner, max_size=20) | st.dictionaries(keys, inner, max_size=20)


# Long texts from a small alphabet (multi-byte characters included): cheap to draw.
texts = st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "✓", "ab"]), st.integers(0, 4000))
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | texts, _containers, max_leaves=40
)


@settings(deadline=None, max_examples=25)
@given(
    data=st.dictionaries(st.text("klmnop", max_size=8), json_values, max_size=30),
    max_bytes=st.integers(2048, 20_000),
)
def test_an_encoded_event_never_exceeds_its_bound_and_says_when_it_was_cut(
    data: dict[str, Any], max_bytes: int
) -> None:
    full = encode_run_event(event_type="tool_completed", final=False, data=dict(data), **ENVELOPE)
    bounded = encode_run_event(
        event_type="tool_completed", final=False, data=dict(data), max_bytes=max_bytes, **ENVELOPE
    )
    assert len(bounded) <= max_bytes
    event = json.loads(bounded)
    assert {k: event[k] for k in ENVELOPE} == ENVELOPE  # the envelope is never cut
    if len(full) <= max_bytes:
        assert bounded == full or json.loads(bounded)["data"] == json.loads(full)["data"]
    else:
        assert event["data"]["truncated"]["original_bytes"] == len(full)


def test_structural_fields_survive_and_large_values_keep_a_preview() -> None:
    data = {
        "tool_call_id": "tc-3",
        "tool_name": "extract_entities",
        "status": "completed",
        "execution_time_ms": 1.5,
        "result": {"figures": ["9%"] * 100_000},
        "note": "é" * 50_000,
    }
    event = json.loads(
        encode_run_event(
            event_type="tool_completed", final=False, data=data, max_bytes=65536, **ENVELOPE
        )
    )["data"]
    assert {k: event[k] for k in ("tool_call_id", "tool_name", "status", "execution_time_ms")} == {
        "tool_call_id": "tc-3",
        "tool_name": "extract_entities",
        "status": "completed",
        "execution_time_ms": 1.5,
    }
    assert event["result"]["truncated"] is True
    assert event["result"]["preview"].startswith('{"figures":["9%"')
    assert event["note"].endswith("… [truncated: 50000 characters]")


class Chatty(BaseAgent):
    """Sends a huge tool result, then as many big thoughts as it is allowed to."""

    name = "chatty"
    top_level = True

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        await self.call_tool("huge", {}, lambda: {"blob": "x" * 1_000_000})
        for step in range(1000):
            await self.think(f"{step} " + "y" * 10_000)
        return {"never": "reached"}


async def test_a_run_is_cut_at_its_output_bound_with_a_clear_failure(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    registry = AgentClassRegistry()
    registry.register(Chatty)
    server = await start_test_server(
        nursery, registry=registry, max_event_size=65536, max_run_output=200_000, admin_port=None
    )
    async with open_memory_client(server, user_id="u", capacity=1000) as client:
        run = await client.run("go", agent_name="chatty")
    sizes = [
        len(json.dumps(e, ensure_ascii=False, separators=(",", ":")).encode()) for e in run.events
    ]
    assert max(sizes) <= 65536
    completed = next(e for e in run.events if e["type"] == "tool_completed")
    assert completed["data"]["truncated"]["original_bytes"] > 1_000_000
    assert run.status == "failed"
    error = run.final["data"]["error"]
    assert error["code"] == "AGENT_ERROR"
    assert "size limit" in error["message"]
    # Cut soon after the bound: one more thought at most, then the closing event
    # (sizes re-encoded here, so within a few bytes of what was sent).
    assert 195_000 <= sum(sizes) <= 200_000 + 2 * 11_000
