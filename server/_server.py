"""The server: listener, connections nursery, admin listener, graceful drain.

Nurseries, outermost first::

    serve_chat                 server nursery: admin listener, heartbeat schedule,
    │                          connections nursery
    └── connections nursery    accept loop (own cancel scope, for drains) + one task
        │                      per connection
        └── connection task    trio-websocket's reader task, then Connection.serve():
            └── Connection     writer task, drain task, one task per run, and a
                               ping task while a ping waits for its pong

The model provider (for ``--model-provider openai``, an httpx client and its
connection pool) is opened around all of it and closed when ``serve_chat``
returns; a provider call runs in the task of the run that made it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

import attrs
import trio
from trio_websocket import WebSocketConnection, wrap_server_stream

from agents import (
    AgentClassRegistry,
    ModelProvider,
    ToolRegistry,
)

from ._accept import serve_listeners
from ._assembly import build_factory, build_verifier, open_model_provider
from ._auth import JwtVerifier
from ._connection import Connection, ConnectionStatistics, ServerServices
from ._descriptors import SocketSlots, socket_limit
from ._errors import HandshakeRejected
from ._handlers import HandlerRouter, default_router
from ._handshake import Identity, admit
from ._heartbeat import HeartbeatSchedule
from ._lag import serve_lag_ticks
from ._listeners import open_listeners
from ._metrics import Metrics, MetricsSnapshot
from ._origins import OriginPolicy
from ._settings import Settings

log = logging.getLogger("trio_agent_server.server")


@attrs.define(eq=False)
class ChatServer:
    """Handle on a running server, returned by ``nursery.start(serve_chat, ...)``."""

    settings: Settings
    metrics: Metrics
    host: str
    port: int
    admin_port: int | None = None
    draining: bool = False
    verifier: JwtVerifier | None = None
    #: Which browser origins may connect (set once the admin listener is bound).
    origins: OriginPolicy = attrs.field(factory=OriginPolicy)
    _connections: set[Connection] = attrs.field(factory=set)
    _per_user: dict[str, int] = attrs.field(factory=dict)
    #: Handshakes admitted and not yet connections (counted against --max-connections).
    _upgrading: int = 0
    #: Client sockets open (accepted, handshaking or connected), bounded.
    _slots: SocketSlots = attrs.field(factory=lambda: SocketSlots(0))
    _accept_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    _stopped: trio.Event = attrs.field(factory=trio.Event)

    @property
    def url(self) -> str:
        """The WebSocket URL clients connect to."""
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def admin_url(self) -> str | None:
        if self.admin_port is None:
            return None
        return f"http://{self.settings.effective_admin_host}:{self.admin_port}"

    def statistics(self) -> MetricsSnapshot:
        return self.metrics.statistics()

    def connection_statistics(self) -> list[ConnectionStatistics]:
        return [conn.statistics() for conn in self._connections]

    def begin_drain(self) -> None:
        """Stop accepting; let runs finish for ``drain_timeout``; close every client with 1001."""
        if self.draining:
            return
        self.draining = True
        log.info("draining: %d connection(s) open", len(self._connections))
        self._accept_scope.cancel()
        deadline = trio.current_time() + self.settings.drain_timeout
        for conn in list(self._connections):
            conn.begin_drain(deadline)

    async def drain(self) -> None:
        """Drain (see :meth:`begin_drain`) and wait until the server has stopped."""
        self.begin_drain()
        await self._stopped.wait()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def wait_idle(self) -> None:
        """Wait until no client socket is open, handshaking or connected (all gauges 0)."""
        await self._slots.wait_empty()

    # -- per connection ----------------------------------------------------------

    async def _serve_stream(self, services: ServerServices, stream: trio.SocketStream) -> None:
        # The boundary: nothing raised for one connection may reach the
        # connections nursery, or every other connection would be cancelled.
        # The listener took a socket slot for ``stream``; it is given back here.
        try:
            async with trio.open_nursery() as nursery:
                await self._serve_websocket(services, stream, nursery)
                nursery.cancel_scope.cancel()
        except Exception:
            log.exception("connection task failed")
        finally:
            await trio.aclose_forcefully(stream)
            self._slots.release()

    async def _serve_websocket(
        self, services: ServerServices, stream: trio.SocketStream, nursery: trio.Nursery
    ) -> None:
        settings = self.settings
        accepted: tuple[WebSocketConnection, Identity] | None = None
        with trio.move_on_after(settings.handshake_timeout) as handshake:
            watch = _ReaderWatch(nursery, handshake)
            accepted = await self._handshake(stream, watch)
        watch.release()  # the reader task keeps the watch for the connection's life
        if accepted is None:
            return  # rejected, or too slow to finish the handshake
        ws, identity = accepted
        user_id = identity.user_id
        per_user = self._per_user.get(user_id, 0)
        limit = settings.max_connections_per_user
        if limit and per_user >= limit:
            self.metrics.connection_closed(1008)
            with trio.move_on_after(settings.close_timeout):
                await ws.aclose(1008, f"more than {limit} connections for this user")
            return
        self._per_user[user_id] = per_user + 1
        conn = Connection(ws, identity, services)
        self._connections.add(conn)
        try:
            await conn.serve()
        finally:
            self._connections.discard(conn)
            remaining = self._per_user.pop(user_id) - 1
            if remaining:
                self._per_user[user_id] = remaining

    async def _handshake(
        self, stream: trio.SocketStream, nursery: _ReaderWatch
    ) -> tuple[WebSocketConnection, Identity] | None:
        request = await wrap_server_stream(
            cast(trio.Nursery, nursery), stream, max_message_size=self.settings.max_message_size
        )
        try:
            if self.draining:
                raise HandshakeRejected(503, "server is shutting down")
            if len(self._connections) + self._upgrading >= self.settings.max_connections:
                raise HandshakeRejected(503, "server is at its connection limit")
            identity = admit(
                request.path,
                headers=request.headers,
                subprotocols=request.proposed_subprotocols,
                verifier=self.verifier,
                origins=self.origins,
            )
        except HandshakeRejected as exc:
            # The reason, never the request's headers or query: they may hold a token.
            log.info("handshake rejected: %d %s", exc.status, exc.reason, extra=_peer(stream))
            await request.reject(
                exc.status,
                extra_headers=[(b"content-type", b"text/plain; charset=utf-8")],
                body=exc.reason.encode(),
            )
            return None
        # Counted from here: handshakes finishing at the same time must not
        # all pass the limit above before any of them is a connection.
        self._upgrading += 1
        try:
            return await request.accept(subprotocol=identity.subprotocol), identity
        finally:
            self._upgrading -= 1  # and, with no checkpoint in between, a connection


def _peer(stream: trio.SocketStream) -> dict[str, str]:
    """``extra=`` naming the client's address (``peer=HOST:PORT``), if it still has one."""
    try:
        host, port, *_ = stream.socket.getpeername()
    except OSError:
        return {}
    return {"peer": f"{host}:{port}"}


