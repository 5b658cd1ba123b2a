"""Hardening limits end to end on loopback: slow consumers, the rate limit, error
streaks, connection limits, heartbeats and slow handshakes (virtual time where
time matters).

Peers that misbehave at the socket level (never read, never answer pings, stop
half-way through the handshake) are raw clients: our own TCP socket with wsproto
on top, so that nothing reads or answers behind the test's back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from agents import AgentClassRegistry, BaseAgent, FaultSpec
from agents.builtin import BUILTIN_AGENTS
from server import ChatServer
from server.testing import ChatClient, open_chat_client, open_memory_client, start_test_server

WAIT = 20.0
IDLE = (0, 0, 0, 0)
REQUEST = "Our p99 latency is 900 ms, what should we do?"
FLOOD_EVENTS = 300
FLOOD_CHUNK = "x" * 32 * 1024


class FloodAgent(BaseAgent):
    """A top-level agent that emits many large ``agent_thinking`` events."""

    name = "flood"
    top_level = True

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        for _ in range(FLOOD_EVENTS):
            await self.think(FLOOD_CHUNK)
        return {"events": FLOOD_EVENTS}


def flood_registry() -> AgentClassRegistry:
    registry = AgentClassRegistry()
    for cls in (*BUILTIN_AGENTS, FloodAgent):
        registry.register(cls)
    return registry


async def assert_idle(server: ChatServer) -> None:
    with trio.fail_after(WAIT):
        await server.wait_idle()
    assert server.statistics().gauges == IDLE


# -- a raw WebSocket client -------------------------------------------------------


class RawClient:
    """wsproto over our own socket: reads only when asked, answers nothing by itself."""

    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self.stream = stream
        self.host = host
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._events: list[Event] = []
        self.eof = False

    async def handshake(self, target: str) -> int:
        """Send the upgrade request; the HTTP status of the answer (101 if accepted)."""
        await self.stream.send_all(self.ws.send(Request(host=self.host, target=target)))
        while True:
            event = await self.next_event()
            if isinstance(event, AcceptConnection):
                return 101
            if isinstance(event, RejectConnection):
                while event.has_body:  # read the body, so the rejection is complete
                    body = await self.next_event()
                    assert isinstance(body, RejectData)
                    if body.body_finished:
                        break
                return event.status_code
            raise AssertionError(f"unexpected answer to the handshake: {event!r}")

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    async def send_json(self, frame: Mapping[str, Any]) -> None:
        await self.send_text(json.dumps(frame))

    async def next_event(self) -> Event | None:
        """The next wsproto event, or None once the server has closed the socket."""
        with trio.fail_after(WAIT):
            while not self._events:
                if self.eof:
                    return None
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                if not data:
                    self.eof = True
                    continue
                self.ws.receive_data(data)
                self._events.extend(self.ws.events())
            return self._events.pop(0)

    async def read_to_end(self) -> tuple[list[dict[str, Any]], int, CloseConnection | None]:
        """Read until the server hangs up: (whole messages, pings seen, close frame or None).

        Nothing is answered but the close frame; a message cut off by the end is dropped.
        """
        messages: list[dict[str, Any]] = []
        parts: list[str] = []
        pings = 0
        close: CloseConnection | None = None
        while close is None and (event := await self.next_event()) is not None:
            if isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    messages.append(json.loads("".join(parts)))
                    parts = []
            elif isinstance(event, Ping):
                pings += 1
            elif isinstance(event, CloseConnection):
                close = event
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    with contextlib.suppress(trio.BrokenResourceError):
                        await self.stream.send_all(self.ws.send(event.response()))
        with trio.fail_after(WAIT):
            while not self.eof:  # the rest, if any, unparsed
                with contextlib.suppress(trio.BrokenResourceError):
                    if await self.stream.receive_some(65536):
                        continue
                self.eof = True
        return messages, pings, close

    async def next_message(self) -> dict[str, Any]:
        """The next complete text message, as JSON."""
        parts: list[str] = []
        while True:
            event = await self.next_event()
            assert isinstance(event, TextMessage), event
            parts.append(event.data)
            if event.message_finished:
                return dict(json.loads("".join(parts)))


async def open_raw_stream(server: ChatServer, *, rcvbuf: int | None = None) -> trio.SocketStream:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:  # before connecting, so the window starts small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect((server.host, server.port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


@contextlib.asynccontextmanager
async def open_raw_client(
    server: ChatServer, target: str | None = None, *, rcvbuf: int | None = None
) -> AsyncIterator[RawClient]:
    """A raw client; with ``target``, its handshake is done (and must be accepted)."""
    with trio.fail_after(WAIT):
        stream = await open_raw_stream(server, rcvbuf=rcvbuf)
    try:
        client = RawClient(stream, server.host)
        if target is not None:
            assert await client.handshake(target) == 101
        yield client
    finally:
        await trio.aclose_forcefully(stream)


async def handshake_status(server: ChatServer, target: str) -> int:
    """The HTTP status of a handshake for ``target`` (101 if accepted, then closed)."""
    async with open_raw_client(server) as client:
        status = await client.handshake(target)
        if status == 101:
            await client.stream.send_all(client.ws.send(CloseConnection(code=1000)))
            while await client.next_event() is not None:  # until the server hangs up
                pass
        return status


# -- 1. slow consumer ---------------------------------------------------------------


async def sample_outbound_queue(
    server: ChatServer, connection_id: str, samples: list[int], full: trio.Event, limit: int
) -> None:
    """Record the connection's queued frames every 50 ms (virtual) while it exists."""
    while True:
        for stats in server.connection_statistics():
            if stats.connection_id == connection_id:
                samples.append(stats.outbound_queued)
                if stats.outbound_queued >= limit:
                    full.set()
        await trio.sleep(0.05)


