"""The client side of a WebSocket, for the terminal client and the test helpers.

Clients use trio-websocket, an implementation independent of the server's
own transport (so the tests talk to the server the way other peers do), with
its background reader answering pings. This wrapper gives it the project's
exceptions: a rejected handshake is :class:`~server.protocol.HandshakeRejected`
(the HTTP status and body), a closed connection
:class:`~server.protocol.ConnectionClosed` (code and reason).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import cast
from urllib.parse import urlsplit

import trio
import trio_websocket

from server.protocol import ChatServerError, ConnectionClosed, HandshakeRejected

#: Largest message a client accepts from the server (answers and history pages can be long).
MAX_MESSAGE = 16 * 2**20


class WebSocketClient:
    """One client WebSocket connection (trio-websocket under the project's exceptions)."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws

    @property
    def subprotocol(self) -> str | None:
        return self._ws.subprotocol

    @property
    def closed(self) -> ConnectionClosed | None:
        """How the connection closed, or None while it is open."""
        reason = self._ws.closed
        if reason is None:
            return None
        return ConnectionClosed(reason.code, reason.reason or "")

    async def send_message(self, message: str | bytes) -> None:
        try:
            await self._ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def get_message(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def ping(self, payload: bytes | None = None) -> None:
        try:
            await self._ws.ping(payload)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Close (waiting for the server's close frame), then drop the socket."""
        try:
            await self._ws.aclose(code, reason)
        finally:
            # trio-websocket 0.12 leaves a client's socket open when the server
            # closed first (it waits for a TCP close it then never performs).
            stream = getattr(self._ws, "_stream", None)
            if isinstance(stream, trio.abc.AsyncResource):
                await trio.aclose_forcefully(stream)


def _closed(exc: trio_websocket.ConnectionClosed) -> ConnectionClosed:
    reason = exc.reason
    if reason is None:
        return ConnectionClosed(1006)
    return ConnectionClosed(reason.code, reason.reason or "")


def _rejected(exc: trio_websocket.ConnectionRejected) -> HandshakeRejected:
    body = (exc.body or b"").decode("utf-8", "replace")
    return HandshakeRejected(exc.status_code, body)


class _Translating:
    """The nursery given to trio-websocket: its reader task raises the project's exceptions.

    trio-websocket raises a rejected handshake out of its reader task, that is
    out of the caller's nursery, not out of the call.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def start_soon(
        self, fn: Callable[..., Awaitable[object]], *args: object, name: object = None
    ) -> None:
        async def translated() -> None:
            try:
                await fn(*args)
            except trio_websocket.ConnectionRejected as exc:
                raise _rejected(exc) from None

        self._nursery.start_soon(translated, name=name)


async def connect_websocket(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    host: str,
    resource: str,
    *,
    subprotocols: Sequence[str] | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    max_message_size: int = MAX_MESSAGE,
) -> WebSocketClient:
    """Do the client handshake on ``stream``; the reader task runs in ``nursery``.

    Raises :class:`HandshakeRejected` with the server's status and body.
    """
    try:
        ws = await trio_websocket.wrap_client_stream(
            cast(trio.Nursery, _Translating(nursery)),
            cast(trio.SocketStream, stream),  # any trio Stream works
            host,
            resource,
            subprotocols=subprotocols,
            extra_headers=extra_headers,
            message_queue_size=1,
            max_message_size=max_message_size,
        )
    except trio_websocket.ConnectionRejected as exc:
        raise _rejected(exc) from None
    return WebSocketClient(ws)


@asynccontextmanager
async def open_websocket_client(
    url: str,
    *,
    subprotocols: Sequence[str] | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    max_message_size: int = MAX_MESSAGE,
    connect_timeout: float = 10.0,
    disconnect_timeout: float = 10.0,
) -> AsyncIterator[WebSocketClient]:
    """Connect to ``url`` (``ws://host:port/path?query``); close it when the block ends.

    A rejected handshake raises :class:`HandshakeRejected`. The TCP stream is
    opened and closed here, whatever happens (trio-websocket's own
    ``open_websocket_url`` leaves it open when the server rejects the handshake).
    """
    parts = urlsplit(url)
    if parts.scheme != "ws" or parts.hostname is None:
        raise ValueError(f"not a ws:// URL: {url!r}")
    host, port = parts.hostname, parts.port or 80
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = host if parts.port is None else f"{host}:{port}"
    with trio.fail_after(connect_timeout):
        stream = await trio.open_tcp_stream(host, port)
    try:
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(connect_timeout):
                    client = await connect_websocket(
                        nursery,
                        stream,
                        host_header,
                        resource,
                        subprotocols=subprotocols,
                        extra_headers=extra_headers,
                        max_message_size=max_message_size,
                    )
                try:
                    yield client
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(disconnect_timeout):
                        await client.aclose()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # One exception of ours (a rejected handshake, a closed connection),
            # however deep in the client's nurseries: raised as it is.
            ours, rest = group.split(ChatServerError)
            leaves = _leaves(ours) if ours is not None else []
            if rest is None and len(leaves) == 1:
                raise leaves[0] from None
            raise
    finally:
        await trio.aclose_forcefully(stream)


def _leaves(group: BaseExceptionGroup[ChatServerError]) -> list[ChatServerError]:
    found: list[ChatServerError] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        else:
            found.append(exc)
    return found
