"""Threads over the wire: list, get, rename, delete, busy threads, and other users' ids.

Every exchange goes through a real server (memory store, in-memory
transport) with the puppet agent, whose runs end when the test says so.
What is checked is what the contract promises a client: pages and cursors,
newest first, titles, FORMAT_ERROR for bad arguments, THREAD_BUSY, and that
another user's thread or run is answered exactly as a missing one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest
import trio
from _v11 import GatedMemoryStore, Link, Strings, linked, puppet_registry, settle, start_server_on

from server import ChatServer
from server.testing import start_test_server

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
THREAD_KEYS = {"thread_id", "title", "created_at", "updated_at", "run_count", "last_status"}
RUN_KEYS = {
    "run_id", "agent_name", "status", "user_request", "answer", "started_at", "ended_at",
    "last_seq",
}  # fmt: skip


@pytest.fixture
def strings() -> Strings:
    return Strings()


@pytest.fixture
async def server(nursery: trio.Nursery, strings: Strings) -> ChatServer:
    # No limit on error answers in a row: some tests send many bad frames on purpose.
    return await start_test_server(
        nursery,
        registry=puppet_registry(strings),
        admin_port=None,
        heartbeat_interval=0,
        max_consecutive_errors=0,
    )


async def run_puppet(
    link: Link,
    strings: Strings,
    run_id: str,
    *,
    thread_id: str | None = None,
    request: str = "a request",
    commands: Sequence[str] = ("think", "done"),
) -> dict[str, Any]:
    """Run the puppet to its end on ``link``; return the final event."""
    strings.pull(run_id, *commands)
    await start(link, run_id, thread_id=thread_id, request=request)
    return await link.wait_final(run_id)


async def start(
    link: Link, run_id: str, *, thread_id: str | None = None, request: str = "a request"
) -> str:
    payload = {"user_request": request, "agent_name": "puppet", "run_id": run_id}
    if thread_id is not None:
        payload["thread_id"] = thread_id
    return await link.send("start_agent", payload)


def error_code(frame: dict[str, Any]) -> str | None:
    return frame.get("error_code") if frame["type"] == "error_message" else None


async def walk_threads(link: Link, limit: int) -> list[list[dict[str, Any]]]:
    """Every page of ``list_threads`` with ``limit``, following next_cursor."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        payload: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            payload["cursor"] = cursor
        reply = await link.ask("list_threads", payload)
        assert reply["type"] == "threads", reply
        pages.append(reply["data"]["threads"])
        cursor = reply["data"]["next_cursor"]
        if cursor is None:
            return pages
        assert isinstance(cursor, str)


async def test_list_threads_pages_newest_first_with_titles_counts_and_statuses(
    server: ChatServer, strings: Strings
) -> None:
    long_line = "Why " + "very " * 30 + "expensive?"
    async with linked(server, "alice") as (alice,):
        await run_puppet(alice, strings, "r1", thread_id="t-1", request="\n  First line  \nsecond")
        await run_puppet(alice, strings, "r2", thread_id="t-2", request=long_line)
        await run_puppet(alice, strings, "r3", thread_id="t-3", commands=("fail",))
        await run_puppet(alice, strings, "r4", thread_id="t-4")
        await run_puppet(alice, strings, "r5", thread_id="t-5")
        # A second turn on t-1: it moves to the top, its title stays the first request's.
        await run_puppet(alice, strings, "r6", thread_id="t-1", request="a follow-up")

        pages = await walk_threads(alice, 2)
        assert [len(page) for page in pages] == [2, 2, 1]
        threads = [t for page in pages for t in page]
        (default_page,) = await walk_threads(alice, 20)  # the default limit holds them all
        assert default_page == threads
        assert (await alice.ask("list_threads"))["data"]["threads"] == threads

    by_id = {t["thread_id"]: t for t in threads}
    assert sorted(by_id) == ["t-1", "t-2", "t-3", "t-4", "t-5"]
    for thread in threads:
        assert set(thread) == THREAD_KEYS
        assert ISO.fullmatch(thread["created_at"])
        assert ISO.fullmatch(thread["updated_at"])
        assert thread["created_at"] <= thread["updated_at"]
    # Newest updated_at first (ties by thread id), and t-1 was updated last.
    keys = [(t["updated_at"], t["thread_id"]) for t in threads]
    assert keys == sorted(keys, reverse=True)
    assert by_id["t-1"]["updated_at"] == max(t["updated_at"] for t in threads)
    assert by_id["t-1"]["title"] == "First line"
    assert by_id["t-2"]["title"] == long_line[:80].rstrip()
    assert len(by_id["t-2"]["title"]) <= 80
    assert by_id["t-1"]["run_count"] == 2
    assert [by_id[t]["run_count"] for t in ("t-2", "t-3", "t-4", "t-5")] == [1, 1, 1, 1]
    assert by_id["t-3"]["last_status"] == "failed"
    assert by_id["t-1"]["last_status"] == "completed"


