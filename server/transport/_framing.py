"""WebSocket framing of the server's own messages (pure).

A server sends unmasked frames (RFC 6455 5.1) and negotiates no extension, so
a text message is a two-to-ten byte header and the UTF-8 payload: building
it here costs far less than asking a protocol object to do it per message.
The writer frames a whole batch straight into one buffer (:func:`frame_batch`):
one copy of each payload, one write.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

_FIN_TEXT = 0x81  # FIN + opcode 1 (text)
#: The two-byte headers of payloads under 126 bytes, made once.
_SHORT = [bytes((_FIN_TEXT, length)) for length in range(126)]
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def _header(length: int) -> bytes:
    if length < 126:
        return _SHORT[length]
    if length < 65536:
        return _MEDIUM.pack(_FIN_TEXT, 126, length)
    return _LONG.pack(_FIN_TEXT, 127, length)


def frame_text(payload: bytes) -> bytes:
    """One unmasked, final text frame carrying ``payload`` (UTF-8), header included."""
    return _header(len(payload)) + payload


def frame_batch(payloads: Sequence[bytes]) -> bytearray:
    """The frames of ``payloads`` (UTF-8), in order, in one buffer."""
    buffer = bytearray()
    for payload in payloads:
        length = len(payload)
        buffer += _SHORT[length] if length < 126 else _header(length)
        buffer += payload
    return buffer
