"""An in-memory transport pair, for tests where the network is beside the point.

``memory_transport_pair()`` gives the server side (a :class:`Transport`, what
a connection is served on) and the peer (the client's end, with the same
methods as :class:`~server.transport.WebSocketClient`). Messages travel
through bounded channels, so a peer that stops reading fills the server's
side after ``capacity`` messages, as a full socket buffer would. No HTTP
handshake: the test says who the client is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import attrs
import trio

from server.protocol import CloseConnection, ConnectionClosed

from ._abc import Transport

#: Messages in flight each way before the sender waits.
DEFAULT_CAPACITY = 16


@attrs.frozen
class _Text:
    text: str


@attrs.frozen
class _Binary:
    data: bytes


@attrs.frozen
class _Close:
    code: int
    reason: str


@attrs.frozen
class _Pong:
    """The peer's answer to every ping waiting for one."""


_Item = _Text | _Binary | _Close | _Pong


@attrs.define(eq=False)
class _Pings:
    """Pings the server sent, and whether the peer answers them at once.

    A real client's reader answers pings in the background; so does the
    memory peer while ``answering``. Otherwise pings wait until the peer
    sends a pong (:meth:`MemoryPeer.pong`), which the server reads in turn.
    """

    answering: bool = True
    waiting: list[trio.Event] = attrs.field(factory=list)

    def answer_all(self) -> None:
        for event in self.waiting:
            event.set()
        self.waiting.clear()


class MemoryTransport(Transport):
    """The server's end of an in-memory connection."""

    def __init__(
        self,
        to_peer: trio.MemorySendChannel[_Item],
        from_peer: trio.MemoryReceiveChannel[_Item],
        pings: _Pings,
        *,
        max_message_size: int,
    ) -> None:
        self._to_peer = to_peer
        self._from_peer = from_peer
        self._pings = pings
        self.max_message_size = max_message_size
        self._close_code: int | None = None
        self._close_sent = False
        self._torn = False

    def frame(self, message: bytes) -> bytes:
        return message

    @property
    def close_code(self) -> int | None:
        return self._close_code

    @property
    def torn(self) -> bool:
        return self._torn

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        for frame in frames:
            if self._close_sent or self._close_code is not None:
                raise ConnectionClosed(self._close_code or 1006)
            try:
                await self._to_peer.send(_Text(frame.decode()))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._close_code = self._close_code or 1006
                raise ConnectionClosed(1006) from None
            except trio.Cancelled:
                self._torn = frame is not frames[-1]  # later frames of the batch are lost
                raise

    async def receive_message(self) -> str:
        try:
            item = await self._from_peer.receive()
            while isinstance(item, _Pong):
                self._pings.answer_all()
                item = await self._from_peer.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self._close_code = self._close_code or 1006
            raise ConnectionClosed(self._close_code) from None
        if isinstance(item, _Close):
            if self._close_code is None:
                self._close_code = item.code
                self._close_sent = True
                await self._send_close(item.code, item.reason)
            raise ConnectionClosed(item.code, item.reason)
        if isinstance(item, _Binary):
            raise CloseConnection(1003, "binary frames are not supported")
        if len(item.text.encode()) > self.max_message_size:
            raise CloseConnection(1009, f"message larger than {self.max_message_size} bytes")
        return item.text

    async def ping(self) -> trio.Event:
        await trio.lowlevel.checkpoint()
        if self._close_code is not None:
            raise ConnectionClosed(self._close_code)
        pong = trio.Event()
        if self._pings.answering:
            pong.set()
        else:
            self._pings.waiting.append(pong)
        return pong

    def unread_input(self) -> bool:
        return self._from_peer.statistics().current_buffer_used > 0

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        try:
            if self._close_code is None:
                self._close_code = code
                if not self._torn:
                    self._close_sent = True
                    await self._send_close(code, reason)
                    # The peer answers a close frame when it reads it.
                    while True:
                        item = await self._from_peer.receive()
                        if isinstance(item, _Close):
                            break
        except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            self._to_peer.close()
            self._from_peer.close()

    async def _send_close(self, code: int, reason: str) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._to_peer.send(_Close(code, reason))


class MemoryPeer:
    """The client's end of an in-memory connection (the same methods as a WebSocketClient)."""

    def __init__(
        self,
        to_server: trio.MemorySendChannel[_Item],
        from_server: trio.MemoryReceiveChannel[_Item],
        pings: _Pings,
    ) -> None:
        self._to_server = to_server
        self._from_server = from_server
        self._pings = pings
        self._closed: ConnectionClosed | None = None
        self.subprotocol: str | None = None

    @property
    def closed(self) -> ConnectionClosed | None:
        return self._closed

    @property
    def answers_pings(self) -> bool:
        """Whether the peer answers pings (a real client's reader does; set False to stop)."""
        return self._pings.answering

    @answers_pings.setter
    def answers_pings(self, value: bool) -> None:
        self._pings.answering = value
        if value:
            self._pings.answer_all()

    def queued(self) -> int:
        """Messages the server has sent that this peer has not read yet."""
        return self._from_server.statistics().current_buffer_used

    async def send_message(self, message: str | bytes) -> None:
        if self._closed is not None:
            raise self._closed
        item: _Item = _Text(message) if isinstance(message, str) else _Binary(message)
        try:
            await self._to_server.send(item)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._set_closed(1006, "") from None

    async def get_message(self) -> str:
        if self._closed is not None:
            raise self._closed
        try:
            item = await self._from_server.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._set_closed(1006, "") from None
        if isinstance(item, _Close):
            # Answer the server's close frame, as a client's reader does.
            closed = self._set_closed(item.code, item.reason)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._to_server.send(_Close(item.code, item.reason))
            raise closed
        assert isinstance(item, _Text)
        return item.text

    async def pong(self) -> None:
        """Answer the pings waiting for one (the server counts it once it reads it)."""
        try:
            await self._to_server.send(_Pong())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._set_closed(1006, "") from None

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Send a close frame (if still open) and read until the server's answer."""
        if self._closed is None:
            self._closed = ConnectionClosed(code, reason or "")
            try:
                await self._to_server.send(_Close(code, reason or ""))
                while not isinstance(await self._from_server.receive(), _Close):
                    pass
            except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError):
                pass
        self._to_server.close()
        self._from_server.close()

    def drop(self) -> None:
        """Vanish without a close frame (the server sees 1006), as a lost network does."""
        if self._closed is None:
            self._closed = ConnectionClosed(1006)
        self._to_server.close()
        self._from_server.close()

    def _set_closed(self, code: int, reason: str) -> ConnectionClosed:
        if self._closed is None:
            self._closed = ConnectionClosed(code, reason)
        return self._closed


def memory_transport_pair(
    *, capacity: int = DEFAULT_CAPACITY, max_message_size: int = 65536
) -> tuple[MemoryTransport, MemoryPeer]:
    """A connected (server transport, client peer) pair with ``capacity`` messages each way."""
    to_peer, peer_inbox = trio.open_memory_channel[_Item](capacity)
    to_server, server_inbox = trio.open_memory_channel[_Item](capacity)
    pings = _Pings()
    server = MemoryTransport(to_peer, server_inbox, pings, max_message_size=max_message_size)
    return server, MemoryPeer(to_server, peer_inbox, pings)
