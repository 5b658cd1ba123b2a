"""The two failures this project exists to prevent, over real loopback WebSockets.

1. Agents reused across requests: one failure poisoned every later request.
2. One handler shared by all connections: events reached only the newest socket,
   and handlers piled up because nothing removed them on disconnect.
"""

from __future__ import annotations

import contextlib
import gc
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar

import trio

from agents import AgentClassRegistry, BaseAgent
from agents.builtin import TriageAgent, default_registry
from server import ChatServer, MessageHandler, default_router
from server.session._handlers import PingHandler
from server.testing import ChatClient, open_chat_client, start_test_server


class InstanceLog:
    """Weak references to every agent instance a test's registry created."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref[BaseAgent]] = []
        self.contexts: list[tuple[str, str, str]] = []

    def record(self, agent: BaseAgent) -> None:
        self.refs.append(weakref.ref(agent))
        ctx = agent.context
        self.contexts.append((agent.name, ctx.user_id, ctx.run_id))

    def alive(self) -> list[BaseAgent]:
        gc.collect()
        return [agent for ref in self.refs if (agent := ref()) is not None]


def recording_registry(
    log: InstanceLog, triage: type[BaseAgent] = TriageAgent
) -> AgentClassRegistry:
    """The default line-up (with ``triage``), each class wrapped so every instance is logged."""
    registry = AgentClassRegistry()
    for name, default in default_registry().items():
        base = triage if name == "triage" else default

        class Recorded(base):  # type: ignore[misc, valid-type]
            async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
                log.record(self)
                result: dict[str, Any] = await super().execute(inputs)
                return result

        Recorded.__name__ = f"Recorded{base.__name__}"
        registry.register(Recorded)
    return registry


class StatefulTriage(TriageAgent):
    """A triage agent that, like the old singleton, stays broken once it failed.

    If an instance were ever reused, every later request would hang here.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.broken = False

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if self.broken:
            await trio.sleep_forever()
        if "explode" in str(inputs.get("request")):
            self.broken = True
            raise RuntimeError("triage blew up")
        return await super().execute(inputs)


async def test_triage_failure_leaves_no_trace_for_later_requests(nursery: trio.Nursery) -> None:
    log = InstanceLog()
    server = await start_test_server(nursery, registry=recording_registry(log, StatefulTriage))
    async with (
        open_chat_client(server, user_id="alice") as alice,
        open_chat_client(server, user_id="bob") as bob,
    ):
        failed = await alice.run("please explode")
        triage_error = failed.closing("triage")
        assert triage_error["type"] == "agent_error"
        assert triage_error["data"]["status"] == "failed"
        assert triage_error["data"]["error"]["code"] == "AGENT_ERROR"
        assert "triage blew up" in triage_error["data"]["error"]["message"]
        # The supervisor degrades rather than failing the whole run.
        assert failed.status == "completed"
        assert failed.result is not None
        assert failed.result["degraded"] is True

        later = [
            await alice.run("What does GPT-4o cost per month?"),
            await bob.run("Our p95 latency is 900 ms, how do we fix it?"),
            await alice.run("Compare claude-3-haiku with gpt-4o-mini"),
        ]
    for run in later:
        assert run.status == "completed"
        assert run.closing("triage")["type"] == "agent_completed"
        assert run.result is not None
        assert run.result["degraded"] is False

    triages = [c for c in log.contexts if c[0] == "triage"]
    assert len(triages) == 4
    assert len({run_id for _, _, run_id in triages}) == 4  # one instance per run
    await server.wait_idle()
    assert log.alive() == []
    assert server.statistics().gauges == (0, 0, 0, 0)


