"""resume_run: a run's missed events, from history or live, exactly once, in order.

The examples here pin each case of the contract (a running run on another
connection, an ended one, ``after_seq`` past the end, a connection that
already receives the run, bad arguments, the owner going away). The
property test at the end interleaves emits, group commits, disconnects,
stops and resumes at random points, and checks that every resuming
connection receives exactly ``after_seq+1..last``, in order, once each,
byte for byte what the run sent, with invariants 1-5 over the whole run.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing
from _v11 import (
    REPLAY_TAIL,
    GatedMemoryStore,
    GatedSqliteStore,
    Link,
    Strings,
    check_complete,
    linked,
    open_link,
    puppet_registry,
    segments,
    seqs,
    settle,
    start_server_on,
    strip_replay,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import server._server as server_module
from server import ChatServer
from server.runs import lost_run_ending
from server.store import HistoryWriter
from server.testing import start_test_server


@pytest.fixture
def strings() -> Strings:
    return Strings()


@pytest.fixture
async def server(nursery: trio.Nursery, strings: Strings) -> ChatServer:
    return await start_test_server(
        nursery,
        registry=puppet_registry(strings),
        admin_port=None,
        heartbeat_interval=0,
        max_consecutive_errors=0,
    )


async def start(link: Link, run_id: str, *, thread_id: str | None = None) -> str:
    payload = {"user_request": "resume me", "agent_name": "puppet", "run_id": run_id}
    if thread_id is not None:
        payload["thread_id"] = thread_id
    return await link.send("start_agent", payload)


async def wait_seq(link: Link, run_id: str, seq: int) -> None:
    await link.wait_for(lambda f: f.get("run_id") == run_id and f.get("seq") == seq)


def after_reply(link: Link, message_id: str, run_id: str) -> list[str]:
    """The run's event texts ``link`` received after the reply to ``message_id``."""
    start = next(
        i
        for i, f in enumerate(link.frames)
        if f.get("message_id") == message_id and f["type"] == "run_resumed"
    )
    return [
        text
        for text, frame in zip(link.texts[start + 1 :], link.frames[start + 1 :], strict=True)
        if frame.get("run_id") == run_id and frame["type"] != "run_resumed"
    ]


async def barrier(link: Link) -> None:
    """Everything the server queued for ``link`` before now has arrived."""
    assert (await link.ask("ping"))["type"] == "pong"


def replayed(text: str) -> bool:
    return text.endswith(REPLAY_TAIL)


async def test_resume_a_running_run_from_another_connection_then_follow_it_live(
    server: ChatServer, strings: Strings
) -> None:
    async with linked(server, "alice", "alice") as (owner, other):
        strings.pull("r1", "think", "think", "think")
        await start(owner, "r1", thread_id="t-1")
        await wait_seq(owner, "r1", 4)

        message_id = await other.send("resume_run", {"run_id": "r1", "after_seq": 2})
        reply = await other.reply(message_id)
        assert reply == {
            "type": "run_resumed",
            "message_id": message_id,
            "data": {
                "run_id": "r1",
                "thread_id": "t-1",
                "status": "running",
                "after_seq": 2,
                "last_seq": 4,
                "live": True,
            },
        }
        await wait_seq(other, "r1", 4)
        strings.pull("r1", "tool", "inner", "done")
        await other.wait_final("r1")
        await owner.wait_final("r1")
        await barrier(other)

    sent = owner.event_texts("r1")
    got = after_reply(other, message_id, "r1")
    assert [json.loads(t)["seq"] for t in got] == list(range(3, len(sent) + 1))
    assert [strip_replay(t) for t in got] == sent[2:]  # byte for byte
    assert [replayed(t) for t in got] == [True, True] + [False] * (len(sent) - 4)
    check_complete([*owner.events("r1")[:2], *map(json.loads, got)], "alice")
    check_complete(owner.events("r1"), "alice")


@pytest.mark.parametrize("after_seq", [0, 1, 5])
async def test_resume_an_ended_run_replays_its_history(
    server: ChatServer, strings: Strings, after_seq: int
) -> None:
    async with linked(server, "alice", "alice") as (owner, other):
        strings.pull("r1", "think", "tool", "inner", "done")
        await start(owner, "r1", thread_id="t-1")
        final = await owner.wait_final("r1")
        message_id = await other.send("resume_run", {"run_id": "r1", "after_seq": after_seq})
        reply = await other.reply(message_id)
        await barrier(other)
    last = final["seq"]
    assert reply["data"] == {
        "run_id": "r1",
        "thread_id": "t-1",
        "status": "completed",
        "after_seq": after_seq,
        "last_seq": last,
        "live": False,
    }
    got = after_reply(other, message_id, "r1")
    assert all(map(replayed, got))
    assert [strip_replay(t) for t in got] == owner.event_texts("r1")[after_seq:]
    if after_seq == 0:
        check_complete([json.loads(t) for t in got], "alice")