class _ReaderWatch:
    """The nursery given to ``wrap_server_stream``: it starts trio-websocket's reader task.

    If that reader stops before a request arrived (it answered a malformed
    request with 400 and closed the stream), nothing would ever wake the
    handshake wait; the watch cancels it so the socket is freed at once
    rather than at the handshake timeout.
    """

    def __init__(self, nursery: trio.Nursery, handshake: trio.CancelScope) -> None:
        self._nursery: trio.Nursery | None = nursery
        self._handshake: trio.CancelScope | None = handshake

    def release(self) -> None:
        """The handshake is over: drop what only it needed."""
        self._nursery = self._handshake = None

    def start_soon(
        self, fn: Callable[[], Awaitable[object]], *args: object, name: object = None
    ) -> None:
        async def watched() -> None:
            try:
                await fn(*args)
            finally:
                if self._handshake is not None:
                    self._handshake.cancel()

        assert self._nursery is not None, "trio-websocket starts its reader during the handshake"
        self._nursery.start_soon(watched, name=name)


async def serve_chat(
    settings: Settings | None = None,
    *,
    registry: AgentClassRegistry | None = None,
    tools: ToolRegistry | None = None,
    router: HandlerRouter | None = None,
    task_status: trio.TaskStatus[ChatServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve chat clients until cancelled or drained.

    ``registry`` and ``tools`` default to the built-in agents and tools;
    ``router`` to the built-in message handlers.

    ``server = await nursery.start(serve_chat, settings)`` returns once both
    listeners are bound. After :meth:`ChatServer.begin_drain` this returns when
    the last connection has closed (and the model provider's client is closed).
    """
    settings = settings if settings is not None else Settings()
    async with open_model_provider(settings) as provider:
        await _serve_chat(settings, provider, registry, tools, router, task_status)


async def _serve_chat(
    settings: Settings,
    provider: ModelProvider,
    registry: AgentClassRegistry | None,
    tools: ToolRegistry | None,
    router: HandlerRouter | None,
    task_status: trio.TaskStatus[ChatServer],
) -> None:
    metrics = Metrics()
    factory = build_factory(settings, registry, metrics, provider=provider, tools=tools)
    verifier = build_verifier(settings)
    services_router = router if router is not None else default_router()
    slots = SocketSlots(socket_limit(settings.max_connections))
    listeners = await open_listeners(settings.host, settings.port, slots=slots)
    sockname = listeners[0].socket.getsockname()
    server = ChatServer(
        settings=settings,
        metrics=metrics,
        host=sockname[0],
        port=sockname[1],
        verifier=verifier,
        slots=slots,
    )
    heartbeats = (
        HeartbeatSchedule(settings.heartbeat_interval) if settings.heartbeat_interval > 0 else None
    )
    services = ServerServices(
        settings=settings,
        factory=factory,
        metrics=metrics,
        router=services_router,
        top_level_agents=factory.top_level_names(),
        is_draining=lambda: server.draining,
        heartbeats=heartbeats,
    )
    try:
        async with trio.open_nursery() as server_nursery:
            if settings.admin_port is not None:
                from ._admin import serve_admin

                server.admin_port = await server_nursery.start(serve_admin, server)
            server.origins = OriginPolicy.for_server(
                settings.allowed_origins, settings.effective_admin_host, server.admin_port
            )
            if heartbeats is not None:
                server_nursery.start_soon(heartbeats.run)
            server_nursery.start_soon(serve_lag_ticks, metrics.event_loop_lag.observe)
            async with trio.open_nursery() as connections:
                serve_stream = partial(server._serve_stream, services)
                accept = partial(
                    serve_listeners,
                    listeners,
                    lambda stream: connections.start_soon(serve_stream, stream),
                )

                async def accept_until_drain(
                    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
                ) -> None:
                    with server._accept_scope:
                        await accept(task_status=task_status)

                await connections.start(accept_until_drain)
                task_status.started(server)
            server_nursery.cancel_scope.cancel()
    finally:
        server._stopped.set()
        with trio.CancelScope(shield=True):  # each of them, even when cancelled from outside
            for listener in listeners:
                await trio.aclose_forcefully(listener)
