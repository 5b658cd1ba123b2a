"""A socket lost while a run's final event waits for its commit (found by benchmarks.churn).

Two windows that only a store which takes time to commit opens (SQLite,
PostgreSQL), held open here with a gated in-memory store:

- the connection's socket is gone but its runs are still ending: it must still
  count in ``chat_connections_active``, so that handlers == 6 x (connections +
  lingering sessions) holds in every scrape;
- the session is taken over (``--resume-grace``) while a retired run's final
  waits for the store: the new socket's ``resume_run`` must be accepted (the
  old socket no longer receives the run) and deliver exactly what it missed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import trio
import trio.testing
from _v11 import GatedMemoryStore, settle, start_server_on

from agents import AgentClassRegistry, BaseAgent
from server import ChatServer, default_router
from server.testing import ChatClient, open_memory_client
from server.transport import MemoryPeer

pytestmark = pytest.mark.timeout(30)

WAIT = 10.0
HANDLERS = len(default_router())
_GATES: list[trio.Event] = []


class Paced(BaseAgent):
    """Thinks three times, waiting for ``_GATES[0]`` after the first thought."""

    name = "paced"
    top_level = True

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        for step in range(3):
            await self.think(f"step {step}")
            if step == 0:
                await _GATES[0].wait()
        return {"steps": 3}


async def start(nursery: trio.Nursery, store: GatedMemoryStore, grace: float) -> ChatServer:
    _GATES[:] = [trio.Event()]
    registry = AgentClassRegistry()
    registry.register(Paced)
    return await start_server_on(
        nursery,
        store,
        registry=registry,
        resume_grace=grace,
        admin_port=None,
        heartbeat_interval=0,
    )


def peer_of(client: ChatClient) -> MemoryPeer:
    assert isinstance(client.ws, MemoryPeer)
    return client.ws


async def finish_behind_a_held_store(store: GatedMemoryStore) -> None:
    """Let the run go on to its end; its final then waits for the (held) store."""
    await settle(store)  # what was emitted so far is committed
    store.hold()
    _GATES[0].set()
    await settle(store)


@pytest.mark.parametrize("leave", ["close", "drop"])
async def test_a_connection_still_ending_its_runs_counts_as_a_connection(
    nursery: trio.Nursery, leave: str
) -> None:
    store = GatedMemoryStore(node_id="test")
    server = await start(nursery, store, grace=0)
    async with open_memory_client(server, user_id="u", receive_timeout=WAIT) as client:
        run_id = await client.start("go", agent_name="paced")
        await client.wait_event(run_id, "agent_thinking")
        await finish_behind_a_held_store(store)
        if leave == "drop":
            peer_of(client).drop()
        else:
            await peer_of(client).aclose()
    await settle(store)
    # The socket is gone; the run's final waits for the store, so the connection
    # has not ended: it is still a connection, with its handlers.
    connections, handlers, _, _ = server.statistics().gauges
    assert (connections, handlers) == (1, HANDLERS)
    assert server.statistics().sessions_lingering == 0
    store.release()
    await server.wait_idle()
    assert server.statistics().gauges == (0, 0, 0, 0)


async def test_a_session_taken_over_while_a_final_waits_for_its_commit_resumes_that_run(
    nursery: trio.Nursery,
) -> None:
    store = GatedMemoryStore(node_id="test")
    server = await start(nursery, store, grace=30)
    async with open_memory_client(server, user_id="u", receive_timeout=WAIT) as first:
        token = first.established["data"]["resume_token"]
        run_id = await first.start("go", agent_name="paced")
        await first.wait_event(run_id, "agent_thinking")
        await finish_behind_a_held_store(store)
        seen = first.events(run_id)
        peer_of(first).drop()
    await settle(store)
    assert server.statistics().sessions_lingering == 1
    connections, handlers, _, _ = server.statistics().gauges
    assert (connections, handlers) == (0, HANDLERS)  # lingering, not a connection
    async with open_memory_client(
        server, user_id="u", resume_token=token, receive_timeout=WAIT
    ) as second:
        assert second.established["data"]["resumed"] is True
        # The run has ended (retired) but its final is not committed: the new
        # socket does not receive it until it asks, and asking is accepted.
        resumed = await second.resume(run_id, after_seq=seen[-1]["seq"])
        assert resumed["type"] == "run_resumed"
        store.release()
        rest = await second.collect(run_id)
    combined = [*seen, *rest.events]
    assert [e["seq"] for e in combined] == list(range(1, len(combined) + 1))
    assert combined[-1]["final"] is True
    assert combined[-1]["data"]["status"] == "completed"
    await server.wait_idle()
    assert server.statistics().gauges == (0, 0, 0, 0)
    assert server.statistics().sessions_lingering == 0


async def test_a_session_whose_grace_ran_out_lingers_until_its_runs_have_ended(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    """The grace is over but a run's final still waits for the store: the session
    is still there, with its handlers; it counts as lingering until it has ended."""
    store = GatedMemoryStore(node_id="test")
    server = await start(nursery, store, grace=2)
    async with open_memory_client(server, user_id="u", receive_timeout=WAIT) as client:
        run_id = await client.start("go", agent_name="paced")
        await client.wait_event(run_id, "agent_thinking")
        await finish_behind_a_held_store(store)
        peer_of(client).drop()
    await settle(store)
    assert server.statistics().sessions_lingering == 1
    mock_clock.jump(2.5)  # past the grace, not yet past the final's wait for the store
    await settle(store)
    connections, handlers, _, _ = server.statistics().gauges
    assert (connections, handlers, server.statistics().sessions_lingering) == (0, HANDLERS, 1)
    store.release()
    await server.wait_idle()
    assert server.statistics().gauges == (0, 0, 0, 0)
    assert server.statistics().sessions_lingering == 0
