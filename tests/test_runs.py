"""How runs end: stop_agent, time limits, disconnects, drains (virtual time, real sockets)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
import trio
import trio.testing

from agents import AgentClassRegistry, BaseAgent, FaultSpec
from agents.builtin import ReportingAgent, SupervisorAgent, TriageAgent
from server import default_router
from server.testing import open_chat_client, open_memory_client, start_test_server


def faults(*specs: str) -> tuple[FaultSpec, ...]:
    return tuple(FaultSpec.parse(s) for s in specs)


async def test_stop_agent_cancels_the_run_inner_agents_first(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_test_server(nursery, faults=faults("triage:hang:1"), agent_timeout=60)
    async with open_chat_client(server, user_id="u1") as client:
        run_id = await client.start("hello", message_id="m-1")
        await client.wait_event(run_id, "agent_started", agent_name="triage")
        stopped_at = trio.current_time()
        await client.stop(run_id)
        run = await client.collect(run_id)
        assert trio.current_time() == stopped_at  # no time limit was involved
        closing = [(e["agent_name"], e["type"], e["data"]["status"]) for e in run.events[-2:]]
        assert closing == [
            ("triage", "agent_error", "cancelled"),
            ("supervisor", "agent_error", "cancelled"),
        ]
        assert run.final["data"]["error"]["code"] == "CANCELLED"
        assert run.events[0]["data"]["message_id"] == "m-1"
        # Stopping it again: the run is over, so there is nothing to stop.
        await client.stop(run_id)
        error = await client.receive_frame("error_message")
        assert error["error_code"] == "RUN_NOT_FOUND"
    await server.wait_idle()
    assert server.statistics().runs_total["cancelled"] == 1


async def test_stop_right_after_start_still_ends_the_run_with_a_final_event(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_test_server(nursery, faults=faults("triage:hang:1"), agent_timeout=60)
    async with open_chat_client(server) as client:
        run_id = await client.start("hello", run_id="early")
        await client.stop("early")  # may reach the server before the run's first event
        run = await client.collect(run_id)
    assert run.status == "cancelled"
    assert run.events[0]["type"] == "agent_started"
    assert run.final["data"]["error"]["code"] == "CANCELLED"


async def test_agent_time_limit_gives_timeout_and_the_supervisor_degrades(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_test_server(nursery, faults=faults("triage:hang:1"), agent_timeout=3)
    async with open_chat_client(server) as client:
        run_id = await client.start("how much does gpt-4o cost?")
        started = await client.wait_event(run_id, "agent_started", agent_name="triage")
        t0 = trio.current_time()
        run = await client.collect(run_id)
    error = run.closing("triage")
    assert error["type"] == "agent_error"
    assert error["data"]["status"] == "timeout"
    assert error["data"]["error"]["code"] == "TIMEOUT"
    assert error["data"]["execution_time_ms"] >= 0
    assert trio.current_time() - t0 == pytest.approx(3, abs=0.01)
    assert started["seq"] < error["seq"]
    assert run.status == "completed"
    assert run.result is not None
    assert run.result["degraded"] is True


async def test_run_time_limit_ends_the_whole_run_with_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_test_server(
        nursery, faults=faults("reporting:hang:1"), agent_timeout=100, run_timeout=7
    )
    async with open_chat_client(server) as client:
        t0 = trio.current_time()
        run = await client.run("what should we monitor?")
        assert trio.current_time() - t0 == pytest.approx(7, abs=0.01)
    assert [(e["agent_name"], e["data"]["status"]) for e in run.events[-2:]] == [
        ("reporting", "timeout"),
        ("supervisor", "timeout"),
    ]
    assert run.final["data"]["error"]["code"] == "TIMEOUT"
    await server.wait_idle()
    assert server.statistics().runs_total["timeout"] == 1


async def test_required_step_failure_fails_the_run_with_the_same_status(
    nursery: trio.Nursery,
) -> None:
    server = await start_test_server(nursery, faults=faults("reporting:raise:1"))
    async with open_chat_client(server) as client:
        run = await client.run("hi")
    assert run.status == "failed"
    assert run.final["data"]["error"]["code"] == "AGENT_ERROR"
    assert run.closing("reporting")["data"]["status"] == "failed"


async def test_disconnect_mid_run_cancels_it_and_frees_its_agents(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    refs: list[weakref.ref[BaseAgent]] = []

    class Tracked(TriageAgent):
        async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            refs.append(weakref.ref(self))
            await trio.sleep_forever()
            raise AssertionError("unreachable")

    registry = AgentClassRegistry()
    for cls in (SupervisorAgent, Tracked, ReportingAgent):
        registry.register(cls)
    server = await start_test_server(nursery, registry=registry, agent_timeout=1000)
    async with open_chat_client(server) as client:
        run_id = await client.start("this will never finish")
        await client.wait_event(run_id, "agent_started", agent_name="triage")
        assert server.statistics().gauges == (1, len(default_router()), 2, 1)
    await server.wait_idle()
    gc.collect()
    assert server.statistics().gauges == (0, 0, 0, 0)
    assert server.statistics().runs_total["cancelled"] == 1
    assert len(refs) == 1
    assert refs[0]() is None


async def test_drain_lets_runs_finish_then_closes_with_1001(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_test_server(nursery, faults=faults("triage:slow:1"), drain_timeout=10)
    async with open_chat_client(server) as busy, open_chat_client(server) as idle:
        run_id = await busy.start("finish me")
        await busy.wait_event(run_id, "agent_started", agent_name="triage")
        server.begin_drain()
        assert await idle.wait_closed() == (1001, "server shutting down")
        run = await busy.collect(run_id)
        assert run.status == "completed"
        assert (await busy.wait_closed())[0] == 1001
    await server.wait_stopped()
    assert server.statistics().gauges == (0, 0, 0, 0)


async def test_a_connection_accepted_just_as_a_drain_begins_is_drained_too(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # Its handshake was admitted before the drain and it is served only after
    # begin_drain() went over the open connections: it must drain itself.
    server = await start_test_server(nursery, admin_port=None, drain_timeout=10)
    async with open_chat_client(server, user_id="early") as early:
        server.begin_drain()
        async with open_memory_client(server, user_id="late") as late:
            assert await late.wait_closed() == (1001, "server shutting down")
        assert await early.wait_closed() == (1001, "server shutting down")
    await server.wait_stopped()
    assert trio.current_time() == 0  # neither waited for the drain's deadline


UPGRADE = (
    b"GET /ws?user_id=late HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


async def test_a_handshake_that_completes_during_a_drain_is_refused_with_503(
    nursery: trio.Nursery,
) -> None:
    server = await start_test_server(nursery, admin_port=None)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            # The server has accepted the socket and waits for the request.
            await trio.testing.wait_all_tasks_blocked()
            server.begin_drain()
            await stream.send_all(UPGRADE)
            response = b""
            while chunk := await stream.receive_some(65536):
                response += chunk
        await server.wait_stopped()
    assert response.startswith(b"HTTP/1.1 503 "), response
    assert response.endswith(b"\r\n\r\nserver is shutting down")
    assert server.statistics().connections_total == 0


async def test_drain_cancels_runs_past_the_grace_period_with_shutting_down(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_test_server(
        nursery, faults=faults("triage:hang:1"), agent_timeout=100, drain_timeout=4
    )
    async with open_chat_client(server) as client:
        run_id = await client.start("hang")
        await client.wait_event(run_id, "agent_started", agent_name="triage")
        t0 = trio.current_time()
        server.begin_drain()
        await client.send({"type": "chat", "payload": {"content": "one more?"}})
        refused = await client.receive_frame("error_message")
        assert refused["error_code"] == "SHUTTING_DOWN"
        run = await client.collect(run_id)
        assert trio.current_time() - t0 == pytest.approx(4, abs=0.01)
        assert run.status == "cancelled"
        assert run.final["data"]["error"]["code"] == "SHUTTING_DOWN"
        assert (await client.wait_closed())[0] == 1001
    await server.wait_stopped()


class _Noting(BaseAgent):
    """Notes a weak reference to its run's emitter (the connection's Run object)."""

    name = "noting"
    top_level = True
    runs: ClassVar[list[weakref.ref[Any]]] = []

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        _Noting.runs.append(weakref.ref(self.context.emitter))
        await self.think("noted")
        return {}


async def test_a_finished_run_is_freed_without_the_garbage_collector(
    nursery: trio.Nursery,
) -> None:
    # A reference cycle left by every run made the collector's passes long
    # enough to show in time-to-agent_started under load.
    registry = AgentClassRegistry()
    registry.register(_Noting)
    server = await start_test_server(nursery, registry=registry, admin_port=None)
    _Noting.runs.clear()
    gc.collect()
    gc.disable()
    try:
        async with open_chat_client(server, user_id="noting") as client:
            for _ in range(3):
                assert (await client.run("x", agent_name="noting")).status == "completed"
            await client.send({"type": "ping"})  # the run tasks have ended by the reply
            await client.receive_frame("pong")
            assert len(_Noting.runs) == 3
            assert [ref() for ref in _Noting.runs] == [None, None, None]
    finally:
        gc.enable()


_GATE: list[trio.Event] = []


class _Burst(BaseAgent):
    name = "burst"
    top_level = True

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        await _GATE[0].wait()
        for step in range(10):
            await self.think(f"step {step}")
        return {}


@pytest.mark.parametrize("queue", [1, 2])
async def test_a_run_that_ends_during_a_drain_sends_its_final_event_before_1001(
    queue: int,
) -> None:
    # The run's last events wait for room in a tiny queue while the drain
    # queues its close marker: the marker must not overtake them. (It did,
    # about one time in two, when a waiting producer could lose its room.)
    registry = AgentClassRegistry()
    registry.register(_Burst)
    for _ in range(20):
        _GATE[:] = [trio.Event()]
        async with trio.open_nursery() as nursery:
            server = await start_test_server(
                nursery, registry=registry, admin_port=None, outbound_queue=queue,
                heartbeat_interval=0, drain_timeout=30,
            )  # fmt: skip
            async with open_chat_client(server, user_id="drain") as client:
                run_id = await client.start("go", agent_name="burst")
                await client.wait_event(run_id, "agent_started")
                server.begin_drain()
                _GATE[0].set()
                code, _ = await client.wait_closed()
                events = client.events(run_id)
            nursery.cancel_scope.cancel()
        assert code == 1001
        assert events[-1]["final"] is True
        assert events[-1]["data"]["status"] == "completed"


class _Forever(BaseAgent):
    """Starts, thinks once, then waits until it is cancelled."""

    name = "forever"
    top_level = True

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        await self.think("waiting")
        await trio.sleep_forever()
        raise AssertionError("unreachable")


@pytest.mark.timeout(30)
async def test_a_run_cut_off_by_a_hard_stop_counts_as_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server's nursery is cancelled from outside (a hard stop) mid-run: the
    connection vanishes with no final event, and its run is counted cancelled,
    never completed, in runs_total."""
    registry = AgentClassRegistry()
    registry.register(_Forever)
    async with trio.open_nursery() as nursery:
        server = await start_test_server(
            nursery, registry=registry, admin_port=None, heartbeat_interval=0
        )
        async with open_memory_client(server, user_id="u") as client:
            run_id = await client.start("go", agent_name="forever")
            await client.wait_event(run_id, "agent_thinking")
            nursery.cancel_scope.cancel()
    stats = server.statistics()
    assert stats.runs_active == 0
    assert stats.runs_total == {"completed": 0, "failed": 0, "cancelled": 1, "timeout": 0}
