"""server/transport: the server's WebSocket transport over real sockets, and the memory pair.

The server side is our own (wsproto for parsing, our framing for writing); the
peers here are independent implementations (trio-websocket, raw wsproto), so a
mistake shared by both ends cannot hide.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Pong, Request, TextMessage

from server.protocol import CloseConnection as CloseWith
from server.protocol import ConnectionClosed, HandshakeRejected
from server.transport import (
    HandshakeAnswer,
    HandshakeRequest,
    WebSocketTransport,
    accept_websocket,
    memory_transport_pair,
    open_websocket_client,
)

WAIT = 10


def _accept_all(request: HandshakeRequest) -> HandshakeAnswer:
    return HandshakeAnswer()


@attrs.define
class Accepted:
    """What the one-shot server below accepted (None: it refused or failed the upgrade)."""

    url: str
    port: int
    ready: trio.Event = attrs.field(factory=trio.Event)
    transport: WebSocketTransport | None = None

    def server(self) -> WebSocketTransport:
        assert self.transport is not None
        return self.transport


async def serve_once(
    nursery: trio.Nursery,
    decide: Callable[[HandshakeRequest], HandshakeAnswer] = _accept_all,
    *,
    max_message_size: int = 65536,
) -> Accepted:
    """Accept one connection on loopback in ``nursery``; its socket closes with the nursery."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    accepted = Accepted(f"ws://127.0.0.1:{port}/ws", port)

    async def serve_one() -> None:
        async with listener:
            stream = await listener.accept()
        try:
            accepted.transport = await accept_websocket(
                stream, decide, max_message_size=max_message_size
            )
            accepted.ready.set()
            await trio.sleep_forever()
        finally:
            await trio.aclose_forcefully(stream)

    nursery.start_soon(serve_one)
    return accepted


async def test_batched_frames_reach_a_standard_client_and_nothing_follows_a_close(
    nursery: trio.Nursery,
) -> None:
    accepted = await serve_once(nursery)
    with trio.fail_after(WAIT):
        async with open_websocket_client(accepted.url) as client:
            await accepted.ready.wait()
            server = accepted.server()
            big = "two ✓" * 20000
            await server.send_frames([server.frame(b"one"), server.frame(big.encode())])
            assert await client.get_message() == "one"
            assert await client.get_message() == big
            await client.send_message("hello")
            assert await server.receive_message() == "hello"
            closed: list[ConnectionClosed] = []

            async def read_the_close() -> None:
                try:
                    await server.receive_message()
                except ConnectionClosed as exc:  # answered by the transport as it reads
                    closed.append(exc)

            async with trio.open_nursery() as reading:
                reading.start_soon(read_the_close)
                await client.aclose(1000, "bye")
            assert [c.code for c in closed] == [1000]
            assert server.close_code == 1000
            with pytest.raises(ConnectionClosed):
                await server.send_frames([server.frame(b"late")])


async def test_a_refused_handshake_gets_its_status_and_reason(nursery: trio.Nursery) -> None:
    seen: list[HandshakeRequest] = []

    def refuse(request: HandshakeRequest) -> HandshakeAnswer:
        seen.append(request)
        raise HandshakeRejected(403, "origin not allowed")

    accepted = await serve_once(nursery, refuse)
    with trio.fail_after(WAIT):
        with pytest.raises(HandshakeRejected) as rejected:
            async with open_websocket_client(accepted.url + "?x=1"):
                pass
        await accepted.ready.wait()
    assert rejected.value.status == 403
    assert rejected.value.reason == "origin not allowed"
    assert accepted.transport is None
    (request,) = seen
    assert request.target == "/ws?x=1"
    assert (b"host", f"127.0.0.1:{accepted.port}".encode()) in request.headers


async def test_a_plain_http_request_is_answered_400(nursery: trio.Nursery) -> None:
    accepted = await serve_once(nursery)
    with trio.fail_after(WAIT):
        async with await trio.open_tcp_stream("127.0.0.1", accepted.port) as stream:
            await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while chunk := await stream.receive_some(4096):
                answer += chunk
                if b"\r\n\r\n" in answer:
                    break
            await accepted.ready.wait()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert accepted.transport is None