async def test_the_owner_may_resume_its_own_run_once_it_has_ended(
    server: ChatServer, strings: Strings
) -> None:
    async with linked(server, "alice") as (owner,):
        strings.pull("r1", "think")
        await start(owner, "r1")
        await wait_seq(owner, "r1", 2)
        busy = await owner.ask("resume_run", {"run_id": "r1"})
        assert busy["error_code"] == "FORMAT_ERROR"
        strings.pull("r1", "done")
        await owner.wait_final("r1")
        count = len(owner.events("r1"))
        again = await owner.ask("resume_run", {"run_id": "r1", "after_seq": 1})
        await barrier(owner)
    assert again["type"] == "run_resumed"
    assert len(owner.events("r1")) == count + count - 1


@pytest.mark.parametrize("past", [0, 1, 7])
async def test_after_seq_at_or_past_the_end_gives_only_run_resumed(
    server: ChatServer, strings: Strings, past: int
) -> None:
    async with linked(server, "alice", "alice") as (owner, other):
        strings.pull("r1", "think", "done")
        await start(owner, "r1")
        final = await owner.wait_final("r1")
        after = final["seq"] + past
        reply = await other.ask("resume_run", {"run_id": "r1", "after_seq": after})
        await barrier(other)
    assert reply["data"]["last_seq"] == final["seq"]
    assert reply["data"]["after_seq"] == after
    assert other.events("r1") == []


@pytest.mark.parametrize("past", [0, 1, 3])
async def test_a_live_run_resumed_at_or_past_its_last_seq_sends_only_what_comes_after(
    server: ChatServer, strings: Strings, past: int
) -> None:
    """Only events with seq > after_seq: none of those the client says it has."""
    async with linked(server, "alice", "alice") as (owner, other):
        strings.pull("r1", "think", "think")
        await start(owner, "r1")
        await wait_seq(owner, "r1", 3)
        after = 3 + past
        reply = await other.ask("resume_run", {"run_id": "r1", "after_seq": after})
        assert reply["data"]["last_seq"] == 3
        strings.pull("r1", "think", "think", "think", "think", "done")
        await other.wait_final("r1")
    sent = owner.event_texts("r1")
    assert [json.loads(t)["seq"] for t in other.event_texts("r1")] == list(
        range(after + 1, len(sent) + 1)
    )
    assert other.event_texts("r1") == sent[after:]  # live: no replay mark


async def test_a_connection_already_receiving_the_run_gets_format_error(
    server: ChatServer, strings: Strings
) -> None:
    async with linked(server, "alice", "alice") as (owner, other):
        strings.pull("r1", "think")
        await start(owner, "r1")
        await wait_seq(owner, "r1", 2)
        first = await other.ask("resume_run", {"run_id": "r1"})
        assert first["type"] == "run_resumed"
        for link in (owner, other):
            refused = await link.ask("resume_run", {"run_id": "r1", "after_seq": 1})
            assert refused["error_code"] == "FORMAT_ERROR"
            assert refused["details"]["run_id"] == "r1"
        strings.pull("r1", "think", "done")
        await other.wait_final("r1")
        await barrier(other)
    # The refusals changed nothing: each event once, in order.
    assert seqs(other.events("r1")) == seqs(owner.events("r1"))
    check_complete(other.events("r1"), "alice")


@pytest.mark.parametrize("after_seq", [-1, "1", 1.5, True, [1]])
async def test_a_bad_after_seq_is_a_format_error(
    server: ChatServer, strings: Strings, after_seq: object
) -> None:
    async with linked(server, "alice") as (alice,):
        strings.pull("r1", "done")
        await start(alice, "r1")
        await alice.wait_final("r1")
        reply = await alice.ask("resume_run", {"run_id": "r1", "after_seq": after_seq})
        missing = await alice.ask("resume_run", {"after_seq": 0})
        malformed = await alice.ask("resume_run", {"run_id": "no spaces allowed"})
    assert reply["error_code"] == "FORMAT_ERROR"
    assert reply["details"]["field"] == "payload.after_seq"
    assert missing["error_code"] == malformed["error_code"] == "FORMAT_ERROR"


