"""The server: listeners, connections nursery, admin listener, graceful drain.

Nurseries, outermost first::

    serve_chat                 server nursery: admin listener, heartbeat schedule,
    │                          event-loop lag ticks, connections nursery
    └── connections nursery    accept loops (own cancel scope, for drains) + one task
        │                      per connection
        └── connection task    the WebSocket handshake, then Connection.serve():
            └── Connection     reader loop in this task; its nursery holds the
                               writer, the drain task, one task per run, and a
                               ping task while a ping waits for its pong

The model provider (for ``--model-provider openai``, an httpx client and its
connection pool) is opened around all of it and closed when ``serve_chat``
returns; a provider call runs in the task of the run that made it.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import attrs
import trio

from agents import AgentClassRegistry, AgentRuntime, ModelProvider, ToolRegistry
from server.protocol import (
    BrokerUnavailableError,
    HandshakeRejected,
    StoreUnavailableError,
    new_id,
)

from ._accept import serve_listeners
from ._admin import serve_admin
from ._assembly import build_runtime, build_verifier, open_model_provider
from ._auth import JwtVerifier
from ._cluster import Cluster
from ._descriptors import SocketSlots, socket_limit
from ._handshake import Identity, admit
from ._history_tasks import end_lost_runs, expire_history
from ._lag import serve_lag_ticks
from ._listeners import open_listeners
from ._metrics import Metrics, MetricsSnapshot
from ._origins import OriginPolicy
from ._settings import Settings
from .broker import Broker, Publisher, open_broker, open_publisher
from .runs import History, RunDirectory
from .session import (
    Connection,
    ConnectionServices,
    ConnectionStatistics,
    HandlerRouter,
    HeartbeatSchedule,
    SessionRegistry,
    default_router,
)
from .store import HistoryWriter, Store, default_node_id, open_store
from .transport import HandshakeAnswer, HandshakeRequest, Transport, accept_websocket

log = logging.getLogger("trio_agent_server.server")

#: Seconds between the store's health checks (for /readyz).
STORE_CHECK_INTERVAL = 2.0
#: Where a worker of ``--workers N`` serves its admin endpoints (for its parent alone).
WORKER_ADMIN_HOST = "127.0.0.1"


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
    runtime: AgentRuntime = attrs.field(repr=False, kw_only=True)
    #: The history store, its writer and this process's node id.
    history: History = attrs.field(repr=False, kw_only=True)
    #: This process among others, through the broker (None: one process).
    cluster: Cluster | None = attrs.field(default=None, repr=False)
    #: This process's live runs and its connections' thread subscriptions.
    directory: RunDirectory = attrs.field(factory=RunDirectory, repr=False)
    router: HandlerRouter = attrs.field(factory=default_router, repr=False)
    heartbeats: HeartbeatSchedule | None = attrs.field(default=None, repr=False)
    #: Which browser origins may connect (set once the admin listener is bound).
    origins: OriginPolicy = attrs.field(factory=OriginPolicy)
    #: What every connection of this server borrows from it.
    _services: ConnectionServices = attrs.field(init=False, repr=False)
    _connections: set[Connection] = attrs.field(factory=set)
    _per_user: dict[str, int] = attrs.field(factory=dict)
    #: Handshakes admitted and not yet connections (counted against --max-connections).
    _upgrading: int = 0
    #: Client sockets open (accepted, handshaking or connected), bounded.
    _slots: SocketSlots = attrs.field(factory=lambda: SocketSlots(0))
    _accept_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    _stopped: trio.Event = attrs.field(factory=trio.Event)
    #: Whether the store answered its last health check.
    _store_reachable: bool = True
    #: Where connections are served (set while the server serves).
    _connections_nursery: trio.Nursery | None = None

    def __attrs_post_init__(self) -> None:
        resume = self.settings.resume_grace > 0
        self._services = ConnectionServices(
            settings=self.settings,
            runtime=self.runtime,
            metrics=self.metrics,
            router=self.router,
            is_draining=lambda: self.draining,
            history=self.history,
            directory=self.directory,
            heartbeats=self.heartbeats,
            sessions=SessionRegistry() if resume else None,
            cluster=self.cluster,
            features=FEATURES + (("session_resume",) if resume else ()),
        )

    def readiness(self) -> dict[str, bool]:
        """What /readyz checks besides the drain: the store answers and takes writes."""
        checks = {
            "store": self._store_reachable and self.history.store.writes_ok,
            "history_writer": self.history.writer.healthy,
        }
        if self.cluster is not None:
            checks["broker"] = self.cluster.healthy
        return checks

    @property
    def url(self) -> str:
        """The WebSocket URL clients connect to."""
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def admin_url(self) -> str | None:
        if self.admin_port is None:
            return None
        worker = self.settings.worker_index is not None
        host = WORKER_ADMIN_HOST if worker else self.settings.effective_admin_host
        return f"http://{host}:{self.admin_port}"

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

    async def _watch_store(self) -> None:
        """Check the store every STORE_CHECK_INTERVAL seconds, for /readyz."""
        while True:
            try:
                store = self.history.store
                with trio.fail_after(STORE_CHECK_INTERVAL):
                    await store.ping()
                    if not store.writes_ok:
                        await store.check_writes()  # ready again once writes work
                reachable = True
            except (StoreUnavailableError, trio.TooSlowError):
                reachable = False
            if reachable != self._store_reachable:
                log.warning(
                    "history store %s",
                    "usable again" if reachable else "unreachable or refusing writes",
                )
            self._store_reachable = reachable
            await trio.sleep(STORE_CHECK_INTERVAL)

    # -- per connection ----------------------------------------------------------

    async def _serve_stream(self, stream: trio.SocketStream) -> None:
        # The boundary: nothing raised for one connection may reach the
        # connections nursery, or every other connection would be cancelled.
        # The listener took a socket slot for ``stream``; it is given back here.
        try:
            admitted: list[Identity] = []

            stream_target = ""

            def decide(request: HandshakeRequest) -> HandshakeAnswer:
                nonlocal stream_target
                stream_target = request.target
                identity = self._admit(request, stream)
                # Counted from here: handshakes finishing at the same time must
                # not all pass the limit before any of them is a connection.
                self._upgrading += 1
                admitted.append(identity)
                return HandshakeAnswer(subprotocol=identity.subprotocol)

            transport = None
            try:
                with trio.move_on_after(self.settings.handshake_timeout):
                    transport = await accept_websocket(
                        stream, decide, max_message_size=self.settings.max_message_size
                    )
            finally:
                if admitted:
                    self._upgrading -= 1  # and, with no checkpoint in between, a connection
            if transport is None:
                return  # rejected, or too slow to finish the handshake
            await self._serve_or_take_over(transport, admitted[0], _resume_token(stream_target))
        except Exception:
            log.exception("connection task failed")
        finally:
            await trio.aclose_forcefully(stream)
            self._slots.release()

    async def _serve_or_take_over(
        self, transport: Transport, identity: Identity, token: str
    ) -> None:
        """Hand ``transport`` to the session ``token`` names (this user's), else serve it."""
        sessions = self._services.sessions
        session = sessions.find(token) if sessions is not None and token else None
        takeover = session.take_over(transport, identity.user_id) if session else None
        if takeover is not None:
            await takeover.done.wait()  # the session serves this socket meanwhile
            if takeover.accepted:
                return
        await self._serve_transport(transport, identity)

    def _admit(self, request: HandshakeRequest, stream: trio.SocketStream) -> Identity:
        try:
            # Path (404), Origin (403), identity (400, 401), then server state (503).
            identity = admit(
                request.target,
                headers=request.headers,
                subprotocols=request.subprotocols,
                verifier=self.verifier,
                origins=self.origins,
            )
            if self.draining:
                raise HandshakeRejected(503, "server is shutting down")
            if len(self._connections) + self._upgrading >= self.settings.max_connections:
                raise HandshakeRejected(503, "server is at its connection limit")
            return identity
        except HandshakeRejected as exc:
            # The reason, never the request's headers or query: they may hold a token.
            log.info("handshake rejected: %d %s", exc.status, exc.reason, extra=_peer(stream))
            raise

    def connect(self, transport: Transport, identity: Identity, *, resume_token: str = "") -> None:
        """Serve a client connected over ``transport`` in the server's connections nursery.

        What the accept loop does with a socket after its handshake; tests use
        it with a :class:`~server.transport.MemoryTransport`. The server owns
        the connection from here, as it owns its sockets' connections.
        """
        if self._connections_nursery is None:
            raise RuntimeError("the server is not serving")
        self._connections_nursery.start_soon(
            partial(self.serve_transport, resume_token=resume_token), transport, identity
        )

    async def serve_transport(
        self, transport: Transport, identity: Identity, *, resume_token: str = ""
    ) -> None:
        """Serve one client already connected over ``transport`` until it closes.

        What the server does after a WebSocket handshake (``resume_token`` is
        its ``?resume=``); tests call it with a
        :class:`~server.transport.MemoryTransport` to skip the network.
        """
        self._slots.take()
        try:
            await self._serve_or_take_over(transport, identity, resume_token)
        finally:
            self._slots.release()

    async def _serve_transport(self, transport: Transport, identity: Identity) -> None:
        settings = self.settings
        user_id = identity.user_id
        connection_id = new_id("c")
        if not await self._take_user_slot(user_id, connection_id):
            limit = settings.max_connections_per_user
            self.metrics.connection_closed(1008)
            with trio.move_on_after(settings.close_timeout):
                await transport.aclose(1008, f"more than {limit} connections for this user")
            return
        try:
            conn = Connection(transport, identity, self._services, connection_id=connection_id)
            self._connections.add(conn)
            try:
                await conn.serve()
            finally:
                self._connections.discard(conn)
        finally:
            await self._give_user_slot(user_id, connection_id)

    async def _take_user_slot(self, user_id: str, connection_id: str) -> bool:
        """Count a connection against ``--max-connections-per-user``; False if over it.

        With a broker the limit is global (a lease per connection, freed within
        ``--lease-seconds`` of a process's death); with the broker unreachable,
        or without one, it is counted in this process.
        """
        limit = self.settings.max_connections_per_user
        if limit and self.cluster is not None:
            try:
                taken = await self.cluster.broker.acquire_connection(user_id, connection_id, limit)
            except BrokerUnavailableError:
                # Cannot see the others: this process's count.
                taken = self._per_user.get(user_id, 0) < limit
            if not taken:
                return False
        elif limit and self._per_user.get(user_id, 0) >= limit:
            return False
        # Read again after the await: other connections of the user may have
        # been counted meanwhile (a count read before it would lose them).
        self._per_user[user_id] = self._per_user.get(user_id, 0) + 1
        return True

    async def _give_user_slot(self, user_id: str, connection_id: str) -> None:
        remaining = self._per_user.pop(user_id) - 1
        if remaining:
            self._per_user[user_id] = remaining
        if self.settings.max_connections_per_user and self.cluster is not None:
            # Shielded: a connection's slot is given back however it ended (if the
            # broker is down, the lease lapses by itself).
            with trio.CancelScope(shield=True), contextlib.suppress(BrokerUnavailableError):
                await self.cluster.broker.release_connection(user_id, connection_id)


#: What every v1.1 server supports (``session_resume`` is added with --resume-grace).
FEATURES = ("threads", "resume", "subscriptions")


def _resume_token(target: str) -> str:
    """The ``resume`` query parameter of a handshake's target ("" if none)."""
    query = target.partition("?")[2]
    values = parse_qs(query, keep_blank_values=True).get("resume")
    return values[0] if values else ""


def _peer(stream: trio.SocketStream) -> dict[str, str]:
    """``extra=`` naming the client's address (``peer=HOST:PORT``), if it still has one."""
    try:
        host, port, *_ = stream.socket.getpeername()
    except OSError:
        return {}
    return {"peer": f"{host}:{port}"}


async def serve_chat(
    settings: Settings | None = None,
    *,
    registry: AgentClassRegistry | None = None,
    tools: ToolRegistry | None = None,
    router: HandlerRouter | None = None,
    task_status: trio.TaskStatus[ChatServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve chat clients until cancelled or drained.

    ``registry`` and ``tools`` default to the built-in agents and tools
    (:mod:`agents.builtin`); ``router`` to the built-in message handlers.

    ``server = await nursery.start(serve_chat, settings)`` returns once both
    listeners are bound. After :meth:`ChatServer.begin_drain` this returns when
    the last connection has closed (and the store and the model provider's
    client are closed).
    """
    settings = settings if settings is not None else Settings()
    metrics = Metrics()
    node_id = f"{default_node_id()}:{secrets.token_hex(4)}"
    async with (
        open_model_provider(settings) as provider,
        open_store(settings.store, observer=metrics.store_operation, node_id=node_id) as store,
        _open_broker(settings, node_id, metrics) as broker,
    ):
        parts = _Parts(settings, metrics, provider, store, node_id, broker)
        await _serve_chat(parts, registry, tools, router, task_status)


@asynccontextmanager
async def _open_broker(
    settings: Settings, node_id: str, metrics: Metrics
) -> AsyncIterator[tuple[Broker, Publisher] | None]:
    """The broker and its publisher with ``--broker``; None without."""
    if settings.broker is None:
        yield None
        return
    async with (
        open_broker(
            settings.broker,
            node_id=node_id,
            key_prefix=settings.broker_prefix,
            lease_seconds=settings.lease_seconds,
            observer=metrics.broker_messages,
        ) as broker,
        open_publisher(broker, gated=False) as publisher,
    ):
        yield broker, publisher


@attrs.frozen
class _Parts:
    settings: Settings
    metrics: Metrics
    provider: ModelProvider
    store: Store
    node_id: str
    broker: tuple[Broker, Publisher] | None


async def _serve_chat(
    parts: _Parts,
    registry: AgentClassRegistry | None,
    tools: ToolRegistry | None,
    router: HandlerRouter | None,
    task_status: trio.TaskStatus[ChatServer],
) -> None:
    settings, metrics = parts.settings, parts.metrics
    runtime = build_runtime(settings, registry, metrics, provider=parts.provider, tools=tools)
    verifier = build_verifier(settings)
    slots = SocketSlots(socket_limit(settings.max_connections))
    # A worker of --workers N joins the port its parent holds (the parent made
    # sure nothing else listens there) and serves its admin endpoints on
    # loopback, for the parent; the public admin port and the chat page are the
    # parent's, so the page's origins are those of the configured admin port.
    worker = settings.worker_index is not None
    listeners = await open_listeners(
        settings.host, settings.port, slots=slots, exclusive=not worker
    )
    sockname = listeners[0].socket.getsockname()
    heartbeats = (
        HeartbeatSchedule(settings.heartbeat_interval) if settings.heartbeat_interval > 0 else None
    )
    writer = HistoryWriter(parts.store)
    history = History(parts.store, writer, parts.node_id, settings.history_turns)
    directory = RunDirectory()
    cluster = None
    if parts.broker is not None:
        broker, publisher = parts.broker
        cluster = Cluster(broker, publisher, history, directory, settings.lease_seconds)
    server = ChatServer(
        settings=settings,
        metrics=metrics,
        host=sockname[0],
        port=sockname[1],
        verifier=verifier,
        runtime=runtime,
        history=history,
        directory=directory,
        cluster=cluster,
        router=router if router is not None else default_router(),
        heartbeats=heartbeats,
        slots=slots,
    )
    try:
        async with trio.open_nursery() as server_nursery:
            await server_nursery.start(writer.run)
            if settings.broker is None and not worker:
                # The only process using this store: whatever it left running, it lost.
                await end_lost_runs(server.history, node_id=None)
            server_nursery.start_soon(server._watch_store)
            if cluster is not None:
                await server_nursery.start(cluster.broker.serve_commands, cluster.on_command)
                server_nursery.start_soon(cluster.serve_sweeps)
                server_nursery.start_soon(cluster.serve_interest)
            if settings.history_days > 0:
                server_nursery.start_soon(expire_history, parts.store, settings.history_days)
            if worker:
                server.admin_port = await server_nursery.start(
                    partial(serve_admin, server, host=WORKER_ADMIN_HOST, port=0)
                )
            elif settings.admin_port is not None:
                server.admin_port = await server_nursery.start(serve_admin, server)
            server.origins = OriginPolicy.for_server(
                settings.allowed_origins,
                settings.effective_admin_host,
                settings.admin_port if worker else server.admin_port,
            )
            if heartbeats is not None:
                server_nursery.start_soon(heartbeats.run)
            server_nursery.start_soon(serve_lag_ticks, metrics.event_loop_lag.observe)
            async with trio.open_nursery() as connections:
                server._connections_nursery = connections
                accept = partial(
                    serve_listeners,
                    listeners,
                    lambda stream: connections.start_soon(server._serve_stream, stream),
                )

                async def accept_until_drain(
                    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
                ) -> None:
                    with server._accept_scope:
                        await accept(task_status=task_status)

                await connections.start(accept_until_drain)
                task_status.started(server)
            # Every connection has ended: what the runs wrote goes to the store
            # before the writer stops (bounded: the store may be down).
            with trio.move_on_after(settings.drain_timeout):
                await writer.wait_flushed()
            server_nursery.cancel_scope.cancel()
    finally:
        server._stopped.set()
        with trio.CancelScope(shield=True):  # each of them, even when cancelled from outside
            for listener in listeners:
                await trio.aclose_forcefully(listener)