async def test_concurrent_users_are_isolated(nursery: trio.Nursery) -> None:
    log = InstanceLog()
    server = await start_test_server(nursery, registry=recording_registry(log))
    transcripts: dict[str, list[Any]] = {}

    async def user(name: str) -> None:
        async with open_chat_client(server, user_id=name) as client:
            run_ids = [await client.start(f"{name} asks: cut cost of gpt-4o {i}") for i in range(3)]
            runs = [await client.collect(run_id) for run_id in run_ids]
            # ChatClient.receive fails on any event of a run this client did not
            # start (invariant 6); check the user and request on every event too.
            for run in runs:
                assert {e["user_id"] for e in run.events} == {name}
                assert run.events[0]["data"]["user_request"].startswith(f"{name} asks")
            transcripts[name] = runs

    with trio.fail_after(20):
        async with trio.open_nursery() as users:
            for i in range(8):
                users.start_soon(user, f"user{i}")

    assert sorted(transcripts) == [f"user{i}" for i in range(8)]
    all_run_ids = [run.run_id for runs in transcripts.values() for run in runs]
    assert len(set(all_run_ids)) == 24
    # Every agent instance served exactly one run of one user: one per agent_started.
    started = sum(len(run.agents()) for runs in transcripts.values() for run in runs)
    assert started >= 24 * 3
    assert len(log.refs) == started
    for name, user_id, run_id in log.contexts:
        assert any(run.run_id == run_id for run in transcripts[user_id]), (name, user_id)
    await server.wait_idle()
    assert log.alive() == []


class RecordingPing(PingHandler):
    instances: ClassVar[list[weakref.ref[MessageHandler]]] = []

    def __init__(self, connection: Any) -> None:
        super().__init__(connection)
        RecordingPing.instances.append(weakref.ref(self))


async def test_each_connection_gets_its_own_handlers_and_they_die_with_it(
    nursery: trio.Nursery,
) -> None:
    RecordingPing.instances = []
    router = default_router().replace(RecordingPing)
    server = await start_test_server(nursery, router=router)
    async with contextlib.AsyncExitStack() as stack:
        clients: list[ChatClient] = []
        for i in range(12):
            clients.append(
                await stack.enter_async_context(open_chat_client(server, user_id=f"u{i}"))
            )
        assert server.statistics().handlers_active == len(router) * 12
        for client in clients:
            await client.send({"type": "ping", "message_id": client.connection_id})
            pong = await client.receive_frame("pong")
            assert pong["message_id"] == client.connection_id
            assert pong["data"]["user_id"] == client.user_id
        handlers = [ref() for ref in RecordingPing.instances]
        assert len({id(h) for h in handlers}) == 12
        assert {h.context.connection_id for h in handlers if h} == {
            c.connection_id for c in clients
        }
        del handlers
    await server.wait_idle()
    gc.collect()
    assert server.statistics().handlers_active == 0
    assert [ref for ref in RecordingPing.instances if ref() is not None] == []


async def test_connect_disconnect_cycles_leave_no_handlers(server: ChatServer) -> None:
    for cycle in range(15):
        async with open_chat_client(server, user_id=f"cycler{cycle % 3}") as client:
            if cycle % 2:
                await client.run("What is our monthly spend on gpt-4o?")
            else:
                await client.start("leave before the answer")
        await server.wait_idle()
        assert server.statistics().gauges == (0, 0, 0, 0)
    stats = server.statistics()
    assert stats.connections_total == 15


async def test_agent_started_reaches_every_one_of_60_concurrent_clients(server: ChatServer) -> None:
    started: dict[str, dict[str, Any]] = {}
    all_connected = trio.Event()
    connected = 0

    async def client_task(i: int) -> None:
        nonlocal connected
        async with open_chat_client(server, user_id=f"fan{i}") as client:
            connected += 1
            if connected == 60:
                all_connected.set()
            await all_connected.wait()  # every socket is open before anyone asks
            run_id = await client.start(f"request {i}: reduce latency of llama-3 70b")
            started[client.user_id] = await client.wait_event(run_id, "agent_started")
            run = await client.collect(run_id)
            assert run.status == "completed"

    with trio.fail_after(30):
        async with trio.open_nursery() as clients:
            for i in range(60):
                clients.start_soon(client_task, i)
    assert len(started) == 60
    for user_id, event in started.items():
        assert event["user_id"] == user_id
        assert event["agent_name"] == "supervisor"
        assert event["seq"] == 1
    await server.wait_idle()
    assert server.statistics().runs_total["completed"] == 60
