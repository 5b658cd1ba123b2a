"""One WebSocket connection: its nursery, reader, writer, handlers and runs.

Everything here is connection-scoped. The connection's nursery holds the
writer task and the runs; the reader loop runs in the task that serves the
connection. Leaving ``serve()`` (peer gone, close code, drain, or a bug in
this connection's machinery) cancels the runs, closes the socket, and
releases the handlers: nothing of it survives, and nothing escapes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from agents import AgentInstanceFactory, EndCause, execute_run

from ._errors import (
    AgentNotFoundError,
    CloseConnection,
    FormatError,
    InternalError,
    ProtocolError,
    RateLimitedError,
    RunNotFoundError,
    ShuttingDownError,
    TooManyRunsError,
    UnknownTypeError,
)
from ._limits import ErrorStreak, TokenBucket
from ._logging import ids
from ._outbound import CLOSE, EVENT, FRAME, Outbound, OutboundQueue
from ._protocol import (
    StartRun,
    decode_client_message,
    encode_connection_established,
    encode_error,
    new_id,
    peek_message_id,
)
from ._runs import Run
from ._wire import frame_text, send_frames

if TYPE_CHECKING:
    from ._handlers import HandlerRouter, MessageHandler
    from ._handshake import Identity
    from ._heartbeat import HeartbeatSchedule
    from ._metrics import Metrics
    from ._settings import Settings

log = logging.getLogger("trio_agent_server.connection")

#: The writer writes at most about this many bytes of queued frames at once.
_BATCH_BYTES: Final = 64 * 1024


@attrs.frozen
class ServerServices:
    """What a connection borrows from its server (all owned by the server)."""

    settings: Settings
    factory: AgentInstanceFactory
    metrics: Metrics
    router: HandlerRouter
    top_level_agents: frozenset[str]
    is_draining: Callable[[], bool]
    #: The server's heartbeat schedule (None: no pings).
    heartbeats: HeartbeatSchedule | None = None


class Connection:
    """The state of one client connection. Created and served by the server."""

    def __init__(
        self, ws: WebSocketConnection, identity: Identity, services: ServerServices
    ) -> None:
        self.ws = ws
        self.connection_id = new_id("c")
        self.user_id = identity.user_id
        self._services = services
        self._settings = services.settings
        self._metrics = services.metrics
        self._outbound = OutboundQueue(services.settings.outbound_queue)
        self._runs: dict[str, Run] = {}
        self._nursery: trio.Nursery | None = None
        self._handlers: dict[str, MessageHandler] = {}
        self._close: CloseConnection | None = None
        self._runs_idle: trio.Event | None = None
        self._draining = False
        self._ending = False
        #: Made only when someone waits for the writer to stop.
        self._writer_done: trio.Event | None = None
        self._sending: trio.CancelScope | None = None
        #: Once the connection is ending, how long a frame may still take to go out.
        self._send_deadline = math.inf
        self._torn = False
        self._pinging = False
        self._writer_running = False
        settings = services.settings
        self._bucket = (
            TokenBucket(rate=settings.rate_limit, burst=settings.rate_burst)
            if settings.rate_limit > 0
            else None
        )
        self._streak = ErrorStreak(limit=settings.max_consecutive_errors)
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
        """
        metrics = self._metrics
        metrics.connections_active += 1
        metrics.connections_total += 1
        metrics.outbound_queues.add(self._outbound)
        log.info("connection opened", extra=self._log_ids)
        handler_count = 0
        try:
            self._handlers = self._services.router.create(self)
            handler_count = len(self._services.router)
            metrics.handlers_active += handler_count
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    if self._services.heartbeats is not None:
                        self._services.heartbeats.add(self)
                    if self._expires_at is not None:
                        nursery.start_soon(self._close_at_expiry, self._expires_at)
                    if self._services.is_draining():  # accepted just as a drain began
                        self.begin_drain(trio.current_time())
                    self._outbound.put_nowait((self._established_frame(), FRAME))
                    self._wake_writer()
                    try:
                        await self._read_loop()
                    finally:
                        self._end()
            finally:
                self._nursery = None  # closed: a late begin_drain must not use it
                if self._services.heartbeats is not None:
                    self._services.heartbeats.discard(self)
        except BaseException as exc:
            failure, rest = _split_failures(exc)
            if failure is not None:
                log.error(
                    "connection failed; closing it with 1011", exc_info=failure, extra=self._log_ids
                )
                self._close = CloseConnection(1011, "internal error")
            if rest is not None:
                raise rest from None
        finally:
            try:
                await self._close_socket()
            finally:
                self._handlers = {}
                metrics.handlers_active -= handler_count
                metrics.connections_active -= 1
                metrics.outbound_queues.discard(self._outbound)
                metrics.connection_closed(self.close_code())
                torn = " without a close frame (a frame was cut off)" if self._torn else ""
                log.info("connection closed (%d)%s", self.close_code(), torn, extra=self._log_ids)

    def _established_frame(self) -> bytes:
        # Not a local of serve(): that frame lives as long as the connection.
        return frame_text(
            encode_connection_established(
                connection_id=self.connection_id,
                user_id=self.user_id,
                config=self._settings.client_config(),
            )
        )

    async def _close_socket(self) -> None:
        # Bounded and shielded: a peer that never answers the close frame is
        # dropped after --close-timeout, and a hard stop still closes cleanly.
        # After a torn frame no close frame can be sent: the server drops the
        # TCP connection (the peer sees 1006).
        if self._torn:
            return
        with trio.move_on_after(self._settings.close_timeout) as closing:
            closing.shield = True
            if self._close is None:
                await self.ws.aclose()
            else:
                await self.ws.aclose(self._close.code, self._close.reason)

    def close_code(self) -> int:
        """The code this connection ended with: ours, else the peer's, else 1006 (dropped)."""
        if self._close is not None:
            return self._close.code  # even if a torn frame meant no close frame went out
        closed = self.ws.closed
        return closed.code if closed is not None else 1006

    def close(self, reason: CloseConnection) -> None:
        """End this connection with ``reason`` (the first reason wins)."""
        if self._close is None:
            self._close = reason
        self._end()

    def _end(self) -> None:
        self._ending = True  # from here on, nothing new starts in the nursery
        for run in list(self._runs.values()):
            run.scope.cancel(EndCause.DISCONNECTED)
        grace = trio.current_time() + self._settings.close_timeout
        self._send_deadline = min(self._send_deadline, grace)
        if self._sending is not None:
            self._sending.deadline = self._send_deadline
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def begin_drain(self, deadline: float) -> None:
        """Let runs finish until ``deadline``, cancel the rest, then close with 1001."""
        if self._nursery is not None and not self._draining and not self._ending:
            self._draining = True
            self._nursery.start_soon(self._drain, deadline)

    async def _drain(self, deadline: float) -> None:
        with trio.move_on_at(deadline):
            await self._wait_no_runs()
        for run in list(self._runs.values()):
            run.scope.cancel(EndCause.SHUTTING_DOWN)
        await self._wait_no_runs()
        if self._close is None:
            self._close = CloseConnection(1001, "server shutting down")
        await self._queue((b"", CLOSE))

    async def _wait_no_runs(self) -> None:
        while self._runs:
            self._runs_idle = trio.Event()
            await self._runs_idle.wait()

    # -- reading --------------------------------------------------------------

    async def _read_loop(self) -> None:
        ws = self.ws
        limit = self._settings.max_message_size
        while True:
            try:
                text = await ws.get_message()
            except ConnectionClosed:
                return
            if not isinstance(text, str):
                self.close(CloseConnection(1003, "binary frames are not supported"))
                return
            # trio-websocket measures characters; the protocol measures UTF-8 bytes.
            if len(text) * 4 > limit and len(text.encode()) > limit:
                self.close(CloseConnection(1009, f"message larger than {limit} bytes"))
                return
            if not await self._dispatch(text):
                # Too many bad frames in a row: flush the answers, then close 1008.
                limit_errors = self._settings.max_consecutive_errors
                self._close = self._close or CloseConnection(
                    1008, f"{limit_errors} invalid messages in a row"
                )
                await self._queue((b"", CLOSE))
                if not self._outbound.closed:  # the writer has not stopped yet
                    self._writer_done = trio.Event()
                    with trio.move_on_after(self._settings.close_timeout):
                        await self._writer_done.wait()
                return

    async def _dispatch(self, text: str) -> bool:
        """Answer one message; False once the error streak says to close."""
        if self._bucket is not None:
            retry_after = self._bucket.take(trio.current_time())
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
            return not self._streak.error()
        except ProtocolError as exc:
            await self.send_error(exc)
        except Exception:
            log.exception("message handler failed", extra=self._log_ids)
            await self.send_error(
                InternalError("internal error while handling the message", message_id=message_id)
            )
        self._streak.accepted()
        return True

    def ping_soon(self) -> None:
        """Ping the client now (the server's heartbeat schedule calls this).

        The ping and the wait for its pong run in a task of this connection's
        nursery that lives only that long; no pong within --heartbeat-timeout
        closes the connection with 1011. One ping at a time.
        """
        if self._nursery is None or self._ending or self._pinging:
            return
        self._pinging = True
        self._nursery.start_soon(self._ping_once)

    async def _ping_once(self) -> None:
        timeout = self._settings.heartbeat_timeout
        try:
            with trio.move_on_after(timeout):
                with contextlib.suppress(ConnectionClosed):  # closing anyway
                    await self.ws.ping()
                return
            log.info("no pong within %g s; closing", timeout, extra=self._log_ids)
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
        if not self._writer_running and self._nursery is not None:
            self._writer_running = True
            self._nursery.start_soon(self._write_loop)

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
                # The peer has gone, everything before a CLOSE marker is written,
                # or the connection is ending (cancelled): frames queued from now
                # on are dropped, and producers waiting for room are let go.
                self._outbound.close()
                if self._writer_done is not None:
                    self._writer_done.set()
                self._end()

    async def _write_batch(self, batch: list[Outbound]) -> bool:
        """Write ``batch`` (whatever was queued, up to _BATCH_BYTES) at once.

        A run's events come in bursts, and one write per frame would dominate
        the server's CPU. False once the writer must stop: a CLOSE marker, the
        peer gone, or a frame cut off. (A method of its own so that no frame
        outlives its write while nothing is queued.)
        """
        frames = [frame for frame, kind in batch if kind != CLOSE]
        if frames:
            # A frame is never cut off by our own cancellation (a close frame
            # written after half a frame corrupts the stream): _end() gives the
            # write in flight --close-timeout to finish instead.
            with trio.CancelScope(shield=True, deadline=self._send_deadline) as sending:
                self._sending = sending
                try:
                    await send_frames(self.ws, frames)
                except ConnectionClosed:
                    return False
                finally:
                    self._sending = None
            if sending.cancelled_caught:
                self._torn = True  # part of a frame went out: no close frame now
                return False
            self._metrics.events_sent_total += sum(kind == EVENT for _, kind in batch)
        return batch[-1][1] != CLOSE

    async def send(self, message: bytes) -> None:
        """Queue a non-run message (a reply, UTF-8 JSON) for this connection's client."""
        await self._queue((frame_text(message), FRAME))

    async def send_event(self, message: bytes) -> None:
        """Queue a run event (UTF-8 JSON); dropped if the connection has gone."""
        await self._queue((frame_text(message), EVENT))

    async def send_error(self, error: ProtocolError) -> None:
        errors = self._metrics.protocol_errors_total
        errors[error.error_code] = errors.get(error.error_code, 0) + 1
        await self._queue((frame_text(encode_error(error)), FRAME))

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

    # -- runs -----------------------------------------------------------------

    def start_run(self, message: StartRun) -> Run:
        """Start a run for ``message``, or raise the protocol error that refuses it."""
        services = self._services
        if message.agent_name not in services.top_level_agents:
            raise AgentNotFoundError(
                f"no top-level agent named {message.agent_name[:64]!r}",
                details={
                    "agent_name": message.agent_name[:128],
                    "available": sorted(services.top_level_agents),
                },
                message_id=message.message_id,
            )
        run_id = message.run_id or new_id("r")
        if run_id in self._runs:
            raise FormatError(
                "run_id is already running on this connection",
                details={"field": "payload.run_id", "run_id": run_id},
                message_id=message.message_id,
            )
        if services.is_draining() or self._draining:
            raise ShuttingDownError(
                "the server is shutting down and starts no new runs",
                message_id=message.message_id,
            )
        limit = self._settings.max_runs_per_connection
        if len(self._runs) >= limit:
            raise TooManyRunsError(
                f"{limit} runs are already running on this connection",
                details={"max_runs_per_connection": limit},
                message_id=message.message_id,
            )
        assert self._nursery is not None
        run = Run(
            self,
            services.factory,
            run_id=run_id,
            thread_id=message.thread_id or new_id("t"),
            agent_name=message.agent_name,
            request=message.request,
            message_id=message.message_id,
            metrics=self._metrics,
        )
        self._runs[run_id] = run
        self._metrics.runs_active += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "run started: %s %r",
                message.agent_name,
                message.request[:200],
                extra=ids(run_id=run_id, **self._log_ids),
            )
        self._nursery.start_soon(self._run_task, run, name=f"run {run_id}")
        return run

    def stop_run(self, run_id: str, *, message_id: str | None) -> None:
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFoundError(
                "no such run is running on this connection",
                details={"run_id": run_id},
                message_id=message_id,
            )
        run.scope.cancel(EndCause.CANCELLED)

    def finish_run(self, run: Run, status: str) -> None:
        """Retire ``run`` (idempotent): out of the table and the gauges, counted once."""
        if run.finished:
            return
        run.finished = True
        del self._runs[run.run_id]
        metrics = self._metrics
        metrics.runs_active -= 1
        metrics.runs_total[status if status in metrics.runs_total else "failed"] += 1
        level = logging.DEBUG if status == "completed" else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "run ended: %s", status, extra=ids(run_id=run.run_id, **self._log_ids))
        if not self._runs and self._runs_idle is not None:
            self._runs_idle.set()

    async def _run_task(self, run: Run) -> None:
        status = "cancelled"
        try:
            status = await execute_run(run.scope, run.agent_name)
        finally:
            self.finish_run(run, status)
            run.release()

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            connection_id=self.connection_id,
            user_id=self.user_id,
            runs=tuple(self._runs),
            outbound_queued=len(self._outbound),
        )


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
