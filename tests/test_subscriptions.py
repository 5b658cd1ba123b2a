"""Several connections of one user: subscribe_thread, unsubscribe, limits, stop from elsewhere.

A subscriber gets every run started later on the thread, live and whole,
from any of the user's connections; it never slows the run or the
connection that started it (a slow one is closed 1013 and the run goes on,
checked on trio's virtual clock); the subscription gauge is exact; and
nothing of a connection (its follows, its followers) outlives it.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
import trio
import trio.testing
from _v11 import Link, Strings, check_complete, linked, open_link, puppet_registry, strip_replay

from server import ChatServer
from server.testing import start_test_server


@pytest.fixture
def strings() -> Strings:
    return Strings()


@pytest.fixture
async def server(nursery: trio.Nursery, strings: Strings) -> ChatServer:
    return await start_test_server(
        nursery, registry=puppet_registry(strings), admin_port=None, heartbeat_interval=0
    )


async def start(link: Link, run_id: str, thread_id: str) -> str:
    return await link.send(
        "start_agent",
        {"user_request": "go", "agent_name": "puppet", "run_id": run_id, "thread_id": thread_id},
    )


async def finished_run(link: Link, strings: Strings, run_id: str, thread_id: str) -> None:
    """A whole run on ``thread_id`` (so the thread exists)."""
    strings.pull(run_id, "done")
    await start(link, run_id, thread_id)
    await link.wait_final(run_id)


async def barrier(link: Link) -> None:
    assert (await link.ask("ping"))["type"] == "pong"


def index_of(link: Link, message_id: str) -> int:
    return next(i for i, f in enumerate(link.frames) if f.get("message_id") == message_id)


async def test_a_run_started_on_another_connection_arrives_live_and_whole(
    server: ChatServer, strings: Strings
) -> None:
    async with linked(server, "alice", "alice") as (tab1, tab2):
        await finished_run(tab2, strings, "r1", "t-1")
        reply = await tab1.ask("subscribe_thread", {"thread_id": "t-1"})
        assert reply["type"] == "thread_subscribed"
        assert reply["data"] == {"thread_id": "t-1", "running_run_id": None}
        assert tab1.events("r1") == []  # an ended run is not sent
        strings.pull("r2", "think", "tool", "inner", "done")
        await start(tab2, "r2", "t-1")
        await tab1.wait_final("r2")
        await tab2.wait_final("r2")
        again = await tab1.ask("resume_run", {"run_id": "r2"})  # ended: from history, fine
        assert again["type"] == "run_resumed"
        strings.pull("r3", "think", "done")
        await start(tab2, "r3", "t-2")  # another thread: not sent
        await tab2.wait_final("r3")
        await barrier(tab1)
    live = tab1.event_texts("r2")[: len(tab2.event_texts("r2"))]
    assert live == tab2.event_texts("r2")  # byte for byte, no replay mark
    check_complete(tab1.events("r2")[: len(live)], "alice")
    assert tab1.events("r3") == []


async def test_a_run_in_progress_is_named_not_sent_and_resume_catches_up(
    server: ChatServer, strings: Strings
) -> None:
    async with linked(server, "alice", "alice") as (tab1, tab2):
        strings.pull("r1", "think", "think")
        await start(tab2, "r1", "t-1")
        await tab2.wait_for(lambda f: f.get("seq") == 3)
        reply = await tab1.ask("subscribe_thread", {"thread_id": "t-1"})
        assert reply["data"] == {"thread_id": "t-1", "running_run_id": "r1"}
        strings.pull("r1", "think")
        await tab2.wait_for(lambda f: f.get("seq") == 4)
        await barrier(tab1)
        assert tab1.events("r1") == []
        await tab1.ask("resume_run", {"run_id": "r1"})
        refused = await tab1.ask("resume_run", {"run_id": "r1"})
        assert refused["error_code"] == "FORMAT_ERROR"
        strings.pull("r1", "done")
        await tab1.wait_final("r1")
        await tab2.wait_final("r1")
    assert [e["seq"] for e in tab1.events("r1")] == [e["seq"] for e in tab2.events("r1")]


async def test_a_subscriber_that_starts_the_run_itself_gets_each_event_once(
    server: ChatServer, strings: Strings
) -> None:
    async with linked(server, "alice") as (tab,):
        await finished_run(tab, strings, "r1", "t-1")
        await tab.ask("subscribe_thread", {"thread_id": "t-1"})
        strings.pull("r2", "think", "done")
        await start(tab, "r2", "t-1")
        await tab.wait_final("r2")
        await barrier(tab)
    check_complete(tab.events("r2"), "alice")


async def test_unsubscribe_stops_the_runs_events_at_once_and_later_runs(
    server: ChatServer, strings: Strings
) -> None:
    async with linked(server, "alice", "alice") as (tab1, tab2):
        await finished_run(tab2, strings, "r1", "t-1")
        await tab1.ask("subscribe_thread", {"thread_id": "t-1"})
        strings.pull("r2", "think")
        await start(tab2, "r2", "t-1")
        await tab1.wait_for(lambda f: f.get("run_id") == "r2" and f.get("seq") == 2)
        message_id = await tab1.send("unsubscribe_thread", {"thread_id": "t-1"})
        reply = await tab1.reply(message_id)
        strings.pull("r2", "think", "done")
        await tab2.wait_final("r2")
        await finished_run(tab2, strings, "r3", "t-1")
        await barrier(tab1)
        # Unsubscribing what is not subscribed is answered the same way.
        twice = await tab1.ask("unsubscribe_thread", {"thread_id": "t-1"})
    assert reply == {"type": "thread_unsubscribed", "message_id": message_id,
                     "data": {"thread_id": "t-1"}}  # fmt: skip
    cut = index_of(tab1, message_id)
    assert not [f for f in tab1.frames[cut:] if f.get("run_id") in ("r2", "r3")]
    assert [e["seq"] for e in tab1.events("r2")] == [1, 2]
    assert twice["type"] == "thread_unsubscribed"
    assert server.statistics().subscriptions_active == 0


async def test_max_subscriptions_and_the_exact_gauge(
    nursery: trio.Nursery, strings: Strings
) -> None:
    server = await start_test_server(
        nursery, registry=puppet_registry(strings), admin_port=None, max_subscriptions=2
    )

    def active() -> int:
        return server.statistics().subscriptions_active

    async with linked(server, "alice", "alice") as (tab1, tab2):
        for i in range(3):
            await finished_run(tab1, strings, f"r{i}", f"t-{i}")
        assert (await tab1.ask("subscribe_thread", {"thread_id": "t-0"}))["type"] == (
            "thread_subscribed"
        )
        await tab1.ask("subscribe_thread", {"thread_id": "t-0"})  # again: no second one
        assert active() == 1
        await tab1.ask("subscribe_thread", {"thread_id": "t-1"})
        assert active() == 2
        refused = await tab1.ask("subscribe_thread", {"thread_id": "t-2"})
        assert refused["error_code"] == "TOO_MANY_SUBSCRIPTIONS"
        assert refused["details"]["max_subscriptions"] == 2
        assert active() == 2
        missing = await tab2.ask("subscribe_thread", {"thread_id": "t-none"})
        assert missing["error_code"] == "THREAD_NOT_FOUND"
        await tab2.ask("subscribe_thread", {"thread_id": "t-2"})  # the limit is per connection
        assert active() == 3
        await tab1.ask("unsubscribe_thread", {"thread_id": "t-0"})
        assert active() == 2
        assert (await tab1.ask("subscribe_thread", {"thread_id": "t-2"}))["type"] == (
            "thread_subscribed"
        )
        assert active() == 3
        # Deleting a thread ends this connection's subscription to it.
        await tab1.ask("delete_thread", {"thread_id": "t-2"})
        assert active() == 2
    await server.wait_idle()
    assert active() == 0


async def test_a_slow_subscriber_is_closed_1013_and_slows_neither_run_nor_starter(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, strings: Strings
) -> None:
    server = await start_test_server(
        nursery,
        registry=puppet_registry(strings),
        admin_port=None,
        heartbeat_interval=0,
        outbound_queue=4,
        slow_consumer_timeout=5,
    )
    async with trio.open_nursery() as links:
        starter = await open_link(links, server, "alice")
        await finished_run(starter, strings, "r0", "t-1")
        # The slow tab: subscribed, then its client stops reading (a small window).
        transport_capacity = 2
        slow = await open_link(links, server, "alice", capacity=transport_capacity)
        assert (await slow.ask("subscribe_thread", {"thread_id": "t-1"}))["type"] == (
            "thread_subscribed"
        )
        slow.stop_reading()
        strings.pull("r1", *["nap", "think", "tool"] * 30, "done")
        began = trio.current_time()
        await start(starter, "r1", "t-1")
        final = await starter.wait_final("r1", within=60)
        took = trio.current_time() - began
        closed = server.statistics().connections_closed_total[1013]
        await starter.aclose()
        slow.drop()
    assert final["data"]["status"] == "completed"
    assert took == 30  # the 30 one-second naps, nothing more
    assert len(starter.events("r1")) == 1 + 30 * 3 + 1
    check_complete(starter.events("r1"), "alice")
    assert closed == 1
    await server.wait_idle()
    assert server.statistics().subscriptions_active == 0


async def test_stop_agent_from_another_connection_stops_the_run(
    server: ChatServer, strings: Strings
) -> None:
    async with linked(server, "alice", "alice") as (tab1, tab2):
        strings.pull("r1", "think", "tool")
        await start(tab1, "r1", "t-1")
        await tab1.wait_for(lambda f: f.get("seq") == 4)
        await tab2.send("stop_agent", {"run_id": "r1"})
        final = await tab1.wait_final("r1")
        again = await tab2.ask("stop_agent", {"run_id": "r1"})
        await barrier(tab2)
    assert final["type"] == "agent_error"
    assert final["data"]["status"] == "cancelled"
    assert final["data"]["error"]["code"] == "CANCELLED"
    check_complete(tab1.events("r1"), "alice")
    assert again["error_code"] == "RUN_NOT_FOUND"
    assert [f["type"] for f in tab2.frames] == ["error_message", "pong"]


async def test_following_a_run_neither_counts_against_max_runs_nor_ties_the_run_to_the_follower(
    nursery: trio.Nursery, strings: Strings
) -> None:
    server = await start_test_server(
        nursery, registry=puppet_registry(strings), admin_port=None, max_runs_per_connection=1
    )
    async with trio.open_nursery() as links:
        tab1 = await open_link(links, server, "alice")
        tab2 = await open_link(links, server, "alice")
        strings.pull("r1", "think")
        await start(tab1, "r1", "t-1")
        await tab1.wait_for(lambda f: f.get("seq") == 2)
        await tab2.ask("resume_run", {"run_id": "r1"})
        strings.pull("r2", "done")
        await start(tab2, "r2", "t-2")  # tab2's own first run: accepted
        assert (await tab2.wait_final("r2"))["data"]["status"] == "completed"
        await tab2.aclose()  # the follower goes: the run goes on
        strings.pull("r1", "think", "done")
        final = await tab1.wait_final("r1")
        await tab1.aclose()
    assert final["data"]["status"] == "completed"
    check_complete(tab1.events("r1"), "alice")


class _Watched:
    """Weak references to what connections made while following runs."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref[Any]] = []

    def watch(self, *objects: object) -> None:
        self.refs.extend(weakref.ref(o) for o in objects)

    def alive(self) -> list[Any]:
        gc.collect()
        return [o for ref in self.refs if (o := ref()) is not None]


