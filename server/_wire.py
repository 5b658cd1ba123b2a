"""Writing many text messages in one socket write, next to trio-websocket.

trio-websocket sends one message per ``send_message`` call: wsproto builds the
frame, the stream lock is taken, and ``send_all`` makes one system call. A run
emits dozens of events in bursts, so the writer task sends whatever is queued
at once instead: :func:`frame_text` builds each server-to-client frame (no
mask, no extension, one frame per message) and :func:`send_frames` writes them
all with one ``send_all``, under trio-websocket's own stream lock and with the
same closed-connection checks as ``send_message``.

trio-websocket stays in charge of everything else (handshake, reading, ping and
pong, the close handshake). The price is three private attributes of its
``WebSocketConnection`` (``_wsproto``, ``_stream``, ``_stream_lock``) and one
private method (``_abort_web_socket``); the dependency is pinned below 0.13
and ``tests/test_wire.py`` checks that they still mean what this module needs.
No extension is negotiated on our connections (``WebSocketRequest.accept``
offers none), which is what makes plain frames correct.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection
from wsproto.connection import ConnectionState

_FIN_TEXT = 0x81  # FIN + opcode 1 (text)


def frame_text(payload: bytes) -> bytes:
    """One unmasked, final text frame carrying ``payload`` (UTF-8), header included."""
    length = len(payload)
    if length < 126:
        return bytes((_FIN_TEXT, length)) + payload
    if length < 65536:
        return bytes((_FIN_TEXT, 126)) + length.to_bytes(2, "big") + payload
    return bytes((_FIN_TEXT, 127)) + length.to_bytes(8, "big") + payload


async def send_frames(ws: WebSocketConnection, frames: Sequence[bytes]) -> None:
    """Write already built frames to ``ws`` in one ``send_all``.

    Raises :class:`ConnectionClosed` where ``ws.send_message`` would: the
    connection is closing or closed (nothing written), or the peer has gone
    (the connection is then aborted, as trio-websocket does).
    """
    if ws._close_reason is not None:
        raise ConnectionClosed(ws._close_reason)
    data = b"".join(frames)
    lock = ws._stream_lock
    try:
        lock.acquire_nowait()  # usually free: no schedule point before the write
    except trio.WouldBlock:
        await lock.acquire()
    try:
        # Checked again under the lock: a close frame may have gone out while
        # we waited for it, and no data frame may follow a close frame.
        if ws._wsproto.state is not ConnectionState.OPEN:
            raise ConnectionClosed(ws._close_reason or CloseReason(1006, None))
        try:
            await ws._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await ws._abort_web_socket()
            raise ConnectionClosed(ws._close_reason or CloseReason(1006, None)) from None
    finally:
        lock.release()
