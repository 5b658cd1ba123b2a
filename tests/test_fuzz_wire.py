"""Byte-level fuzzing of the WebSocket wire against a real loopback server.

The client here is raw: wsproto does the opening handshake and parses what the
server sends, but every frame the test sends is built by :func:`encode_frame`,
so each FIN/RSV/opcode/mask/length bit is the test's choice. Whatever arrives
-- valid fragmented text, oversized messages, protocol violations, truncated
frames, random bytes, garbage instead of an HTTP request -- the server must
answer as RFC 6455 and the protocol say, drop only that connection, and end
with every gauge at 0 and a normal client still served.

pytest-trio runs each Hypothesis example in its own ``trio.run``, so each
example gets a fresh server from the ``nursery`` fixture. The clock is real
(the network is the point); every wait is capped with ``trio.fail_after``.
Servers use a short ``handshake_timeout`` and ``close_timeout`` so that a
broken peer cannot hold a connection for long.
"""

from __future__ import annotations

import json
import struct
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from itertools import pairwise
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import FrameProtocol, Opcode

from agents import AgentClassRegistry, BaseAgent
from agents.builtin import default_registry
from server import ChatServer
from server.protocol import MESSAGE_TYPES
from server.testing import (
    RUN_EVENT_TYPES,
    check_run_invariants,
    open_chat_client,
    start_test_server,
)

WAIT = 10.0
LIMIT = 65536
HANDSHAKE_TIMEOUT = 2.0
CLOSE_TIMEOUT = 0.5

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
UNKNOWN_OPCODES = (0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF)
#: Close codes a peer may send (RFC 6455 section 7.4; 1014 is left out: wsproto
#: predates its registration and treats it as reserved).
VALID_CLOSE_CODES = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013)
INVALID_CLOSE_CODES = (0, 1, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535)
INVALID_UTF8 = (
    b"\xff",
    b"\xfe\xff",
    b"\x80",
    b"\xc0\xaf",  # overlong "/"
    b"\xe0\x80\xaf",  # overlong "/"
    b"\xed\xa0\x80",  # UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xe2\x82",  # truncated sequence (followed by ASCII)
)

RUN_START_TYPES = frozenset({"user_message", "chat", "start_agent"})
#: What a start_agent/user_message/stop_agent frame may be refused with
#: (besides the envelope errors the oracle predicts exactly).
PAYLOAD_ERRORS = frozenset({"FORMAT_ERROR", "AGENT_NOT_FOUND", "RUN_NOT_FOUND", "TOO_MANY_RUNS"})

