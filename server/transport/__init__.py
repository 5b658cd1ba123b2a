"""The I/O edge: WebSocket transports, server and client side, and an in-memory pair.

The only package of the project that imports wsproto or trio-websocket. The
server's connections are served on a :class:`Transport`; over the network that
is :class:`WebSocketTransport` (wsproto, made by :func:`accept_websocket`),
in tests it can be :class:`MemoryTransport` (:func:`memory_transport_pair`).
Clients (the terminal client, the test helpers) use :class:`WebSocketClient`.
"""

from ._abc import Transport as Transport
from ._client import WebSocketClient as WebSocketClient
from ._client import connect_websocket as connect_websocket
from ._client import open_websocket_client as open_websocket_client
from ._framing import frame_text as frame_text
from ._memory import MemoryPeer as MemoryPeer
from ._memory import MemoryTransport as MemoryTransport
from ._memory import memory_transport_pair as memory_transport_pair
from ._websocket import HandshakeAnswer as HandshakeAnswer
from ._websocket import HandshakeRequest as HandshakeRequest
from ._websocket import WebSocketTransport as WebSocketTransport
from ._websocket import accept_websocket as accept_websocket

__all__ = [
    "HandshakeAnswer",
    "HandshakeRequest",
    "MemoryPeer",
    "MemoryTransport",
    "Transport",
    "WebSocketClient",
    "WebSocketTransport",
    "accept_websocket",
    "connect_websocket",
    "frame_text",
    "memory_transport_pair",
    "open_websocket_client",
]