async def test_get_thread_pages_its_runs_newest_first_and_shows_a_running_one(
    server: ChatServer, strings: Strings
) -> None:
    async with linked(server, "alice") as (alice,):
        finals = {}
        for i in range(1, 5):
            commands = ("fail",) if i == 2 else ("think", "tool", "done")
            finals[f"r{i}"] = await run_puppet(
                alice, strings, f"r{i}", thread_id="t-1", request=f"turn {i}", commands=commands
            )
        strings.pull("r5", "think", "think")
        await start(alice, "r5", thread_id="t-1", request="turn 5")
        await alice.wait_for(lambda f: f.get("run_id") == "r5" and f.get("seq") == 3)

        pages: list[list[dict[str, Any]]] = []
        cursor: str | None = None
        while True:
            payload: dict[str, Any] = {"thread_id": "t-1", "limit": 2}
            if cursor is not None:
                payload["cursor"] = cursor
            reply = await alice.ask("get_thread", payload)
            assert reply["type"] == "thread", reply
            data = reply["data"]
            assert set(data) == {
                "thread_id", "title", "created_at", "updated_at", "runs", "next_cursor",
            }  # fmt: skip
            assert (data["thread_id"], data["title"]) == ("t-1", "turn 1")
            pages.append(data["runs"])
            cursor = data["next_cursor"]
            if cursor is None:
                break
        default = await alice.ask("get_thread", {"thread_id": "t-1"})
        strings.pull("r5", "done")
        await alice.wait_final("r5")

    assert [len(page) for page in pages] == [2, 2, 1]
    runs = [run for page in pages for run in page]
    assert default["data"]["runs"] == runs  # default limit 50: one page
    assert [run["run_id"] for run in runs] == ["r5", "r4", "r3", "r2", "r1"]
    for run in runs:
        assert set(run) == RUN_KEYS
        assert run["agent_name"] == "puppet"
        assert ISO.fullmatch(run["started_at"])
    live = runs[0]
    assert (live["status"], live["ended_at"], live["answer"]) == ("running", None, None)
    assert live["last_seq"] == 3
    assert live["user_request"] == "turn 5"
    for run in runs[1:]:
        final = finals[run["run_id"]]
        assert run["last_seq"] == final["seq"]
        assert run["status"] == final["data"]["status"]
        assert ISO.fullmatch(run["ended_at"])
        assert run["started_at"] <= run["ended_at"]
    assert runs[3]["status"] == "failed"
    assert runs[3]["answer"] is None
    assert runs[1]["answer"] == finals["r4"]["data"]["result"]["answer"] == "done after 2 step(s)"


