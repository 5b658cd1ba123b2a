"""Frames built by hand (server.transport.frame_text), and when the writer writes them.

The server frames its own messages instead of asking wsproto to: these tests
pin that a standard client decodes them at every length boundary, and that a
run's first event is written before the rest of a run that never waits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection as WsprotoConnection
from wsproto.events import TextMessage

from agents import BaseAgent
from agents.builtin import default_registry
from server import ChatServer
from server.testing import open_chat_client, start_test_server
from server.transport import frame_text


def _decode(data: bytes) -> list[str]:
    client = WsprotoConnection(ConnectionType.CLIENT)
    client.receive_data(data)
    messages: list[str] = []
    parts: list[str] = []
    for event in client.events():
        assert isinstance(event, TextMessage)
        parts.append(event.data)
        if event.message_finished:
            messages.append("".join(parts))
            parts.clear()
    assert not parts
    return messages


def test_frame_lengths_at_each_header_boundary() -> None:
    for length in (0, 1, 125, 126, 127, 65535, 65536, 70000):
        text = "é" * (length // 2) + "x" * (length % 2)
        frame = frame_text(text.encode())
        header = 2 if length < 126 else 4 if length < 65536 else 10
        assert len(frame) == header + len(text.encode())
        assert _decode(frame) == [text]


@given(st.lists(st.text(max_size=300), max_size=8))
def test_any_texts_decode_back_in_order(texts: list[str]) -> None:
    texts = [t.encode("utf-8", "replace").decode() for t in texts]  # no lone surrogates
    assert _decode(b"".join(frame_text(t.encode()) for t in texts)) == texts


class _Busy(BaseAgent):
    """Never waits: emits its events back to back, noting what was still queued first."""

    name = "busy"
    top_level = True
    queued_at_start: list[int] = []

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        (connection,) = _SERVER[0].connection_statistics()
        _Busy.queued_at_start.append(connection.outbound_queued)
        for step in range(20):
            await self.think(f"step {step}")
        return {}


_SERVER: list[ChatServer] = []


async def test_agent_started_is_written_before_the_rest_of_a_run_that_never_waits(
    nursery: trio.Nursery,
) -> None:
    registry = default_registry()
    registry.register(_Busy)
    server = await start_test_server(nursery, registry=registry, admin_port=None)
    _SERVER[:] = [server]
    _Busy.queued_at_start.clear()
    async with open_chat_client(server, user_id="busy") as client:
        run = await client.run("go", agent_name="busy")
    assert run.status == "completed"
    assert len(run.events) == 22
    # The writer had taken its first event before execute() began (without
    # the yield after it, agent_started would still be queued here and go out
    # with the other 21 at the end of the run).
    assert _Busy.queued_at_start == [0]


async def test_a_burst_through_a_tiny_queue_arrives_whole(nursery: trio.Nursery) -> None:
    # Producers that had to wait for room must still get a writer for what they
    # queue: with a queue of 2 and 20 events at once, most of them wait.
    registry = default_registry()
    registry.register(_Busy)
    server = await start_test_server(nursery, registry=registry, admin_port=None, outbound_queue=2)
    _SERVER[:] = [server]
    async with open_chat_client(server, user_id="burst") as client:
        for _ in range(3):
            run = await client.run("go", agent_name="busy")
            assert run.status == "completed"
            assert len(run.events) == 22
