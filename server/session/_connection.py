"""One client connection: its nursery, reader, writer, handlers and runs.

Everything here is connection-scoped and I/O: the protocol state lives in a
pure :class:`~server.protocol.Session`, the runs in a
:class:`~server.runs.RunTable`, the socket behind a
:class:`~server.transport.Transport`. The connection's nursery holds the
writer task and the runs; the reader loop runs in the task that serves the
connection. Leaving :meth:`Connection.serve` (peer gone, close code, drain,
or a bug in this connection's machinery) cancels the runs, closes the
socket, and releases the handlers: nothing of it survives, and nothing
escapes.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final

import attrs
import trio

from agents import AgentRuntime, EndCause
from server.protocol import (
    CloseConnection,
    ConnectionClosed,
    FormatError,
    InternalError,
    ProtocolError,
    RateLimitedError,
    Session,
    UnknownTypeError,
    decode_client_message,
    encode_connection_established,
    encode_error,
    new_id,
    peek_message_id,
)

from .._cluster import Cluster
from .._logging import ids
from ..runs import Follows, History, Run, RunDirectory, RunTable
from ..transport import Transport
from ._handlers import HandlerContext
from ._outbound import CLOSE, EVENT, EVENT_REST, FRAME, Outbound, OutboundQueue
from ._sessions import SessionRegistry

if TYPE_CHECKING:
    from .._handshake import Identity
    from .._metrics import Metrics
    from .._settings import Settings
    from ._handlers import MessageHandler
    from ._heartbeat import HeartbeatSchedule
    from ._router import HandlerRouter

log = logging.getLogger("trio_agent_server.connection")

#: The writer writes at most about this many bytes of queued frames at once.
_BATCH_BYTES: Final = 64 * 1024


@attrs.frozen
class ConnectionServices:
    """What a connection borrows from its server (all owned by the server)."""

    settings: Settings
    runtime: AgentRuntime
    metrics: Metrics
    router: HandlerRouter
    is_draining: Callable[[], bool]
    #: The history store (threads, runs and their events).
    history: History
    #: The server's live runs and thread subscriptions.
    directory: RunDirectory
    #: The server's heartbeat schedule (None: no pings).
    heartbeats: HeartbeatSchedule | None = None
    #: Where sessions wait to be taken over (None: no session resume).
    sessions: SessionRegistry | None = None
    #: This process among others, through the broker (None: one process).
    cluster: Cluster | None = None
    #: What connection_established says the server supports.
    features: tuple[str, ...] = ("threads", "resume", "subscriptions")
    top_level_agents: frozenset[str] = attrs.field(
        default=attrs.Factory(lambda self: self.runtime.top_level_names(), takes_self=True)
    )


class Connection:
    """The state of one client connection. Created and served by the server."""

    def __init__(
        self,
        transport: Transport,
        identity: Identity,
        services: ConnectionServices,
        *,
        connection_id: str | None = None,
    ) -> None:
        self.transport = transport
        self.connection_id = connection_id if connection_id is not None else new_id("c")
        self.user_id = identity.user_id
        self._services = services
        self._settings = settings = services.settings
        self._metrics = services.metrics
        self.session = Session(
            rate_limit=settings.rate_limit,
            rate_burst=settings.rate_burst,
            max_consecutive_errors=settings.max_consecutive_errors,
        )
        cluster = services.cluster
        self.follows = Follows(
            identity.user_id,
            self.deliver_nowait,
            services.directory,
            services.metrics,
            max_subscriptions=settings.max_subscriptions,
            remote=cluster.remote_runs() if cluster is not None else None,
            spawn=self._spawn,
            deliver_waiting=self.deliver_waiting,
        )
        self.runs = RunTable(
            self,
            services.runtime,
            services.metrics,
            max_runs=settings.max_runs_per_connection,
            top_level=services.top_level_agents,
            check_can_start=self._check_can_start,
            max_event_size=settings.max_event_size,
            max_run_output=settings.max_run_output,
            history=services.history,
            directory=services.directory,
            follows=self.follows,
            stop_elsewhere=self._stop_elsewhere if cluster is not None else None,
            on_start=self._announce if cluster is not None else None,
        )
        self._outbound = OutboundQueue(settings.outbound_queue)
        self._nursery: trio.Nursery | None = None
        #: The current socket's nursery (its writer) and its reader's scope.
        self._socket_nursery: trio.Nursery | None = None
        self._socket_scope: trio.CancelScope | None = None
        #: Whether the current transport still needs closing.
        self._socket_open = True
        #: The socket stopped answering (no pong): lost, not closed by anyone.
        self._socket_lost = False
        #: Counted in ``chat_connections_active``: from a socket's start until the
        #: session lingers or the connection ends (its runs ended, the socket closed),
        #: so that handlers == 6 x (connections + lingering sessions) in every scrape.
        self._counted_active = False
        #: Counted in ``chat_sessions_lingering``: from losing the socket (with a grace)
        #: until a take-over, or until the connection ends if the grace ran out.
        self._counted_lingering = False
        #: Where resume tokens are found (None: --resume-grace 0).
        self._sessions = services.sessions
        self._resume_token = ""
        #: How a new socket of the same client reaches this session (a take-over).
        self._takeover_offers: trio.MemorySendChannel[Takeover] | None = None
        self._takeovers: trio.MemoryReceiveChannel[Takeover] | None = None
        if services.sessions is not None:
            self._takeover_offers, self._takeovers = trio.open_memory_channel[Takeover](1)
        #: Set once the session is done with the socket that took it over.
        self._takeover_done: trio.Event | None = None
        self._handlers: dict[str, MessageHandler] = {}
        #: Made only when someone waits for the writer to stop.
        self._writer_done: trio.Event | None = None
        self._sending: trio.CancelScope | None = None
        #: Once the connection is ending, how long a frame may still take to go out.
        self._send_deadline = math.inf
        self._pinging = False
        self._writer_running = False
        #: When the client's credentials expire (seconds since the epoch), if ever.
        self._expires_at = identity.expires_at

    @property
    def _log_ids(self) -> dict[str, str]:
        # Made when a line is logged: a dict kept per connection costs every idle one.
        return ids(connection_id=self.connection_id, user_id=self.user_id)

    def __repr__(self) -> str:
        return f"<Connection {self.connection_id} user={self.user_id}>"

    # -- lifetime -------------------------------------------------------------

    async def serve(self) -> None:
        """Serve until the connection ends, then close the socket with the right code.

        Never raises but for cancellation from outside: a failure of this
        connection's machinery is logged and closes it with 1011. The
        connection and handler gauges rise and fall together, here.

        With ``--resume-grace`` the connection may outlive its socket: when
        the socket goes away without a normal close, the session lingers (its
        runs go on in its nursery) until the same client takes it over with a
        new socket (:meth:`take_over`) or the grace ends.
        """
        metrics = self._metrics
        metrics.connections_total += 1
        log.info("connection opened", extra=self._log_ids)
        handler_count = 0
        heartbeats = self._services.heartbeats
        try:
            context = HandlerContext(
                user_id=self.user_id,
                connection_id=self.connection_id,
                runs=self.runs,
                send=self.send,
                send_event=self.send_event,
                follows=self.follows,
                directory=self._services.directory,
                history=self._services.history,
                cluster=self._services.cluster,
            )
            self._handlers = self._services.router.create(context)
            handler_count = len(self._services.router)
            metrics.handlers_active += handler_count
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self.runs.open(nursery)
                    if heartbeats is not None:
                        heartbeats.add(self)
                    if self._expires_at is not None:
                        nursery.start_soon(self._close_at_expiry, self._expires_at)
                    if self._services.is_draining():  # accepted just as a drain began
                        self.begin_drain(trio.current_time())
                    resumed: bool | None = False if self._sessions is not None else None
                    while True:
                        await self._serve_socket(resumed=resumed)
                        transport = await self._linger()
                        if transport is None:
                            break
                        self.transport, resumed = transport, True
                    self._end()
            finally:
                self.runs.open(None)
                self._nursery = None  # closed: a late begin_drain must not use it
                if heartbeats is not None:
                    heartbeats.discard(self)
        except BaseException as exc:
            failure, rest = _split_failures(exc)
            if failure is not None:
                log.error(
                    "connection failed; closing it with 1011", exc_info=failure, extra=self._log_ids
                )
                self.session.close(CloseConnection(1011, "internal error"))
            if rest is not None:
                raise rest from None
        finally:
            try:
                if self._socket_open:
                    await self._close_socket()
            finally:
                self.session.closed()
                if self._sessions is not None:
                    self._sessions.unpark(self._resume_token)
                    self._decline_takeovers()
                self.follows.close()
                if self._services.cluster is not None:
                    self._services.cluster.interest_may_have_ended()
                self._handlers = {}
                self._uncount_active()
                self._uncount_lingering()
                metrics.handlers_active -= handler_count
                metrics.connection_closed(self.close_code())
                torn = " without a close frame (a frame was cut off)" if self.transport.torn else ""
                log.info("connection closed (%d)%s", self.close_code(), torn, extra=self._log_ids)

    async def _serve_socket(self, *, resumed: bool | None) -> None:
        """Serve the current socket until it ends (our close, the peer's, or its loss).

        The socket's own tasks (the writer, a ping) live in a nursery of their
        own, so losing the socket does not touch the runs. The socket is closed
        here, unless the connection is about to end (then :meth:`serve` closes
        it, with the connection's close code, once the runs have ended).
        """
        metrics = self._metrics
        self._outbound = OutboundQueue(self._settings.outbound_queue)
        self._send_deadline = math.inf
        self._socket_lost = False
        self._socket_open = True
        if not self._counted_active:
            self._counted_active = True
            metrics.connections_active += 1
        metrics.outbound_queues.add(self._outbound)
        try:
            async with trio.open_nursery() as socket_nursery:
                self._socket_nursery = socket_nursery
                self._outbound.put_nowait((self._established_message(resumed), FRAME))
                self._wake_writer()
                with trio.CancelScope() as self._socket_scope:
                    await self._read_loop()
                # Nothing more is queued for this socket from here (the writer has
                # written what it will), and no writer can start in a closing nursery.
                self._outbound.close()
                socket_nursery.cancel_scope.cancel()
        finally:
            self._socket_nursery = None
            self._socket_scope = None
            metrics.outbound_queues.discard(self._outbound)
            self._outbound.close()

    def _established_message(self, resumed: bool | None) -> bytes:
        token = None
        sessions = self._sessions
        if sessions is not None:
            # A new token with every socket: the last one was spent (or never used).
            sessions.unpark(self._resume_token)
            token = self._resume_token = secrets.token_urlsafe(24)
            sessions.park(token, self)
        return encode_connection_established(
            connection_id=self.connection_id,
            user_id=self.user_id,
            config=self._settings.client_config(),
            features=self._services.features,
            resume_token=token,
            resumed=resumed,
        )

    def _resumable(self) -> bool:
        """Whether the socket that just ended may be replaced (``--resume-grace``)."""
        if self._sessions is None or self.session.close_reason is not None:
            return False
        if not self.session.alive or self._services.is_draining():
            return False
        # No close frame (1006), the client going away (1001), no pong, or the
        # client came back on a new socket (a take-over).
        return self._socket_lost or self.transport.close_code in (1001, 1006, None)

    def _uncount_active(self) -> None:
        if self._counted_active:
            self._counted_active = False
            self._metrics.connections_active -= 1

    def _uncount_lingering(self) -> None:
        if self._counted_lingering:
            self._counted_lingering = False
            self._metrics.sessions_lingering -= 1

    async def _linger(self) -> Transport | None:
        """After the socket ended: a new socket that took the session over, or None (end)."""
        sessions, takeovers = self._sessions, self._takeovers
        if sessions is None or takeovers is None or not self._resumable():
            if self.session.connected:
                self.session.transport_lost(resumable=False)
            return None
        self.session.transport_lost(resumable=True)
        await self._close_socket()
        self.runs.detach_owner()
        self.follows.detach_runs()
        grace = self._settings.resume_grace
        log.info("socket lost; session kept for %g s", grace, extra=self._log_ids)
        self._uncount_active()  # from a connection to a lingering session, in one step
        self._metrics.sessions_lingering += 1
        self._counted_lingering = True
        takeover: Takeover | None = None
        try:
            with trio.move_on_after(grace):
                takeover = await takeovers.receive()
            if takeover is None:  # the grace is over; a take-over that raced it still counts
                try:
                    takeover = takeovers.receive_nowait()
                except trio.WouldBlock:
                    # The session ends: it stays counted as lingering until its runs
                    # have ended and its handlers are gone (serve's end).
                    return None
        finally:
            if takeover is not None:
                self._uncount_lingering()  # from a lingering session to a connection
        takeover.accepted = True
        self._takeover_done = takeover.done
        self.session.take_over()
        log.info("session taken over by a new socket", extra=self._log_ids)
        return takeover.transport

    def take_over(self, transport: Transport, user_id: str) -> Takeover | None:
        """Offer this session ``transport``, a new socket of its client (``?resume=``).

        None if it cannot take it (another user's token, a session that is
        closing, or a take-over already pending). Else the session accepts it
        once its current socket has gone (a connected session's socket is
        presumed dead: its client has come back on another one), or declines
        it if the session ends first; ``done`` is set when it is done with it.
        """
        sessions, offers = self._sessions, self._takeover_offers
        if sessions is None or offers is None or user_id != self.user_id:
            return None
        if not self.session.alive:
            return None
        takeover = Takeover(transport)
        try:
            offers.send_nowait(takeover)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return None
        sessions.unpark(self._resume_token)  # spent
        if self.session.connected:
            self._lose_socket()
        return takeover

    def _decline_takeovers(self) -> None:
        if self._takeovers is None:
            return
        while True:
            try:
                takeover = self._takeovers.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            takeover.done.set()  # not accepted: the caller serves it as a new connection

    async def _close_socket(self) -> None:
        # Bounded and shielded: a peer that never answers the close frame is
        # dropped after --close-timeout, and a hard stop still closes cleanly.
        reason = self.session.close_reason
        try:
            with trio.move_on_after(self._settings.close_timeout) as closing:
                closing.shield = True
                if reason is None:
                    await self.transport.aclose()
                else:
                    await self.transport.aclose(reason.code, reason.reason)
        finally:
            self._socket_open = False
            if self._takeover_done is not None:
                self._takeover_done.set()  # the task that brought this socket may close it
                self._takeover_done = None

    def close_code(self) -> int:
        """The code this connection ended with: ours, else the peer's, else 1006 (dropped)."""
        reason = self.session.close_reason
        if reason is not None:
            return reason.code  # even if a torn frame meant no close frame went out
        code = self.transport.close_code
        return code if code is not None else 1006

    def close(self, reason: CloseConnection) -> None:
        """End this connection with ``reason`` (the first reason wins)."""
        self.session.close(reason)
        self._end_socket()

    def _lose_socket(self) -> None:
        """The peer stopped answering: the socket is gone, the session may linger."""
        self._socket_lost = True
        self._end_socket()

    def _end_socket(self) -> None:
        """Stop serving the current socket (idempotent): its reader, writer and ping.

        A frame being written gets --close-timeout to finish.
        """
        grace = trio.current_time() + self._settings.close_timeout
        self._send_deadline = min(self._send_deadline, grace)
        if self._sending is not None:
            self._sending.deadline = self._send_deadline
        if self._socket_scope is not None:
            self._socket_scope.cancel()
        if self._socket_nursery is not None:
            self._socket_nursery.cancel_scope.cancel()
        if self._sessions is None or self.session.close_reason is not None:
            self._end()

    def _end(self) -> None:
        """End the connection (idempotent): its runs, then everything in its nursery."""
        if self.session.connected:
            self.session.transport_lost(resumable=False)
        self.runs.cancel_all(EndCause.DISCONNECTED)
        if self._socket_scope is not None:
            self._socket_scope.cancel()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def begin_drain(self, deadline: float) -> None:
        """Let runs finish until ``deadline``, cancel the rest, then close with 1001."""
        if self._nursery is not None and self.session.begin_drain():
            self._nursery.start_soon(self._drain, deadline)

    async def _drain(self, deadline: float) -> None:
        with trio.move_on_at(deadline):
            await self.runs.wait_idle()
        self.runs.cancel_all(EndCause.SHUTTING_DOWN)
        await self.runs.wait_idle()
        self.session.close(CloseConnection(1001, "server shutting down"))
        await self._queue((b"", CLOSE))

    def _spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Start a task of this connection (it ends with the connection)."""
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    def _announce(self, run: Run) -> None:
        cluster = self._services.cluster
        if cluster is not None:
            self._spawn(cluster.announce, run)

    async def _stop_elsewhere(self, run_id: str, message_id: str | None) -> bool:
        cluster = self._services.cluster
        return cluster is not None and await cluster.stop_elsewhere(
            self.user_id, run_id, message_id
        )

    def _check_can_start(self, message_id: str | None) -> None:
        if self._services.is_draining():
            self.session.begin_drain()
        self.session.check_can_start_run(message_id)

    # -- reading --------------------------------------------------------------

    async def _read_loop(self) -> None:
        transport = self.transport
        while True:
            try:
                text = await transport.receive_message()
            except ConnectionClosed:
                return
            except CloseConnection as exc:  # binary, too big, or broken framing
                self.session.close(exc)
                return
            if not await self._dispatch(text):
                # Too many bad frames in a row: flush the answers, then close 1008.
                await self._queue((b"", CLOSE))
                if not self._outbound.closed:  # the writer has not stopped yet
                    self._writer_done = trio.Event()
                    with trio.move_on_after(self._settings.close_timeout):
                        await self._writer_done.wait()
                return

    async def _dispatch(self, text: str) -> bool:
        """Answer one message; False once the error streak says to close."""
        session = self.session
        retry_after = session.take_message_token(trio.current_time())
        if retry_after:
            await self.send_error(
                RateLimitedError(
                    f"more than {self._settings.rate_limit:g} messages per second",
                    # Rounded up: waiting exactly retry_after must be enough.
                    details={"retry_after": math.ceil(retry_after * 1000) / 1000},
                    message_id=peek_message_id(text),
                )
            )
            return True
        message_id = None
        try:
            message = decode_client_message(text)
            message_id = message.message_id
            await self._handlers[message.type].handle(message)
        except (FormatError, UnknownTypeError) as exc:
            # Counted whether the decoder or a handler (duplicate run id) said so.
            await self.send_error(exc)
            return not session.message_refused()
        except ProtocolError as exc:
            await self.send_error(exc)
        except Exception:
            log.exception("message handler failed", extra=self._log_ids)
            await self.send_error(
                InternalError("internal error while handling the message", message_id=message_id)
            )
        session.message_accepted()
        return True

    # -- heartbeats -----------------------------------------------------------

    def ping_soon(self) -> None:
        """Ping the client now (the server's heartbeat schedule calls this).

        The ping and the wait for its pong run in a task of this connection's
        nursery that lives only that long; no pong within --heartbeat-timeout
        closes the connection with 1011. One ping at a time.
        """
        if self._nursery is None or not self.session.connected or self._pinging:
            return
        self._pinging = True
        self._nursery.start_soon(self._ping_once)  # the connection's: it outlives a socket

    async def _ping_once(self) -> None:
        timeout = self._settings.heartbeat_timeout
        pong: trio.Event | None = None
        try:
            with trio.move_on_after(timeout):
                try:
                    pong = await self.transport.ping()
                except ConnectionClosed:
                    return  # closing anyway
                await pong.wait()
                return
            # After a stall of the server's own, the pong may have arrived and
            # not been read yet: the reader then gets one more period to read it.
            if pong is not None and self.transport.unread_input():
                with trio.move_on_after(timeout):
                    await pong.wait()
                    return
            log.info("no pong within %g s; closing", timeout, extra=self._log_ids)
            if self._sessions is not None:
                self._lose_socket()  # the network went: the session may be taken over
            else:
                self.close(CloseConnection(1011, "heartbeat timeout"))
        finally:
            self._pinging = False

    # -- credentials expiry ---------------------------------------------------

    async def _close_at_expiry(self, expires_at: float) -> None:
        """Close with 1008 when the token that opened this connection expires.

        Its ``exp`` (plus the leeway) is wall-clock time; the wait is on trio's
        clock, converted once. Runs still running are cancelled with the
        connection, as on any close.
        """
        await trio.sleep(max(0.0, expires_at - time.time()))
        log.info("token expired; closing with 1008", extra=self._log_ids)
        self.close(CloseConnection(1008, "token expired"))

    # -- writing --------------------------------------------------------------

    def _wake_writer(self) -> None:
        """Make sure a writer task is draining the queue.

        The writer runs only while there is something to write, so an idle
        connection has no task waiting on its queue.
        """
        if (
            not self._writer_running
            and self._socket_nursery is not None
            and not self._outbound.closed
        ):
            self._writer_running = True
            self._socket_nursery.start_soon(self._write_loop)

    async def _write_loop(self) -> None:
        stopped = True
        try:
            while self._outbound:
                await trio.lowlevel.checkpoint_if_cancelled()  # the connection is ending
                if not await self._write_batch(self._outbound.take_batch(_BATCH_BYTES)):
                    break
            else:
                stopped = False  # idle; the next queued frame starts a writer again
        finally:
            self._writer_running = False
            if stopped:
                self._stop_writing()

    def _stop_writing(self) -> None:
        # The peer has gone, everything before a CLOSE marker is written, or the
        # connection is ending (cancelled): frames queued from now on are
        # dropped, and producers waiting for room are let go.
        self._outbound.close()
        if self._writer_done is not None:
            self._writer_done.set()
        self._end_socket()

    async def _write_batch(self, batch: list[Outbound]) -> bool:
        """Write ``batch`` (whatever was queued, up to _BATCH_BYTES) at once.

        A run's events come in bursts, and one write per message would
        dominate the server's CPU: the transport frames the batch into one
        buffer and writes it, without waiting when the socket takes it all.
        False once the writer must stop: a CLOSE marker, the peer gone, or a
        frame cut off. (A method of its own so that no frame outlives its
        write while nothing is queued.)
        """
        messages: list[bytes] = []
        events = 0
        rest_of_event: bytes | None = None
        for message, kind in batch:
            if kind == EVENT:
                events += 1
            elif kind == CLOSE:
                continue
            elif kind == EVENT_REST:  # first in the queue: goes out first
                events += 1
                rest_of_event = message
                continue
            messages.append(message)
        transport = self.transport
        if rest_of_event is not None and not await self._send_waiting([rest_of_event]):
            return False
        if messages:
            try:
                rest = transport.write_nowait(messages)
            except ConnectionClosed:
                return False
            if rest and not await self._send_waiting(rest):
                return False
        if events:
            self._metrics.events_sent_total += events
        return batch[-1][1] != CLOSE

    async def _send_waiting(self, frames: Sequence[bytes]) -> bool:
        """Send ``frames`` (framed), waiting for the socket; False once the writer must stop."""
        # A frame is never cut off by our own cancellation (a close frame
        # written after half a frame corrupts the stream): _end() gives the
        # write in flight --close-timeout to finish instead.
        with trio.CancelScope(shield=True, deadline=self._send_deadline) as sending:
            self._sending = sending
            try:
                await self.transport.send_frames(frames)
            except ConnectionClosed:
                return False
            finally:
                self._sending = None
        return not sending.cancelled_caught  # else part of a frame went out: no close frame now

    async def send(self, message: bytes) -> None:
        """Queue a non-run message (a reply, UTF-8 JSON) for this connection's client."""
        await self._queue((message, FRAME))

    async def send_event(self, payload: bytes) -> None:
        """Queue a run event (UTF-8 JSON); dropped if the connection has gone."""
        # _queue inlined: this is every event's path.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._outbound.put_nowait((payload, EVENT))
        except trio.WouldBlock:
            await self._queue_when_room((payload, EVENT))
        except trio.ClosedResourceError:
            pass
        else:
            if not self._writer_running:
                self._wake_writer()

    async def send_event_at_once(self, payload: bytes) -> bool:
        """:meth:`send_event`, written at once if nothing is queued or being written.

        For a run's first and final events: they go out without a writer task
        or a task switch. True if the whole frame went out; else it is queued
        (the rest of its frame, if the socket took only part of it).
        """
        outbound = self._outbound
        if self._writer_running or outbound or outbound.closed or self._socket_nursery is None:
            await self.send_event(payload)
            return False
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            rest = self.transport.write_nowait((payload,))
        except ConnectionClosed:
            self._stop_writing()  # as the writer does when the peer has gone
            return False
        if not rest:
            self._metrics.events_sent_total += 1
            return True
        # The socket took part of it: the writer sends the rest, first.
        outbound.put_nowait((b"".join(rest), EVENT_REST))
        self._wake_writer()
        return False

    def deliver_nowait(self, payload: bytes) -> bool:
        """Queue a run event of a run this connection follows, without waiting.

        False if the connection cannot take it: its socket is gone, or it is
        too slow (it is then closed with 1013; the run goes on without it).
        """
        if not self.session.connected or self._nursery is None:
            return False
        settings = self._settings
        try:
            queued = self._outbound.put_spill(
                (payload, EVENT),
                now=trio.current_time(),
                timeout=settings.slow_consumer_timeout,
            )
        except trio.ClosedResourceError:
            return False
        if not queued:
            log.info("closing slow subscriber", extra=self._log_ids)
            self.close(CloseConnection(1013, "slow consumer: too far behind the runs it follows"))
            return False
        self._wake_writer()
        return True

    async def deliver_waiting(self, payload: bytes) -> bool:
        """Queue a run event of a run another process runs, waiting for room.

        Like the connection's own runs' events (a queue full for
        ``--slow-consumer-timeout`` closes it with 1013). False if the
        connection cannot take it.
        """
        if not self.session.connected or self._nursery is None:
            return False
        await self._queue((payload, EVENT))
        return self.session.connected and not self._outbound.closed

    async def send_error(self, error: ProtocolError) -> None:
        errors = self._metrics.protocol_errors_total
        errors[error.error_code] = errors.get(error.error_code, 0) + 1
        await self._queue((encode_error(error), FRAME))

    async def _queue(self, item: Outbound) -> None:
        # Like trio's MemorySendChannel.send (if it raises Cancelled, nothing was
        # queued), plus: a full queue that stays full for
        # --slow-consumer-timeout closes the connection with 1013. It is a
        # cancellation point but yields to other tasks only when the queue is
        # full: an agent emitting a burst of events keeps running until it
        # awaits something else, and the writer then sends the burst in one
        # write. The queue's bound is what keeps such a burst finite.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._outbound.put_nowait(item)
        except trio.WouldBlock:
            # Full, so a writer is running (it ends only on an empty queue, and
            # a stopped one closes the queue): when it takes a batch it hands
            # the room to waiting producers in order, and writes their frames.
            await self._queue_when_room(item)
        except trio.ClosedResourceError:
            pass
        else:
            self._wake_writer()

    async def _queue_when_room(self, item: Outbound) -> None:
        timeout = self._settings.slow_consumer_timeout
        with trio.move_on_after(timeout) as waited:
            try:
                await self._outbound.put(item)
            except trio.ClosedResourceError:
                return
        if waited.cancelled_caught:
            reason = f"slow consumer: outbound queue full for {timeout:g} s"
            log.info("closing slow consumer", extra=self._log_ids)
            self.close(CloseConnection(1013, reason))

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            connection_id=self.connection_id,
            user_id=self.user_id,
            runs=self.runs.run_ids(),
            outbound_queued=len(self._outbound),
        )


@attrs.define(eq=False)
class Takeover:
    """A new socket offered to a session by its client (see :meth:`Connection.take_over`)."""

    transport: Transport
    #: Set when the session is done with the socket (or declined it).
    done: trio.Event = attrs.field(factory=trio.Event)
    #: Whether the session took the socket (else: serve it as a new connection).
    accepted: bool = False


@attrs.frozen
class ConnectionStatistics:
    connection_id: str
    user_id: str
    runs: tuple[str, ...]
    outbound_queued: int


def _split_failures(
    exc: BaseException,
) -> tuple[BaseException | None, BaseException | None]:
    """Split ``exc`` into (real failures, cancellation and other BaseExceptions)."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(Exception)
    if isinstance(exc, Exception):
        return exc, None
    return None, exc
