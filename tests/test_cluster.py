"""Two servers sharing one store and one broker (issue 14): what crosses between them.

Two servers in one process, as two machines would be: the same PostgreSQL
store (a schema of this test's own) and the same Redis (a key prefix of its
own). A user has a connection on each; their runs, subscriptions, stops and
connection limit cross over. Real sockets and the real clock (the broker's
leases run on Redis's clock).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import trio
from _redis import new_prefix, redis_test_url
from _store import postgres_schema, start

from agents import AgentClassRegistry, BaseAgent
from server import ChatServer, ConnectionClosed
from server.runs import RemoteRun
from server.store import open_store
from server.testing import open_chat_client, start_test_server

WAIT = 20.0
_GATE: list[trio.Event] = []


class Paced(BaseAgent):
    """Thinks, waits for ``_GATE[0]``, thinks again: a run that is live when we want."""

    name = "paced"
    top_level = True

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        for step in range(6):
            await self.think(f"step {step}")
            if step == 2:
                await _GATE[0].wait()
        return {"steps": 6}


@pytest.fixture
def store_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture
async def pair(nursery: trio.Nursery, store_url: str) -> tuple[ChatServer, ChatServer]:
    """Two servers on one store and one broker."""
    broker_url = redis_test_url()
    prefix = new_prefix()
    _GATE[:] = [trio.Event()]
    servers = []
    for _ in range(2):
        registry = AgentClassRegistry()
        registry.register(Paced)
        servers.append(
            await start_test_server(
                nursery,
                registry=registry,
                store=store_url,
                broker=broker_url,
                broker_prefix=prefix,
                lease_seconds=2,
                max_connections_per_user=3,
                admin_port=None,
            )
        )
    return servers[0], servers[1]


async def test_a_run_on_one_server_is_resumed_whole_on_the_other(
    pair: tuple[ChatServer, ChatServer],
) -> None:
    a, b = pair
    with trio.fail_after(WAIT):
        async with (
            open_chat_client(a, user_id="u", receive_timeout=WAIT) as on_a,
            open_chat_client(b, user_id="u", receive_timeout=WAIT) as on_b,
        ):
            run_id = await on_a.start("go", agent_name="paced")
            seen = [await on_a.wait_event(run_id, "agent_thinking")]
            resumed = await on_b.resume(run_id, after_seq=0)
            assert resumed["data"]["live"] is True
            _GATE[0].set()
            whole = await on_b.collect(run_id)
            mine = await on_a.collect(run_id)
    assert whole.status == mine.status == "completed"
    assert [e["seq"] for e in whole.events] == [e["seq"] for e in mine.events]
    assert [e["type"] for e in whole.events] == [e["type"] for e in mine.events]
    assert seen[0]["seq"] <= len(whole.events)


async def test_a_subscriber_on_one_server_sees_a_run_started_on_the_other_live(
    pair: tuple[ChatServer, ChatServer],
) -> None:
    a, b = pair
    _GATE[0].set()
    with trio.fail_after(WAIT):
        async with (
            open_chat_client(a, user_id="u", receive_timeout=WAIT) as on_a,
            open_chat_client(b, user_id="u", receive_timeout=WAIT) as on_b,
        ):
            first = await on_a.run("first", agent_name="paced", thread_id="th-1")
            assert first.status == "completed"
            reply = await on_b.subscribe("th-1")
            assert reply["type"] == "thread_subscribed"
            run_id = await on_a.start("second", agent_name="paced", thread_id="th-1")
            mine = await on_a.collect(run_id)
            theirs = await on_b.collect(run_id)
    assert theirs.check(user_id="u").status == "completed"
    assert [e["seq"] for e in theirs.events] == [e["seq"] for e in mine.events]


async def test_stop_agent_on_one_server_stops_a_run_on_the_other(
    pair: tuple[ChatServer, ChatServer],
) -> None:
    a, b = pair
    with trio.fail_after(WAIT):
        async with (
            open_chat_client(a, user_id="u", receive_timeout=WAIT) as on_a,
            open_chat_client(b, user_id="u", receive_timeout=WAIT) as on_b,
        ):
            run_id = await on_a.start("go", agent_name="paced")
            await on_a.wait_event(run_id, "agent_thinking")
            await on_b.stop(run_id)
            stopped = await on_a.collect(run_id)
    assert stopped.status == "cancelled"
    assert stopped.final["data"]["error"]["code"] == "CANCELLED"


async def test_the_per_user_limit_holds_across_both_servers(
    pair: tuple[ChatServer, ChatServer],
) -> None:
    a, b = pair
    with trio.fail_after(WAIT):
        async with (
            open_chat_client(a, user_id="u") as one,
            open_chat_client(b, user_id="u") as two,
            open_chat_client(a, user_id="u") as three,
        ):
            assert {one.connection_id, two.connection_id, three.connection_id}
            # The fourth is closed 1008 before its first frame, on either server.
            for server in (b, a):
                with pytest.raises(ConnectionClosed) as refused:
                    async with open_chat_client(server, user_id="u"):
                        pass
                assert refused.value.code == 1008
                assert "3 connections" in refused.value.reason
        # The slots are given back: a new connection is welcome again.
        async with open_chat_client(b, user_id="u") as again:
            await again.send({"type": "ping", "message_id": "p"})
            assert (await again.receive_frame("pong"))["message_id"] == "p"


async def test_the_sweep_ends_the_runs_of_a_gone_process_once_and_never_a_live_ones(
    pair: tuple[ChatServer, ChatServer], store_url: str
) -> None:
    """A run recorded by a process whose lease is gone is ended NODE_LOST, once
    however many servers sweep, and its ending is published to its stream
    (nobody need follow its thread: whoever resumes it later reads it there).
    A run of a live server is never touched, not even by the other server."""
    a, b = pair
    assert a.cluster is not None
    assert b.cluster is not None
    async with open_store(store_url, node_id="gone-node") as gone:
        lost = start("u", "th-lost", run_id="r-lost", agent_name="paced")
        await gone.begin_run(lost, history_turns=0)
    with trio.fail_after(WAIT):
        async with open_chat_client(a, user_id="u", receive_timeout=WAIT) as on_a:
            run_id = await on_a.start("go", agent_name="paced", thread_id="th-live")
            await on_a.wait_event(run_id, "agent_thinking")
            await b.cluster.sweep()
            await a.cluster.sweep()
            store = a.history.store
            live = await store.get_run("u", run_id)
            assert live is not None
            assert live.running  # the other server saw its lease alive
            ended = await store.get_run("u", "r-lost")
            assert ended is not None
            assert (ended.status, ended.error_code, ended.last_seq) == ("failed", "NODE_LOST", 2)
            stored = await store.read_events(lost.run_key, 0)
            assert [e.seq for e in stored] == [1, 2]  # once, whoever swept it
            stream = a.cluster.broker.run_stream("u", "th-lost", lost.run_key)
            published = await a.cluster.broker.read(stream, "0-0")
            assert [(e.seq, e.payload) for e in published] == [(e.seq, e.frame) for e in stored]
            _GATE[0].set()
            mine = await on_a.collect(run_id)
    assert mine.status == "completed"


async def test_a_local_subscriber_gets_a_local_run_once_while_another_server_follows_it(
    pair: tuple[ChatServer, ChatServer],
) -> None:
    """The thread is followed here and on the other server: the run goes to the
    other server through the broker, and to the subscriber here directly, once."""
    a, b = pair
    _GATE[0].set()
    with trio.fail_after(WAIT):
        async with (
            open_chat_client(a, user_id="u", receive_timeout=WAIT) as starter,
            open_chat_client(a, user_id="u", receive_timeout=WAIT) as here,
            open_chat_client(b, user_id="u", receive_timeout=WAIT) as there,
        ):
            first = await starter.run("first", agent_name="paced", thread_id="th-1")
            assert first.status == "completed"
            for client in (here, there):
                assert (await client.subscribe("th-1"))["type"] == "thread_subscribed"
            run_id = await starter.start("second", agent_name="paced", thread_id="th-1")
            mine = await starter.collect(run_id)
            theirs = await there.collect(run_id)
            local = await here.collect(run_id)
            await here.send({"type": "ping", "message_id": "p"})
            assert (await here.receive_frame("pong"))["message_id"] == "p"  # nothing more
    expected = [e["seq"] for e in mine.events]
    assert [e["seq"] for e in local.events] == expected
    assert [e["seq"] for e in theirs.events] == expected


async def test_a_stop_of_a_run_recorded_here_but_not_live_is_run_not_found(
    pair: tuple[ChatServer, ChatServer], store_url: str
) -> None:
    """The store says this server runs it, but it is not live here (its final
    waits in the writer, or it was its previous life's): nothing can stop it,
    and the broker must not be asked to tell this very server."""
    a, _ = pair
    assert a.cluster is not None
    async with open_store(store_url, node_id=a.cluster.node_id) as same_node:
        await same_node.begin_run(start("u", "th-ghost", run_id="r-ghost"), history_turns=0)
    with trio.fail_after(WAIT):
        async with open_chat_client(a, user_id="u", receive_timeout=WAIT) as client:
            await client.send(
                {"type": "stop_agent", "message_id": "s", "payload": {"run_id": "r-ghost"}}
            )
            error = await client.receive_frame("error_message")
    assert (error["message_id"], error["error_code"]) == ("s", "RUN_NOT_FOUND")


async def test_a_command_about_an_older_run_with_the_same_id_leaves_the_new_one(
    pair: tuple[ChatServer, ChatServer],
) -> None:
    """Run ids are the client's and may be used again: a stop that names the
    older run (by its run_key) arrives late and must not stop the newer one."""
    a, _ = pair
    assert a.cluster is not None
    _GATE[0].set()
    with trio.fail_after(WAIT):
        async with open_chat_client(a, user_id="u", receive_timeout=WAIT) as client:
            first = await client.run("one", agent_name="paced", run_id="r-same")
            assert first.status == "completed"
            older = await a.history.store.get_run("u", "r-same")
            assert older is not None
            _GATE[0] = trio.Event()
            await client.start("two", agent_name="paced", run_id="r-same")
            await client.wait_event("r-same", "agent_thinking")
            await a.cluster.on_command(RemoteRun.of(older).command("stop"))
            _GATE[0].set()
            second = await client.collect("r-same")
    assert second.status == "completed"
