"""Error answers that keep the connection open, and the close codes that end it (loopback)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    wrap_client_stream,
)

from agents import AgentClassRegistry, BaseAgent
from agents.builtin import default_registry
from server import ChatServer, HandlerContext, HandlerRouter, default_router
from server.protocol import ERROR_CODES
from server.session._handlers import PingHandler
from server.testing import (
    RUN_EVENT_TYPES,
    ChatClient,
    open_chat_client,
    start_test_server,
)

WAIT = 10.0
LIMIT = 65536


class HangingAgent(BaseAgent):
    """A top-level agent that works until it is stopped."""

    name = "hanging"
    top_level = True

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


def registry_with_hanging_agent() -> AgentClassRegistry:
    registry = default_registry()
    registry.register(HangingAgent)
    return registry


async def start_server(
    nursery: trio.Nursery, *, router: HandlerRouter | None = None, **settings: Any
) -> ChatServer:
    return await start_test_server(
        nursery, registry=registry_with_hanging_agent(), router=router, **settings
    )


async def next_reply(client: ChatClient) -> dict[str, Any]:
    """The next frame that is not a run event (run events are filed by the client)."""
    with trio.fail_after(WAIT):
        while True:
            frame = await client.receive()
            if frame.get("type") not in RUN_EVENT_TYPES:
                return frame


async def expect_error(
    client: ChatClient,
    frame: Mapping[str, Any] | str,
    code: str,
    *,
    message_id: str | None = None,
) -> dict[str, Any]:
    """Send ``frame``; the next reply must be ``error_message`` ``code``."""
    await client.send(frame)
    reply = await next_reply(client)
    assert reply["type"] == "error_message", reply
    assert reply["error_code"] == code, reply
    assert isinstance(reply["error_message"], str)
    assert reply["error_message"]
    assert isinstance(reply["details"], dict)
    if message_id is None:
        assert "message_id" not in reply
    else:
        assert reply["message_id"] == message_id
    return reply


async def assert_alive(client: ChatClient, message_id: str) -> None:
    """The connection still answers: ping -> pong with the message_id echoed."""
    await client.send({"type": "ping", "message_id": message_id})
    reply = await next_reply(client)
    assert reply["type"] == "pong", reply
    assert reply["message_id"] == message_id
    assert reply["data"]["user_id"] == client.user_id


def errors_received(client: ChatClient) -> Counter[str]:
    return Counter(f["error_code"] for f in client.frames if f.get("type") == "error_message")


def assert_error_counters(server: ChatServer, *clients: ChatClient) -> None:
    """protocol_errors_total matches the error_message frames the clients received."""
    received: Counter[str] = Counter()
    for client in clients:
        received += errors_received(client)
    counted = {code: n for code, n in server.statistics().protocol_errors_total.items() if n}
    assert counted == dict(received)


async def assert_recovered(server: ChatServer) -> None:
    """No connection left, every gauge 0, and a fresh client completes a run."""
    with trio.fail_after(WAIT):
        await server.wait_idle()
    assert server.statistics().gauges == (0, 0, 0, 0)
    async with open_chat_client(server, user_id="fresh") as client:
        run = await client.run("Our p99 latency is 900 ms, what should we do?")
    assert run.status == "completed"


async def start_hanging_run(client: ChatClient, run_id: str | None = None) -> str:
    run_id = await client.start("wait for me", agent_name="hanging", run_id=run_id)
    await client.wait_event(run_id, "agent_started")
    return run_id


# -- error_message codes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "message_id"),
    [
        ("not json at all", None),
        ("[1, 2, 3]", None),
        ('{"type": "ping", "message_id": 7}', None),  # non-string message_id is not echoed
        ('{"type": 5, "message_id": "m-type"}', "m-type"),
        ('{"type": "ping", "payload": [], "message_id": "m-payload"}', "m-payload"),
        ('{"type": "start_agent", "payload": {}, "message_id": "m-req"}', "m-req"),
        ('{"type": "start_agent", "payload": {"user_request": "  "}}', None),
        ('{"type": "user_message", "payload": {"content": "x", "thread_id": "a b"}}', None),
        ('{"type": "stop_agent", "payload": {}, "message_id": "m-stop"}', "m-stop"),
        ('{"type": "stop_agent", "payload": {"run_id": "ok\\n"}}', None),
    ],
)
async def test_format_error_keeps_the_connection_open(
    server: ChatServer, frame: str, message_id: str | None
) -> None:
    async with open_chat_client(server, user_id="u1") as client:
        await expect_error(client, frame, "FORMAT_ERROR", message_id=message_id)
        await assert_alive(client, "after-format")
        assert_error_counters(server, client)
        assert server.statistics().protocol_errors_total["FORMAT_ERROR"] == 1


async def test_unknown_type_keeps_the_connection_open(server: ChatServer) -> None:
    async with open_chat_client(server, user_id="u1") as client:
        await expect_error(
            client, {"type": "subscribe", "message_id": "m-1"}, "UNKNOWN_TYPE", message_id="m-1"
        )
        await expect_error(client, {"type": "Ping"}, "UNKNOWN_TYPE")
        await assert_alive(client, "after-unknown")
        assert_error_counters(server, client)
        assert server.statistics().protocol_errors_total["UNKNOWN_TYPE"] == 2


@pytest.mark.parametrize("agent_name", ["nosuchagent", "triage", "reporting"])
async def test_agent_not_found_for_unknown_or_inner_agents(
    server: ChatServer, agent_name: str
) -> None:
    async with open_chat_client(server, user_id="u1") as client:
        frame = {
            "type": "start_agent",
            "payload": {"user_request": "hello", "agent_name": agent_name},
            "message_id": "m-agent",
        }
        await expect_error(client, frame, "AGENT_NOT_FOUND", message_id="m-agent")
        await assert_alive(client, "after-agent")
        assert_error_counters(server, client)
        assert server.statistics().runs_active == 0


async def test_stop_agent_of_an_unknown_run_is_run_not_found(server: ChatServer) -> None:
    async with open_chat_client(server, user_id="u1") as client:
        frame = {"type": "stop_agent", "payload": {"run_id": "never-started"}, "message_id": "s"}
        reply = await expect_error(client, frame, "RUN_NOT_FOUND", message_id="s")
        assert reply["details"]["run_id"] == "never-started"
        await assert_alive(client, "after-stop")
        assert_error_counters(server, client)
        assert server.statistics().protocol_errors_total["RUN_NOT_FOUND"] == 1


async def test_stop_agent_of_another_connections_run_is_run_not_found(
    nursery: trio.Nursery,
) -> None:
    server = await start_server(nursery)
    async with (
        open_chat_client(server, user_id="owner") as owner,
        open_chat_client(server, user_id="other") as other,
    ):
        run_id = await start_hanging_run(owner, "shared-name")
        await expect_error(
            other, {"type": "stop_agent", "payload": {"run_id": run_id}}, "RUN_NOT_FOUND"
        )
        await assert_alive(owner, "owner-alive")
        assert owner.events(run_id)[-1]["final"] is False  # the run is untouched
        await owner.stop(run_id)
        run = await owner.collect(run_id)
        assert run.status == "cancelled"
        assert_error_counters(server, owner, other)
    await assert_recovered(server)


async def test_too_many_runs_when_the_connection_is_at_its_limit(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, max_runs_per_connection=1)
    async with open_chat_client(server, user_id="u1") as client:
        assert client.established["data"]["config"]["max_runs_per_connection"] == 1
        run_id = await start_hanging_run(client)
        frame = {
            "type": "start_agent",
            "payload": {"user_request": "one more", "run_id": "second"},
            "message_id": "m-2",
        }
        reply = await expect_error(client, frame, "TOO_MANY_RUNS", message_id="m-2")
        assert reply["details"]["max_runs_per_connection"] == 1
        assert client.events("second") == []
        await assert_alive(client, "after-too-many")
        assert server.statistics().runs_active == 1
        assert_error_counters(server, client)

        await client.stop(run_id)
        assert (await client.collect(run_id)).status == "cancelled"
        # With the slot free again the same request is accepted.
        run = await client.run("now there is room")
        assert run.status == "completed"
        assert_error_counters(server, client)
    await assert_recovered(server)


async def test_shutting_down_refuses_new_runs_while_the_connection_stays_open(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(nursery, drain_timeout=5)
    async with open_chat_client(server, user_id="u1") as client:
        run_id = await start_hanging_run(client)
        drain_started = trio.current_time()
        server.begin_drain()
        frame = {"type": "user_message", "payload": {"content": "hi"}, "message_id": "late"}
        await expect_error(client, frame, "SHUTTING_DOWN", message_id="late")
        await assert_alive(client, "draining-but-open")
        await expect_error(
            client,
            {"type": "start_agent", "payload": {"user_request": "x", "agent_name": "hanging"}},
            "SHUTTING_DOWN",
        )
        assert trio.current_time() == drain_started
        assert_error_counters(server, client)
        assert server.statistics().protocol_errors_total["SHUTTING_DOWN"] == 2

        run = await client.collect(run_id)
        assert trio.current_time() == drain_started + 5
        assert run.status == "cancelled"
        assert run.final["data"]["error"]["code"] == "SHUTTING_DOWN"
        code, _ = await client.wait_closed()
    assert code == 1001
    with trio.fail_after(WAIT):
        await server.wait_stopped()
    assert server.statistics().gauges == (0, 0, 0, 0)


class FailingPing(PingHandler):
    """A ping handler with a bug: it raises on message_id "boom"."""

    async def handle(self, message: Any) -> None:
        if message.message_id == "boom":
            raise RuntimeError("bug in a message handler")
        await super().handle(message)


async def test_internal_error_when_a_handler_raises_and_the_connection_goes_on(
    nursery: trio.Nursery,
) -> None:
    server = await start_server(nursery, router=default_router().replace(FailingPing))
    async with open_chat_client(server, user_id="u1") as client:
        reply = await expect_error(
            client, {"type": "ping", "message_id": "boom"}, "INTERNAL_ERROR", message_id="boom"
        )
        assert "bug in a message handler" not in reply["error_message"]  # no internals leak
        await assert_alive(client, "after-internal")
        run = await client.run("still able to run?")
        assert run.status == "completed"
        assert_error_counters(server, client)
        assert server.statistics().protocol_errors_total["INTERNAL_ERROR"] == 1
    await assert_recovered(server)


async def test_every_error_code_leaves_one_connection_usable_and_counted(
    nursery: trio.Nursery,
) -> None:
    server = await start_server(
        nursery, router=default_router().replace(FailingPing), max_runs_per_connection=1
    )
    async with open_chat_client(server, user_id="u1") as client:
        await expect_error(client, "{", "FORMAT_ERROR")
        await assert_alive(client, "1")
        await expect_error(client, {"type": "nope"}, "UNKNOWN_TYPE")
        await assert_alive(client, "2")
        await expect_error(
            client,
            {"type": "start_agent", "payload": {"user_request": "x", "agent_name": "nope"}},
            "AGENT_NOT_FOUND",
        )
        await assert_alive(client, "3")
        await expect_error(
            client, {"type": "stop_agent", "payload": {"run_id": "x"}}, "RUN_NOT_FOUND"
        )
        await assert_alive(client, "4")
        run_id = await start_hanging_run(client)
        await expect_error(client, {"type": "chat", "payload": {"text": "x"}}, "TOO_MANY_RUNS")
        await assert_alive(client, "5")
        await expect_error(
            client, {"type": "ping", "message_id": "boom"}, "INTERNAL_ERROR", message_id="boom"
        )
        await assert_alive(client, "6")
        server.begin_drain()
        await expect_error(client, {"type": "chat", "payload": {"text": "x"}}, "SHUTTING_DOWN")
        await assert_alive(client, "7")

        counted = server.statistics().protocol_errors_total
        # RATE_LIMITED has its own tests (test_limits); so have the codes of the
        # v1.1 messages (threads, resume, subscriptions, the store).
        reachable = [
            "FORMAT_ERROR", "UNKNOWN_TYPE", "AGENT_NOT_FOUND", "RUN_NOT_FOUND",
            "TOO_MANY_RUNS", "INTERNAL_ERROR", "SHUTTING_DOWN",
        ]  # fmt: skip
        assert set(counted) == set(ERROR_CODES)
        assert {code: counted[code] for code in reachable} == dict.fromkeys(reachable, 1)
        assert_error_counters(server, client)

        await client.stop(run_id)
        assert (await client.collect(run_id)).status == "cancelled"
        code, _ = await client.wait_closed()
    assert code == 1001


# -- run ids ------------------------------------------------------------------------


async def test_duplicate_running_run_id_is_format_error_and_reusable_after_the_run(
    nursery: trio.Nursery,
) -> None:
    server = await start_server(nursery)
    async with open_chat_client(server, user_id="u1") as client:
        run_id = await start_hanging_run(client, "dup-1")
        frame = {
            "type": "start_agent",
            "payload": {"user_request": "again", "run_id": "dup-1"},
            "message_id": "m-dup",
        }
        reply = await expect_error(client, frame, "FORMAT_ERROR", message_id="m-dup")
        assert reply["details"]["run_id"] == "dup-1"
        assert len(client.events(run_id)) == 1  # the running run got no second first event
        await assert_alive(client, "after-dup")

        await client.stop(run_id)
        first = await client.collect(run_id)
        assert first.status == "cancelled"

        # Ended: the id is free again, and the new run numbers its events from 1
        # (collect checks the new run alone against the invariants).
        await client.start("reuse the id", run_id="dup-1")
        second = await client.collect(run_id)
        assert second.events[0]["data"]["user_request"] == "reuse the id"
        assert second.status == "completed"
        assert client.events(run_id) == [*first.events, *second.events]
        assert_error_counters(server, client)
        assert server.statistics().protocol_errors_total["FORMAT_ERROR"] == 1
    await assert_recovered(server)


# -- close codes ---------------------------------------------------------------------


def frame_of_utf8_size(size: int, filler: str) -> str:
    """A ping frame of exactly ``size`` UTF-8 bytes, padded mostly with ``filler``."""
    head, tail = '{"type":"ping","message_id":"big","pad":"', '"}'
    room = size - len((head + tail).encode())
    width = len(filler.encode())
    text = head + filler * (room // width) + "a" * (room % width) + tail
    assert len(text.encode()) == size
    return text


async def test_binary_frame_closes_with_1003(server: ChatServer) -> None:
    async with open_chat_client(server, user_id="u1") as client:
        await client.send(b'{"type": "ping"}')
        code, _ = await client.wait_closed()
    assert code == 1003
    await assert_recovered(server)


@pytest.mark.parametrize("filler", ["a", "é", "€", "😀"])
async def test_message_of_exactly_max_message_size_bytes_is_accepted(
    server: ChatServer, filler: str
) -> None:
    async with open_chat_client(server, user_id="u1") as client:
        assert client.established["data"]["config"]["max_message_size"] == LIMIT
        await client.send(frame_of_utf8_size(LIMIT, filler))
        reply = await next_reply(client)
        assert reply["type"] == "pong"
        assert reply["message_id"] == "big"
        await assert_alive(client, "after-big")
    await assert_recovered(server)


@pytest.mark.parametrize("filler", ["a", "é", "€", "😀"])
async def test_message_one_byte_over_max_message_size_closes_with_1009(
    server: ChatServer, filler: str
) -> None:
    async with open_chat_client(server, user_id="u1") as client:
        await client.send(frame_of_utf8_size(LIMIT + 1, filler))
        code, _ = await client.wait_closed()
        assert not [f for f in client.frames if f.get("type") == "pong"]
    assert code == 1009
    await assert_recovered(server)


async def test_message_under_the_limit_in_characters_but_over_it_in_bytes_closes_with_1009(
    server: ChatServer,
) -> None:
    text = '{"type": "ping", "pad": "' + "é" * 40000 + '"}'
    assert len(text) < LIMIT < len(text.encode())
    async with open_chat_client(server, user_id="u1") as client:
        await client.send(text)
        code, _ = await client.wait_closed()
    assert code == 1009
    await assert_recovered(server)


async def test_large_run_request_within_the_limit_starts_a_run(server: ChatServer) -> None:
    request = "cost " * ((LIMIT - 200) // 5)
    async with open_chat_client(server, user_id="u1") as client:
        run = await client.run(request)
    assert run.status == "completed"
    await assert_recovered(server)


class CrashingForUser(PingHandler):
    """Handler whose construction fails for user "crash": a bug in connection machinery."""

    def __init__(self, context: HandlerContext) -> None:
        if context.user_id == "crash":
            raise RuntimeError("cannot build handlers for this connection")
        super().__init__(context)


async def test_connection_machinery_crash_closes_with_1011_and_spares_others(
    nursery: trio.Nursery,
) -> None:
    server = await start_server(nursery, router=default_router().replace(CrashingForUser))
    async with open_chat_client(server, user_id="bystander") as bystander:
        run_id = await start_hanging_run(bystander)
        # Our own stream, closed here: trio-websocket's client does not close its
        # socket after a close handshake that the server started.
        with trio.fail_after(WAIT):
            stream = await trio.open_tcp_stream(server.host, server.port)
            try:
                async with trio.open_nursery() as nursery:
                    ws = await wrap_client_stream(nursery, stream, server.host, "/ws?user_id=crash")
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.get_message()
                    nursery.cancel_scope.cancel()
            finally:
                await trio.aclose_forcefully(stream)
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1011

        await assert_alive(bystander, "still-here")
        assert bystander.events(run_id)[-1]["final"] is False
        run = await bystander.run("are you still there?")
        assert run.status == "completed"
        await bystander.stop(run_id)
        assert (await bystander.collect(run_id)).status == "cancelled"
        with trio.fail_after(WAIT):
            await trio.testing.wait_all_tasks_blocked()
        stats = server.statistics()
        assert stats.connections_total == 2
        assert stats.gauges == (1, len(default_router()), 0, 0)
    await assert_recovered(server)


async def handshake_status(server: ChatServer, target: str) -> int:
    """The HTTP status of a handshake for ``target`` (101 if it was accepted).

    The TCP stream is ours and closed here: trio-websocket's own client
    leaks the socket when the server rejects the handshake.
    """
    statuses: list[int] = []
    with trio.fail_after(WAIT):
        stream = await trio.open_tcp_stream(server.host, server.port)
        try:
            try:
                async with trio.open_nursery() as nursery:
                    ws = await wrap_client_stream(nursery, stream, server.host, target)
                    statuses.append(101)
                    await ws.aclose()
                    nursery.cancel_scope.cancel()
            except* ConnectionRejected as group:
                for exc in group.exceptions:
                    assert isinstance(exc, ConnectionRejected)
                    statuses.append(exc.status_code)
        finally:
            await trio.aclose_forcefully(stream)
    (status,) = statuses
    return status


@pytest.mark.parametrize("path", ["/other", "/ws/", "/", "/WS", "/other?user_id=u1"])
async def test_handshake_to_another_path_is_rejected_with_404(
    server: ChatServer, path: str
) -> None:
    assert await handshake_status(server, path) == 404
    await assert_recovered(server)
    assert server.statistics().connections_total == 1  # only the fresh client


@pytest.mark.parametrize("user_id", ["bad%20id", "a/b", "x" * 129, "%C3%A9", "ok%0A"])
async def test_handshake_with_a_malformed_user_id_is_rejected_with_400(
    server: ChatServer, user_id: str
) -> None:
    assert await handshake_status(server, f"/ws?user_id={user_id}") == 400
    await assert_recovered(server)
    assert server.statistics().connections_total == 1  # only the fresh client


async def test_handshake_with_a_valid_user_id_and_other_query_keys_is_accepted(
    server: ChatServer,
) -> None:
    assert await handshake_status(server, "/ws?foo=bar&user_id=a.B_9:x-1") == 101
    await assert_recovered(server)


async def test_a_query_string_and_an_empty_user_id_are_accepted(server: ChatServer) -> None:
    async with open_chat_client(server, query="user_id=&foo=bar") as client:
        assert client.user_id.startswith("anon-")
        await assert_alive(client, "anon")
    await assert_recovered(server)
