"""Session resume (--resume-grace): a session outlives its socket and is taken over.

Over the in-memory transport: a peer that vanishes (``drop()``, no close frame)
leaves its session lingering with its runs; a new connection with the resume
token takes it over (same connection id, ``resumed: true``, a new token), and
``resume_run`` delivers exactly what was missed. Virtual time throughout.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Mapping
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from agents import AgentClassRegistry, BaseAgent
from server import ChatServer
from server.testing import ChatClient, open_memory_client, start_test_server
from server.transport import MemoryPeer

WAIT = 100.0
GRACE = 30.0
_GATES: list[trio.Event] = []


class Paced(BaseAgent):
    """Thinks five times, waiting for ``_GATES[0]`` after the second thought."""

    name = "paced"
    top_level = True

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        for step in range(5):
            await self.think(f"step {step}")
            if step == 1:
                await _GATES[0].wait()
        return {"steps": 5}


def paced_registry() -> AgentClassRegistry:
    registry = AgentClassRegistry()
    registry.register(Paced)
    return registry


async def start(nursery: trio.Nursery, grace: float = GRACE) -> ChatServer:
    _GATES[:] = [trio.Event()]
    return await start_test_server(
        nursery, registry=paced_registry(), resume_grace=grace, admin_port=None
    )


def peer_of(client: ChatClient) -> MemoryPeer:
    assert isinstance(client.ws, MemoryPeer)
    return client.ws


async def test_without_a_grace_nothing_is_offered_and_a_drop_cancels_the_run(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start(nursery, grace=0)
    async with open_memory_client(server, user_id="u", receive_timeout=WAIT) as client:
        data = client.established["data"]
        assert "session_resume" not in data["features"]
        assert "resume_token" not in data
        assert "resumed" not in data
        run_id = await client.start("go", agent_name="paced")
        await client.wait_event(run_id, "agent_thinking")
        peer_of(client).drop()
    await server.wait_idle()
    stats = server.statistics()
    assert stats.runs_total["cancelled"] == 1
    assert stats.sessions_lingering == 0
    info = await server.history.store.get_run("u", run_id)
    assert info is not None
    assert (info.status, info.error_code) == ("cancelled", "DISCONNECTED")


async def test_a_dropped_session_lingers_and_its_taker_gets_exactly_what_it_missed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start(nursery)
    async with open_memory_client(server, user_id="u", receive_timeout=WAIT) as first:
        data = first.established["data"]
        assert "session_resume" in data["features"]
        assert data["resumed"] is False
        token = data["resume_token"]
        assert len(token) >= 32
        run_id = await first.start("go", agent_name="paced")
        await first.wait_event(run_id, "agent_thinking")
        seen = first.events(run_id)
        peer_of(first).drop()
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().sessions_lingering == 1
        _GATES[0].set()  # the run goes on while nobody is connected
        await trio.sleep(1)
    assert server.statistics().runs_active == 0  # it finished, with no socket attached
    async with open_memory_client(
        server, user_id="u", resume_token=token, receive_timeout=WAIT
    ) as second:
        data = second.established["data"]
        assert data["resumed"] is True
        assert data["connection_id"] == first.connection_id
        assert data["resume_token"] != token
        assert server.statistics().sessions_lingering == 0
        # Nothing of the run until it is asked for.
        await second.send({"type": "ping", "message_id": "p"})
        assert (await second.receive_frame("pong"))["message_id"] == "p"
        assert second.events(run_id) == []
        after = seen[-1]["seq"]
        resumed = await second.resume(run_id, after_seq=after)
        assert resumed["type"] == "run_resumed"
        assert resumed["data"]["after_seq"] == after
        rest = await second.collect(run_id)
    combined = [*seen, *rest.events]
    assert [e["seq"] for e in combined] == list(range(1, len(combined) + 1))
    assert combined[-1]["final"] is True
    assert combined[-1]["data"]["status"] == "completed"
    assert all(e.get("replay") is True for e in rest.events)  # all from history


async def test_a_taken_over_session_follows_a_run_still_going_live(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start(nursery)
    async with open_memory_client(server, user_id="u", receive_timeout=WAIT) as first:
        token = first.established["data"]["resume_token"]
        run_id = await first.start("go", agent_name="paced")
        await first.wait_event(run_id, "agent_thinking")
        seen = first.events(run_id)
        peer_of(first).drop()
    async with open_memory_client(
        server, user_id="u", resume_token=token, receive_timeout=WAIT
    ) as second:
        assert second.established["data"]["resumed"] is True
        resumed = await second.resume(run_id, after_seq=seen[-1]["seq"])
        assert resumed["data"]["live"] is True
        _GATES[0].set()
        rest = await second.collect(run_id)
        # A second resume_run of a run it already receives is a FORMAT_ERROR.
    combined = [*seen, *rest.events]
    assert [e["seq"] for e in combined] == list(range(1, len(combined) + 1))
    assert combined[-1]["data"]["status"] == "completed"
    assert server.statistics().runs_total["completed"] == 1


@pytest.mark.timeout(30)
async def test_a_run_followed_before_the_drop_waits_for_resume_run_after_the_take_over(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A session that followed another connection's run stops following it when
    its socket goes: the new socket gets none of that run's events until it
    sends resume_run (and that is not refused as already receiving it)."""
    server = await start(nursery)
    async with (
        open_memory_client(server, user_id="u", receive_timeout=WAIT) as owner,
        open_memory_client(server, user_id="u", receive_timeout=WAIT) as tab,
    ):
        run_id = await owner.start("go", agent_name="paced")
        await owner.wait_event(run_id, "agent_thinking")
        await tab.resume(run_id, after_seq=0)
        await tab.wait_event(run_id, "agent_thinking")
        seen = tab.events(run_id)
        token = tab.established["data"]["resume_token"]
        peer_of(tab).drop()  # no event of the run while the session lingers
        await trio.testing.wait_all_tasks_blocked()
        async with open_memory_client(
            server, user_id="u", resume_token=token, receive_timeout=WAIT
        ) as second:
            assert second.established["data"]["resumed"] is True
            _GATES[0].set()  # the run goes on
            await owner.collect(run_id)
            await second.send({"type": "ping", "message_id": "p"})
            assert (await second.receive_frame("pong"))["message_id"] == "p"
            assert second.events(run_id) == []  # not without resume_run
            resumed = await second.resume(run_id, after_seq=seen[-1]["seq"])
            assert resumed["type"] == "run_resumed"
            rest = await second.collect(run_id)
    combined = [*seen, *rest.events]
    assert [e["seq"] for e in combined] == list(range(1, len(combined) + 1))
    assert combined[-1]["data"]["status"] == "completed"