async def test_a_client_that_never_reads_is_closed_1013_and_its_run_cancelled(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_agent_server")
    queue, timeout = 8, 5.0
    server = await start_test_server(
        nursery, registry=flood_registry(), outbound_queue=queue, slow_consumer_timeout=timeout
    )
    close_timeout = server.settings.close_timeout
    samples: list[int] = []
    async with open_raw_client(server, "/ws?user_id=slow", rcvbuf=4096) as slow:
        established = await slow.next_message()
        slow_id = established["data"]["connection_id"]
        started = trio.current_time()
        await slow.send_json(
            {
                "type": "start_agent",
                "payload": {"user_request": "flood", "agent_name": "flood", "run_id": "flood"},
            }
        )
        # From here on the slow client reads nothing until the server has given up.
        full = trio.Event()
        async with trio.open_nursery() as sampling:
            sampling.start_soon(sample_outbound_queue, server, slow_id, samples, full, queue)
            with trio.fail_after(timeout):
                await full.wait()
            (stalled,) = server.connection_statistics()
            assert stalled.runs == ("flood",)
            gauges = server.statistics().gauges
            assert (gauges[0], gauges[2], gauges[3]) == (1, 1, 1)  # it, its agent and run

            # Another client is served normally while that connection is stuck.
            async with open_chat_client(server, user_id="steady") as steady:
                run = await steady.run(REQUEST)
            assert run.status == "completed"
            assert trio.current_time() - started < timeout

            with trio.fail_after(timeout + close_timeout + 1):
                await server.wait_idle()
            elapsed = trio.current_time() - started
            sampling.cancel_scope.cancel()

        assert timeout <= elapsed <= timeout + close_timeout
        assert max(samples) == queue  # full, never more
        stats = server.statistics()
        assert stats.gauges == IDLE
        assert stats.runs_total == {"completed": 1, "failed": 0, "cancelled": 1, "timeout": 0}
        closed = [
            r.getMessage()
            for r in caplog.records
            if getattr(r, "connection_id", None) == slow_id and "closed" in r.getMessage()
        ]
        # The write stuck in flight was cut off at the close grace: no close frame
        # may follow half a frame, so the socket was dropped without one.
        assert closed == ["connection closed (1013) without a close frame (a frame was cut off)"]
        assert stats.connections_closed_total[1013] == 1


async def test_a_memory_peer_that_stops_reading_is_closed_1013_at_exactly_the_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # The same rule with no socket in the way: the queue fills at once (the
    # flood agent never waits), stays full for the timeout, and the connection
    # is closed 1013 then, its run cancelled, while another client is served.
    queue, timeout = 4, 5.0
    server = await start_test_server(
        nursery,
        registry=flood_registry(),
        outbound_queue=queue,
        slow_consumer_timeout=timeout,
        admin_port=None,
    )
    async with open_memory_client(server, user_id="slow", capacity=2) as slow:
        started = trio.current_time()
        await slow.start("flood", agent_name="flood", run_id="flood")
        async with open_memory_client(server, user_id="steady") as steady:
            assert (await steady.run(REQUEST)).status == "completed"
        (stuck,) = [c for c in server.connection_statistics() if c.user_id == "slow"]
        assert stuck.outbound_queued == queue  # full, not more
        # Read again within the close grace: what was queued, whole, then the close.
        await trio.sleep_until(started + timeout + 1)
        code, reason = await slow.wait_closed()
        assert trio.current_time() == started + timeout + 1
    assert code == 1013
    assert reason == f"slow consumer: outbound queue full for {timeout:g} s"
    events = slow.events("flood")
    assert events
    assert not any(e["final"] for e in events)  # cancelled with its connection: no final event
    await assert_idle(server)
    stats = server.statistics()
    assert stats.runs_total["cancelled"] == 1
    assert stats.connections_closed_total[1013] == 1


async def test_replies_that_find_the_queue_full_wait_for_room_and_none_is_dropped(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # A client pipelines pings faster than it reads: the queue (2) and the peer's
    # buffer (1) fill, and each later pong waits for room rather than being lost.
    server = await start_test_server(
        nursery, outbound_queue=2, rate_limit=0, slow_consumer_timeout=5.0, admin_port=None
    )
    count = 8
    async with open_memory_client(server, user_id="u1", capacity=1) as client:
        async with trio.open_nursery() as senders:

            async def send_pings() -> None:
                for i in range(count):
                    await client.ws.send_message(
                        json.dumps({"type": "ping", "message_id": f"p{i}"})
                    )

            senders.start_soon(send_pings)
            await trio.testing.wait_all_tasks_blocked()
            (stats,) = server.connection_statistics()
            assert stats.outbound_queued == 2  # full: the reader waits for room
            replies = [json.loads(await client.ws.get_message()) for _ in range(count)]
        assert [(r["type"], r["message_id"]) for r in replies] == [
            ("pong", f"p{i}") for i in range(count)
        ]
    await assert_idle(server)


async def test_a_slow_consumer_that_reads_again_within_the_grace_gets_whole_frames_and_1013(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    queue, timeout = 8, 5.0
    server = await start_test_server(
        nursery, registry=flood_registry(), outbound_queue=queue, slow_consumer_timeout=timeout
    )
    async with open_raw_client(server, "/ws?user_id=slow", rcvbuf=4096) as slow:
        await slow.next_message()  # connection_established
        await slow.send_json(
            {
                "type": "start_agent",
                "payload": {"user_request": "flood", "agent_name": "flood", "run_id": "flood"},
            }
        )
        # The client pauses past the slow-consumer timeout, then reads while the
        # server still waits (close_timeout) for the answer to its close frame.
        await trio.sleep(timeout + server.settings.close_timeout / 2)
        messages, _, close = await slow.read_to_end()
    await assert_idle(server)
    assert close is not None
    # A close frame spliced into a half-written text frame shows up here as a 1007
    # ("can't decode byte 0x88": the close frame's first byte inside text).
    assert (close.code, close.reason) == (
        1013,
        f"slow consumer: outbound queue full for {timeout:g} s",
    ), f"the stream the client read was not well formed: {close!r}"
    assert [e["seq"] for e in messages] == list(range(1, len(messages) + 1))
    assert {e["run_id"] for e in messages} == {"flood"}
    assert not any(e["final"] for e in messages)  # cancelled with its connection: no final
    assert len(messages) < FLOOD_EVENTS
    assert server.statistics().runs_total["cancelled"] == 1


# -- 2. rate limit ------------------------------------------------------------------


async def next_reply(client: ChatClient) -> dict[str, Any]:
    with trio.fail_after(WAIT):
        return await client.receive()


@pytest.mark.parametrize("rate", [2.0, 3.0, 0.5])
async def test_pings_over_the_burst_are_rate_limited_until_retry_after_has_passed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, rate: float
) -> None:
    server = await start_test_server(nursery, rate_limit=rate, rate_burst=3)
    async with open_memory_client(server, user_id="u1") as client:
        for i in range(1, 6):
            await client.send({"type": "ping", "message_id": f"p{i}"})
        replies = [await next_reply(client) for _ in range(5)]
        assert [(r["type"], r["message_id"]) for r in replies] == [
            ("pong", "p1"),
            ("pong", "p2"),
            ("pong", "p3"),
            ("error_message", "p4"),
            ("error_message", "p5"),
        ]
        limited = replies[3:]
        assert {r["error_code"] for r in limited} == {"RATE_LIMITED"}
        retry_after = limited[-1]["details"]["retry_after"]
        assert retry_after > 0
        assert retry_after == pytest.approx(1 / rate, abs=0.001)

        # A client that waits as long as it was told to is served again ...
        await trio.sleep(retry_after)
        await client.send({"type": "ping", "message_id": "after"})
        reply = await next_reply(client)
        assert (reply["type"], reply["message_id"]) == ("pong", "after"), reply
        # ... at the sustained rate, not with a new burst.
        await client.send({"type": "ping", "message_id": "again"})
        reply = await next_reply(client)
        assert (reply.get("error_code"), reply["message_id"]) == ("RATE_LIMITED", "again")
    await assert_idle(server)
    assert server.statistics().protocol_errors_total["RATE_LIMITED"] == 3


# -- 3. consecutive errors --------------------------------------------------------


BAD_FRAMES: tuple[tuple[str, str], ...] = (
    ("not json", "FORMAT_ERROR"),
    ('{"type": "nope"}', "UNKNOWN_TYPE"),
    ('{"type": "ping", "payload": []}', "FORMAT_ERROR"),
    ('{"type": 7}', "FORMAT_ERROR"),
    ('{"type": "user_message", "payload": {}}', "FORMAT_ERROR"),
)


async def send_bad_frames(client: ChatClient, count: int) -> list[str]:
    """Send ``count`` bad frames (mixed FORMAT_ERROR / UNKNOWN_TYPE); their expected codes."""
    frames = [BAD_FRAMES[i % len(BAD_FRAMES)] for i in range(count)]
    for text, _ in frames:
        await client.send(text)
    return [code for _, code in frames]


async def expect_codes(client: ChatClient, codes: list[str]) -> None:
    replies = [await next_reply(client) for _ in codes]
    assert [r.get("error_code") for r in replies] == codes


async def expect_pong(client: ChatClient, message_id: str) -> None:
    await client.send({"type": "ping", "message_id": message_id})
    reply = await next_reply(client)
    assert (reply["type"], reply["message_id"]) == ("pong", message_id), reply


async def test_an_accepted_frame_resets_the_error_streak(nursery: trio.Nursery) -> None:
    server = await start_test_server(nursery, max_consecutive_errors=5, rate_limit=0)
    async with open_memory_client(server, user_id="u1") as client:
        await expect_codes(client, await send_bad_frames(client, 4))
        await expect_pong(client, "reset")
        await expect_codes(client, await send_bad_frames(client, 4))
        await expect_pong(client, "still-open")
    await assert_idle(server)
    errors = server.statistics().protocol_errors_total
    assert errors["FORMAT_ERROR"] + errors["UNKNOWN_TYPE"] == 8


async def test_agent_not_found_neither_counts_in_the_streak_nor_lets_it_go_on(
    nursery: trio.Nursery,
) -> None:
    server = await start_test_server(nursery, max_consecutive_errors=5, rate_limit=0)
    async with open_memory_client(server, user_id="u1") as client:
        await expect_codes(client, await send_bad_frames(client, 4))
        await client.send(
            {"type": "start_agent", "payload": {"user_request": "hi", "agent_name": "nobody"}}
        )
        await expect_codes(client, ["AGENT_NOT_FOUND"])
        await expect_codes(client, await send_bad_frames(client, 4))
        await expect_pong(client, "still-open")
    await assert_idle(server)


async def test_the_streak_limit_answers_every_bad_frame_then_closes_1008(
    nursery: trio.Nursery,
) -> None:
    server = await start_test_server(nursery, max_consecutive_errors=5, rate_limit=0)
    async with open_memory_client(server, user_id="u1") as client:
        await expect_pong(client, "first")
        codes = await send_bad_frames(client, 5)
        assert set(codes) == {"FORMAT_ERROR", "UNKNOWN_TYPE"}
        code, reason = await client.wait_closed()
        assert code == 1008
        assert reason is not None
        assert "5" in reason
        answers = [f.get("error_code") for f in client.frames[1:]]
        assert answers == codes
    await assert_idle(server)
    errors = server.statistics().protocol_errors_total
    assert errors["FORMAT_ERROR"] + errors["UNKNOWN_TYPE"] == 5


async def test_a_duplicate_run_id_format_error_counts_in_the_streak(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_test_server(
        nursery,
        max_consecutive_errors=5,
        rate_limit=0,
        faults=(FaultSpec.parse("triage:hang:1"),),
        agent_timeout=1000,
    )
    async with open_memory_client(server, user_id="u1", receive_timeout=100) as client:
        run_id = await client.start("hang", run_id="dup")
        await client.wait_event(run_id, "agent_started", agent_name="triage")
        await expect_codes(client, await send_bad_frames(client, 4))
        # The fifth FORMAT_ERROR in a row comes from the handler, not the decoder.
        await client.send(
            {"type": "start_agent", "payload": {"user_request": "x", "run_id": "dup"}}
        )
        code, _ = await client.wait_closed()
        assert code == 1008
        assert client.frames[-1]["error_code"] == "FORMAT_ERROR"
    await assert_idle(server)


async def test_max_consecutive_errors_zero_never_closes(nursery: trio.Nursery) -> None:
    server = await start_test_server(nursery, max_consecutive_errors=0, rate_limit=0)
    async with open_memory_client(server, user_id="u1") as client:
        await expect_codes(client, await send_bad_frames(client, 30))
        await expect_pong(client, "still-open")
    await assert_idle(server)


# -- 4. connection limits ---------------------------------------------------------


async def settle(server: ChatServer, users: list[str]) -> None:
    """Let the server finish what its peers did; then these users are connected."""
    with trio.fail_after(WAIT):
        await trio.testing.wait_all_tasks_blocked()
    assert sorted(s.user_id for s in server.connection_statistics()) == sorted(users)


async def test_a_users_connection_over_the_per_user_limit_is_closed_1008(
    nursery: trio.Nursery,
) -> None:
    server = await start_test_server(nursery, max_connections_per_user=2)
    async with open_chat_client(server, user_id="u1") as first:
        async with open_chat_client(server, user_id="u1"):
            async with open_raw_client(server, "/ws?user_id=u1") as third:
                messages, _, close = await third.read_to_end()
            assert messages == []  # not even connection_established
            assert close is not None
            assert close.code == 1008
            assert close.reason is not None
            assert "2 connections" in close.reason
            async with open_chat_client(server, user_id="u2") as other:
                await expect_pong(other, "u2")
            await settle(server, ["u1", "u1"])
        await settle(server, ["u1"])
        async with open_chat_client(server, user_id="u1") as again:
            await expect_pong(again, "again")
        await expect_pong(first, "first")
    await assert_idle(server)
    assert server.statistics().connections_total == 4  # the refused one never counted


async def test_the_handshake_over_max_connections_is_rejected_with_503(
    nursery: trio.Nursery,
) -> None:
    server = await start_test_server(nursery, max_connections=3)
    async with open_chat_client(server, user_id="a"), open_chat_client(server, user_id="b"):
        async with open_chat_client(server, user_id="c"):
            assert await handshake_status(server, "/ws?user_id=d") == 503
            assert server.statistics().connections_total == 3
        await settle(server, ["a", "b"])
        assert await handshake_status(server, "/ws?user_id=d") == 101
    await assert_idle(server)
    assert server.statistics().connections_total == 4


# -- 5. heartbeat -----------------------------------------------------------------


async def answer_pings(client: RawClient, started: float, times: list[float]) -> None:
    """Read forever; answer each ping and note when (since ``started``) it came."""
    while True:
        event = await client.next_event()
        assert event is not None, "the server closed a peer that answers pings"
        if isinstance(event, Ping):
            times.append(trio.current_time() - started)
            await client.stream.send_all(client.ws.send(event.response()))


async def test_peers_that_answer_pings_stay_connected(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    interval, timeout = 5.0, 3.0
    server = await start_test_server(
        nursery, heartbeat_interval=interval, heartbeat_timeout=timeout
    )
    times: list[float] = []
    async with (
        open_chat_client(server, user_id="ws-client") as client,
        open_raw_client(server, "/ws?user_id=raw") as raw,
    ):
        started = trio.current_time()
        await raw.next_message()  # connection_established
        with trio.move_on_after(60 + interval / 2):
            await answer_pings(raw, started, times)
        await raw.send_json({"type": "ping", "message_id": "raw"})
        assert (await raw.next_message())["type"] == "pong"
        await expect_pong(client, "still-here")
        assert server.statistics().connections_total == 2
        assert len(server.connection_statistics()) == 2
    await assert_idle(server)
    assert times == [interval * n for n in range(1, 13)]


async def test_a_peer_that_never_reads_is_closed_1011_after_the_heartbeat_timeout(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_agent_server")
    interval, timeout = 5.0, 3.0
    server = await start_test_server(
        nursery, heartbeat_interval=interval, heartbeat_timeout=timeout
    )
    async with open_raw_client(server, "/ws?user_id=silent") as silent:
        started = trio.current_time()
        await settle(server, ["silent"])
        await assert_idle(server)
        # Judged dead at interval + timeout; then the close frame goes unanswered.
        assert trio.current_time() - started == interval + timeout + server.settings.close_timeout
        messages, pings, close = await silent.read_to_end()
    assert [m["data"]["event"] for m in messages] == ["connection_established"]
    assert pings == 1
    assert close is not None
    assert (close.code, close.reason) == (1011, "heartbeat timeout")
    logged = [r.getMessage() for r in caplog.records if r.name == "trio_agent_server.connection"]
    assert "connection closed (1011)" in logged


@pytest.mark.parametrize("heartbeat_timeout", [3.0, 12.0], ids=["shorter", "longer-than-interval"])
@pytest.mark.parametrize(
    ("wrong_pong", "ping_first"),
    [(False, False), (True, False), (True, True)],
    ids=["silent", "wrong-pong", "wrong-pong-after-a-ping"],
)
async def test_a_peer_that_reads_but_never_pongs_gets_close_1011_at_interval_plus_timeout(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    heartbeat_timeout: float,
    wrong_pong: bool,
    ping_first: bool,
) -> None:
    # A timeout longer than the interval: pings come due while one waits for its
    # pong, and none of them is sent (one ping at a time). A pong that does not
    # carry the ping's payload answers nothing, whether the transport's own
    # reader takes it or (after a frame of another kind, here the peer's ping)
    # wsproto does.
    interval, timeout = 5.0, heartbeat_timeout
    server = await start_test_server(
        nursery, heartbeat_interval=interval, heartbeat_timeout=timeout
    )
    async with open_raw_client(server, "/ws?user_id=deaf") as deaf:
        started = trio.current_time()
        await deaf.next_message()  # connection_established
        ping = await deaf.next_event()
        assert isinstance(ping, Ping)
        assert trio.current_time() - started == interval
        if ping_first:
            await deaf.stream.send_all(deaf.ws.send(Ping(payload=b"peer")))
        if wrong_pong:
            await deaf.stream.send_all(deaf.ws.send(Pong(payload=bytes(ping.payload) + b"?")))
        messages, pings, close = await deaf.read_to_end()
        assert trio.current_time() - started == interval + timeout
    assert (messages, pings) == ([], 0)
    assert close is not None
    assert (close.code, close.reason) == (1011, "heartbeat timeout")
    await assert_idle(server)
    assert trio.current_time() - started == interval + timeout  # our close answer ended it


# -- 6. slow handshakes -----------------------------------------------------------


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /ws?user_id=slowloris HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"],
    ids=["nothing", "half-a-request"],
)
async def test_an_incomplete_handshake_is_dropped_at_the_handshake_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, sent: bytes
) -> None:
    handshake_timeout = 10.0
    server = await start_test_server(nursery, handshake_timeout=handshake_timeout)
    with trio.fail_after(WAIT):
        stream = await open_raw_stream(server)
    try:
        started = trio.current_time()
        if sent:
            await stream.send_all(sent)
        async with open_chat_client(server, user_id="normal") as client:
            run = await client.run(REQUEST)
            assert run.status == "completed"
            assert server.statistics().gauges[0] == 1  # the slow handshake is no connection
        with trio.fail_after(handshake_timeout + 1):
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
        assert data == b""
        assert trio.current_time() - started == handshake_timeout
        assert server.statistics().gauges == IDLE
    finally:
        await trio.aclose_forcefully(stream)
    await assert_idle(server)
    assert server.statistics().connections_total == 1
