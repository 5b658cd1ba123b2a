"""The curated one-point mutations that ``python -m benchmarks.mutation`` applies.

Each :class:`Mutant` replaces one exact piece of text (it must occur exactly
once in its file) with a plausible mistake: an operator, a bound, a removed
guard, a swapped order, a lost shield. A mutant is *killed* when the test
modules it names fail with it applied; they are the modules that exercise its
code, killers first, so a killed mutant costs a few seconds.

The catalogue is grouped by area. Later work adds an area (the history store,
resume, the broker) by writing its tuple of mutants and listing it in
:data:`CATALOGUE`; ``tests/test_mutation_catalogue.py`` checks that every
mutant still applies to the code as it is, so the catalogue cannot rot
silently. A mutant that no test can tell from the original (an equivalent
mutant) is better left out; if one is kept to document an argument, its
``equivalent`` field says why, and the report shows it apart.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs


class StaleMutant(Exception):
    """A mutant's text no longer occurs exactly once in its file."""


def _tests(*names: str) -> tuple[str, ...]:
    return tuple(name if "/" in name else f"tests/test_{name}.py" for name in names)


@attrs.frozen
class Mutant:
    """One text change in one file, and the test modules that must notice it."""

    name: str
    path: str
    before: str
    after: str
    tests: tuple[str, ...]
    #: What the change breaks, in a few words (for the report).
    breaks: str
    #: Why no test can tell it from the original, for a mutant kept on purpose.
    equivalent: str | None = None

    def apply(self, text: str) -> str:
        count = text.count(self.before)
        if count != 1:
            raise StaleMutant(f"{self.name}: its text occurs {count} times in {self.path}")
        return text.replace(self.before, self.after)


def _area(
    path: str, tests: tuple[str, ...], *changes: tuple[str, str, str, str]
) -> tuple[Mutant, ...]:
    """Mutants of one file: (name, before, after, breaks), all checked by ``tests``."""
    return tuple(
        Mutant(name=name, path=path, before=before, after=after, tests=tests, breaks=breaks)
        for name, before, after, breaks in changes
    )


SESSION = _area(
    "server/protocol/_session.py",
    _tests("session", "errors_and_closes", "limits"),
    (
        "session.draining_may_start_runs",
        "if self.state is not SessionState.OPEN:\n            raise ShuttingDownError",
        "if self.state is SessionState.CLOSED:\n            raise ShuttingDownError",
        "a draining session still starts runs",
    ),
    (
        "session.last_close_reason_wins",
        "if self.close_reason is None and self.state is not SessionState.CLOSED:",
        "if self.state is not SessionState.CLOSED:",
        "a later close reason overwrites the first",
    ),
    (
        "session.begin_drain_reports_no_change",
        "self.state = SessionState.DRAINING\n            return True",
        "self.state = SessionState.DRAINING\n            return False",
        "the connection never starts its drain task",
    ),
    (
        "session.accepted_keeps_the_streak",
        "    def message_accepted(self) -> None:\n"
        '        """Any other answer (including other errors) resets the streak."""\n'
        "        self._streak.accepted()",
        "    def message_accepted(self) -> None:\n"
        '        """Any other answer (including other errors) resets the streak."""',
        "an accepted message does not reset the error streak",
    ),
    (
        "session.slow_rates_unlimited",
        "if self.rate_limit > 0:",
        "if self.rate_limit >= 1:",
        "rate limits below one message a second are off",
    ),
    (
        "session.streak_close_code",
        'self.close(CloseConnection(1008, f"{limit} invalid messages in a row"))',
        'self.close(CloseConnection(1002, f"{limit} invalid messages in a row"))',
        "the error streak closes with the wrong code",
    ),
)

