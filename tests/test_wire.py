"""server/_wire.py: frames built by hand, written next to trio-websocket.

The writer bypasses trio-websocket's send_message for run events. These tests
pin what that relies on: frames a standard client decodes at every length
boundary, the private attributes of trio-websocket it uses, and the same
ConnectionClosed behaviour as send_message once a connection is closing.
"""

from __future__ import annotations

import contextlib

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

from server._wire import frame_text, send_frames


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
