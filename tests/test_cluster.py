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

import orjson
import pytest
import trio
from _redis import TcpProxy, eventually, new_prefix, open_raw_client, redis_test_url
from _store import postgres_schema, start

from agents import AgentClassRegistry, BaseAgent
from server import ChatServer, ConnectionClosed
from server.broker import stream_id
from server.protocol import encode_run_event
from server.runs import RemoteRun
from server.store import EventRecord, RunStart, now_ms, open_store
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


class Chatty(BaseAgent):
    """Forty thoughts, then waits for ``_GATE[0]``: a run with a long history while live."""

    name = "chatty"
    top_level = True

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        for step in range(40):
            await self.think(f"step {step}")
        await _GATE[0].wait()
        return {"steps": 40}


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
        registry.register(Chatty)
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


async def test_connections_of_a_user_opened_at_once_give_every_slot_back(
    pair: tuple[ChatServer, ChatServer],
) -> None:
    a, _ = pair

    async def connect(opened: list[str], all_open: trio.Event) -> None:
        async with open_chat_client(a, user_id="u") as client:
            opened.append(client.connection_id)
            if len(opened) == 3:
                all_open.set()
            await all_open.wait()

    with trio.fail_after(WAIT):
        # Twice: the second round finds the three slots free again (a count of
        # the user's connections that lost one would leave a lease held for ever).
        for _ in range(2):
            opened: list[str] = []
            all_open = trio.Event()
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(connect, opened, all_open)
            assert len(set(opened)) == 3


async def test_a_long_run_resumed_on_the_other_server_arrives_whole_through_a_small_queue(
    nursery: trio.Nursery, store_url: str
) -> None:
    """The store's history of a run comes as one burst; the follower waits for room.

    With an outbound queue of 4 (and 4 more waiting in line), 40 events
    replayed at once would close a follower that never waits (1013).
    """
    broker_url, prefix = redis_test_url(), new_prefix()
    _GATE[:] = [trio.Event()]
    servers = []
    for _ in range(2):
        registry = AgentClassRegistry()
        registry.register(Chatty)
        servers.append(
            await start_test_server(nursery, registry=registry, store=store_url,
                                    broker=broker_url, broker_prefix=prefix, lease_seconds=2,
                                    outbound_queue=4, admin_port=None)
        )  # fmt: skip
    a, b = servers
    with trio.fail_after(WAIT):
        async with (
            open_chat_client(a, user_id="u", receive_timeout=WAIT) as on_a,
            open_chat_client(b, user_id="u", receive_timeout=WAIT) as on_b,
        ):
            run_id = await on_a.start("go", agent_name="chatty")
            while len(on_a.events(run_id)) < 41:
                await on_a.receive()
            resumed = await on_b.resume(run_id, after_seq=0)
            assert resumed["data"]["live"] is True
            _GATE[0].set()
            theirs = await on_b.collect(run_id)
            mine = await on_a.collect(run_id)
    assert [e["seq"] for e in theirs.events] == [e["seq"] for e in mine.events]
    assert len(theirs.events) == 42