LIMITS = _area(
    "server/protocol/_limits.py",
    _tests("session", "limits"),
    (
        "limits.bucket_burst_uncapped",
        "self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)",
        "self.tokens = self.tokens + (now - self.updated) * self.rate",
        "tokens pile up beyond the burst (no limit under a clock far from 0)",
    ),
    (
        "limits.bucket_refill_ignores_rate",
        "self.tokens + (now - self.updated) * self.rate)",
        "self.tokens + (now - self.updated))",
        "the bucket refills at one token a second whatever the rate",
    ),
    (
        "limits.bucket_never_advances",
        "        self.updated = now\n",
        "",
        "every take refills from the bucket's creation time",
    ),
    (
        "limits.bucket_last_token_refused",
        "if self.tokens >= 1.0:",
        "if self.tokens > 1.0:",
        "the last whole token of a burst is refused",
    ),
    (
        "limits.bucket_retry_after_ignores_fraction",
        "return (1.0 - self.tokens) / self.rate",
        "return 1.0 / self.rate",
        "retry_after ignores the part of a token already saved",
    ),
    (
        "limits.streak_zero_limit_closes",
        "return self.limit > 0 and self.count >= self.limit",
        "return self.count >= self.limit",
        "a streak limit of 0 closes at the first bad frame",
    ),
    (
        "limits.streak_one_late",
        "return self.limit > 0 and self.count >= self.limit",
        "return self.limit > 0 and self.count > self.limit",
        "the streak closes one bad frame late",
    ),
)

OUTBOUND = _area(
    "server/session/_outbound.py",
    _tests("outbound", "wire", "limits", "edge_cases"),
    (
        "outbound.waiters_admitted_past_the_bound",
        "while waiting and len(items) < self.max_size:",
        "while waiting and len(items) <= self.max_size:",
        "a queue bounded at n holds n + 1 once producers wait",
    ),
    (
        "outbound.batch_runs_past_close",
        "if kind == CLOSE or size >= max_bytes:",
        "if size >= max_bytes:",
        "a batch goes on past a CLOSE marker",
    ),
    (
        "outbound.batch_unbounded",
        "if kind == CLOSE or size >= max_bytes:",
        "if kind == CLOSE:",
        "a batch takes everything queued, whatever its size",
    ),
    (
        "outbound.cancelled_waiter_stays_in_line",
        "            waiting.remove(entry)\n",
        "",
        "a cancelled producer's frame is queued later all the same",
    ),
    (
        "outbound.close_lets_waiters_think_they_queued",
        "trio.lowlevel.reschedule(task, outcome.Error(error))",
        "trio.lowlevel.reschedule(task, outcome.Value(None))",
        "producers woken by close() believe their frame was queued",
    ),
    (
        "outbound.put_after_close_accepted",
        "        if self._closed:\n"
        '            raise trio.ClosedResourceError("the connection\'s writer has stopped")\n'
        "        if len(self._items) >= self.max_size or self._waiting:\n",
        "        if len(self._items) >= self.max_size or self._waiting:\n",
        "frames are queued after the writer stopped",
    ),
)

_CONNECTION_TESTS = _tests(
    "errors_and_closes", "runs", "limits", "heartbeat", "edge_cases", "outbound", "wire",
    "session", "isolation", "transport", "admin",
)  # fmt: skip

