"""The transport's write without waiting: what the socket does not take is never cut into.

``WebSocketTransport.write_nowait`` writes a batch with one non-blocking
``send()``; when the socket takes only part of a frame, the rest stays in the
transport and goes out before anything else written from then on, by any task
(a ping, the writer, a close frame): a standard client reads whole frames, in
order.
"""

from __future__ import annotations

import socket

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Ping, Request, TextMessage

from server.transport import HandshakeAnswer, WebSocketTransport, accept_websocket

pytestmark = pytest.mark.timeout(60)

BIG = "ü" * (2 * 2**20)  # 4 MiB of UTF-8: more than loopback buffers take at once


async def _pair() -> tuple[WebSocketTransport, trio.SocketStream, trio.SocketStream, WSConnection]:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    client_stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with listener:
        server_stream = await listener.accept()
    server_stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client = WSConnection(ConnectionType.CLIENT)
    await client_stream.send_all(client.send(Request(host="localhost", target="/")))
    transport = await accept_websocket(
        server_stream, lambda request: HandshakeAnswer(), max_message_size=1024
    )
    assert isinstance(transport, WebSocketTransport)
    client.receive_data(await client_stream.receive_some())
    assert isinstance(next(client.events()), AcceptConnection)
    return transport, server_stream, client_stream, client


async def _read_events(stream: trio.SocketStream, client: WSConnection, count: int) -> list[object]:
    events: list[object] = []
    parts: list[str] = []
    while len(events) < count:
        client.receive_data(await stream.receive_some(1 << 16))
        for event in client.events():
            if isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    events.append("".join(parts))
                    parts.clear()
            elif isinstance(event, Ping):
                events.append(("ping", event.payload))
    return events


async def test_a_ping_after_a_cut_frame_goes_out_after_the_rest_of_it() -> None:
    transport, server_stream, stream, client = await _pair()
    try:
        with trio.fail_after(30):
            rest = transport.write_nowait([BIG.encode()])
            assert rest  # the socket took only part of it
            async with trio.open_nursery() as inner:
                inner.start_soon(transport.ping)  # another task writes before the writer
                events = await _read_events(stream, client, 2)
            await transport.send_frames(rest)  # what the writer does next: nothing left
            assert transport.write_nowait([b'"after"']) == ()
            events += await _read_events(stream, client, 1)
    finally:
        await trio.aclose_forcefully(server_stream)
        await trio.aclose_forcefully(stream)
    assert events[0] == BIG
    assert isinstance(events[1], tuple)
    assert events[1][0] == "ping"
    assert events[2] == '"after"'