async def test_no_connection_follows_or_follower_outlives_its_scope(
    server: ChatServer, strings: Strings, collect_garbage: None
) -> None:
    watched = _Watched()
    async with trio.open_nursery() as links:
        tabs = [await open_link(links, server, "alice") for _ in range(3)]
        await finished_run(tabs[0], strings, "r0", "t-1")
        for tab in tabs[1:]:
            await tab.ask("subscribe_thread", {"thread_id": "t-1"})
        strings.pull("r1", "think")
        await start(tabs[0], "r1", "t-1")
        await tabs[2].wait_for(lambda f: f.get("run_id") == "r1" and f.get("seq") == 2)
        run = server.directory.find("alice", "r1")
        assert run is not None
        assert len(run.sinks) == 2
        watched.watch(run, *run.sinks)
        watched.watch(*(sink._follows for sink in run.sinks))  # type: ignore[attr-defined]
        watched.watch(*(sink._follows.deliver.__self__ for sink in run.sinks))  # type: ignore[attr-defined]
        del run
        assert server.statistics().subscriptions_active == 2
        tabs[1].drop()  # one subscriber vanishes mid-run
        strings.pull("r1", "think", "done")
        await tabs[2].wait_final("r1")
        await tabs[0].wait_final("r1")
        for tab in (tabs[0], tabs[2]):
            await tab.aclose()
    await server.wait_idle()
    assert watched.alive() == []
    stats = server.statistics()
    assert stats.subscriptions_active == 0
    assert stats.gauges == (0, 0, 0, 0)
    assert len(server.directory) == 0
    assert list(server.directory.subscribers("alice", "t-1")) == []