CONNECTION = _area(
    "server/session/_connection.py",
    _CONNECTION_TESTS,
    (
        "connection.accepted_during_a_drain_not_drained",
        "                    if self._services.is_draining():  # accepted just as a drain began\n"
        "                        self.begin_drain(trio.current_time())\n",
        "",
        "a connection accepted as a drain begins is never drained",
    ),
    (
        "connection.close_unshielded",
        "closing.shield = True",
        "closing.shield = False",
        "a connection cancelled from outside drops the socket without a close frame",
    ),
    (
        "connection.several_pings_at_once",
        "if self._nursery is None or not self.session.connected or self._pinging:",
        "if self._nursery is None or not self.session.connected:",
        "a new ping starts while the last one still waits for its pong",
    ),
    (
        "connection.ping_guard_never_reset",
        "        finally:\n            self._pinging = False",
        "        finally:\n            pass",
        "after its first ping a connection is never pinged again",
    ),
    (
        "connection.no_grace_for_an_unread_pong",
        "if pong is not None and self.transport.unread_input():",
        "if False:",
        "a pong that arrived during a stall of the server is not counted",
    ),
    (
        "connection.heartbeat_close_code",
        'self.close(CloseConnection(1011, "heartbeat timeout"))',
        'self.close(CloseConnection(1001, "heartbeat timeout"))',
        "a heartbeat timeout closes with the wrong code",
    ),
    (
        "connection.rate_limit_ignored",
        "        if retry_after:\n            await self.send_error(",
        "        if False:\n            await self.send_error(",
        "messages over the rate are answered as usual",
    ),
    (
        "connection.retry_after_rounded_down",
        "math.ceil(retry_after * 1000) / 1000",
        "math.floor(retry_after * 1000) / 1000",
        "waiting retry_after seconds is not always enough",
    ),
    (
        "connection.unknown_type_outside_the_streak",
        "except (FormatError, UnknownTypeError) as exc:",
        "except FormatError as exc:",
        "UNKNOWN_TYPE answers do not count in the error streak",
    ),
    (
        "connection.handler_failure_closes",
        '            log.exception("message handler failed", extra=self._log_ids)\n',
        '            log.exception("message handler failed", extra=self._log_ids)\n'
        "            raise\n",
        "a handler's exception ends the connection instead of INTERNAL_ERROR",
    ),
    (
        "connection.drain_does_not_wait",
        "        with trio.move_on_at(deadline):\n            await self.runs.wait_idle()\n",
        "",
        "a drain cancels runs at once instead of letting them finish",
    ),
    (
        "connection.drain_cancels_as_a_stop",
        "self.runs.cancel_all(EndCause.SHUTTING_DOWN)",
        "self.runs.cancel_all(EndCause.CANCELLED)",
        "runs ended by a drain say CANCELLED, not SHUTTING_DOWN",
    ),
    (
        "connection.drain_close_code",
        'CloseConnection(1001, "server shutting down")',
        'CloseConnection(1000, "server shutting down")',
        "a drained connection closes with 1000",
    ),
    (
        "connection.writer_goes_on_past_close",
        "return batch[-1][1] != CLOSE",
        "return True",
        "the writer does not stop at a CLOSE marker",
    ),
    (
        "connection.events_counted_with_replies",
        "            if kind == EVENT:\n"
        "                events += 1\n"
        "            elif kind == CLOSE:",
        "            events += 1\n            if kind == CLOSE:",
        "chat_events_sent_total counts replies too",
    ),
    (
        "connection.slow_consumer_never_closed",
        '        if waited.cancelled_caught:\n            reason = f"slow consumer',
        '        if False:\n            reason = f"slow consumer',
        "a client that stops reading is never closed 1013",
    ),
    (
        "connection.write_in_flight_unbounded",
        "            self._sending.deadline = self._send_deadline\n",
        "            pass\n",
        "a write in flight when the connection ends is not bounded",
    ),
    (
        "connection.queue_full_never_waits",
        "            await self._queue_when_room(item)\n",
        "            pass\n",
        "a frame that finds the queue full is dropped",
    ),
)

HEARTBEAT = _area(
    "server/session/_heartbeat.py",
    _tests("heartbeat", "limits"),
    (
        "heartbeat.catches_up_after_a_stall",
        "self._due[connection] = now + self.interval",
        "self._due[connection] = due + self.interval",
        "a stalled server catches up with a burst of pings",
    ),
    (
        "heartbeat.order_not_kept",
        "            self._due.move_to_end(connection)\n",
        "",
        "a pinged connection keeps its place: others wait for its next ping",
    ),
    (
        "heartbeat.empty_schedule_never_wakes",
        "            self._changed.set()  # the schedule was empty: wake run()\n",
        "            pass\n",
        "a schedule that was empty never pings its first member",
    ),
    (
        "heartbeat.left_member_kept",
        "self._due.pop(connection, None)",
        "self._due.get(connection, None)",
        "a connection that left stays in the schedule",
    ),
)

_RUN_TESTS = _tests("runs", "run_emitter", "edge_cases", "errors_and_closes", "agents", "wire",
                    "isolation", "client")  # fmt: skip

RUN = _area(
    "server/runs/_run.py",
    _RUN_TESTS,
    (
        "run.final_event_unshielded",
        "with trio.CancelScope(shield=True):",
        "with trio.CancelScope(shield=False):",
        "a final event waiting for room is lost when the run is cancelled meanwhile",
    ),
    (
        "run.final_event_ignores_a_pending_cancel",
        "            # Other events get this check from the owner's queue itself.\n"
        "            await trio.lowlevel.checkpoint_if_cancelled()\n",
        "            # Other events get this check from the owner's queue itself.\n"
        "            pass\n",
        "a run already cancelled still sends a completed final event",
    ),
    (
        "run.retired_only_when_its_task_ends",
        "self._on_final(self, status)",
        "pass",
        "a client that has the final event may still see the run counted",
    ),
    (
        "run.seq_gap_after_a_cancelled_emit",
        "self._seq -= 1",
        "pass",
        "an event cancelled before it was queued leaves a gap in seq",
    ),
    (
        "run.first_event_not_yielded",
        "            if not written:\n",
        "            if False:\n",
        "a run that never waits sends its agent_started last (owners that do not write at once)",
    ),
    (
        "run.first_event_taken_for_written",
        "written = await at_once(payload)",
        "written = True",
        "a run's first event is taken for written and never sent",
    ),
    (
        "run.request_not_on_the_first_event",
        '            data["user_request"] = self.scope.context.request\n',
        "",
        "agent_started does not carry the user request",
    ),
)

