"""What a connection needs from the socket under it: the Transport interface."""

from __future__ import annotations

import abc
from collections.abc import Sequence

import trio


class Transport(abc.ABC):
    """One client's message stream, as the server's connection layer uses it.

    Exactly one task reads (:meth:`receive_message`); any task may send.
    Control frames (pings, pongs, the peer's close) are handled while reading.
    Every method raises :class:`~server.protocol.ConnectionClosed` once the
    connection is closed, and :meth:`receive_message` raises
    :class:`~server.protocol.CloseConnection` for what the peer sent that
    ends the connection with a code of ours (1002, 1003, 1007, 1009).
    """

    @abc.abstractmethod
    def frame(self, message: bytes) -> bytes:
        """``message`` (UTF-8 JSON) made ready for :meth:`send_frames` (pure, no I/O)."""

    @abc.abstractmethod
    async def send_frames(self, frames: Sequence[bytes]) -> None:
        """Send frames made by :meth:`frame`, in order, in as few writes as possible."""

    def write_nowait(self, messages: Sequence[bytes]) -> Sequence[bytes]:
        """Frame ``messages`` and write what the socket takes at once, never waiting.

        Returns what is left to write, in order, for :meth:`send_frames`
        (empty: everything went out). The caller sends that before anything
        else. (A transport may keep the end of a frame the socket cut itself,
        sending it before any later write, and return a placeholder.) Raises
        :class:`~server.protocol.ConnectionClosed` once the connection is
        closed. This default writes nothing and returns every message framed.
        """
        return [self.frame(message) for message in messages]

    @abc.abstractmethod
    async def receive_message(self) -> str:
        """The next complete text message from the peer."""

    @abc.abstractmethod
    async def ping(self) -> trio.Event:
        """Send a ping; return an event that is set once its pong has been read.

        Pongs are read by the reader (:meth:`receive_message`), so the event
        is set only while it runs.
        """

    @abc.abstractmethod
    def unread_input(self) -> bool:
        """Whether bytes from the peer have arrived that the reader has not processed yet.

        A heartbeat that timed out asks this before blaming the peer: after a
        stall of the server's own, the pong may be waiting to be read.
        """

    @abc.abstractmethod
    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code``: send the close frame, wait for the peer's, drop the socket.

        Idempotent. The caller bounds the wait (a peer may never answer); the
        socket is released however this ends. After a frame was cut off by
        cancellation no close frame can follow it: the socket is dropped.
        """

    @property
    @abc.abstractmethod
    def close_code(self) -> int | None:
        """The code the connection closed with (ours, else the peer's, 1006 if dropped)."""

    @property
    @abc.abstractmethod
    def torn(self) -> bool:
        """Whether a frame was cut off (no close frame could be sent after it)."""
