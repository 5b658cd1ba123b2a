"""The server's own reader of plain frames agrees with wsproto, however the bytes arrive.

After the upgrade the transport parses whole, masked text and pong frames
itself and leaves everything else to wsproto, for good, from the first frame
it does not take (server/transport/_websocket.py). Here a client made with
wsproto sends any mix of whole and fragmented text, pings, pongs, text that is
not UTF-8 and messages over the limit, cut into arbitrary reads; what the
server reads (messages, and how the connection ends) must be what wsproto
alone gives for the same bytes, and pings must be answered in order.
"""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request
from wsproto.frame_protocol import FrameProtocol

from server.protocol import CloseConnection, ConnectionClosed
from server.transport import HandshakeAnswer, WebSocketTransport, accept_websocket

pytestmark = pytest.mark.timeout(120)

LIMIT = 300

_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=120)
_item = st.one_of(
    st.tuples(st.just("text"), _text),
    st.tuples(st.just("long"), st.integers(min_value=126, max_value=LIMIT + 50)),
    st.tuples(st.just("fragments"), st.lists(_text, min_size=2, max_size=3)),
    st.tuples(st.just("ping"), st.binary(max_size=8)),
    st.tuples(st.just("pong"), st.binary(max_size=8)),
    st.tuples(st.just("bad_utf8"), st.sampled_from([b"\xff", b"ok \xc3(", b"\xed\xa0\x80"])),
)


def _wire(client: FrameProtocol, items: list[tuple[str, object]]) -> bytes:
    data = b""
    for kind, value in items:
        if kind == "text":
            assert isinstance(value, str)
            data += client.send_data(value)
        elif kind == "long":
            assert isinstance(value, int)
            data += client.send_data("é" * (value // 2))
        elif kind == "fragments":
            assert isinstance(value, list)
            for i, part in enumerate(value):
                data += client.send_data(part, fin=i == len(value) - 1)
        elif kind == "ping":
            assert isinstance(value, bytes)
            data += client.ping(value)
        elif kind == "pong":
            assert isinstance(value, bytes)
            data += client.pong(value)
        else:
            assert isinstance(value, bytes)
            # A masked text frame whose payload is not UTF-8, built by hand.
            mask = b"\x01\x02\x03\x04"
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(value))
            data += bytes((0x81, 0x80 | len(value))) + mask + masked
    return data


async def _read_all(plain: bool, wire: bytes, cuts: list[int]) -> tuple[list[str], object, bytes]:
    """What a transport reads from ``wire`` arriving in pieces cut at ``cuts``."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client = WSConnection(ConnectionType.CLIENT)
    await client_stream.send_all(client.send(Request(host="localhost", target="/")))
    transport = await accept_websocket(
        server_stream,  # type: ignore[arg-type]
        lambda request: HandshakeAnswer(),
        max_message_size=LIMIT,
    )
    assert isinstance(transport, WebSocketTransport)
    assert transport._plain  # the client waited for the answer
    if not plain:
        transport._plain = False
    client.receive_data(bytes(await client_stream.receive_some()))
    assert isinstance(next(client.events()), AcceptConnection)
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    for start, stop in itertools.pairwise(points):
        if stop > start:
            await client_stream.send_all(wire[start:stop])
    client_stream.send_stream.close()  # nothing more: the peer then drops (1006)
    messages: list[str] = []
    ending: object
    with trio.fail_after(10):
        while True:
            try:
                messages.append(await transport.receive_message())
            except ConnectionClosed as exc:
                ending = ("closed", exc.code)
                break
            except CloseConnection as exc:
                ending = ("close_with", exc.code)
                break
    answers = b""
    with trio.move_on_after(0.1):
        while chunk := await client_stream.receive_some():
            answers += chunk
    return messages, ending, answers


@settings(max_examples=100, deadline=None)
@given(items=st.lists(_item, max_size=8), cuts=st.lists(st.integers(0, 10_000), max_size=6))
async def test_the_plain_reader_reads_what_wsproto_reads(
    items: list[tuple[str, object]], cuts: list[int]
) -> None:
    wire = _wire(FrameProtocol(client=True, extensions=[]), items)
    # The same client-side bytes for both (a client's masks are random).
    ours = await _read_all(True, wire, cuts)
    theirs = await _read_all(False, wire, cuts)
    assert ours == theirs


async def test_a_client_that_did_not_wait_for_the_answer_is_read_by_wsproto() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client = WSConnection(ConnectionType.CLIENT)
    early = client.send(Request(host="localhost", target="/"))
    frames = FrameProtocol(client=True, extensions=[])
    early += frames.send_data("early")
    await client_stream.send_all(early)
    with trio.fail_after(10):
        transport = await accept_websocket(
            server_stream,  # type: ignore[arg-type]
            lambda request: HandshakeAnswer(),
            max_message_size=LIMIT,
        )
        assert isinstance(transport, WebSocketTransport)
        assert not transport._plain
        # Whatever wsproto did with the bytes that came with the request (it
        # drops them, as it did before the plain reader), what follows is read.
        await client_stream.send_all(frames.send_data("later"))
        assert await transport.receive_message() == "later"