TABLE = _area(
    "server/runs/_table.py",
    _RUN_TESTS,
    (
        "table.one_run_over_the_limit",
        "if len(self._runs) >= self.max_runs:",
        "if len(self._runs) > self.max_runs:",
        "a connection runs one more run than its limit",
    ),
    (
        "table.duplicate_run_ids_allowed",
        "        if run_id in self._runs:\n            raise FormatError(",
        "        if False:\n            raise FormatError(",
        "two runs with the same id run at once",
    ),
    (
        "table.drain_checked_after_the_limit",
        "        self._check_can_start(message_id)\n"
        "        if len(self._runs) >= self.max_runs:\n"
        "            raise TooManyRunsError(\n"
        '                f"{self.max_runs} runs are already running on this connection",\n'
        '                details={"max_runs_per_connection": self.max_runs},\n'
        "                message_id=message_id,\n"
        "            )\n",
        "        if len(self._runs) >= self.max_runs:\n"
        "            raise TooManyRunsError(\n"
        '                f"{self.max_runs} runs are already running on this connection",\n'
        '                details={"max_runs_per_connection": self.max_runs},\n'
        "                message_id=message_id,\n"
        "            )\n"
        "        self._check_can_start(message_id)\n",
        "TOO_MANY_RUNS answered before SHUTTING_DOWN (the protocol's order)",
    ),
    (
        "table.duplicate_error_without_its_run_id",
        'details={"field": "payload.run_id", "run_id": run_id},',
        'details={"field": "payload.run_id"},',
        "the FORMAT_ERROR for a duplicate run id does not name it",
    ),
    (
        "table.run_not_found_without_its_run_id",
        'details={"run_id": run_id}',
        "details={}",
        "RUN_NOT_FOUND does not name the run",
    ),
    (
        "table.stop_says_shutting_down",
        "run.scope.cancel(EndCause.CANCELLED)",
        "run.scope.cancel(EndCause.SHUTTING_DOWN)",
        "a stopped run closes with SHUTTING_DOWN",
    ),
    (
        "table.gauge_not_lowered",
        "        metrics.runs_active -= 1\n",
        "",
        "chat_runs_active never goes down",
    ),
    (
        "table.every_run_counted_as_failed",
        'metrics.runs_total[status if status in metrics.runs_total else "failed"] += 1',
        'metrics.runs_total["failed"] += 1',
        "chat_runs_total counts every run as failed",
    ),
    (
        "table.idle_never_signalled",
        "self._idle.set()",
        "pass",
        "a drain waits for the deadline even after the last run ended",
    ),
    (
        "table.vanished_run_counted_completed",
        '        status = "cancelled"\n        try:',
        '        status = "completed"\n        try:',
        "a run cut off by a disconnect counts as completed",
    ),
)

_LIFECYCLE_TESTS = _tests("agents", "lifecycle", "runs", "workflow", "edge_cases", "run_emitter")