async def test_an_unknown_run_is_run_not_found(server: ChatServer) -> None:
    async with linked(server, "alice") as (alice,):
        reply = await alice.ask("resume_run", {"run_id": "never-started"})
    assert reply["error_code"] == "RUN_NOT_FOUND"
    assert reply["details"] == {"run_id": "never-started"}


async def test_when_the_owner_goes_the_run_ends_disconnected_for_followers_and_history(
    server: ChatServer, strings: Strings
) -> None:
    async with trio.open_nursery() as nursery:
        owner = await open_link(nursery, server, "alice")
        follower = await open_link(nursery, server, "alice")
        strings.pull("r1", "think", "tool")
        await start(owner, "r1")
        await wait_seq(owner, "r1", 4)
        await follower.ask("resume_run", {"run_id": "r1"})
        owner.drop()
        final = await follower.wait_final("r1")
        late = await open_link(nursery, server, "alice")
        reply = await late.ask("resume_run", {"run_id": "r1"})
        await barrier(late)
        for link in (follower, late):
            await link.aclose()
    assert final["type"] == "agent_error"
    assert final["data"]["status"] == "cancelled"
    assert final["data"]["error"]["code"] == "DISCONNECTED"
    check_complete(follower.events("r1"), "alice")
    assert reply["data"]["status"] == "cancelled"
    assert reply["data"]["live"] is False
    assert [strip_replay(t) for t in late.event_texts("r1")] == follower.event_texts("r1")[:0] + [
        strip_replay(t) for t in follower.event_texts("r1")
    ]
    assert server.statistics().gauges == (0, 0, 0, 0)


async def test_a_run_resumed_while_its_final_event_waits_for_the_store_still_gets_it(
    nursery: trio.Nursery, strings: Strings
) -> None:
    """The run has ended (retired) but its final is not committed yet: a resume
    in that window must still deliver the final, once, after the commit."""
    store = GatedMemoryStore(node_id="test")
    server = await start_server_on(
        nursery, store, registry=puppet_registry(strings), admin_port=None, heartbeat_interval=0
    )
    async with linked(server, "alice", "alice") as (owner, other):
        strings.pull("r1", "think")
        await start(owner, "r1")
        await wait_seq(owner, "r1", 2)
        await settle(store)
        store.hold()
        strings.pull("r1", "done")
        await settle(store)  # the final waits for its commit
        assert owner.events("r1")[-1]["seq"] == 2
        reply = await other.ask("resume_run", {"run_id": "r1"})
        refused = await owner.ask("resume_run", {"run_id": "r1"})
        store.release()
        final = await other.wait_final("r1")
        await owner.wait_final("r1")
        await barrier(other)
        await barrier(owner)
    assert reply["type"] == "run_resumed"
    assert refused["error_code"] == "FORMAT_ERROR"  # the owner still receives it
    assert final["data"]["status"] == "completed"
    assert [strip_replay(t) for t in other.event_texts("r1")] == owner.event_texts("r1")
    check_complete(owner.events("r1"), "alice")


@pytest.mark.timeout(30)
async def test_a_run_a_sweep_ended_while_it_ran_sends_no_final_of_its_own(
    nursery: trio.Nursery, strings: Strings
) -> None:
    """A NODE_LOST sweep (of a process wrongly taken for dead) ended the run in
    the store while it ran: that end is the run's only one. The run's own final
    event, refused by the store's compare-and-set, goes to nobody; a resume
    reads the sweep's ending, one final event."""
    store = GatedMemoryStore(node_id="test")
    server = await start_server_on(
        nursery, store, registry=puppet_registry(strings), admin_port=None, heartbeat_interval=0
    )
    async with linked(server, "alice", "alice") as (owner, other):
        strings.pull("r1", "think")
        await start(owner, "r1")
        await wait_seq(owner, "r1", 2)
        await settle(store)
        info = await store.get_run("alice", "r1")
        assert info is not None
        assert info.last_seq == 2
        committed = [e.frame for e in await store.read_events(info.run_key, 0, 100)]
        end, records = lost_run_ending(info, committed)
        assert await store.finish_run(end, records)  # what the sweep does
        strings.pull("r1", "done")
        await settle(store)
        await barrier(owner)
        assert [e["seq"] for e in owner.events("r1")] == [1, 2]  # no final of its own
        assert server.statistics().gauges[3] == 0  # the run is over all the same
        reply = await other.ask("resume_run", {"run_id": "r1"})
        await barrier(other)
    data = reply["data"]
    assert (data["status"], data["last_seq"], data["live"]) == ("failed", 3, False)
    resumed = other.events("r1")
    assert seqs(resumed) == [1, 2, 3]
    assert [e["final"] for e in resumed] == [False, False, True]
    assert resumed[-1]["data"]["error"]["code"] == "NODE_LOST"
    check_complete(resumed, "alice")