@pytest.mark.timeout(30)
async def test_a_finished_run_is_not_held_by_the_connections_that_followed_it(
    server: ChatServer, strings: Strings, collect_garbage: None
) -> None:
    """Followers let go of a run at its final event: a tab that stays open for
    hours, following run after run, holds none of them once they are over."""
    async with linked(server, "alice", "alice", "alice") as (owner, subscriber, resumer):
        await finished_run(owner, strings, "r0", "t-1")
        await subscriber.ask("subscribe_thread", {"thread_id": "t-1"})
        strings.pull("r1", "think")
        await start(owner, "r1", "t-1")
        await subscriber.wait_for(lambda f: f.get("run_id") == "r1" and f.get("seq") == 2)
        assert (await resumer.ask("resume_run", {"run_id": "r1"}))["type"] == "run_resumed"
        run = server.directory.find("alice", "r1")
        assert run is not None
        assert len(run.sinks) == 2  # the subscriber and the resumer
        ref = weakref.ref(run)
        del run
        strings.pull("r1", "done")
        for link in (owner, subscriber, resumer):
            await link.wait_final("r1")
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        assert ref() is None  # while all three connections are still open


@pytest.mark.timeout(30)
async def test_unsubscribing_keeps_a_run_the_connection_resumed(
    server: ChatServer, strings: Strings
) -> None:
    """subscribe_thread names the run already running; resume_run catches up on it.
    That run was asked for by itself: unsubscribe_thread stops the runs the
    subscription brought, not this one, which goes on to its final event."""
    async with linked(server, "alice", "alice") as (owner, tab):
        await finished_run(owner, strings, "r0", "t-1")
        strings.pull("r1", "think")
        await start(owner, "r1", "t-1")
        await owner.wait_for(lambda f: f.get("run_id") == "r1" and f.get("seq") == 2)
        subscribed = await tab.ask("subscribe_thread", {"thread_id": "t-1"})
        assert subscribed["data"]["running_run_id"] == "r1"
        assert (await tab.ask("resume_run", {"run_id": "r1"}))["type"] == "run_resumed"
        unsubscribed = await tab.ask("unsubscribe_thread", {"thread_id": "t-1"})
        assert unsubscribed["type"] == "thread_unsubscribed"
        strings.pull("r1", "think", "done")
        await owner.wait_final("r1")
        await tab.wait_final("r1")
    assert [strip_replay(t) for t in tab.event_texts("r1")] == owner.event_texts("r1")
