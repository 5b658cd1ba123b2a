"""Regressions for concurrency edge cases found in review: each failed before its fix."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request

from agents import AgentClassRegistry, AgentRuntime, BaseAgent
from agents.builtin import default_registry
from server import ChatServer
from server._handshake import Identity
from server.protocol import ConnectionClosed
from server.runs import Run
from server.testing import open_chat_client, start_test_server
from server.transport import memory_transport_pair


async def raw_peer(server: ChatServer) -> tuple[trio.SocketStream, WSConnection]:
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host="127.0.0.1", target="/ws")))
    while True:
        ws.receive_data(await stream.receive_some(65536))
        if any(isinstance(e, AcceptConnection) for e in ws.events()):
            return stream, ws


async def test_a_drain_while_a_connection_is_closing_reaches_every_other_client(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_test_server(nursery, close_timeout=5)
    stream, ws = await raw_peer(server)
    try:
        async with open_chat_client(server) as first, open_chat_client(server) as second:
            # A binary frame: the server sends close 1003 and waits (up to
            # close_timeout) for a close frame this peer never sends.
            await stream.send_all(ws.send(BytesMessage(data=b"\x00")))
            closing = False
            while not closing:
                ws.receive_data(await stream.receive_some(65536))
                closing = any(isinstance(e, CloseConnection) for e in ws.events())
            server.begin_drain()  # used to raise "Nursery is closed to new arrivals"
            assert (await first.wait_closed())[0] == 1001
            assert (await second.wait_closed())[0] == 1001
    finally:
        await trio.aclose_forcefully(stream)
    await server.wait_stopped()
    assert server.statistics().gauges == (0, 0, 0, 0)


class Slow(BaseAgent):
    name = "slow"

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


class FanOut(BaseAgent):
    """Runs two steps at once in its own nursery, as a plug-in agent might."""

    name = "fanout"
    top_level = True

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.run_agent, "slow")
            nursery.start_soon(self.run_agent, "slow")
        return {}


async def test_an_agent_with_its_own_nursery_still_closes_with_a_final_event_when_stopped(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    registry = default_registry()
    registry.register(Slow)
    registry.register(FanOut)
    server = await start_test_server(nursery, registry=registry, agent_timeout=1000)
    async with open_chat_client(server, receive_timeout=100) as client:
        run_id = await client.start("go", agent_name="fanout")
        started = 0
        while started < 2:
            event = await client.receive()
            started += event.get("type") == "agent_started" and event["agent_name"] == "slow"
        await client.stop(run_id)
        run = await client.collect(run_id)  # checks invariants 1-7
    assert run.final["agent_name"] == "fanout"
    assert run.final["data"]["error"]["code"] == "CANCELLED"


class _StubConnection:
    user_id = "u"
    connection_id = "c"

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.block = True

    async def send_event(self, frame: bytes) -> None:
        if self.block:
            await trio.sleep_forever()  # a full queue that never drains
        self.frames.append(json.loads(frame))


async def test_an_event_cancelled_while_waiting_for_room_leaves_no_gap_in_seq() -> None:
    connection = _StubConnection()
    run = Run(
        connection,
        AgentRuntime(AgentClassRegistry()),
        run_id="r",
        thread_id="t",
        agent_name="x",
        request="hi",
        message_id=None,
        on_final=lambda run, status: None,
    )
    with trio.move_on_after(1):  # stop_agent while the queue is full
        await run.emit("x", "agent_started", {"status": "started"})
    connection.block = False
    await run.emit("x", "agent_started", {"status": "started"})
    await run.emit("x", "agent_thinking", {"reasoning": "r", "step_number": 1})
    assert [f["seq"] for f in connection.frames] == [1, 2]


class TupleKeys(BaseAgent):
    name = "tuple_keys"
    top_level = True

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {"cost": {("gpt-4o", "eu"): 1.5}}


async def test_agent_data_with_non_string_keys_is_sent_not_a_crash(nursery: trio.Nursery) -> None:
    registry = default_registry()
    registry.register(TupleKeys)
    server = await start_test_server(nursery, registry=registry)
    async with open_chat_client(server) as client:
        run = await client.run("hi", agent_name="tuple_keys")
        assert run.status == "completed"
        assert run.result == {"cost": {"('gpt-4o', 'eu')": 1.5}}
        await client.send({"type": "ping", "message_id": "still-here"})
        assert (await client.receive_frame("pong"))["message_id"] == "still-here"


async def test_several_wait_idle_callers_all_wake(nursery: trio.Nursery) -> None:
    server = await start_test_server(nursery)
    woke: list[int] = []

    async def waiter(i: int) -> None:
        await server.wait_idle()
        woke.append(i)

    with trio.fail_after(10):
        async with trio.open_nursery() as waiters, open_chat_client(server):
            for i in range(3):
                waiters.start_soon(waiter, i)
            await trio.testing.wait_all_tasks_blocked()
            assert woke == []
            # The client has closed: every waiter must return, not just the last.
    assert sorted(woke) == [0, 1, 2]


async def test_a_connection_cancelled_from_outside_still_sends_its_close_frame(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # A hard stop (the server's nursery cancelled) cancels the task serving a
    # connection: the close handshake runs shielded all the same, so the peer
    # gets a close frame (1000) instead of a dropped socket (1006).
    server = await start_test_server(nursery, admin_port=None)
    transport, peer = memory_transport_pair()
    serving = trio.CancelScope()

    async def serve() -> None:
        with serving:
            await server.serve_transport(transport, Identity("u1"))

    async with trio.open_nursery() as connections:
        connections.start_soon(serve)
        established = json.loads(await peer.get_message())
        assert established["data"]["event"] == "connection_established"
        serving.cancel()
        with pytest.raises(ConnectionClosed) as closed:
            await peer.get_message()
    assert closed.value.code == 1000
    assert transport.close_code == 1000
    assert trio.current_time() == 0  # answered at once, not dropped at --close-timeout