@pytest.mark.timeout(30)
async def test_a_run_id_used_again_while_the_last_final_is_committed_stays_live(
    nursery: trio.Nursery, strings: Strings
) -> None:
    """A client may use a run id again as soon as the run's final event is on its
    way. The old run leaving the directory (once its final is delivered) must
    not take the new one with it: a resume still follows the new run live."""
    store = GatedMemoryStore(node_id="test")
    server = await start_server_on(
        nursery, store, registry=puppet_registry(strings), admin_port=None, heartbeat_interval=0
    )

    def second_run(frame: dict[str, Any]) -> bool:
        return frame.get("run_id") == "r1" and frame.get("thread_id") == "t-2"

    async with linked(server, "alice", "alice") as (owner, other):
        strings.pull("r1", "think")
        await start(owner, "r1", thread_id="t-1")
        await wait_seq(owner, "r1", 2)
        await settle(store)
        store.hold()
        strings.pull("r1", "done")
        await settle(store)  # the first r1's final waits for its commit
        await start(owner, "r1", thread_id="t-2")
        await owner.wait_for(second_run)  # its agent_started
        store.release()
        await owner.wait_for(lambda f: f.get("thread_id") == "t-1" and f.get("final") is True)
        await settle(store)
        reply = await other.ask("resume_run", {"run_id": "r1"})
        assert reply["data"]["thread_id"] == "t-2"
        assert reply["data"]["live"] is True
        strings.pull("r1", "think", "done")
        await owner.wait_for(lambda f: second_run(f) and f.get("final") is True)
        await barrier(other)
    mine = [t for t, f in zip(owner.texts, owner.frames, strict=True) if second_run(f)]
    theirs = [t for t, f in zip(other.texts, other.frames, strict=True) if second_run(f)]
    assert [strip_replay(t) for t in theirs] == mine  # the whole new run, final included


async def test_a_run_whose_final_went_out_unsaved_is_resumed_whole_from_the_writer(
    nursery: trio.Nursery, strings: Strings
) -> None:
    """The final was sent with history_saved: false (its commit timed out) and
    waits in the writer: the store still says running. A resume then gets the
    run as it ended, every event once, not a live run that never goes on."""
    store = GatedMemoryStore(node_id="test")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            server_module, "HistoryWriter", functools.partial(HistoryWriter, final_timeout=0.5)
        )
        server = await start_server_on(
            nursery, store, registry=puppet_registry(strings), admin_port=None,
            heartbeat_interval=0,
        )  # fmt: skip
    async with linked(server, "alice", "alice") as (owner, other):
        strings.pull("r1", "think")
        await start(owner, "r1")
        await wait_seq(owner, "r1", 2)
        await settle(store)
        store.hold()
        strings.pull("r1", "done")
        final = await owner.wait_final("r1")
        assert final["data"]["history_saved"] is False
        stored = await store.get_run("alice", "r1")
        assert stored is not None
        assert stored.running
        reply = await other.ask("resume_run", {"run_id": "r1"})
        await barrier(other)
        store.release()
        await settle(store)
    assert reply["type"] == "run_resumed"
    data = reply["data"]
    assert (data["status"], data["last_seq"], data["live"]) == ("completed", 3, False)
    resumed = other.events("r1")
    assert seqs(resumed) == [1, 2, 3]
    assert all(e.get("replay") is True for e in resumed)
    assert [strip_replay(t) for t in other.event_texts("r1")[:2]] == owner.event_texts("r1")[:2]
    assert resumed[-1]["final"] is True
    check_complete(resumed, "alice")
    stored = await store.get_run("alice", "r1")
    assert stored is not None
    assert stored.status == "completed"