FUZZ = settings(
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


# -- frames, bit by bit ---------------------------------------------------------


def mask_payload(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` (RFC 6455 section 5.3)."""
    size = len(payload)
    if size == 0:
        return b""
    stream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big")


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = b"\x00\x00\x00\x00",
    length: int | None = None,
    width: int | None = None,
) -> bytes:
    """One frame as RFC 6455 section 5.2 lays it out, every bit chosen here.

    ``mask=None`` sends it unmasked; ``length`` declares a payload length other
    than ``len(payload)``; ``width`` (7, 16 or 64) picks the length encoding
    (default: the shortest, the only one the RFC allows).
    """
    declared = len(payload) if length is None else length
    if width is None:
        width = 7 if declared < 126 else 16 if declared < 65536 else 64
    first = (0x80 if fin else 0) | (rsv & 0b111) << 4 | (opcode & 0xF)
    mask_bit = 0 if mask is None else 0x80
    if width == 7:
        assert declared < 126
        header = bytes([first, mask_bit | declared])
    elif width == 16:
        header = bytes([first, mask_bit | 126]) + struct.pack("!H", declared)
    else:
        header = bytes([first, mask_bit | 127]) + struct.pack("!Q", declared)
    if mask is None:
        return header + payload
    assert len(mask) == 4
    return header + mask + mask_payload(payload, mask)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def split_at(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut at the given byte offsets (which may split a UTF-8 character)."""
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in pairwise(points)]


def message_frames(opcode: int, pieces: Sequence[bytes], masks: Sequence[bytes]) -> list[bytes]:
    """A fragmented data message: ``opcode`` first, then continuations, FIN on the last."""
    last = len(pieces) - 1
    return [
        encode_frame(opcode if i == 0 else CONT, piece, fin=i == last, mask=masks[i % len(masks)])
        for i, piece in enumerate(pieces)
    ]


def ping_json(message_id: str, **extra: Any) -> bytes:
    return json.dumps({"type": "ping", "message_id": message_id, **extra}).encode()


# -- a raw client ------------------------------------------------------------------


class RawClient:
    """A WebSocket client whose outgoing frames are bytes the test builds.

    wsproto handles the opening handshake and parses the server's frames. The
    client answers the server's pings and close frames like any well-behaved
    peer, files run events by run, and keeps every other JSON frame in order.
    """

    def __init__(self, stream: trio.SocketStream, user_id: str) -> None:
        self.stream = stream
        self.user_id = user_id
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.accepted = False
        self.eof = False
        self.broken_pipe = False
        #: Every JSON frame that is not a run event, in arrival order.
        self.frames: list[dict[str, Any]] = []
        self._unread: deque[dict[str, Any]] = deque()
        #: Runs in the order their first event arrived (a run_id may be reused).
        self.runs: list[list[dict[str, Any]]] = []
        self._open_runs: dict[str, list[dict[str, Any]]] = {}
        #: Payloads of WebSocket pongs, in order.
        self.pongs: list[bytes] = []
        self.close: CloseConnection | None = None
        self._parts: list[str] = []

    async def handshake(self, host: str, target: str) -> dict[str, Any]:
        await self.send(self.ws.send(Request(host=host, target=target)))
        while not self.accepted:
            await self._pump()
            if self.eof:
                raise AssertionError("the server closed during the handshake")
        established = await self.receive()
        assert established is not None
        assert established["data"]["event"] == "connection_established", established
        return established

    async def send(self, data: bytes) -> bool:
        """Send raw bytes; False if the server has already gone."""
        if self.broken_pipe:
            return False
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.broken_pipe = True
            return False
        return True

    async def send_frames(self, frames: Sequence[bytes]) -> bool:
        return await self.send(b"".join(frames))

    async def receive(self) -> dict[str, Any] | None:
        """The next non-run JSON frame, or None once the server has closed."""
        while not self._unread and not self.eof:
            await self._pump()
        return self._unread.popleft() if self._unread else None

    async def receive_until(
        self, predicate: Callable[[dict[str, Any]], bool]
    ) -> list[dict[str, Any]]:
        """Frames received until one matches ``predicate`` (excluded from the list)."""
        before: list[dict[str, Any]] = []
        while True:
            frame = await self.receive()
            if frame is None:
                raise AssertionError(f"the server closed; frames so far: {self.frames}")
            if predicate(frame):
                return before
            before.append(frame)

    async def ping_roundtrip(
        self, message_id: str, mask: bytes = b"\x01\x02\x03\x04"
    ) -> list[dict[str, Any]]:
        """Send a JSON ping; return the frames that arrived before its pong."""
        assert await self.send(encode_frame(TEXT, ping_json(message_id), mask=mask))
        return await self.receive_until(
            lambda f: f.get("type") == "pong" and f.get("message_id") == message_id
        )

    async def read_to_end(self) -> None:
        """Read (answering pings and close frames) until the server closes TCP."""
        while not self.eof:
            await self._pump()

    async def pump_until(self, condition: Callable[[], bool]) -> None:
        """Read (filing frames) until ``condition()`` holds."""
        while not condition():
            if self.eof:
                raise AssertionError(f"the server closed; frames so far: {self.frames}")
            await self._pump()

    def replies_with_id(self, message_id: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("message_id") == message_id]

    async def _pump(self) -> None:
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""  # reset by the server: as good as closed
        if not data:
            self.eof = True
            return
        if self.ws.state is ConnectionState.CLOSED:
            return  # nothing may follow a completed close handshake; ignore it
        self.ws.receive_data(data)
        for event in self.ws.events():
            await self._on_event(event)

    async def _on_event(self, event: Event) -> None:
        if isinstance(event, AcceptConnection):
            self.accepted = True
        elif isinstance(event, RejectConnection | RejectData):
            raise AssertionError(f"handshake rejected: {event}")
        elif isinstance(event, TextMessage):
            self._parts.append(event.data)
            if event.message_finished:
                text, self._parts = "".join(self._parts), []
                self._file(json.loads(text))
        elif isinstance(event, BytesMessage):
            raise AssertionError("the server sent a binary message")
        elif isinstance(event, Ping):
            await self.send(self.ws.send(event.response()))
        elif isinstance(event, Pong):
            self.pongs.append(bytes(event.payload))
        elif isinstance(event, CloseConnection):
            self.close = event
            if self.ws.state is ConnectionState.REMOTE_CLOSING:
                await self.send(self.ws.send(event.response()))

    def _file(self, frame: dict[str, Any]) -> None:
        if frame.get("type") not in RUN_EVENT_TYPES:
            self.frames.append(frame)
            self._unread.append(frame)
            return
        assert frame["user_id"] == self.user_id, frame
        run_id = frame["run_id"]
        events: list[dict[str, Any]]
        if frame["seq"] == 1:
            assert run_id not in self._open_runs, f"run {run_id} started twice at once"
            self._open_runs[run_id] = events = []
            self.runs.append(events)
        else:
            # Nothing of a run follows its final event (a reused id starts at seq 1).
            assert run_id in self._open_runs, f"{frame['type']} of run {run_id} after its end"
            events = self._open_runs[run_id]
        events.append(frame)
        if frame["final"]:
            del self._open_runs[run_id]


@asynccontextmanager
async def open_raw_client(server: ChatServer, *, user_id: str = "raw") -> AsyncIterator[RawClient]:
    """A raw client past the handshake and ``connection_established``; its socket
    is closed on the way out, whatever happened."""
    with trio.fail_after(WAIT):
        stream = await trio.open_tcp_stream(server.host, server.port)
    try:
        client = RawClient(stream, user_id)
        with trio.fail_after(WAIT):
            await client.handshake(f"{server.host}:{server.port}", f"/ws?user_id={user_id}")
        yield client
    finally:
        await trio.aclose_forcefully(stream)


async def start_fuzz_server(nursery: trio.Nursery, **settings: Any) -> ChatServer:
    options: dict[str, Any] = {
        "admin_port": None,
        "handshake_timeout": HANDSHAKE_TIMEOUT,
        "close_timeout": CLOSE_TIMEOUT,
    }
    options.update(settings)
    return await start_test_server(nursery, **options)


async def assert_recovered(server: ChatServer) -> None:
    """No connection left, all four gauges 0, and a normal client completes a run."""
    with trio.fail_after(WAIT):
        await server.wait_idle()
    assert server.statistics().gauges == (0, 0, 0, 0)
    async with open_chat_client(server, user_id="after-fuzz") as client:
        run = await client.run("Our p99 latency is 900 ms, what should we do?")
    assert run.status == "completed"
    with trio.fail_after(WAIT):
        await server.wait_idle()
    assert server.statistics().gauges == (0, 0, 0, 0)


# -- strategies -------------------------------------------------------------------

masks = st.binary(min_size=4, max_size=4)
#: Text without lone surrogates (they cannot be encoded as UTF-8).
texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)


@st.composite
def cut_points(draw: st.DrawFn, size: int, max_cuts: int = 4) -> list[int]:
    if size < 2:
        return []
    return draw(st.lists(st.integers(1, size - 1), max_size=max_cuts, unique=True))


@st.composite
def control_frames(draw: st.DrawFn) -> tuple[int, bytes, bytes]:
    """A ping or an unsolicited pong with a payload of up to 125 bytes."""
    return (
        draw(st.sampled_from([PING, PONG])),
        draw(st.binary(max_size=125)),
        draw(masks),
    )


@st.composite
def fragmented_messages(draw: st.DrawFn) -> tuple[str, list[bytes], list[bytes]]:
    """A JSON ping padded with any text, cut at any byte, with control frames in
    between its fragments. Returns (message_id, frames, ping payloads in order)."""
    message_id = f"frag-{uuid.uuid4().hex}"
    data = json.dumps(
        {"type": "ping", "message_id": message_id, "pad": draw(texts)},
        ensure_ascii=draw(st.booleans()),
    ).encode()
    pieces = split_at(data, draw(cut_points(len(data))))
    frames = message_frames(TEXT, pieces, draw(st.lists(masks, min_size=1, max_size=3)))
    pings: list[bytes] = []
    wire: list[bytes] = []
    for frame in frames:
        for opcode, payload, mask in draw(st.lists(control_frames(), max_size=2)):
            wire.append(encode_frame(opcode, payload, mask=mask))
            if opcode == PING:
                pings.append(payload)
        wire.append(frame)
    return message_id, wire, pings


BAD_KINDS = (
    "unmasked",
    "reserved-bits",
    "unknown-opcode",
    "control-over-125",
    "fragmented-control",
    "continuation-without-start",
    "new-message-inside-fragmented",
    "invalid-utf8",
    "invalid-utf8-in-continuation",
    "close-1-byte",
    "close-invalid-code",
    "close-invalid-utf8-reason",
    "non-minimal-length",
    "length-msb-set",
)


@st.composite
def bad_frames(draw: st.DrawFn, kind: str) -> list[bytes]:
    """Frames whose last one breaks RFC 6455 in the way ``kind`` names.

    Where a payload could be read as a message it is a JSON ping with
    message_id ``bad``, so a server that wrongly accepted it would answer.
    """
    mask = draw(masks)
    bad = ping_json("bad")
    if kind == "unmasked":
        return [encode_frame(draw(st.sampled_from([TEXT, PING, CLOSE])), bad, mask=None)]
    if kind == "reserved-bits":
        opcode = draw(st.sampled_from([TEXT, PING]))
        return [encode_frame(opcode, bad, rsv=draw(st.integers(1, 7)), mask=mask)]
    if kind == "unknown-opcode":
        return [encode_frame(draw(st.sampled_from(UNKNOWN_OPCODES)), bad, mask=mask)]
    if kind == "control-over-125":
        opcode = draw(st.sampled_from([PING, PONG, CLOSE]))
        payload = close_payload(1000) + b"x" * draw(st.integers(124, 300))
        return [encode_frame(opcode, payload, mask=mask)]
    if kind == "fragmented-control":
        opcode = draw(st.sampled_from([PING, PONG, CLOSE]))
        first = encode_frame(opcode, close_payload(1000), fin=False, mask=mask)
        return [first, encode_frame(CONT, b"", mask=mask)]
    if kind == "continuation-without-start":
        return [encode_frame(CONT, bad, mask=mask)]
    if kind == "new-message-inside-fragmented":
        start = encode_frame(TEXT, b'{"type": "pi', fin=False, mask=mask)
        opcode = draw(st.sampled_from([TEXT, BINARY]))
        return [start, encode_frame(opcode, bad, mask=mask)]
    if kind == "invalid-utf8":
        payload = (
            b'{"type": "ping", "message_id": "bad", "x": "'
            + draw(st.sampled_from(INVALID_UTF8))
            + b'"}'
        )
        return [encode_frame(TEXT, payload, mask=mask)]
    if kind == "invalid-utf8-in-continuation":
        start = encode_frame(TEXT, b'{"type": "ping", "x": "', fin=False, mask=mask)
        rest = draw(st.sampled_from(INVALID_UTF8)) + b'"}'
        return [start, encode_frame(CONT, rest, mask=mask)]
    if kind == "close-1-byte":
        return [encode_frame(CLOSE, draw(st.binary(min_size=1, max_size=1)), mask=mask)]
    if kind == "close-invalid-code":
        code = draw(st.sampled_from(INVALID_CLOSE_CODES))
        return [encode_frame(CLOSE, close_payload(code, b"bye"), mask=mask)]
    if kind == "close-invalid-utf8-reason":
        reason = b"bye " + draw(st.sampled_from(INVALID_UTF8)) + b"!"
        return [encode_frame(CLOSE, close_payload(1000, reason), mask=mask)]
    if kind == "non-minimal-length":
        if draw(st.booleans()):
            return [encode_frame(TEXT, bad, mask=mask, width=draw(st.sampled_from([16, 64])))]
        padded = ping_json("bad", pad="x" * 200)  # 126..65535 bytes: 64-bit form is too wide
        return [encode_frame(TEXT, padded, mask=mask, width=64)]
    assert kind == "length-msb-set"
    return [encode_frame(TEXT, bad, mask=mask, length=2**63 + len(bad), width=64)]


# -- the frame encoder itself (pure) ------------------------------------------------


@settings(deadline=None, max_examples=200)
@given(
    opcode=st.sampled_from([TEXT, BINARY]),
    payload=st.binary(max_size=300)
    | st.sampled_from([125, 126, 127, 65535, 65536, 65537]).map(lambda n: b"y" * n),
    mask=masks,
)
def test_frame_encoder_produces_frames_wsproto_parses_back(
    opcode: int, payload: bytes, mask: bytes
) -> None:
    if opcode == TEXT:
        payload = payload.decode("latin-1").encode()  # any bytes, as valid UTF-8
    parser = FrameProtocol(client=False, extensions=[])
    parser.receive_bytes(encode_frame(opcode, payload, mask=mask))
    frames = list(parser.received_frames())
    assert len(frames) == 1
    (frame,) = frames
    assert frame.opcode is Opcode(opcode)
    assert frame.message_finished
    expected: bytes | str = payload.decode() if opcode == TEXT else payload
    assert frame.payload == expected


def test_frame_encoder_sets_the_bits_it_is_asked_to() -> None:
    frame = encode_frame(CONT, b"ab", fin=False, rsv=0b101, mask=None, length=300, width=64)
    assert frame == bytes([0b0101_0000, 127]) + struct.pack("!Q", 300) + b"ab"
    masked = encode_frame(PING, b"\x00\x00\x00\x00\xff", mask=b"\x01\x02\x03\x04")
    assert masked == bytes([0x89, 0x85]) + b"\x01\x02\x03\x04" + b"\x01\x02\x03\x04\xfe"


# -- valid frames ----------------------------------------------------------------------


@FUZZ
@given(messages=st.lists(fragmented_messages(), min_size=1, max_size=3))
async def test_fragmented_masked_text_with_interleaved_control_frames_is_reassembled(
    nursery: trio.Nursery, messages: list[tuple[str, list[bytes], list[bytes]]]
) -> None:
    server = await start_fuzz_server(nursery)
    async with open_raw_client(server) as client:
        all_pings: list[bytes] = []
        for message_id, wire, pings in messages:
            assert await client.send_frames(wire)
            all_pings += pings

            def its_pong(f: dict[str, Any], mid: str = message_id) -> bool:
                return f.get("type") == "pong" and f.get("message_id") == mid

            with trio.fail_after(WAIT):
                await client.receive_until(its_pong)
        # A final ping proves every earlier control frame has been handled.
        with trio.fail_after(WAIT):
            assert await client.ping_roundtrip("last") == []
        assert client.pongs == all_pings  # each ping answered once, in order, payload intact
        assert client.close is None
        assert [f["type"] for f in client.frames[1:]] == ["pong"] * (len(messages) + 1)
    await assert_recovered(server)


@st.composite
def sized_messages(draw: st.DrawFn) -> tuple[int, str, list[bytes]]:
    """(UTF-8 size, message_id, frames): a JSON ping of an exact byte size near the
    limit, padded with 1- to 4-byte characters and fragmented at any byte."""
    size = draw(
        st.integers(LIMIT - 4, LIMIT + 4) | st.sampled_from([LIMIT // 2, LIMIT + 1000, 2 * LIMIT])
    )
    char = draw(st.sampled_from(["a", "é", "€", "😀"]))
    message_id = f"size-{uuid.uuid4().hex}"
    head = json.dumps({"type": "ping", "message_id": message_id, "pad": ""}, ensure_ascii=False)
    room = size - len(head.encode())
    width = len(char.encode())
    pad = char * (room // width) + "a" * (room % width)
    data = json.dumps(
        {"type": "ping", "message_id": message_id, "pad": pad}, ensure_ascii=False
    ).encode()
    assert len(data) == size
    pieces = split_at(data, draw(cut_points(size, max_cuts=5)))
    return size, message_id, message_frames(TEXT, pieces, [draw(masks)])


@FUZZ
@given(message=sized_messages())
async def test_message_size_limit_counts_utf8_bytes_across_fragments(
    nursery: trio.Nursery, message: tuple[int, str, list[bytes]]
) -> None:
    size, message_id, frames = message
    server = await start_fuzz_server(nursery)
    async with open_raw_client(server) as client:
        await client.send_frames(frames)  # the server may close before taking it all
        with trio.fail_after(WAIT):
            if size <= LIMIT:
                await client.receive_until(lambda f: f.get("message_id") == message_id)
                assert client.close is None
            else:
                await client.read_to_end()
                assert client.close is not None, "no close frame"
                assert client.close.code == 1009
                assert client.replies_with_id(message_id) == []
    await assert_recovered(server)


@FUZZ
@given(
    pings=st.lists(st.binary(max_size=125), max_size=3),
    code=st.sampled_from(VALID_CLOSE_CODES) | st.integers(3000, 4999) | st.none(),
    # At most 30 characters: at most 120 bytes, so code + reason fit in 125.
    reason=st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30).map(str.encode),
    mask=masks,
)
async def test_close_frame_with_any_valid_code_is_echoed_and_ends_only_that_connection(
    nursery: trio.Nursery, pings: list[bytes], code: int | None, reason: bytes, mask: bytes
) -> None:
    server = await start_fuzz_server(nursery)
    async with open_raw_client(server) as client:
        frames = [encode_frame(PING, p, mask=mask) for p in pings]
        payload = b"" if code is None else close_payload(code, reason)
        frames.append(encode_frame(CLOSE, payload, mask=mask))
        frames.append(encode_frame(TEXT, ping_json("after-close"), mask=mask))  # must be ignored
        assert await client.send_frames(frames)
        with trio.fail_after(WAIT):
            await client.read_to_end()
        assert client.pongs == pings
        assert client.close is not None, "the server did not answer the close frame"
        assert client.close.code == (1005 if code is None else code)  # echoed (RFC 6455 5.5.1)
        assert client.replies_with_id("after-close") == []
    await assert_recovered(server)


# -- invalid frames ------------------------------------------------------------------


@pytest.mark.parametrize("kind", BAD_KINDS)
@settings(FUZZ, max_examples=6)
@given(prefix=st.integers(0, 2), data=st.data())
async def test_protocol_violation_fails_only_that_connection(
    nursery: trio.Nursery, kind: str, prefix: int, data: st.DataObject
) -> None:
    frames = data.draw(bad_frames(kind))
    server = await start_fuzz_server(nursery)
    async with (
        open_raw_client(server, user_id="bystander") as bystander_raw,
        open_raw_client(server) as client,
    ):
        for i in range(prefix):  # the connection is mid-conversation when it breaks
            with trio.fail_after(WAIT):
                assert await client.ping_roundtrip(f"before-{i}") == []
        await client.send_frames(frames)
        with trio.fail_after(WAIT):
            await client.read_to_end()  # the server drops the connection, promptly
        assert client.replies_with_id("bad") == [], kind
        # RFC 6455 7.1.7: a Close frame precedes the drop, and its code names
        # the failure (1007 for text that is not UTF-8, else 1002); the
        # metric records the same code.
        assert client.close is not None, kind
        assert client.close.code == (1007 if "utf8" in kind else 1002), (kind, client.close)
        with trio.fail_after(WAIT):
            await trio.testing.wait_all_tasks_blocked()
        closed = server.statistics().connections_closed_total
        assert closed.get(client.close.code, 0) >= 1
        # Another connection is untouched.
        with trio.fail_after(WAIT):
            assert await bystander_raw.ping_roundtrip("bystander") == []
    await assert_recovered(server)


@FUZZ
@given(
    prefix=st.integers(0, 2),
    frame=st.tuples(st.sampled_from([TEXT, BINARY, PING, CLOSE]), st.binary(max_size=200), masks),
    extra=st.integers(0, 2**40),
    cut=st.floats(0, 1),
    half_close=st.booleans(),
)
async def test_truncated_frame_then_disconnect_leaves_nothing_behind(
    nursery: trio.Nursery,
    prefix: int,
    frame: tuple[int, bytes, bytes],
    extra: int,
    cut: float,
    half_close: bool,
) -> None:
    opcode, payload, mask = frame
    if opcode in (PING, CLOSE):  # a control frame longer than 125 would be a violation
        payload = payload[:125]
        extra = min(extra, 125 - len(payload))
    # The header declares ``extra`` bytes more than the payload, and the frame
    # is cut anywhere: inside the header, the mask or the payload.
    whole = encode_frame(opcode, payload, mask=mask, length=len(payload) + extra)
    keep = max(1, min(round(cut * len(whole)), len(whole) - (extra == 0)))
    server = await start_fuzz_server(nursery)
    async with open_raw_client(server) as client:
        for i in range(prefix):
            with trio.fail_after(WAIT):
                assert await client.ping_roundtrip(f"before-{i}", mask=mask) == []
        assert await client.send(whole[:keep])
        if half_close:
            # The server sees EOF in the middle of a frame and closes its side too.
            await client.stream.send_eof()
            with trio.fail_after(WAIT):
                await client.read_to_end()
        # Otherwise the socket is simply closed on the way out.
    await assert_recovered(server)


@FUZZ
@given(garbage=st.binary(min_size=1, max_size=300))
async def test_random_bytes_after_the_handshake_never_affect_another_connection(
    nursery: trio.Nursery, garbage: bytes
) -> None:
    server = await start_fuzz_server(nursery)
    async with open_chat_client(server, user_id="bystander") as bystander:
        async with open_raw_client(server) as client:
            await client.send(garbage)
            # Whatever the garbage did to this connection, the other one is fine.
            await bystander.send({"type": "ping", "message_id": "still-there"})
            pong = await bystander.receive_frame("pong")
            assert pong["message_id"] == "still-there"
        run = await bystander.run("is everything still fine?")
        assert run.status == "completed"
    await assert_recovered(server)


# -- JSON inside valid frames --------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
any_json = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(texts.map(lambda t: t[:10]), children, max_size=4)
    ),
    max_leaves=12,
)


def mostly(
    good: st.SearchStrategy[Any], junk: st.SearchStrategy[Any] = any_json
) -> st.SearchStrategy[Any]:
    """``good`` about four times in five, else ``junk`` (a value of any JSON type)."""
    # (st.one_of(good, good, good, good, junk) would not do: it drops repeats.)
    return st.sampled_from([True, True, True, True, False]).flatmap(lambda ok: good if ok else junk)


#: A small pool of ids, so that runs collide, get stopped, and ids get reused.
run_ids = mostly(
    st.sampled_from(["r1", "r2"]), st.from_regex(r"[A-Za-z0-9_.:-]{1,12}", fullmatch=True)
)
request_texts = st.sampled_from(["hello", "Our p99 latency is 900 ms", "   ", ""]) | texts


def one_in(draw: st.DrawFn, n: int) -> bool:
    """True about once in ``n`` draws, and False when Hypothesis simplifies
    (it favours the first element, so the rare case is the last one)."""
    return draw(st.sampled_from(range(n))) == n - 1


PAYLOAD_KEYS = ("content", "message", "text", "user_request", "agent_name", "run_id", "thread_id")


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """A frame shaped like a client envelope: a type, mostly the payload that type
    needs, sometimes a field of the wrong type or a missing one."""
    # Hypothesis favours the first elements: runs and stops first.
    kinds = ["start_agent", "stop_agent", "user_message", "chat", "ping", "heartbeat"]
    kind: Any = draw(st.sampled_from([*kinds, "pong", "PING", ""]))
    if one_in(draw, 10):
        kind = draw(any_json)
    payload: dict[str, Any] = {}
    if kind in ("user_message", "chat"):
        payload[draw(st.sampled_from(["content", "message", "text"]))] = draw(mostly(request_texts))
    elif kind == "start_agent":
        payload["user_request"] = draw(mostly(request_texts))
        if not one_in(draw, 3):
            agent_names = st.sampled_from(
                ["lingering", "lingering", "supervisor", "triage", "nope"]
            )
            payload["agent_name"] = draw(mostly(agent_names))
        if not one_in(draw, 3):
            payload["run_id"] = draw(mostly(run_ids))
    elif kind == "stop_agent":
        payload["run_id"] = draw(mostly(run_ids))
    if isinstance(kind, str) and kind in RUN_START_TYPES and draw(st.booleans()):
        payload["thread_id"] = draw(mostly(run_ids))
    if one_in(draw, 5):  # protocol keys (or others) with values of any type
        keys = st.sampled_from([*PAYLOAD_KEYS, "extra"])
        payload.update(draw(st.dictionaries(keys, any_json, max_size=2)))
    frame: dict[str, Any] = {"type": kind}
    if one_in(draw, 20):
        del frame["type"]
    if bool(payload) or draw(st.booleans()):
        frame["payload"] = draw(mostly(st.just(payload)))
    message_id = None if one_in(draw, 3) else draw(mostly(texts))
    if message_id is not None or draw(st.booleans()):
        frame["message_id"] = message_id  # null means absent
    if draw(st.booleans()):
        frame["extra"] = draw(any_json)
    return frame


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Envelopes in a row; a start_agent with a run_id is often followed by a
    stop_agent for it (which may or may not still be running)."""
    frames: list[dict[str, Any]] = []
    for frame in draw(st.lists(envelopes(), min_size=1, max_size=6)):
        frames.append(frame)
        payload = frame.get("payload")
        if (
            frame.get("type") == "start_agent"
            and isinstance(payload, dict)
            and isinstance(payload.get("run_id"), str)
            and not one_in(draw, 2)
        ):
            frames.append({"type": "stop_agent", "payload": {"run_id": payload["run_id"]}})
    return frames


def expected_reply(value: Any) -> tuple[str | None, str | None, str | None]:
    """(reply type, error code, echoed message_id) as the protocol's check order
    prescribes, or reply type None when the answer depends on the payload and on
    the connection's runs (start and stop frames)."""
    if not isinstance(value, dict):
        return "error_message", "FORMAT_ERROR", None
    message_id = value.get("message_id")
    if message_id is not None and not isinstance(message_id, str):
        return "error_message", "FORMAT_ERROR", None
    kind = value.get("type")
    payload = value.get("payload")
    if not isinstance(kind, str) or (payload is not None and not isinstance(payload, dict)):
        return "error_message", "FORMAT_ERROR", message_id
    if kind not in MESSAGE_TYPES:
        return "error_message", "UNKNOWN_TYPE", message_id
    if kind == "ping":
        return "pong", None, message_id
    if kind == "heartbeat":
        return "heartbeat_ack", None, message_id
    return None, None, message_id


async def exchange_json_frames(
    server: ChatServer,
    values: Sequence[Any],
    ascii_flags: Sequence[bool],
    mask: bytes,
    *,
    sent: Callable[[], None] = lambda: None,
) -> None:
    """Send each value as one text frame followed by a sentinel ping; check that
    exactly the prescribed reply came back in between (replies are in order).
    ``sent()`` is called once every frame has been answered."""
    sentinel = f"sentinel-{uuid.uuid4().hex}"
    async with open_raw_client(server) as client:
        started: Counter[str | None] = Counter()  # message_ids of frames that started a run
        stopped: list[str] = []  # run ids of stop_agent frames that stopped a run
        for i, value in enumerate(values):
            text = json.dumps(value, ensure_ascii=ascii_flags[i % len(ascii_flags)])
            assert await client.send(encode_frame(TEXT, text.encode(), mask=mask))
            with trio.fail_after(WAIT):
                replies = await client.ping_roundtrip(f"{sentinel}-{i}", mask=mask)
            assert len(replies) <= 1, (value, replies)
            reply_type, code, message_id = expected_reply(value)
            reply = replies[0] if replies else None
            if reply is not None:
                if message_id is None:
                    assert "message_id" not in reply, (value, reply)
                else:
                    assert reply.get("message_id") == message_id, (value, reply)
                if reply["type"] == "error_message":
                    assert isinstance(reply["error_message"], str)
                    assert isinstance(reply["details"], dict)
            if reply_type is not None:
                assert reply is not None, value
                assert reply["type"] == reply_type, (value, reply)
                assert reply.get("error_code") == code, (value, reply)
            elif reply is not None:
                assert reply["type"] == "error_message", (value, reply)
                assert reply["error_code"] in PAYLOAD_ERRORS, (value, reply)
            elif value["type"] in RUN_START_TYPES:
                started[message_id] += 1  # no reply: it started a run
            else:
                stopped.append(value["payload"]["run_id"])  # no reply: it stopped a run
        sent()
        # Every run those frames started shows up, and ends.
        with trio.fail_after(WAIT):
            await client.pump_until(
                lambda: (
                    len(client.runs) >= sum(started.values())
                    and all(run[-1]["final"] for run in client.runs)
                )
            )
        assert Counter(run[0]["data"].get("message_id") for run in client.runs) == started
        for run in client.runs:
            check_run_invariants(run, run_id=run[0]["run_id"], user_id=client.user_id)
        cancelled = {
            run[0]["run_id"] for run in client.runs if run[-1]["data"]["status"] == "cancelled"
        }
        assert set(stopped) <= cancelled, (stopped, client.runs)
        assert client.close is None


@FUZZ
@given(
    values=st.lists(any_json, min_size=1, max_size=6),
    ascii_flags=st.lists(st.booleans(), min_size=1, max_size=3),
    mask=masks,
)
async def test_arbitrary_json_frames_get_the_reply_the_envelope_rules_prescribe(
    nursery: trio.Nursery, values: list[Any], ascii_flags: list[bool], mask: bytes
) -> None:
    # Default limits: every frame is followed by a valid ping, which resets the
    # error streak, and no example sends more than the rate limit's burst.
    server = await start_fuzz_server(nursery)
    await exchange_json_frames(server, values, ascii_flags, mask)
    await assert_recovered(server)


def registry_with_lingering_agent(conversation_over: trio.Event) -> AgentClassRegistry:
    """The default agents and ``lingering``, a top-level agent that runs until the
    whole conversation has been sent: every stop_agent for one of its runs, and
    every start past the run limit, meets it running (no timing decides that)."""

    class LingeringAgent(BaseAgent):
        name = "lingering"
        top_level = True

        async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            await self.think("waiting for the conversation to end")
            await conversation_over.wait()
            return {"done": True}

    registry = default_registry()
    registry.register(LingeringAgent)
    return registry


@settings(FUZZ, max_examples=80)
@given(
    values=conversations(),
    ascii_flags=st.lists(st.booleans(), min_size=1, max_size=3),
    mask=masks,
)
async def test_envelopes_with_random_field_types_get_the_prescribed_reply_or_a_run(
    nursery: trio.Nursery, values: list[dict[str, Any]], ascii_flags: list[bool], mask: bytes
) -> None:
    conversation_over = trio.Event()
    server = await start_fuzz_server(
        nursery, registry=registry_with_lingering_agent(conversation_over)
    )
    await exchange_json_frames(server, values, ascii_flags, mask, sent=conversation_over.set)
    await assert_recovered(server)


# -- before the handshake -------------------------------------------------------------

HTTP_GARBAGE = (
    b"",
    b"GET /ws HTTP/1.1\r\n",  # a request that never ends
    b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n",  # not an upgrade
    b"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    b"GET /ws HTTP/1.1\r\nX: " + b"a" * 20000,  # an endless header
    b"\r\n\r\n\r\n",
)


async def send_pre_handshake(server: ChatServer, garbage: bytes, *, half_close: bool) -> bytes:
    """Send ``garbage`` instead of an HTTP request; return all the server answered
    before it closed the TCP connection."""
    received = b""
    with trio.fail_after(WAIT):
        stream = await trio.open_tcp_stream(server.host, server.port)
    try:
        with trio.fail_after(WAIT):
            try:
                await stream.send_all(garbage)
                if half_close:
                    await stream.send_eof()
                while chunk := await stream.receive_some(65536):
                    received += chunk
            except trio.BrokenResourceError:
                pass  # reset by the server: dropped as well
    finally:
        await trio.aclose_forcefully(stream)
    return received


@settings(
    deadline=None,
    max_examples=20,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    garbage=st.binary(max_size=300) | st.sampled_from(HTTP_GARBAGE),
    half_close=st.booleans(),
)
async def test_garbage_instead_of_a_handshake_is_dropped_without_a_connection(
    nursery: trio.Nursery, garbage: bytes, half_close: bool
) -> None:
    # A very short handshake timeout: a request that never completes is only
    # dropped when it expires (some examples are such requests). A request
    # answered with a 4xx frees its socket at once (the test below).
    server = await start_fuzz_server(nursery, handshake_timeout=0.25)
    received = await send_pre_handshake(server, garbage, half_close=half_close)
    # Dropped: at most an HTTP 4xx answer, never an upgrade, never a connection.
    assert received == b"" or received.startswith(b"HTTP/1.1 4"), received[:100]
    assert server.statistics().connections_total == 0
    await assert_recovered(server)


async def test_a_request_answered_with_400_frees_its_socket_at_once(
    nursery: trio.Nursery,
) -> None:
    server = await start_fuzz_server(nursery, handshake_timeout=30)
    received = await send_pre_handshake(server, b"\x00 not http\r\n\r\n", half_close=False)
    assert received.startswith(b"HTTP/1.1 400"), received
    # The server has closed the socket (we read EOF), so it must not count it
    # as open until the handshake timeout expires.
    with trio.fail_after(2):
        await server.wait_idle()
    await assert_recovered(server)


async def test_binary_frame_built_by_hand_closes_with_1003(nursery: trio.Nursery) -> None:
    server = await start_fuzz_server(nursery)
    async with open_raw_client(server) as client:
        assert await client.send(encode_frame(BINARY, ping_json("binary"), mask=b"abcd"))
        with trio.fail_after(WAIT):
            await client.read_to_end()
        assert client.close is not None
        assert client.close.code == 1003
        assert client.replies_with_id("binary") == []
    await assert_recovered(server)