LIFECYCLE = _area(
    "agents/_lifecycle.py",
    _LIFECYCLE_TESTS,
    (
        "lifecycle.last_cancel_cause_wins",
        "        if self.cause is None:\n            self.cause = cause\n",
        "        self.cause = cause\n",
        "a second cancel (a drain after a stop) changes the first cause",
    ),
    (
        "lifecycle.deadline_equal_is_not_a_timeout",
        "if any(deadline <= now for deadline in self._deadlines):",
        "if any(deadline < now for deadline in self._deadlines):",
        "a cancellation exactly at a deadline is not a timeout",
    ),
    (
        "lifecycle.cancelled_run_status",
        "    return scope.cancellation_cause().status\n",
        '    return "cancelled"\n',
        "a run ended by its time limit is counted cancelled",
    ),
    (
        "lifecycle.first_event_unshielded",
        "            with trio.CancelScope(shield=True):\n"
        '                await self.emit("agent_started", opening)\n',
        '            await self.emit("agent_started", opening)\n'
        "            await trio.lowlevel.checkpoint_if_cancelled()\n",
        "a run stopped before it began sends no event at all",
    ),
    (
        "lifecycle.gauge_drops_after_the_closing_event",
        "            self.release()  # the gauge drops before the closing event is queued\n"
        "            await self.emit(event_type, data, final=top_level)\n",
        "            await self.emit(event_type, data, final=top_level)\n"
        "            self.release()\n",
        "an agent still counts when its closing event goes out",
    ),
    (
        "lifecycle.open_tool_left_open_on_cancel",
        'await close("failed", {"error": cause.code, "message": cause.describe()})',
        "pass",
        "a cancelled tool call never gets its tool_completed",
    ),
    (
        "lifecycle.time_limits_swapped",
        "time_limit = runtime.run_timeout if top_level else runtime.agent_timeout",
        "time_limit = runtime.agent_timeout if top_level else runtime.run_timeout",
        "the run's limit applies to inner agents and theirs to the run",
    ),
    (
        "lifecycle.non_dict_result_accepted",
        "    if not isinstance(value, dict):\n",
        "    if value is None:\n",
        "an agent returning a list completes",
    ),
    (
        "lifecycle.progress_not_clamped",
        'data["progress_percentage"] = max(0.0, min(100.0, float(progress)))',
        'data["progress_percentage"] = float(progress)',
        "progress outside 0..100 is sent as it is",
    ),
    (
        "lifecycle.failed_inner_step_not_reraised",
        "                raise type(exc)(self.name, exc.message) from exc\n",
        "                return {}\n",
        "an agent whose inner step failed completes with an empty result",
    ),
)

_AUTH_TESTS = _tests("auth", "protocol", "errors_and_closes", "origins")

AUTH = _area(
    "server/_auth.py",
    _AUTH_TESTS,
    (
        "auth.sub_not_required",
        'required = ["exp", "sub"]',
        'required = ["exp"]',
        "a token without sub is refused for the wrong reason",
    ),
    (
        "auth.expiry_not_told_apart",
        "        except jwt.ExpiredSignatureError:\n"
        '            raise HandshakeRejected(401, "token expired") from None\n',
        "",
        "an expired token is refused as merely invalid",
    ),
    (
        "auth.audience_never_checked",
        '"verify_aud": self.audience is not None',
        '"verify_aud": False',
        "a configured audience is not checked",
    ),
    (
        "auth.expiry_without_leeway",
        'expires_at=float(claims["exp"]) + self.leeway',
        'expires_at=float(claims["exp"])',
        "connections close at exp, before the leeway they were promised",
    ),
    (
        "auth.bearer_case_sensitive",
        'if scheme.lower() == "bearer" and token.strip():',
        'if scheme == "Bearer" and token.strip():',
        "an Authorization header with 'bearer' is ignored",
    ),
    (
        "auth.jwt_subprotocol_always_selected",
        "selected = JWT_SUBPROTOCOL if JWT_SUBPROTOCOL in subprotocols else None",
        "selected = JWT_SUBPROTOCOL",
        "the server selects a subprotocol the client did not offer",
    ),
    (
        "auth.empty_query_token_used",
        "    if tokens and tokens[0]:\n",
        "    if tokens:\n",
        "an empty ?token= is verified instead of asking for a token",
    ),
)

HANDSHAKE = _area(
    "server/_handshake.py",
    _AUTH_TESTS,
    (
        "handshake.any_path_under_ws",
        "if path != WS_PATH:",
        "if not path.startswith(WS_PATH):",
        "paths like /wsx are accepted",
    ),
    (
        "handshake.bad_user_id_accepted",
        "    if not is_valid_id(user_id):\n",
        "    if not user_id.isprintable():\n",
        "user ids outside the id syntax are accepted",
    ),
    (
        "handshake.origin_never_checked",
        'if origin is not None and not origins.allows(origin.decode("latin-1")):',
        "if origin is None:",
        "any browser origin may connect; clients without one are refused",
    ),
)

_TRANSPORT_TESTS = _tests("transport", "wire", "errors_and_closes", "limits", "fuzz_wire")