class RawPeer:
    """A client on a raw socket: wsproto parses, the test decides when to read."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)

    async def handshake(self) -> None:
        await self.stream.send_all(self.ws.send(Request(host="127.0.0.1", target="/ws")))
        while True:
            self.ws.receive_data(await self.stream.receive_some(4096))
            if any(isinstance(e, AcceptConnection) for e in self.ws.events()):
                return

    async def events(self) -> list[object]:
        self.ws.receive_data(await self.stream.receive_some(65536))
        return list(self.ws.events())


async def raw_pair(
    nursery: trio.Nursery, *, max_message_size: int = 65536
) -> tuple[WebSocketTransport, RawPeer]:
    accepted = await serve_once(nursery, max_message_size=max_message_size)
    stream = await trio.open_tcp_stream("127.0.0.1", accepted.port)

    async def close_at_the_end() -> None:
        try:
            await trio.sleep_forever()
        finally:
            await trio.aclose_forcefully(stream)

    nursery.start_soon(close_at_the_end)
    peer = RawPeer(stream)
    await peer.handshake()
    await accepted.ready.wait()
    return accepted.server(), peer


async def test_unread_input_tells_a_pong_waiting_in_the_socket_from_none(
    nursery: trio.Nursery,
) -> None:
    # After a stall of the server's own, a heartbeat that timed out asks this
    # before blaming the peer (issue 10: a pong that arrived counts).
    with trio.fail_after(WAIT):
        server, peer = await raw_pair(nursery)
        pong = await server.ping()
        (ping,) = await peer.events()
        assert isinstance(ping, Ping)
        assert not server.unread_input()
        # On loopback, the bytes are in the server's socket once sent.
        await peer.stream.send_all(peer.ws.send(ping.response()))
        assert server.unread_input()
        assert not pong.is_set()  # nobody has read it yet
        await peer.stream.send_all(peer.ws.send(TextMessage(data="next")))
        assert await server.receive_message() == "next"
        assert pong.is_set()
        assert not server.unread_input()


async def test_pings_from_the_peer_are_answered_while_reading(nursery: trio.Nursery) -> None:
    with trio.fail_after(WAIT):
        server, peer = await raw_pair(nursery)
        await peer.stream.send_all(
            peer.ws.send(Ping(payload=b"p1")) + peer.ws.send(TextMessage(data="after"))
        )
        assert await server.receive_message() == "after"
        events = await peer.events()
        assert [type(e) for e in events] == [Pong]
        assert isinstance(events[0], Pong)
        assert events[0].payload == b"p1"


async def test_a_message_over_the_limit_ends_with_a_1009_close_frame(nursery: trio.Nursery) -> None:
    with trio.fail_after(WAIT):
        server, peer = await raw_pair(nursery, max_message_size=100)
        # 60 characters of 2 bytes each: 120 bytes, over the limit, in pieces.
        await peer.stream.send_all(
            peer.ws.send(TextMessage(data="é" * 30, message_finished=False))
            + peer.ws.send(TextMessage(data="é" * 30))
        )
        with pytest.raises(CloseWith) as refused:
            await server.receive_message()
        assert refused.value.code == 1009
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.aclose, 1009, "too big")
            events = await peer.events()
            close = next(e for e in events if isinstance(e, CloseConnection))
            assert close.code == 1009
            await peer.stream.send_all(peer.ws.send(close.response()))
        assert server.close_code == 1009


async def test_exactly_the_limit_is_accepted(nursery: trio.Nursery) -> None:
    with trio.fail_after(WAIT):
        server, peer = await raw_pair(nursery, max_message_size=100)
        text = "é" * 50  # 100 bytes
        await peer.stream.send_all(peer.ws.send(TextMessage(data=text)))
        assert await server.receive_message() == text


# -- the memory pair -------------------------------------------------------------


async def test_memory_messages_flow_both_ways_and_the_bound_holds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, peer = memory_transport_pair(capacity=2)
    await server.send_frames([server.frame(b"a"), server.frame(b"b")])
    with trio.move_on_after(1) as blocked:
        await server.send_frames([server.frame(b"c")])  # the peer reads nothing
    assert blocked.cancelled_caught
    assert peer.queued() == 2
    assert await peer.get_message() == "a"
    await peer.send_message("hi")
    assert await server.receive_message() == "hi"


async def test_memory_close_handshake_and_drop() -> None:
    server, peer = memory_transport_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.aclose, 1013, "slow consumer")
        with pytest.raises(ConnectionClosed) as closed:
            await peer.get_message()
    assert closed.value.code == 1013
    assert server.close_code == 1013

    server, peer = memory_transport_pair()
    peer.drop()
    with pytest.raises(ConnectionClosed) as dropped:
        await server.receive_message()
    assert dropped.value.code == 1006


async def test_memory_pings_wait_for_a_pong_once_the_peer_stops_answering() -> None:
    server, peer = memory_transport_pair()
    assert (await server.ping()).is_set()
    peer.answers_pings = False
    pong = await server.ping()
    assert not pong.is_set()
    await peer.pong()
    assert server.unread_input()  # the pong waits to be read
    await peer.send_message("x")
    assert await server.receive_message() == "x"
    assert pong.is_set()


async def test_memory_binary_and_oversized_messages_end_the_connection_with_their_code() -> None:
    server, peer = memory_transport_pair(max_message_size=10)
    await peer.send_message(b"\x00")
    with pytest.raises(CloseWith) as binary:
        await server.receive_message()
    assert binary.value.code == 1003
    await peer.send_message("x" * 11)
    with pytest.raises(CloseWith) as big:
        await server.receive_message()
    assert big.value.code == 1009