async def test_rename_trims_the_title_keeps_updated_at_and_refuses_bad_titles(
    server: ChatServer, strings: Strings
) -> None:
    async with linked(server, "alice") as (alice,):
        await run_puppet(alice, strings, "r1", thread_id="t-1", request="old title")
        before = (await alice.ask("list_threads"))["data"]["threads"][0]

        renamed = await alice.ask("rename_thread", {"thread_id": "t-1", "title": "  Budget  "})
        assert renamed["type"] == "thread_renamed"
        assert renamed["data"] == {"thread_id": "t-1", "title": "Budget"}
        longest = "x" * 200
        renamed = await alice.ask("rename_thread", {"thread_id": "t-1", "title": longest})
        assert renamed["data"]["title"] == longest

        for bad in ("", "   \n", "y" * 201, 7, None, ["title"]):
            reply = await alice.ask("rename_thread", {"thread_id": "t-1", "title": bad})
            assert error_code(reply) == "FORMAT_ERROR", bad
            assert reply["details"]["field"] == "payload.title"
        missing = await alice.ask("rename_thread", {"thread_id": "t-none", "title": "x"})
        assert error_code(missing) == "THREAD_NOT_FOUND"

        after = (await alice.ask("list_threads"))["data"]["threads"][0]
        got = await alice.ask("get_thread", {"thread_id": "t-1"})
    assert after == {**before, "title": longest}  # updated_at unchanged
    assert got["data"]["title"] == longest


async def test_delete_thread_is_busy_while_a_run_is_in_progress_then_removes_everything(
    server: ChatServer, strings: Strings
) -> None:
    async with linked(server, "alice") as (alice,):
        await run_puppet(alice, strings, "r1", thread_id="t-1")
        strings.pull("r2", "think")
        await start(alice, "r2", thread_id="t-1")
        await alice.wait_for(lambda f: f.get("run_id") == "r2" and f.get("seq") == 2)

        busy = await alice.ask("delete_thread", {"thread_id": "t-1"})
        assert error_code(busy) == "THREAD_BUSY"
        assert busy["details"]["thread_id"] == "t-1"
        assert (await alice.ask("get_thread", {"thread_id": "t-1"}))["data"]["runs"][0][
            "status"
        ] == "running"

        strings.pull("r2", "done")
        await alice.wait_final("r2")
        deleted = await alice.ask("delete_thread", {"thread_id": "t-1"})
        assert deleted["type"] == "thread_deleted"
        assert deleted["data"] == {"thread_id": "t-1"}

        assert error_code(await alice.ask("get_thread", {"thread_id": "t-1"})) == (
            "THREAD_NOT_FOUND"
        )
        assert error_code(await alice.ask("delete_thread", {"thread_id": "t-1"})) == (
            "THREAD_NOT_FOUND"
        )
        for run_id in ("r1", "r2"):
            gone = await alice.ask("resume_run", {"run_id": run_id})
            assert error_code(gone) == "RUN_NOT_FOUND"
        assert (await alice.ask("list_threads"))["data"]["threads"] == []

        # The id is free again: a new run makes a new thread with nothing of the old one.
        final = await run_puppet(alice, strings, "r3", thread_id="t-1", request="fresh start")
        assert final["data"]["result"]["turns"] == 0
        thread = (await alice.ask("get_thread", {"thread_id": "t-1"}))["data"]
    assert thread["title"] == "fresh start"
    assert [run["run_id"] for run in thread["runs"]] == ["r3"]


@pytest.mark.parametrize(
    "payload",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": -1},
        {"limit": "5"},
        {"limit": 2.5},
        {"limit": True},
        {"cursor": "not a cursor!"},
        {"cursor": ""},
        {"cursor": 12},
        {"cursor": "eyJhIjoxfQ"},  # base64 of a JSON object, not one of ours
    ],
)
async def test_bad_limits_and_cursors_are_format_errors_and_the_connection_stays(
    server: ChatServer, strings: Strings, payload: dict[str, Any]
) -> None:
    async with linked(server, "alice") as (alice,):
        await run_puppet(alice, strings, "r1", thread_id="t-1")
        for kind, base in (("list_threads", {}), ("get_thread", {"thread_id": "t-1"})):
            reply = await alice.ask(kind, {**base, **payload})
            assert error_code(reply) == "FORMAT_ERROR", (kind, reply)
            assert reply["message_id"]
        assert (await alice.ask("ping"))["type"] == "pong"


