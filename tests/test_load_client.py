"""benchmarks/_load_client.py: the load generator's hand-made WebSocket framing.

The load generator cuts server frames out of the byte stream itself (wsproto
cost as much per frame as the server's event path); these tests hold it to
what wsproto and our server's frame writer agree on.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection as WsprotoConnection
from wsproto.events import CloseConnection, Message, Ping, TextMessage

from benchmarks._load_client import Closed, LeanClient, client_frame
from benchmarks._server_api import frame_text


@given(st.text(max_size=70_000))
def test_client_frames_are_masked_frames_a_server_decodes(text: str) -> None:
    text = text.encode("utf-8", "replace").decode()
    server = WsprotoConnection(ConnectionType.SERVER)
    server.receive_data(client_frame(0x1, text.encode()))
    events = list(server.events())
    assert "".join(e.data for e in events if isinstance(e, TextMessage)) == text
    last = events[-1]
    assert isinstance(last, Message)
    assert last.message_finished


def _client() -> LeanClient:
    return LeanClient(trio.testing.memory_stream_pair()[0])


@given(
    st.lists(st.binary(max_size=300).map(lambda b: b.hex()), min_size=1, max_size=6),
    st.data(),
)
def test_frames_split_anywhere_come_out_whole_and_in_order(
    texts: list[str], data: st.DataObject
) -> None:
    wire = b"".join(frame_text(t.encode()) for t in texts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    client = _client()
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        client._buffer += wire[start:end]
        client._parse()
    assert [payload.decode() for _, payload in client.pending] == texts
    assert not client._buffer


async def test_pings_are_answered_and_a_close_frame_ends_with_its_code() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    client = LeanClient(ours)
    server = WsprotoConnection(ConnectionType.SERVER)
    await theirs.send_all(
        server.send(Ping(b"p1"))
        + server.send(TextMessage("hello"))
        + server.send(CloseConnection(1001, "bye"))
    )
    assert await client.receive_message() == b"hello"
    with pytest.raises(Closed) as closed:
        await client.receive_message()
    assert closed.value.code == 1001
    server.receive_data(bytes(await theirs.receive_some()))
    replies = list(server.events())
    assert [type(e).__name__ for e in replies][:1] == ["Pong"]
    assert isinstance(replies[-1], CloseConnection)
    assert replies[-1].code == 1001
