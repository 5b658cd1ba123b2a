"""The server's WebSocket transport: wsproto over a trio stream, one reader, no extra task.

wsproto does the HTTP upgrade and parses what clients send; the server
writes its own frames (:func:`frame_batch`): a batch of messages is framed into
one buffer and written with one ``send()`` straight on the socket when the
socket takes it (no task switch, no cancel scope), else the rest through
trio's ``send_all``.
Reading happens in the task that serves the connection, so an idle
connection has no task of its own beyond that one. Control frames are
handled as they are read: a ping is answered, a pong wakes the heartbeat,
the peer's close frame is answered and ends the stream. What a client sends
that breaks the protocol ends the connection with a close frame carrying the
RFC 6455 code (1002 protocol error, 1003 binary, 1007 invalid UTF-8, 1009 too
big) before the TCP connection is dropped.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket as stdlib_socket
from collections import deque
from collections.abc import Callable, Sequence

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from server.protocol import CloseConnection as CloseWith
from server.protocol import ConnectionClosed, HandshakeRejected

from ._abc import Transport
from ._framing import frame_batch, frame_text

#: Bytes read from the socket at a time (also bounds what one read can queue up).
RECEIVE_SIZE = 65536
_pings = itertools.count(1)


@attrs.frozen
class HandshakeRequest:
    """What a client asked for in its upgrade request."""

    target: str
    headers: tuple[tuple[bytes, bytes], ...]
    subprotocols: tuple[str, ...]


@attrs.frozen
class HandshakeAnswer:
    """How the server accepts an upgrade: the subprotocol it selects, if any."""

    subprotocol: str | None = None


class WebSocketTransport(Transport):
    """A server-side WebSocket over ``stream`` once the upgrade is done."""

    __slots__ = (
        "_close_code",
        "_closing",
        "_failed",
        "_messages",
        "_parts",
        "_parts_size",
        "_plain",
        "_pong",
        "_send_lock",
        "_socket",
        "_stream",
        "_tail",
        "_torn",
        "_unsent",
        "_ws",
        "max_message_size",
    )

    def __init__(
        self,
        stream: trio.SocketStream,
        ws: WSConnection,
        *,
        max_message_size: int,
        plain: bool = False,
    ) -> None:
        self._stream = stream
        #: The non-blocking stdlib socket under trio's, for writes that need no
        #: wait (None if this trio keeps it elsewhere: every write then waits).
        self._socket: stdlib_socket.socket | None = getattr(
            getattr(stream, "socket", None), "_sock", None
        )
        self._ws = ws
        self.max_message_size = max_message_size
        self._send_lock = trio.StrictFIFOLock()
        #: Complete messages read but not yet returned by receive_message.
        self._messages: deque[str] = deque()
        #: The message being reassembled from its frames, and its size so far.
        self._parts: list[str] = []
        self._parts_size = 0
        self._pong: tuple[bytes, trio.Event] | None = None
        #: No byte after the upgrade request has gone to wsproto (``plain``, as
        #: accept_websocket knows): the reader parses whole text and pong frames
        #: itself (they leave wsproto's state as it was) until the first frame it
        #: leaves to wsproto, which then parses everything that follows.
        #: ``_tail``: the start of an incomplete frame.
        self._plain = plain
        self._tail = b""
        #: The end of a frame write_nowait could not write: it goes out first
        #: with the next write, whoever makes it (a frame is never interleaved).
        self._unsent = b""
        self._close_code: int | None = None
        #: Our close frame was sent (or cannot be: then we only drop the socket).
        self._closing = False
        #: The peer broke the protocol: wsproto can parse nothing more.
        self._failed = False
        self._torn = False

    # -- Transport ---------------------------------------------------------------

    def frame(self, message: bytes) -> bytes:
        return frame_text(message)

    @property
    def close_code(self) -> int | None:
        return self._close_code

    @property
    def torn(self) -> bool:
        return self._torn

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        await self._send(frames[0] if len(frames) == 1 else b"".join(frames), message=True)

    def write_nowait(self, messages: Sequence[bytes]) -> Sequence[bytes]:
        if self._closing or self._close_code is not None:
            raise ConnectionClosed(self._close_code or 1006)
        data = frame_batch(messages)
        sock = self._socket
        if sock is None or self._send_lock.locked():
            return [bytes(data)]  # a write is waiting: this one goes after it
        if self._unsent:
            data[:0] = self._unsent
            self._unsent = b""
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost()
            raise ConnectionClosed(1006) from None
        if sent == len(data):
            return ()
        # Kept here rather than returned: any write from now on (a pong, a
        # ping, a close frame from another task) sends it first.
        self._unsent = bytes(memoryview(data)[sent:])
        return [b""]

    async def receive_message(self) -> str:
        while not self._messages:
            if self._close_code is not None:
                raise ConnectionClosed(self._close_code)
            await self._read()
        return self._messages.popleft()

    async def ping(self) -> trio.Event:
        if (
            self._closing
            or self._close_code is not None
            or self._ws.state is not (ConnectionState.OPEN)
        ):
            raise ConnectionClosed(self._close_code or 1006)
        payload = next(_pings).to_bytes(8, "big")
        pong = trio.Event()
        self._pong = (payload, pong)
        await self._send(self._ws.send(Ping(payload=payload)))
        return pong

    def unread_input(self) -> bool:
        if self._messages or self._tail:
            return True
        try:
            fd = self._stream.socket.fileno()
            with stdlib_socket.socket(fileno=os.dup(fd)) as peek:
                return bool(peek.recv(1, stdlib_socket.MSG_PEEK | stdlib_socket.MSG_DONTWAIT))
        except OSError:
            return False

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        try:
            if not self._torn and not self._closing and self._close_code is None:
                self._close_code = code
                await self._send_close(code, reason)
            # Wait for the peer's close frame (the caller bounds this), unless
            # it came already or nothing it sends can be parsed any more.
            while not self._failed and self._ws.state is ConnectionState.LOCAL_CLOSING:
                await self._read()
        except (ConnectionClosed, CloseWith):
            pass  # the peer went, or sent something broken: either way, done
        finally:
            if self._close_code is None:
                self._close_code = code
            await trio.aclose_forcefully(self._stream)

    # -- internals ---------------------------------------------------------------

    async def _send(self, payload: bytes, *, message: bool = False) -> None:
        lock = self._send_lock
        try:
            lock.acquire_nowait()  # usually free: no schedule point before the write
        except trio.WouldBlock:
            await lock.acquire()
        try:
            # Checked under the lock: no data frame may follow our close frame.
            if message and (self._closing or self._close_code is not None):
                raise ConnectionClosed(self._close_code or 1006)
            if self._unsent:  # the end of a frame write_nowait began
                payload = self._unsent + payload
                self._unsent = b""
            await self._stream.send_all(payload)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._lost()
            raise ConnectionClosed(1006) from None
        except trio.Cancelled:
            self._torn = True  # part of the frame may be out: nothing may follow it
            raise
        finally:
            lock.release()

    async def _send_close(self, code: int, reason: str) -> None:
        self._closing = True
        if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            await self._send(self._ws.send(CloseConnection(code=code, reason=reason or None)))

    def _lost(self) -> None:
        if self._close_code is None:
            self._close_code = 1006

    async def _read(self) -> None:
        try:
            data = await self._stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self._lost()
            raise ConnectionClosed(self._close_code or 1006)
        if self._plain:
            data = self._read_plain(self._tail + data if self._tail else data)
            if not data:
                return
        self._ws.receive_data(data)
        for event in self._ws.events():
            if isinstance(event, TextMessage):
                self._add_text(event)
            elif isinstance(event, Ping):
                await self._send(self._ws.send(event.response()))
            elif isinstance(event, Pong):
                pong = self._pong
                if pong is not None and event.payload == pong[0]:
                    self._pong = None
                    pong[1].set()
            elif isinstance(event, CloseConnection):
                await self._closed_by_peer(event)
            elif isinstance(event, BytesMessage):
                raise CloseWith(1003, "binary frames are not supported")

    def _read_plain(self, data: bytes) -> bytes:
        """Take the whole text and pong frames at the start of ``data``; return the rest.

        Only the plainest frames: final, no extension bits, masked, minimally
        encoded lengths, valid UTF-8 within the size limit. Anything else
        (other opcodes, fragments, errors) is left to wsproto from there on,
        so its answers (close codes, reasons) are the same as before. An
        incomplete frame at the end is kept for the next read.
        """
        end = len(data)
        at = 0
        while at < end:
            if end - at < 2:
                break
            first, second = data[at], data[at + 1]
            if second < 0x80 or (first != 0x81 and first != 0x8A):
                return self._leave_plain(data, at)  # unmasked, or not final text/pong
            length = second & 0x7F
            start = at + 6
            if length == 126:
                if first != 0x81:
                    return self._leave_plain(data, at)
                if end - at < 4:
                    break
                length = (data[at + 2] << 8) | data[at + 3]
                if length < 126:
                    return self._leave_plain(data, at)
                start = at + 8
            elif length == 127:
                return self._leave_plain(data, at)
            stop = start + length
            if stop > end:
                if length > self.max_message_size:
                    return self._leave_plain(data, at)
                break
            payload = _unmask(data[start - 4 : start], data[start:stop])
            if first == 0x8A:
                pong = self._pong
                if pong is not None and payload == pong[0]:
                    self._pong = None
                    pong[1].set()
            else:
                if length > self.max_message_size:
                    return self._leave_plain(data, at)
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    return self._leave_plain(data, at)
                self._messages.append(text)
            at = stop
        self._tail = data[at:] if at < end else b""
        return b""

    def _leave_plain(self, data: bytes, at: int) -> bytes:
        self._plain = False
        self._tail = b""
        return data[at:]

    def _add_text(self, event: TextMessage) -> None:
        data = event.data
        self._parts_size += len(data)
        limit = self.max_message_size
        # wsproto gives characters; the limit is in UTF-8 bytes (at most 4 a character).
        if self._parts_size * 4 > limit:
            self._parts_size = sum(len(part.encode()) for part in self._parts) + len(data.encode())
            if self._parts_size > limit:
                raise CloseWith(1009, f"message larger than {limit} bytes")
        if event.message_finished:
            if self._parts:
                self._parts.append(data)
                data = "".join(self._parts)
                self._parts.clear()
            self._parts_size = 0
            self._messages.append(data)
        else:
            self._parts.append(data)

    async def _closed_by_peer(self, event: CloseConnection) -> None:
        if self._ws.state is ConnectionState.OPEN:
            # Not a close frame: wsproto could not parse what the peer sent.
            self._failed = True
            raise CloseWith(int(event.code), event.reason or "protocol error")
        if self._ws.state is ConnectionState.REMOTE_CLOSING:
            # Answer with the peer's code (RFC 6455 5.5.1), then end the stream.
            self._close_code = int(event.code)
            self._closing = True
            with contextlib.suppress(ConnectionClosed):
                await self._send(self._ws.send(event.response()))
        elif self._close_code is None:  # our close was answered
            self._close_code = int(event.code)
        raise ConnectionClosed(self._close_code or int(event.code), event.reason or "")


def _unmask(mask: bytes, payload: bytes) -> bytes:
    """``payload`` XORed with the repeated 4-byte ``mask`` (RFC 6455 5.3)."""
    length = len(payload)
    if not length:
        return payload
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        length, "little"
    )


async def accept_websocket(
    stream: trio.SocketStream,
    decide: Callable[[HandshakeRequest], HandshakeAnswer],
    *,
    max_message_size: int,
) -> WebSocketTransport | None:
    """Read the upgrade request on ``stream`` and accept or reject it.

    ``decide`` sees the request and returns how to accept it, or raises
    :class:`~server.protocol.HandshakeRejected` (answered with that status
    and reason as a plain-text body). A request that is not a valid upgrade
    is answered 400. Returns the transport, or None if nothing was accepted
    (the caller closes the stream). The caller bounds the wait.
    """
    ws = WSConnection(ConnectionType.SERVER)
    received = b""
    while True:
        try:
            data = await stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        if not data:
            return None
        received += data
        try:
            ws.receive_data(data)
            request = next((e for e in ws.events() if isinstance(e, Request)), None)
        except RemoteProtocolError as exc:
            await _reject(stream, ws, 400, "bad upgrade request", hint=exc.event_hint)
            return None
        if request is not None:
            break
    handshake = HandshakeRequest(
        target=request.target,
        headers=(
            (b"host", request.host.encode("latin-1")),
            *((_bytes(k), _bytes(v)) for k, v in request.extra_headers),
        ),
        subprotocols=tuple(request.subprotocols),
    )
    try:
        answer = decide(handshake)
    except HandshakeRejected as exc:
        await _reject(stream, ws, exc.status, exc.reason)
        return None
    try:
        await stream.send_all(ws.send(AcceptConnection(subprotocol=answer.subprotocol)))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return None
    # Bytes after the request's blank line (a client that did not wait for the
    # answer) are wsproto's already: the reader must then leave all to wsproto.
    head_end = received.find(b"\r\n\r\n")
    plain = head_end != -1 and head_end + 4 == len(received)
    return WebSocketTransport(stream, ws, max_message_size=max_message_size, plain=plain)


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


async def _reject(
    stream: trio.SocketStream,
    ws: WSConnection,
    status: int,
    reason: str,
    *,
    hint: object = None,
) -> None:
    body = reason.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if isinstance(hint, RejectConnection):
        status = hint.status_code
    try:
        data = ws.send(RejectConnection(status_code=status, headers=headers, has_body=True))
        data += ws.send(RejectData(data=body, body_finished=True))
    except LocalProtocolError:
        # The request was too broken for h11 to answer it: answer by hand.
        head = f"HTTP/1.1 {status} \r\n".encode() + b"".join(
            k + b": " + v + b"\r\n" for k, v in headers
        )
        data = head + b"\r\n" + body
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)