async def test_a_cursor_works_only_for_the_list_it_came_from(
    server: ChatServer, strings: Strings
) -> None:
    async with linked(server, "alice", "bob") as (alice, bob):
        for i in range(3):
            await run_puppet(alice, strings, f"a{i}", thread_id="t-a")
            await run_puppet(alice, strings, f"b{i}", thread_id=f"t-b{i}")
            await run_puppet(bob, strings, f"c{i}", thread_id=f"t-c{i}")
        threads_cursor = (await alice.ask("list_threads", {"limit": 1}))["data"]["next_cursor"]
        runs_cursor = (await alice.ask("get_thread", {"thread_id": "t-a", "limit": 1}))["data"][
            "next_cursor"
        ]
        assert threads_cursor
        assert runs_cursor
        refused = [
            await alice.ask("list_threads", {"cursor": runs_cursor}),
            await alice.ask("get_thread", {"thread_id": "t-a", "cursor": threads_cursor}),
            await alice.ask("get_thread", {"thread_id": "t-b0", "cursor": runs_cursor}),
            await bob.ask("list_threads", {"cursor": threads_cursor}),
        ]
        accepted = await alice.ask("list_threads", {"cursor": threads_cursor})
    assert [error_code(reply) for reply in refused] == ["FORMAT_ERROR"] * 4
    assert accepted["type"] == "threads"


async def test_a_run_on_a_busy_thread_is_thread_busy_from_any_connection(
    server: ChatServer, strings: Strings
) -> None:
    async with linked(server, "alice", "alice") as (first, second):
        strings.pull("r1", "think")
        await start(first, "r1", thread_id="t-1")
        await first.wait_for(lambda f: f.get("run_id") == "r1" and f.get("seq") == 2)
        for link, run_id in ((first, "r2"), (second, "r3")):
            message_id = await start(link, run_id, thread_id="t-1")
            reply = await link.reply(message_id)
            assert error_code(reply) == "THREAD_BUSY"
            assert reply["details"]["thread_id"] == "t-1"
            assert link.events(run_id) == []
        strings.pull("r1", "done")
        await first.wait_final("r1")
        # Refused runs left nothing behind; the next one is the thread's second turn.
        final = await run_puppet(second, strings, "r4", thread_id="t-1")
        thread = (await second.ask("get_thread", {"thread_id": "t-1"}))["data"]
    assert final["data"]["result"]["turns"] == 1
    assert [run["run_id"] for run in thread["runs"]] == ["r4", "r1"]


def same_but_ids(reply: dict[str, Any]) -> dict[str, Any]:
    return {**reply, "message_id": "-"}


async def test_another_users_thread_is_answered_exactly_as_a_missing_one(
    server: ChatServer, strings: Strings
) -> None:
    """Bob asks about Alice's thread, then about the same id once it no longer exists:
    every reply is the same, byte for byte but the message id."""
    requests: list[tuple[str, dict[str, Any]]] = [
        ("get_thread", {"thread_id": "t-alice"}),
        ("get_thread", {"thread_id": "t-alice", "limit": 1}),
        ("rename_thread", {"thread_id": "t-alice", "title": "mine now"}),
        ("delete_thread", {"thread_id": "t-alice"}),
        ("subscribe_thread", {"thread_id": "t-alice"}),
    ]
    # (start_agent is not among them: on a missing thread it creates the thread,
    # on another user's it is THREAD_NOT_FOUND; see the next test.)
    async with linked(server, "alice", "bob") as (alice, bob):
        await run_puppet(alice, strings, "a1", thread_id="t-alice", request="alice's secret")
        foreign = [await bob.ask(kind, payload) for kind, payload in requests]
        assert (await alice.ask("delete_thread", {"thread_id": "t-alice"}))["type"] == (
            "thread_deleted"
        )
        missing = [await bob.ask(kind, payload) for kind, payload in requests]

    assert [error_code(r) for r in foreign] == ["THREAD_NOT_FOUND"] * len(requests)
    assert [same_but_ids(r) for r in foreign] == [same_but_ids(r) for r in missing]
    assert "secret" not in str(foreign)  # nothing of her thread (its title) shows


