"""server/_wire.py: frames built by hand, written next to trio-websocket; write timing.

The writer bypasses trio-websocket's send_message for run events. These tests
pin what that relies on: frames a standard client decodes at every length
boundary, the private attributes of trio-websocket it uses, and the same
ConnectionClosed behaviour as send_message once a connection is closing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket,
    serve_websocket,
)
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection as WsprotoConnection
from wsproto.events import TextMessage

from agents import BaseAgent, default_registry
from server import ChatServer
from server._wire import frame_text, send_frames
from server.testing import open_chat_client, start_test_server


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


def test_the_private_attributes_it_relies_on_exist() -> None:
    stream = trio.testing.memory_stream_pair()[0]
    ws = WebSocketConnection(stream, WSConnection(ConnectionType.SERVER))
    assert hasattr(ws, "_wsproto")
    assert hasattr(ws, "_stream_lock")
    assert ws._stream is stream
    assert callable(ws._abort_web_socket)
    assert ws._close_reason is None


async def test_batch_reaches_a_trio_websocket_client_and_closed_raises(
    nursery: trio.Nursery,
) -> None:
    after_close: list[BaseException] = []
    finished = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await send_frames(ws, [frame_text(b"one"), frame_text("two ✓".encode() * 20000)])
        await ws.send_message("three")  # trio-websocket's own path still lines up
        with contextlib.suppress(ConnectionClosed):
            await ws.get_message()
        try:
            await send_frames(ws, [frame_text(b"late")])
        except ConnectionClosed as exc:
            after_close.append(exc)
        finished.set()

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10):
        async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False) as client:
            assert await client.get_message() == "one"
            assert await client.get_message() == "two ✓" * 20000
            assert await client.get_message() == "three"
        await finished.wait()
    assert len(after_close) == 1


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