async def test_a_resume_of_a_long_live_run_is_not_mistaken_for_a_slow_consumer(
    nursery: trio.Nursery, strings: Strings
) -> None:
    """The backlog of a live run is larger than the outbound queue (and its spill):
    the resuming connection, reading normally, must get it all."""
    server = await start_test_server(
        nursery,
        registry=puppet_registry(strings),
        admin_port=None,
        heartbeat_interval=0,
        outbound_queue=8,
    )
    async with linked(server, "alice", "alice") as (owner, other):
        strings.pull("r1", *["think"] * 40)
        await start(owner, "r1")
        await wait_seq(owner, "r1", 41)
        reply = await other.ask("resume_run", {"run_id": "r1"})
        assert reply["type"] == "run_resumed"
        strings.pull("r1", "done")
        await owner.wait_final("r1")
        await other.wait_final("r1")
    assert [strip_replay(t) for t in other.event_texts("r1")] == owner.event_texts("r1")


# -- the property: any schedule of emits, commits, disconnects, stops and resumes ----

RUN = "r-prop"

STEP = st.one_of(
    st.tuples(st.just("emit"), st.sampled_from(["think", "tool", "inner"])),
    st.tuples(st.just("commit"), st.integers(1, 2)),
    st.tuples(st.just("connect")),
    st.tuples(
        st.just("resume"), st.integers(0, 4), st.one_of(st.integers(0, 3), st.integers(0, 30))
    ),
    st.tuples(st.just("drop"), st.integers(0, 4)),
    st.tuples(st.just("stop"), st.integers(0, 4)),
    st.tuples(st.just("finish"), st.sampled_from(["done", "fail"])),
)
SCHEDULES = st.lists(STEP, max_size=30)


def receiving(link: Link, owner: Link, ended_at: int | None) -> bool:
    """Whether ``link`` receives the run's live events now (a resume would be refused).

    ``ended_at``: the run's last seq once it has ended (committed), else None.
    """
    *_, (reply, indexes) = segments(link, RUN)
    if reply is None:  # no resume yet: only the owner receives the run, until its final
        return link is owner and not any(e.get("final") for e in link.events(RUN))
    if not reply["data"]["live"]:
        return False
    if ended_at is not None and ended_at <= reply["data"]["after_seq"]:
        return False  # it ended within what the client said it had: nothing more to send
    return not any(link.frames[i].get("final") for i in indexes)


async def play(
    store: GatedMemoryStore | GatedSqliteStore, schedule: Sequence[tuple[Any, ...]]
) -> None:
    strings = Strings()
    async with trio.open_nursery() as nursery:
        server = await start_server_on(
            nursery,
            store,
            registry=puppet_registry(strings),
            admin_port=None,
            heartbeat_interval=0,
            max_consecutive_errors=0,
        )
        store.hold()
        owner = await open_link(nursery, server, "alice")
        links = [owner]
        expected: dict[tuple[int, str], str] = {}
        await start(owner, RUN, thread_id="t-prop")
        await settle(store)
        for step in schedule:
            kind = step[0]
            if kind in ("emit", "finish"):
                strings.pull(RUN, step[1])
            elif kind == "commit":
                store.allow(step[1])
            elif kind == "connect":
                if len(links) < 5:
                    links.append(await open_link(nursery, server, "alice"))
            else:
                index = step[1] % len(links)
                link = links[index]
                if link.dropped:
                    continue
                if kind == "drop":
                    link.drop()
                elif kind == "stop":
                    await link.send("stop_agent", {"run_id": RUN})
                else:
                    info = await store.get_run("alice", RUN)
                    assert info is not None
                    ended_at = None if info.running else info.last_seq
                    answer = "refused" if receiving(link, owner, ended_at) else "resumed"
                    message_id = await link.send(
                        "resume_run", {"run_id": RUN, "after_seq": step[2]}
                    )
                    expected[(index, message_id)] = answer
            await settle(store)
            # The durability rule: nobody has a final event the store has not committed.
            if any(e.get("final") for link in links for e in link.events(RUN)):
                info = await store.get_run("alice", RUN)
                assert info is not None
                assert not info.running, "a final event went out before its run was stored"

        store.release()
        strings.pull(RUN, "done")
        await settle(store)

        info = await store.get_run("alice", RUN)
        assert info is not None
        assert not info.running
        stored = [e.frame.decode() for e in await store.read_events(info.run_key, 0, 10_000)]
        history = [json.loads(text) for text in stored]
        assert seqs(history) == list(range(1, len(stored) + 1))
        check_complete(history, "alice")
        assert info.last_seq == len(stored)
        assert info.status == history[-1]["data"]["status"]
        assert len(server.directory) == 0
        assert server.statistics().runs_active == 0

        for index, link in enumerate(links):
            for (where, message_id), answer in expected.items():
                if where == index:
                    reply = await link.reply(message_id)
                    got = "resumed" if reply["type"] == "run_resumed" else reply["error_code"]
                    assert got == {"resumed": "resumed", "refused": "FORMAT_ERROR"}[answer], (
                        index, message_id, reply,
                    )  # fmt: skip
            check_link(link, link is owner, stored, info.status)

        for link in links:
            if not link.dropped:
                await link.aclose()
        nursery.cancel_scope.cancel()