async def test_alices_thread_survives_bobs_attempts(server: ChatServer, strings: Strings) -> None:
    async with linked(server, "alice", "bob") as (alice, bob):
        await run_puppet(alice, strings, "a1", thread_id="t-alice", request="alice's title")
        await bob.ask("rename_thread", {"thread_id": "t-alice", "title": "bob was here"})
        await bob.ask("delete_thread", {"thread_id": "t-alice"})
        refused = await bob.ask(
            "start_agent",
            {"user_request": "x", "agent_name": "puppet", "thread_id": "t-alice", "run_id": "b1"},
        )
        assert error_code(refused) == "THREAD_NOT_FOUND"
        assert refused["details"] == {"thread_id": "t-alice"}
        assert bob.events("b1") == []
        thread = (await alice.ask("get_thread", {"thread_id": "t-alice"}))["data"]
        bobs = (await bob.ask("list_threads"))["data"]["threads"]
    assert thread["title"] == "alice's title"
    assert [run["run_id"] for run in thread["runs"]] == ["a1"]
    assert bobs == []


async def test_every_run_message_with_another_users_run_id_is_run_not_found(
    server: ChatServer, strings: Strings
) -> None:
    async with linked(server, "alice", "bob") as (alice, bob):
        await run_puppet(alice, strings, "ended", thread_id="t-1")
        strings.pull("live", "think")
        await start(alice, "live", thread_id="t-2")
        await alice.wait_for(lambda f: f.get("run_id") == "live" and f.get("seq") == 2)

        replies = {
            (kind, run_id, after): await bob.ask(kind, payload)
            for run_id in ("ended", "live", "never")
            for kind, payload, after in (
                ("resume_run", {"run_id": run_id}, 0),
                ("resume_run", {"run_id": run_id, "after_seq": 1}, 1),
                ("stop_agent", {"run_id": run_id}, None),
            )
        }
        # Bob stopped nothing: Alice's run goes on and ends as she says.
        strings.pull("live", "think", "done")
        final = await alice.wait_final("live")
        sub = await bob.ask("subscribe_thread", {"thread_id": "t-2"})

    for key, reply in replies.items():
        assert error_code(reply) == "RUN_NOT_FOUND", key
    shapes = {
        (kind, after): [
            same_but_ids({**r, "details": {}}) for (k, _, a), r in replies.items()
            if (k, a) == (kind, after)
        ]
        for kind, _, after in replies
    }  # fmt: skip
    for group in shapes.values():
        assert all(reply == group[0] for reply in group)  # live, ended and unknown look alike
    assert final["data"]["status"] == "completed"
    assert error_code(sub) == "THREAD_NOT_FOUND"
    assert bob.events("live") == bob.events("ended") == []
    assert not [f for f in bob.frames if "alice" in str(f)]


# -- memory: a thread's earlier turns ----------------------------------------------

FIRST = "We send 40M input and 10M output tokens a month to gpt-4o. p95 latency is 1200 ms."
FOLLOW_UP = "And what if we switched to claude 3.5 haiku?"


