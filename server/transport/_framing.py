"""WebSocket framing of the server's own messages (pure).

A server sends unmasked frames (RFC 6455 5.1) and negotiates no extension, so
a text message is a two-to-ten byte header and the UTF-8 payload: building
it here, once, when the message is queued, costs far less than asking a
protocol object to do it per message.
"""

from __future__ import annotations

_FIN_TEXT = 0x81  # FIN + opcode 1 (text)


def frame_text(payload: bytes) -> bytes:
    """One unmasked, final text frame carrying ``payload`` (UTF-8), header included."""
    length = len(payload)
    if length < 126:
        return bytes((_FIN_TEXT, length)) + payload
    if length < 65536:
        return bytes((_FIN_TEXT, 126)) + length.to_bytes(2, "big") + payload
    return bytes((_FIN_TEXT, 127)) + length.to_bytes(8, "big") + payload
