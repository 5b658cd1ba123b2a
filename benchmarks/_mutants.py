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
        "a pong with another payload answers our ping (frames wsproto reads)",
    ),
    (
        "websocket.any_plain_pong_counts",
        "if pong is not None and payload == pong[0]:",
        "if pong is not None:",
        "a pong with another payload answers our ping (frames the transport's own reader takes)",
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

# -- the history store (issue 17, as the store landed) -----------------------------

_STORE_TESTS = _tests(
    "store_writer", "store_contract", "store_sqlite", "store_failures", "resume", "durability"
)

WRITER = _area(
    "server/store/_writer.py",
    _STORE_TESTS,
    (
        "writer.pending_bound_one_late",
        "if self._bytes + size > self._max_pending_bytes:",
        "if self._bytes > self._max_pending_bytes:",
        "the event that crosses the pending bound is still kept",
    ),
    (
        "writer.dropped_run_appends_again",
        "        if run_key in self._dropped:\n            return False\n",
        "",
        "a dropped run's later events are queued (a gap in its history)",
    ),
    (
        "writer.dropped_run_final_committed",
        "        if run_key in self._dropped:\n            self._dropped.discard(run_key)\n",
        "        if False:\n            self._dropped.discard(run_key)\n",
        "a dropped run's final event is committed after a gap",
    ),
    (
        "writer.final_waits_forever",
        "with trio.move_on_after(self._final_timeout):",
        "with trio.move_on_after(self._final_timeout * 1000):",
        "commit_final does not give up after final_timeout",
    ),
    (
        "writer.failed_batch_lost",
        "                self._failures += 1\n                self._put_back()\n",
        "                self._failures += 1\n",
        "a batch the store refused is forgotten, not retried",
    ),
    (
        "writer.put_back_behind_newer_events",
        "self._pending[run_key] = [*records, *self._pending.get(run_key, ())]",
        "self._pending[run_key] = [*self._pending.get(run_key, ()), *records]",
        "a refused batch goes back behind the events that came meanwhile",
    ),
    (
        "writer.backoff_unbounded",
        "delay = min(max(delay * 2, self._retry_min), self._retry_max)",
        "delay = max(delay * 2, self._retry_min)",
        "the retry delay grows past retry_max",
    ),
    (
        "writer.healthy_never_again",
        "            delay = 0.0\n            self.healthy = True\n",
        "            delay = 0.0\n",
        "the writer stays unhealthy after the store is back",
    ),
    (
        "writer.unsaved_end_forgotten",
        "return final.end if final is not None else None",
        "return None",
        "a run whose end waits in the writer is resumed as running",
    ),
    (
        "writer.pending_events_miss_the_batch_in_flight",
        "return [*self._in_flight.get(run_key, ()), *self._pending.get(run_key, ())]",
        "return [*self._pending.get(run_key, ())]",
        "events being committed are missing from the pending ones",
    ),
    (
        "writer.batch_size_unbounded",
        "            if len(events) >= self._max_batch_events:\n                break\n",
        "",
        "a batch takes every pending event, however many",
    ),
    (
        "writer.committed_bytes_kept",
        "        for record in events:\n            self._bytes -= len(record.frame)\n",
        "",
        "committed events still count against the pending bound",
    ),
)

DURABILITY = _area(
    "server/runs/_run.py",
    _tests("resume", "store_failures", "durability", "run_emitter", "runs"),
    (
        "run.final_sent_before_it_is_committed",
        "        with trio.CancelScope(shield=True):\n            if self.history is not None:\n",
        "        with trio.CancelScope(shield=True):\n"
        "            if self._owner is not None and self.history is not None:\n"
        "                await self._owner.send_event(payload)\n"
        "                self._owner = None\n"
        "            if self.history is not None:\n",
        "the final event is sent before the store has committed it",
    ),
    (
        "run.history_saved_not_said",
        '                    data["history_saved"] = False\n',
        "",
        "a final sent before it was stored does not say history_saved: false",
    ),
    (
        "run.final_of_a_run_ended_elsewhere_sent",
        "                    if not await self.history.commit_final(seq, payload, data):",
        "                    if not await self.history.commit_final(seq, payload, data) and False:",
        "a run the sweep ended still sends its own final event (two finals)",
    ),
)

SQL = _area(
    "server/store/_sql.py",
    _tests("store_contract", "store_sqlite", "store_postgres", "threads", "resume"),
    (
        "sql.other_users_thread_joined",
        "    if user_id != start.user_id:\n        raise ThreadNotFoundError",
        "    if False:\n        raise ThreadNotFoundError",
        "a run starts on another user's thread",
    ),
    (
        "sql.end_of_another_run_ours",
        "results.append(state == (end.status, end.last_seq, end.ended_at_ms))",
        "results.append(True)",
        "ending a run someone else ended says it was ours",
    ),
    (
        "sql.committed_event_written_again",
        "if record.seq > committed and record.seq not in seen:",
        "if record.seq >= committed and record.seq not in seen:",
        "a retried batch writes the last committed event again",
    ),
    (
        "sql.read_events_repeats_after_seq",
        "            if seq > after_seq:\n                out.append",
        "            if seq >= after_seq:\n                out.append",
        "reading after seq n returns event n too",
    ),
    (
        "sql.read_events_past_limit",
        "                if len(out) == limit:\n                    return out\n",
        "",
        "read_events returns more than its limit",
    ),
    (
        "sql.consecutive_chunks_joined",
        "if record.seq == chunks[-1][-1].seq + 1:",
        "if True:",
        "events with a gap between them are packed as consecutive",
    ),
    (
        "sql.expire_takes_busy_threads",
        'AND r.status = \'running\')"\n        f" ORDER BY updated_at LIMIT ?{db.skip_locked}"',
        'AND r.status = \'gone\')"\n        f" ORDER BY updated_at LIMIT ?{db.skip_locked}"',
        "retention deletes a thread with a running run",
    ),
    (
        "sql.expire_batch_one_more",
        "(updated_before_ms, max(batch_size, 0)),",
        "(updated_before_ms, max(batch_size, 0) + 1),",
        "a retention batch deletes one thread more than asked",
    ),
)

MEMORY = _area(
    "server/store/_memory.py",
    _tests("store_contract", "threads", "resume"),
    (
        "memory.other_users_thread_joined",
        "        elif thread.user_id != start.user_id:\n            raise ThreadNotFoundError",
        "        elif False:\n            raise ThreadNotFoundError",
        "a run starts on another user's thread (memory store)",
    ),
    (
        "memory.read_events_repeats_after_seq",
        "seqs = sorted(seq for seq in run.events if seq > after_seq)",
        "seqs = sorted(seq for seq in run.events if seq >= after_seq)",
        "reading after seq n returns event n too (memory store)",
    ),
    (
        "memory.events_after_the_end_written",
        '            if event.run_key not in writable and run.status != "running":\n'
        "                continue\n",
        "",
        "events land after a run's end (memory store)",
    ),
)

SQLITE_WRITES = _area(
    "server/store/_sqlite_writes.py",
    _tests("store_sqlite", "store_contract", "store_failures"),
    (
        "sqlite.cancelled_write_still_committed",
        "                    write.state = _CANCELLED\n",
        "",
        "a write whose caller was cancelled while it was queued is committed anyway",
    ),
    (
        "sqlite.failed_batch_not_rolled_back",
        "        except Exception as error:\n            self._rollback()\n",
        "        except Exception as error:\n",
        "a failed batch leaves its transaction open",
    ),
    (
        "sqlite.answer_not_undone",
        '                conn.execute("ROLLBACK TO w")\n',
        "                pass\n",
        "a write answered THREAD_BUSY keeps its changes",
    ),
)

SCHEMA = _area(
    "server/store/_schema.py",
    _tests("store_migrations", "store_sqlite", "store_postgres"),
    (
        "migrations.current_version_applied_again",
        "return [m for m in MIGRATIONS if current < m.version <= target]",
        "return [m for m in MIGRATIONS if current <= m.version <= target]",
        "the database's current version is applied again",
    ),
    (
        "migrations.target_version_left_out",
        "return [m for m in MIGRATIONS if current < m.version <= target]",
        "return [m for m in MIGRATIONS if current < m.version < target]",
        "the target version is never applied",
    ),
)

SQLITE_SCHEMA = _area(
    "server/store/_sqlite.py",
    _tests("store_migrations"),
    (
        "migrations.newer_database_accepted",
        "        if current > LATEST_VERSION:\n            raise ConfigurationError(",
        "        if current > LATEST_VERSION + 1:\n            raise ConfigurationError(",
        "a database one version newer than the server is used",
    ),
)

STORE_BASE = _area(
    "server/store/_base.py",
    _tests("store_failures", "store_metrics", "store_contract"),
    (
        "store.writes_ok_never_restored",
        "        if name in WRITES:\n            self.writes_ok = ok\n",
        "        if name in WRITES and not ok:\n            self.writes_ok = ok\n",
        "a store that refused one write is never ready again",
    ),
    (
        "store.check_writes_not_a_write",
        '        "check_writes",\n    }',
        "    }",
        "check_writes succeeding does not make the store ready again",
    ),
)

LOST_RUNS = _area(
    "server/runs/_history.py",
    (
        "tests/test_durability.py::test_a_swept_run_keeps_invariants_1_to_5_whatever_was_committed",
        *_tests("store_contract", "cluster"),
    ),
    (
        "lost.every_closing_event_final",
        'add(agent, "agent_error", closing, final=not agents)',
        'add(agent, "agent_error", closing, final=True)',
        "every agent a sweep closes gets a final event",
    ),
    (
        "lost.seq_gap_after_the_committed",
        "    seq = run.last_seq\n    records: list[EventRecord] = []",
        "    seq = run.last_seq + 1\n    records: list[EventRecord] = []",
        "a swept run's closing events leave a gap after the committed ones",
    ),
    (
        "lost.no_agent_started_for_an_empty_run",
        "    if not committed:\n",
        "    if False:\n",
        "a swept run with nothing committed does not open with agent_started",
    ),
    (
        "lost.open_tool_calls_left_open",
        "            if owner == agent:\n                del tools[call_id]\n",
        "            if False:\n                del tools[call_id]\n",
        "a swept run's open tool calls are never closed",
    ),
)

STARTUP_SWEEP = _area(
    "server/_history_tasks.py",
    (
        "tests/test_durability.py::"
        "test_the_sweep_reads_every_committed_event_of_a_run_longer_than_a_page",
        *_tests("store_durability"),
    ),
    (
        "sweep.committed_frames_one_page",
        "        after = events[-1].seq\n",
        "        after = last_seq\n",
        "a sweep reads only the first page of a run's committed events",
    ),
)

# -- resuming runs and sessions ------------------------------------------------------

_RESUME_TESTS = _tests("resume", "subscriptions", "session_resume", "threads")

FOLLOW = _area(
    "server/runs/_follow.py",
    _RESUME_TESTS,
    (
        "follow.catch_up_repeats_the_seam",
        "self.follow(run, max(after_seq, sent))",
        "self.follow(run, max(after_seq, sent) - 1)",
        "the last caught-up event comes again as the first live one",
    ),
    (
        "follow.catch_up_last_replayed_marked_live",
        "await send(as_replay(payload) if sent <= replayed_to else payload)",
        "await send(as_replay(payload) if sent < replayed_to else payload)",
        "the last event sent before the resume is not marked replayed",
    ),
    (
        "follow.catch_up_never_goes_live",
        "        if run.events is events and not run.ended:\n            # Live and caught up",
        "        if False:\n            # Live and caught up",
        "a caught-up resume never receives the run's live events",
    ),
    (
        "follow.follower_repeats_after_seq",
        "if (seq > self.after_seq and not self._follows.deliver(payload)) or final:",
        "if (seq >= self.after_seq and not self._follows.deliver(payload)) or final:",
        "a follower asked for events after n also gets event n",
    ),
    (
        "follow.follower_kept_after_the_final",
        "if (seq > self.after_seq and not self._follows.deliver(payload)) or final:",
        "if seq > self.after_seq and not self._follows.deliver(payload):",
        "a follower stays attached to a run after its final event",
    ),
    (
        "follow.one_subscription_too_many",
        "if len(self._threads) >= self.max_subscriptions:",
        "if len(self._threads) > self.max_subscriptions:",
        "a connection follows one thread more than --max-subscriptions",
    ),
    (
        "follow.unsubscribe_keeps_the_runs",
        "            if follower.via_subscription and run.thread_id == thread_id:\n"
        "                self.stop_following(run)\n",
        "            if False:\n                self.stop_following(run)\n",
        "after unsubscribe_thread, the thread's running run still arrives",
    ),
    (
        "follow.unsubscribe_stops_resumed_runs",
        "if follower.via_subscription and run.thread_id == thread_id:",
        "if run.thread_id == thread_id:",
        "unsubscribing a thread also stops a run resumed on it",
    ),
    (
        "follow.subscription_gauge_not_lowered",
        "        self._metrics.subscriptions_active -= 1\n",
        "",
        "the subscriptions gauge never falls",
    ),
)

DIRECTORY = _area(
    "server/runs/_directory.py",
    _RESUME_TESTS,
    (
        "directory.resume_does_not_wait_for_the_start",
        "        if starting is not None:\n            await starting.wait()",
        "        if False:\n            await starting.wait()",
        "a resume while the run is being recorded finds nothing live",
    ),
    (
        "directory.release_wakes_nobody",
        "            del self._starting[key]\n        starting.set()\n",
        "            del self._starting[key]\n",
        "a resume waiting for a run's start waits forever",
    ),
    (
        "directory.remove_takes_a_newer_run",
        "        if self._by_id.get((run.user_id, run.run_id)) is run:\n",
        "        if (run.user_id, run.run_id) in self._by_id:\n",
        "a run's end takes a newer run with the same id out of the directory",
    ),
)

RESUME_HANDLER = _area(
    "server/session/_threads.py",
    _RESUME_TESTS + _tests("store_failures"),
    (
        "resume.followed_run_followed_twice",
        "if context.runs.receives(run) or context.follows.is_following(run):",
        "if context.runs.receives(run):",
        "resuming a run the connection already follows doubles its events",
    ),
    (
        "resume.live_reply_says_ended",
        '                "status": "running",\n'
        '                "after_seq": after,\n'
        '                "last_seq": last_seq,\n'
        '                "live": True,\n',
        '                "status": "running",\n'
        '                "after_seq": after,\n'
        '                "last_seq": last_seq,\n'
        '                "live": False,\n',
        "run_resumed of a live run says it is not live",
    ),
    (
        "resume.unsaved_end_repeats_an_event",
        "            if record.seq > sent:\n",
        "            if record.seq >= sent:\n",
        "resuming a run whose end waits in the writer repeats an event",
    ),
    (
        "resume.unsaved_end_not_looked_up",
        "            if unsaved is not None:\n                await self._resume_unsaved",
        "            if False:\n                await self._resume_unsaved",
        "a run whose end waits in the writer is resumed as running",
    ),
)

SESSION_RESUME = _area(
    "server/session/_connection.py",
    _tests("session_resume", "resume", "subscriptions"),
    (
        "sessions.normal_close_lingers",
        "return self._socket_lost or self.transport.close_code in (1001, 1006, None)",
        "return self._socket_lost or self.transport.close_code in (1000, 1001, 1006, None)",
        "a session whose client closed normally lingers, resumable",
    ),
    (
        "sessions.other_users_token_taken",
        "if sessions is None or offers is None or user_id != self.user_id:",
        "if sessions is None or offers is None:",
        "another user's handshake takes a session over with its token",
    ),
    (
        "sessions.grace_ignored",
        "            with trio.move_on_after(grace):\n                takeover = await",
        "            with trio.move_on_after(grace * 10):\n                takeover = await",
        "a lingering session outlives --resume-grace",
    ),
    (
        "sessions.lingering_follows_kept",
        "        self.runs.detach_owner()\n        self.follows.detach_runs()\n",
        "        self.runs.detach_owner()\n",
        "a lingering session keeps following runs with no socket",
    ),
    (
        "sessions.lingering_gauge_not_lowered",
        "            self._metrics.sessions_lingering -= 1\n",
        "            pass\n",
        "the lingering sessions gauge never falls",
    ),
    (
        "sessions.slow_subscriber_not_closed",
        "            self.close(CloseConnection(1013, "
        '"slow consumer: too far behind the runs it follows"))\n',
        "",
        "a subscriber too slow for its runs is not closed with 1013",
    ),
    (
        "sessions.new_token_not_parked",
        "            sessions.park(token, self)\n",
        "",
        "the resume token a connection was given finds nothing",
    ),
)

SUBSCRIBERS = _area(
    "server/runs/_table.py",
    _tests("subscriptions", "resume"),
    (
        "table.subscribers_not_told",
        "            if follows is not self._follows:\n                follows.run_started(run)",
        "            if False:\n                follows.run_started(run)",
        "a run starting on a subscribed thread reaches no subscriber",
    ),
    (
        "table.resume_during_the_start_finds_nothing",
        "        starting = self._directory.reserve(self._owner.user_id, run_id)\n",
        "        starting = trio.Event()\n",
        "a resume while the run is being recorded is not made to wait",
    ),
)

# -- threads: one run at a time, history turns, the v1.1 thread messages -------------

_THREADS_TESTS = _tests("threads", "store_contract", "store_threads", "resume")

THREADS_SQL = _area(
    "server/store/_sql.py",
    _THREADS_TESTS,
    (
        "threads.sql_page_repeats_the_boundary",
        '" AND (updated_at < ? OR (updated_at = ? AND thread_id < ?))"',
        '" AND (updated_at < ? OR (updated_at = ? AND thread_id <= ?))"',
        "the next page of threads starts again with the last one",
    ),
    (
        "threads.sql_cursor_on_the_last_page",
        "    if len(rows) > limit:\n        last = page[-1]",
        "    if len(rows) >= limit:\n        last = page[-1]",
        "a full last page of threads still offers a next_cursor",
    ),
    (
        "threads.sql_runs_page_repeats_the_boundary",
        'AND turn < ?"\n            " ORDER BY turn DESC LIMIT ?",',
        'AND turn <= ?"\n            " ORDER BY turn DESC LIMIT ?",',
        "the next page of a thread's runs starts again with the last one",
    ),
    (
        "threads.sql_history_turns_one_more",
        "(start.thread_id, turn, history_turns),",
        "(start.thread_id, turn, history_turns + 1),",
        "a run sees one earlier turn more than --history-turns",
    ),
    (
        "threads.sql_history_newest_first",
        "history = sorted(packed, key=lambda r: -r[-1])",
        "history = sorted(packed, key=lambda r: r[-1])",
        "a run sees its thread's earlier turns newest first",
    ),
    (
        "threads.sql_delete_busy_thread",
        "    if _has_running_run(db, thread_id):\n        return DeleteResult.BUSY",
        "    if False:\n        return DeleteResult.BUSY",
        "a thread with a running run is deleted",
    ),
    (
        "threads.sql_other_users_thread_found",
        "return row if row is not None and row[1] == user_id else None",
        "return row",
        "another user's thread can be read, renamed and deleted",
    ),
    (
        "threads.sql_running_run_not_counted",
        "    if not created:\n        updated_at = max(updated_at, at)",
        "    if False:\n        updated_at = max(updated_at, at)",
        "a run on an existing thread leaves its run_count and updated_at",
    ),
)

THREADS_MEMORY = _area(
    "server/store/_memory.py",
    _THREADS_TESTS,
    (
        "threads.memory_busy_thread_runs_twice",
        "        elif thread.running():\n            raise ThreadBusyError(",
        "        elif False:\n            raise ThreadBusyError(",
        "two runs at once on one thread (THREAD_BUSY never said)",
    ),
    (
        "threads.memory_history_turns_one_more",
        "history = ended[len(ended) - max(history_turns, 0) :] if history_turns > 0 else []",
        "history = ended[len(ended) - max(history_turns, 0) - 1 :] if history_turns > 0 else []",
        "a run sees one earlier turn more than --history-turns (memory store)",
    ),
    (
        "threads.memory_page_repeats_the_boundary",
        "threads = [t for t in threads if (t.updated_at, t.thread_id) < after]",
        "threads = [t for t in threads if (t.updated_at, t.thread_id) <= after]",
        "the next page of threads starts again with the last one (memory store)",
    ),
    (
        "threads.memory_delete_busy_thread",
        "        if thread.running():\n            return DeleteResult.BUSY",
        "        if False:\n            return DeleteResult.BUSY",
        "a thread with a running run is deleted (memory store)",
    ),
)

THREADS_HANDLER = _area(
    "server/session/_threads.py",
    _THREADS_TESTS + _tests("subscriptions"),
    (
        "threads.delete_busy_answers_deleted",
        "            if result is DeleteResult.BUSY:\n                raise ThreadBusyError(",
        "            if False:\n                raise ThreadBusyError(",
        "delete_thread of a busy thread answers thread_deleted",
    ),
    (
        "threads.delete_keeps_the_subscription",
        "            context.follows.unsubscribe(message.thread_id)\n            data = {",
        "            data = {",
        "a deleted thread stays subscribed",
    ),
    (
        "threads.live_run_shows_committed_seq",
        "        return live.last_seq\n",
        "        return None\n",
        "get_thread shows a live run's committed last_seq, behind what it sent",
    ),
    (
        "threads.store_error_without_message_id",
        "    if exc.message_id is None:\n        exc.message_id = message_id",
        "    if False:\n        exc.message_id = message_id",
        "an error from the store does not echo the asking frame's message_id",
    ),
)

THREADS_TABLE = _area(
    "server/runs/_table.py",
    _THREADS_TESTS,
    (
        "threads.history_turns_not_given_to_the_run",
        "                turns = begun.history\n",
        "",
        "a run on a thread never sees its earlier turns",
    ),
)

# -- the broker: leases, the global connection limit, gated streams, sweeps ------------

_BROKER_TESTS = _tests("broker", "broker_outage", "cluster")

BROKER = _area(
    "server/broker/_broker.py",
    _BROKER_TESTS,
    (
        "broker.node_lease_not_renewed",
        "    async def _renew_all(self) -> None:\n        await self._renew_node_lease()\n",
        "    async def _renew_all(self) -> None:\n",
        "a node's own lease lapses while it runs: others take it for dead",
    ),
    (
        "broker.lost_connection_lease_taken_back",
        'members, "keep"):',
        'members, "add"):',
        "a connection lease that lapsed is taken back at renewal, past the limit",
    ),
    (
        "broker.leases_renewed_too_late",
        "period = self.lease_seconds / 3",
        "period = self.lease_seconds * 2",
        "leases are renewed after they have lapsed",
    ),
    (
        "broker.released_lease_still_renewed",
        "        self._holdings.connections.discard((user_id, connection_id))\n"
        "        await self._eval(",
        "        await self._eval(",
        "a released connection lease is renewed again (the slot is never free)",
    ),
    (
        "broker.interest_kept_on_a_failed_follow",
        "        except BaseException:\n            self._holdings.unfollow(user_id, thread_id)\n",
        "        except BaseException:\n",
        "a follow that failed is still renewed",
    ),
    (
        "broker.commands_read_again",
        "after = self._inbox_after = entry_id",
        "self._inbox_after = entry_id",
        "a node handles the same commands again and again",
    ),
    (
        "broker.joins_with_old_commands",
        "        if last:\n            self._inbox_after = _text(last[0].identifier)\n",
        "",
        "a node starting again handles commands sent to its previous life",
    ),
    (
        "broker.leave_keeps_the_leases",
        '            await self._eval("leave", self._leave_node, node_keys, [self.node_id])\n',
        "",
        "a node that leaves cleanly still looks alive for a lease",
    ),
)

SCRIPTS = _area(
    "server/broker/_scripts.py",
    _BROKER_TESTS,
    (
        "scripts.one_connection_over_the_limit",
        "if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end",
        "if limit > 0 and redis.call('ZCARD', KEYS[1]) > limit then return 0 end",
        "a user gets one connection more than the global limit",
    ),
    (
        "scripts.expired_leases_counted",
        "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\nif not",
        "if not",
        "leases of a dead process still count against the limit",
    ),
    (
        "scripts.publish_ungated",
        "open = redis.call('ZCOUNT', KEYS[i + 1], '(' .. now, '+inf') > 0",
        "open = redis.call('ZCOUNT', KEYS[i + 1], '(' .. now, '+inf') >= 0",
        "a gated publish appends though nobody follows the thread",
    ),
    (
        "scripts.expired_interest_opens_the_gate",
        "open = redis.call('ZCOUNT', KEYS[i + 1], '(' .. now, '+inf') > 0",
        "open = redis.call('ZCARD', KEYS[i + 1]) > 0",
        "a follower whose lease lapsed still opens the gate",
    ),
    (
        "scripts.send_to_a_dead_node",
        "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n",
        "",
        "a command to a dead node is queued and reported sent",
    ),
    (
        "scripts.sweep_claimed_by_everyone",
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end",
        "if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) then return 1 end",
        "every node claims the sweep of a dead one",
    ),
    (
        "scripts.dead_nodes_listed_alive",
        "return redis.call('ZRANGE', KEYS[1], '(' .. now_ms(), '+inf', 'BYSCORE')",
        "return redis.call('ZRANGE', KEYS[1], 0, -1)",
        "nodes whose lease lapsed are listed as alive",
    ),
)

PUBLISHER = _area(
    "server/broker/_publisher.py",
    _BROKER_TESTS,
    (
        "publisher.one_over_capacity",
        "if len(self._buffer) >= self._capacity:",
        "if len(self._buffer) > self._capacity:",
        "the publisher buffers one entry more than its capacity",
    ),
    (
        "publisher.batch_unbounded",
        "batch = [buffer.popleft() for _ in range(min(len(buffer), self._max_batch))]",
        "batch = [buffer.popleft() for _ in range(len(buffer))]",
        "a batch takes the whole buffer, past max_batch",
    ),
    (
        "publisher.flush_returns_early",
        "        if self._done >= target:\n            return\n        done = trio.Event()",
        "        if self._done >= 0:\n            return\n        done = trio.Event()",
        "flush returns before the entries are published",
    ),
    (
        "publisher.ungated",
        "outcome = await self._broker.publish(batch, gated=self._gated)",
        "outcome = await self._broker.publish(batch, gated=False)",
        "a node publishes runs nobody follows",
    ),
)

LINK = _area(
    "server/broker/_link.py",
    _BROKER_TESTS,
    (
        "link.unhealthy_calls_not_refused",
        "        if gated and not self._healthy:\n            raise BrokerUnavailableError(",
        "        if False:\n            raise BrokerUnavailableError(",
        "calls wait out their timeout while the broker is known down",
    ),
    (
        "link.recovery_not_announced",
        '                    log.warning("broker healthy again")\n'
        "                    on_recovery()\n",
        '                    log.warning("broker healthy again")\n',
        "leases are not renewed at once when the broker comes back",
    ),
    (
        "link.refusal_counted_as_outage",
        "        except coredis.exceptions.RedisError as exc:\n"
        "            # Redis answered, with an error: the link is fine, the call is not.\n",
        "        except coredis.exceptions.RedisError as exc:\n"
        '            self.mark_unhealthy(f"{what}: {exc}")\n',
        "an error answer from Redis turns the link unhealthy",
    ),
)

HOLDINGS = _area(
    "server/broker/_holdings.py",
    _BROKER_TESTS,
    (
        "holdings.first_unfollow_ends_the_interest",
        "        if count > 0:\n            self.follows[key] = count\n            return False",
        "        if count > 1:\n            self.follows[key] = count\n            return False",
        "the node stops following a thread while a subscriber remains",
    ),
)

CLUSTER = _area(
    "server/_cluster.py",
    _tests("cluster", "broker"),
    (
        "cluster.live_nodes_swept",
        "for node in sorted(nodes - alive):",
        "for node in sorted(nodes):",
        "the runs of live processes are ended NODE_LOST",
    ),
    (
        "cluster.sweep_end_not_published",
        "[(stream, record.seq, record.frame) for record in records], gated=False",
        "[(stream, record.seq, record.frame) for record in records], gated=True",
        "a swept run's end reaches no follower unless its thread is followed",
    ),
    (
        "cluster.announce_to_itself",
        "        others = nodes - {self.node_id}\n",
        "        others = nodes\n",
        "a process tells itself about its own runs",
    ),
    (
        "cluster.stop_of_a_local_run_sent",
        "if info is None or not info.running or info.node_id == self.node_id:",
        "if info is None or not info.running:",
        "a stop of a run of this process goes through the broker",
    ),
    (
        "cluster.stop_of_a_replaced_run",
        "        if local is None or local.run_key != run.run_key:\n",
        "        if local is None:\n",
        "a command about an older run with the same id reaches the newer one",
    ),
)

REMOTE = _area(
    "server/runs/_remote.py",
    _tests("remote_follow", "cluster", "resume", "broker"),
    (
        "remote.replay_skips_one",
        "events = await store.read_events(run.run_key, next_seq - 1, 256)",
        "events = await store.read_events(run.run_key, next_seq, 256)",
        "the store's replay skips one event of another process's run",
    ),
    (
        "remote.gap_not_filled",
        "            if entry.seq > next_seq:\n"
        "                next_seq = await _fill_gap(run, next_seq, entry.seq, store, send)\n",
        "",
        "events missing from the stream are never read from the store",
    ),
    (
        "remote.ended_run_followed_forever",
        "    return next_seq, not info.running and next_seq > info.last_seq",
        "    return next_seq, False",
        "following a run that ended elsewhere never ends",
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
    "store": WRITER
    + DURABILITY
    + SQL
    + MEMORY
    + SQLITE_WRITES
    + SCHEMA
    + SQLITE_SCHEMA
    + STORE_BASE
    + LOST_RUNS
    + STARTUP_SWEEP,
    "resume": FOLLOW + DIRECTORY + RESUME_HANDLER + SESSION_RESUME + SUBSCRIBERS,
    "threads": THREADS_SQL + THREADS_MEMORY + THREADS_HANDLER + THREADS_TABLE,
    "broker": BROKER + SCRIPTS + PUBLISHER + LINK + HOLDINGS + CLUSTER + REMOTE,
}


def all_mutants() -> tuple[Mutant, ...]:
    return tuple(mutant for mutants in CATALOGUE.values() for mutant in mutants)