async def test_a_follow_up_on_a_thread_reuses_the_earlier_figures_and_says_so(
    server: ChatServer,
) -> None:
    async with linked(server, "alice") as (alice,):
        await alice.send("user_message", {"content": FIRST, "thread_id": "t-1"})
        first = await alice.wait_for(lambda f: f.get("final") is True)
        await alice.send("user_message", {"content": FOLLOW_UP, "thread_id": "t-1"})
        second = await alice.wait_for(lambda f: f.get("final") is True and f is not first)
        # The same question on a thread of its own has nothing to reuse.
        await alice.send("user_message", {"content": FOLLOW_UP, "thread_id": "t-2"})
        alone = await alice.wait_for(
            lambda f: f.get("final") is True and f.get("thread_id") == "t-2"
        )
    first_run = first["run_id"]
    answer = second["data"]["result"]["answer"]
    assert second["thread_id"] == "t-1"
    assert "### From earlier in this thread" in answer
    assert f"Reused from your earlier message (run {first_run}): workload" in answer
    assert "Earlier in this thread the monthly cost was $200.00" in answer
    assert "From earlier in this thread" not in alone["data"]["result"]["answer"]
    assert "$200.00" not in alone["data"]["result"]["answer"]


async def test_history_turns_bounds_the_earlier_turns_a_run_sees(
    nursery: trio.Nursery, strings: Strings
) -> None:
    server = await start_test_server(
        nursery, registry=puppet_registry(strings), admin_port=None, history_turns=2
    )
    async with linked(server, "alice") as (alice,):
        finals = [
            await run_puppet(
                alice,
                strings,
                f"r{i}",
                thread_id="t-1",
                request=f"turn {i}",
                commands=("fail",) if i == 2 else ("done",),
            )
            for i in range(1, 5)
        ]
    earlier = [final["data"].get("result", {}).get("earlier") for final in finals]
    assert earlier[0] == []
    assert earlier[2] == [
        ["r1", "turn 1", "completed", "done after 0 step(s)"],
        ["r2", "turn 2", "failed", None],
    ]
    # The two most recent ended turns, oldest first.
    assert earlier[3] == [
        ["r2", "turn 2", "failed", None],
        ["r3", "turn 3", "completed", "done after 0 step(s)"],
    ]


async def test_history_turns_zero_answers_a_follow_up_as_if_nothing_was_said(
    nursery: trio.Nursery,
) -> None:
    server = await start_test_server(nursery, admin_port=None, history_turns=0)
    async with linked(server, "alice") as (alice,):
        await alice.send("user_message", {"content": FIRST, "thread_id": "t-1"})
        first = await alice.wait_for(lambda f: f.get("final") is True)
        await alice.send("user_message", {"content": FOLLOW_UP, "thread_id": "t-1"})
        second = await alice.wait_for(lambda f: f.get("final") is True and f is not first)
        thread = (await alice.ask("get_thread", {"thread_id": "t-1"}))["data"]
    assert len(thread["runs"]) == 2  # both recorded on the thread, none remembered
    assert "From earlier in this thread" not in second["data"]["result"]["answer"]


@pytest.mark.timeout(30)
async def test_get_thread_gives_a_live_runs_last_seq_sent_not_only_committed(
    nursery: trio.Nursery, strings: Strings
) -> None:
    """The store is behind a live run by whatever awaits its group commit: the
    run's last_seq in get_thread is what the run has sent (what a resume_run
    from there needs), not the store's."""
    store = GatedMemoryStore(node_id="test")
    server = await start_server_on(
        nursery, store, registry=puppet_registry(strings), admin_port=None, heartbeat_interval=0
    )
    async with linked(server, "alice", "alice") as (owner, other):
        strings.pull("r1", "think")
        await start(owner, "r1", thread_id="t-1")
        await owner.wait_for(lambda f: f.get("run_id") == "r1" and f.get("seq") == 2)
        await settle(store)
        store.hold()
        strings.pull("r1", "think", "think")
        await owner.wait_for(lambda f: f.get("run_id") == "r1" and f.get("seq") == 4)
        await settle(store)
        committed = await store.get_run("alice", "r1")
        assert committed is not None
        assert committed.last_seq == 2
        reply = await other.ask("get_thread", {"thread_id": "t-1"})
        store.release()
        strings.pull("r1", "done")
        await owner.wait_final("r1")
    (run,) = reply["data"]["runs"]
    assert (run["run_id"], run["status"], run["last_seq"]) == ("r1", "running", 4)