def check_link(link: Link, is_owner: bool, stored: list[str], status: str) -> None:
    """What ``link`` received of the run, against the run as stored."""
    last = len(stored)
    cut = list(segments(link, RUN))
    for number, (reply, indexes) in enumerate(cut):
        texts = [link.texts[i] for i in indexes]
        got = [int(link.frames[i]["seq"]) for i in indexes]
        complete = not link.dropped or number + 1 < len(cut)
        if reply is None:
            if not is_owner:
                assert texts == [], "events before any resume"
                continue
            # The owner's own stream: the run as it happened, without replay marks.
            assert texts == stored[: len(texts)]
            if complete:
                assert texts == stored
            continue
        data = reply["data"]
        after = data["after_seq"]
        assert data["run_id"] == RUN
        want = list(range(after + 1, last + 1))
        assert got == (want if complete else want[: len(got)]), (number, data, got)
        for seq, text in zip(got, texts, strict=True):
            assert strip_replay(text) == stored[seq - 1]
            assert replayed(text) == (seq <= data["last_seq"]), (seq, data)
        if data["live"]:
            assert data["status"] == "running"
        else:
            assert (data["status"], data["last_seq"]) == (status, last)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schedule=SCHEDULES)
async def test_any_schedule_of_emits_commits_drops_and_resumes_loses_and_repeats_nothing(
    autojump_clock: trio.testing.MockClock, schedule: list[tuple[Any, ...]]
) -> None:
    with trio.fail_after(60):
        await play(GatedMemoryStore(node_id="prop"), schedule)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schedule=SCHEDULES)
async def test_the_same_schedules_over_sqlite(
    tmp_path_factory: pytest.TempPathFactory, schedule: list[tuple[Any, ...]]
) -> None:
    path = tmp_path_factory.mktemp("resume") / "chat.db"
    with trio.fail_after(60):
        await play(GatedSqliteStore(path, node_id="prop"), schedule)


async def test_connection_established_lists_the_v11_features_without_session_resume(
    server: ChatServer,
) -> None:
    async with linked(server, "alice") as (alice,):
        data = alice.established["data"]
    assert {"threads", "resume", "subscriptions"} <= set(data["features"])
    assert "session_resume" not in data["features"]  # --resume-grace 0 (the default)
    assert data["protocol_version"] == 1


async def test_a_run_resumed_while_its_start_is_being_recorded_is_followed(
    nursery: trio.Nursery, strings: Strings
) -> None:
    store = GatedMemoryStore(node_id="test")
    server = await start_server_on(
        nursery, store, registry=puppet_registry(strings), admin_port=None, heartbeat_interval=0
    )
    async with linked(server, "alice", "alice") as (owner, other):
        recorded = store.after_begin = trio.Event()
        strings.pull("r1", "think", "done")
        await start(owner, "r1")
        with trio.fail_after(5):
            await store.begun.wait()  # committed, not yet returned to the run table
        store.after_begin = None
        message_id = await other.send("resume_run", {"run_id": "r1"})
        await trio.testing.wait_all_tasks_blocked()
        assert not any(f.get("message_id") == message_id for f in other.frames)
        recorded.set()  # the resume waits for the run to start, then follows it
        reply = await other.reply(message_id)
        await settle(store)
        assert reply["type"] == "run_resumed"
        assert reply["data"]["live"] is True  # followed live, from wherever it has got to
        final = await owner.wait_final("r1")
        await settle(store)
    assert final["data"]["status"] == "completed"
    assert [strip_replay(t) for t in after_reply(other, message_id, "r1")] == owner.event_texts(
        "r1"
    )