async def test_the_grace_ending_cancels_the_runs_as_disconnected_and_frees_the_session(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start(nursery)
    refs: list[weakref.ref[Any]] = []
    async with open_memory_client(server, user_id="u", receive_timeout=WAIT) as first:
        token = first.established["data"]["resume_token"]
        run_id = await first.start("go", agent_name="paced")
        await first.wait_event(run_id, "agent_thinking")
        (conn,) = server._connections
        refs.append(weakref.ref(conn))
        del conn
        lost_at = trio.current_time()
        peer_of(first).drop()
    await server.wait_idle()
    assert trio.current_time() - lost_at == pytest.approx(GRACE, abs=0.01)
    stats = server.statistics()
    assert stats.sessions_lingering == 0
    assert stats.gauges == (0, 0, 0, 0)
    assert stats.runs_total["cancelled"] == 1
    info = await server.history.store.get_run("u", run_id)
    assert info is not None
    assert (info.status, info.error_code) == ("cancelled", "DISCONNECTED")
    gc.collect()
    assert refs[0]() is None
    # The token is spent: a late take-over is an ordinary new connection.
    async with open_memory_client(server, user_id="u", resume_token=token) as late:
        assert late.established["data"]["resumed"] is False
        assert late.connection_id != first.connection_id


async def test_a_token_of_another_user_or_a_normal_close_gives_no_take_over(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start(nursery)
    async with open_memory_client(server, user_id="u", receive_timeout=WAIT) as first:
        token = first.established["data"]["resume_token"]
        peer_of(first).drop()
    async with open_memory_client(server, user_id="intruder", resume_token=token) as other:
        assert other.established["data"]["resumed"] is False
        assert other.connection_id != first.connection_id
    assert server.statistics().sessions_lingering == 1  # still waiting for its owner
    # A client that closes with 1000 ends its session at once.
    async with open_memory_client(server, user_id="v") as polite:
        pass
    assert polite.established["data"]["resumed"] is False
    await trio.testing.wait_all_tasks_blocked()
    assert len(server._connections) == 1  # the lingering one only
    assert server.statistics().sessions_lingering == 1


async def test_a_client_closing_with_1001_is_resumable(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start(nursery)
    async with open_memory_client(server, user_id="u", receive_timeout=WAIT) as first:
        token = first.established["data"]["resume_token"]
        await peer_of(first).aclose(1001, "going away")
    async with open_memory_client(server, user_id="u", resume_token=token) as second:
        assert second.established["data"]["resumed"] is True
        assert second.connection_id == first.connection_id


async def test_a_take_over_of_a_session_whose_old_socket_seems_alive_replaces_that_socket(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # After a network blip the server may not have noticed the old socket is dead
    # when the client comes back: the token proves it is the same client.
    server = await start(nursery)
    async with open_memory_client(server, user_id="u", receive_timeout=WAIT) as first:
        token = first.established["data"]["resume_token"]
        run_id = await first.start("go", agent_name="paced")
        await first.wait_event(run_id, "agent_thinking")
        async with open_memory_client(
            server, user_id="u", resume_token=token, receive_timeout=WAIT
        ) as second:
            assert second.established["data"]["resumed"] is True
            assert second.connection_id == first.connection_id
            code, _ = await first.wait_closed()  # the old socket is let go
            assert code == 1000
            _GATES[0].set()
            await second.resume(run_id, after_seq=first.events(run_id)[-1]["seq"])
            rest = await second.collect(run_id)
    assert rest.status == "completed"
    await server.wait_idle()
    assert server.statistics().gauges == (0, 0, 0, 0)
    assert server.statistics().runs_total == {
        "completed": 1, "failed": 0, "cancelled": 0, "timeout": 0,
    }  # fmt: skip