TRANSPORT = _area(
    "server/transport/_websocket.py",
    _TRANSPORT_TESTS,
    (
        "websocket.limit_refuses_its_exact_size",
        "if self._parts_size > limit:",
        "if self._parts_size >= limit:",
        "a message of exactly --max-message-size bytes is refused",
    ),
    (
        "websocket.pings_unanswered",
        "            elif isinstance(event, Ping):\n"
        "                await self._send(self._ws.send(event.response()))\n",
        "            elif isinstance(event, Ping):\n                pass\n",
        "a peer's pings get no pong",
    ),
    (
        "websocket.any_pong_counts",
        "if pong is not None and event.payload == pong[0]:",
        "if pong is not None:",
        "a pong with another payload answers our ping",
    ),
    (
        "websocket.peer_close_not_answered",
        "            with contextlib.suppress(ConnectionClosed):\n"
        "                await self._send(self._ws.send(event.response()))\n",
        "",
        "the peer's close frame gets no close frame back",
    ),
    (
        "websocket.cut_frame_not_noticed",
        "            self._torn = True  # part of the frame may be out: nothing may follow it\n",
        "",
        "a close frame is written after half a frame",
    ),
    (
        "websocket.data_after_our_close",
        "if message and (self._closing or self._close_code is not None):",
        "if message and self._close_code is not None and not self._closing:",
        "data frames may follow our close frame",
    ),
    (
        "websocket.binary_accepted",
        '                raise CloseWith(1003, "binary frames are not supported")\n',
        "                pass\n",
        "binary frames are silently ignored",
    ),
)

FRAMING = _area(
    "server/transport/_framing.py",
    _TRANSPORT_TESTS,
    (
        "framing.short_header_at_126",
        "if length < 126:",
        "if length <= 126:",
        "a 126-byte message gets a header that means 'length follows'",
    ),
    (
        "framing.medium_header_at_65536",
        "if length < 65536:",
        "if length <= 65536:",
        "a 65,536-byte message cannot be framed",
    ),
)

_SERVER_TESTS = _tests("runs", "errors_and_closes", "limits", "edge_cases", "listeners", "auth")

SERVER = _area(
    "server/_server.py",
    _SERVER_TESTS,
    (
        "server.drain_keeps_accepting",
        "        self._accept_scope.cancel()\n",
        "",
        "a draining server goes on accepting sockets",
    ),
    (
        "server.draining_admits_handshakes",
        "            if self.draining:\n                raise HandshakeRejected(503,",
        "            if False:\n                raise HandshakeRejected(503,",
        "a handshake finishing during a drain is admitted",
    ),
    (
        "server.one_connection_over_the_limit",
        "if len(self._connections) + self._upgrading >= self.settings.max_connections:",
        "if len(self._connections) + self._upgrading > self.settings.max_connections:",
        "one connection more than --max-connections is admitted",
    ),
    (
        "server.per_user_limit_one_late",
        "elif limit and self._per_user.get(user_id, 0) >= limit:",
        "elif limit and self._per_user.get(user_id, 0) > limit:",
        "one connection more than --max-connections-per-user is served",
    ),
)

LISTENERS = _area(
    "server/_listeners.py",
    _tests("listeners"),
    (
        "listeners.single_acceptor_shares_its_port",
        'reuseport = count > 1 and hasattr(stdlib_socket, "SO_REUSEPORT")',
        'reuseport = hasattr(stdlib_socket, "SO_REUSEPORT")',
        "a single listening socket lets other processes join its port",
    ),
)

ACCEPT = _area(
    "server/_accept.py",
    _tests("descriptors", "listeners"),
    (
        "accept.every_error_paused",
        "                if exc.errno not in RESOURCE_ERRNOS:\n                    raise\n",
        "",
        "an accept error that is not about resources is retried forever",
    ),
    (
        "accept.log_every_failure",
        "if now - self._last_report < self.interval:",
        "if now - self._last_report < 0:",
        "every failed accept is logged",
    ),
)

#: Every area, in the order the report lists them. Add new areas here.
CATALOGUE: Mapping[str, tuple[Mutant, ...]] = {
    "session": SESSION,
    "limits": LIMITS,
    "outbound": OUTBOUND,
    "connection": CONNECTION,
    "heartbeat": HEARTBEAT,
    "runs": RUN + TABLE,
    "lifecycle": LIFECYCLE,
    "auth": AUTH + HANDSHAKE,
    "transport": TRANSPORT + FRAMING,
    "server": SERVER + LISTENERS + ACCEPT,
}


def all_mutants() -> tuple[Mutant, ...]:
    return tuple(mutant for mutants in CATALOGUE.values() for mutant in mutants)