async def test_after_redis_was_away_longer_than_the_lease_no_live_run_is_taken_for_lost(
    nursery: trio.Nursery, store_url: str
) -> None:
    """Every lease lapsed; the process that reaches Redis first does not sweep the other's runs.

    b gets Redis back first and has time for a sweep (its sweeps run every
    half lease) before a gets it back: a's run, alive all along, must not be
    ended NODE_LOST. The sleep is that window, not a wait for something.
    """
    lease, redis_url, prefix = 3.0, redis_test_url(), new_prefix()
    _GATE[:] = [trio.Event()]
    proxies: list[TcpProxy] = [await nursery.start(TcpProxy(redis_url).serve) for _ in range(2)]
    servers = []
    for proxy in proxies:
        registry = AgentClassRegistry()
        registry.register(Paced)
        servers.append(
            await start_test_server(nursery, registry=registry, store=store_url,
                                    broker=proxy.url, broker_prefix=prefix,
                                    lease_seconds=lease, admin_port=None)
        )  # fmt: skip
    a, b = servers
    clusters = [server.cluster for server in servers if server.cluster is not None]
    assert len(clusters) == 2
    with trio.fail_after(30):
        async with (
            open_chat_client(a, user_id="u", receive_timeout=30) as on_a,
            open_raw_client(redis_url) as raw,
        ):
            run_id = await on_a.start("go", agent_name="paced")
            await on_a.wait_event(run_id, "agent_thinking")  # then it waits for the gate
            for proxy in proxies:
                proxy.block()
            for cluster in clusters:
                await cluster.broker.wait_unhealthy()

            async def leases_lapsed() -> bool:
                keys = [f"{prefix}node:{cluster.node_id}" for cluster in clusters]
                return await raw.exists(keys) == 0

            await eventually(leases_lapsed, interval=0.1)
            proxies[1].unblock()
            await clusters[1].broker.wait_healthy()
            await trio.sleep(lease / 2 + 0.1)  # b's sweep comes round at least once
            proxies[0].unblock()
            await clusters[0].broker.wait_healthy()
            _GATE[0].set()
            mine = await on_a.collect(run_id)
        async with open_chat_client(b, user_id="u", receive_timeout=30) as on_b:
            stored = await on_b.resume(run_id)
    assert mine.status == "completed"
    assert stored["data"]["status"] == "completed"


async def test_a_sweep_records_what_a_dead_process_delivered_but_had_not_committed(
    pair: tuple[ChatServer, ChatServer], store_url: str
) -> None:
    """Its events 3 and 4 reached the run's stream (and so its followers), not the store.

    The sweep records them before the closing event: the final NODE_LOST
    comes at seq 5, above every seq a follower saw, and history holds what
    they saw.
    """
    _, b = pair
    assert b.cluster is not None
    start = RunStart(run_key="rk-dead-1", user_id="u", run_id="r-dead", thread_id="t-dead",
                     agent_name="paced", request="go", started_at_ms=now_ms())  # fmt: skip

    def frame(seq: int, kind: str) -> bytes:
        return encode_run_event(event_type=kind, run_id="r-dead", thread_id="t-dead",
                                user_id="u", agent_name="paced", seq=seq, final=False,
                                data={"step": seq})  # fmt: skip

    frames = [frame(1, "agent_started")] + [frame(seq, "agent_thinking") for seq in (2, 3, 4)]
    with trio.fail_after(WAIT):
        async with open_store(store_url, node_id="a-process-that-died") as dead:
            await dead.begin_run(start, history_turns=0)
            await dead.append_events([EventRecord("rk-dead-1", 1, frames[0]),
                                      EventRecord("rk-dead-1", 2, frames[1])])  # fmt: skip
        stream = b.cluster.broker.run_stream("u", "t-dead", "rk-dead-1")
        await b.cluster.broker.publish(
            [(stream, seq, payload) for seq, payload in enumerate(frames, start=1)], gated=False
        )
        assert await b.cluster.sweep() == 1
        store = b.history.store
        recorded = await store.read_events("rk-dead-1", 0, 100)
        info = await store.get_run("u", "r-dead")
        published = await b.cluster.broker.read(stream, stream_id(0))
    assert [e.frame for e in recorded[:4]] == frames
    assert [e.seq for e in recorded] == [1, 2, 3, 4, 5]
    final = orjson.loads(recorded[-1].frame)
    assert (final["type"], final["final"]) == ("agent_error", True)
    assert final["data"]["error"]["code"] == "NODE_LOST"
    assert info is not None
    assert (info.status, info.last_seq) == ("failed", 5)
    # The followers' stream gets the final event after what they had.
    assert [e.seq for e in published] == [1, 2, 3, 4, 5]
    assert published[-1].payload == recorded[-1].frame


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
