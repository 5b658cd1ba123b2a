"""The store failing under a running server, end to end: refusals, /readyz, recovery.

- A real PostgreSQL behind a TCP proxy the test cuts and restores (the
  shared server keeps running for everyone else): while it is cut, runs and
  history requests are answered STORE_UNAVAILABLE with nothing written,
  /readyz answers 503, and when it is back the same server works again, no
  restart. A run in flight when the store goes gets its final event (with
  ``history_saved: false``), and its history is committed once the store
  is back.
- A SQLite file made read-only, and a full disk: the same promises.

The stores are made here with a short operation time limit (1 s instead of
5 s), so a refused request is answered quickly; the history writer gives up
waiting for a final's commit after 1 s instead of 5 s.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from _redis import TcpProxy, eventually
from _store import POSTGRES_URL, postgres_schema
from _v11 import Link, Strings, linked, puppet_registry, start_server_on, strip_replay
from test_store_postgres import via
from test_store_sqlite import pragma, read_only

import server._server
from server import ChatServer
from server.protocol import check_run_invariants
from server.store import HistoryWriter, SqliteStore, Store, make_store

#: Operation time limit of the stores made here (seconds), and the writer's final timeout.
OP_TIMEOUT = 1.0
FINAL_TIMEOUT = 1.0
#: How long a condition that a background check notices may take (store checks every 2 s).
NOTICE = 15.0


@pytest.fixture
def strings() -> Strings:
    return Strings()


async def serve(nursery: trio.Nursery, store: Store, strings: Strings) -> ChatServer:
    """A server on ``store`` whose history writer waits FINAL_TIMEOUT for a final's commit."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            server._server,
            "HistoryWriter",
            functools.partial(HistoryWriter, final_timeout=FINAL_TIMEOUT, retry_max=0.2),
        )
        return await start_server_on(
            nursery,
            store,
            registry=puppet_registry(strings),
            heartbeat_interval=0,
            max_consecutive_errors=0,
        )


async def readyz(server: ChatServer) -> int:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{server.admin_url}/readyz", timeout=5)
    return response.status_code


async def wait_ready(server: ChatServer, status: int, *, within: float = NOTICE) -> None:
    async def check() -> bool:
        return await readyz(server) == status

    with trio.fail_after(within):
        await eventually(check, interval=0.1)


async def start(link: Link, run_id: str, thread_id: str, request: str = "go") -> str:
    return await link.send(
        "start_agent",
        {"user_request": request, "agent_name": "puppet", "run_id": run_id, "thread_id": thread_id},
    )


#: Requests made while the store is down, besides a new run.
READS = ("list_threads", "get_thread", "resume_run", "subscribe_thread")
WRITES = ("rename_thread", "delete_thread")
PAYLOADS: dict[str, dict[str, Any]] = {
    "list_threads": {},
    "get_thread": {"thread_id": "t-1"},
    "resume_run": {"run_id": "r1"},
    "subscribe_thread": {"thread_id": "t-1"},
    "rename_thread": {"thread_id": "t-1", "title": "renamed"},
    "delete_thread": {"thread_id": "t-1"},
}


async def requests_while_down(
    link: Link, run_id: str, thread_id: str, kinds: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """A new run, then each of ``kinds``; their replies.

    The run's request is long (60 kB): on a full disk, a small row might still
    fit in a page that has room.
    """
    request = "How do we cut costs? " + "x" * 60_000
    replies = {"start": await link.reply(await start(link, run_id, thread_id, request))}
    for kind in kinds:
        replies[kind] = await link.ask(kind, PAYLOADS[kind])
    return replies


async def check_nothing_half_written(link: Link, run_id: str, thread_id: str) -> None:
    """After recovery: the refused run and its new thread do not exist, the rest does."""
    assert (await link.ask("resume_run", {"run_id": run_id}))["error_code"] == "RUN_NOT_FOUND"
    missing = await link.ask("get_thread", {"thread_id": thread_id})
    assert missing["error_code"] == "THREAD_NOT_FOUND"
    thread = (await link.ask("get_thread", {"thread_id": "t-1"}))["data"]
    assert thread["title"] == "go"
    assert [run["run_id"] for run in thread["runs"]][-1] == "r1"


async def check_in_flight_run(link: Link, run_id: str) -> None:
    """The run that was running when the store went: its final said the history
    lacked it; now history has the whole run (its own final, without that mark)."""
    got = link.event_texts(run_id)
    final = json.loads(got[-1])
    assert final["data"]["history_saved"] is False
    assert final["data"]["status"] == "completed"
    reply = await link.ask("resume_run", {"run_id": run_id})
    assert reply["data"]["live"] is False
    assert reply["data"]["status"] == "completed"
    await link.wait_for(
        lambda f: f.get("run_id") == run_id and f.get("final") is True and f.get("replay") is True
    )
    stored = [strip_replay(t) for t in link.event_texts(run_id)[len(got) :]]
    assert stored[:-1] == got[:-1]  # byte for byte
    events = [json.loads(text) for text in stored]
    check_run_invariants(events, run_id=run_id, user_id="alice")
    assert "history_saved" not in events[-1]["data"]


async def outage(
    server: ChatServer, strings: Strings, down: Any, up: Any, *, refused: tuple[str, ...]
) -> None:
    """One outage (``down()`` .. ``up()``) as a client lives through it."""
    async with linked(server, "alice") as (alice,):
        strings.pull("r1", "done")
        await start(alice, "r1", "t-1")
        await alice.wait_final("r1")
        strings.pull("r-flight", "think")
        await start(alice, "r-flight", "t-flight")
        await alice.wait_for(lambda f: f.get("run_id") == "r-flight" and f.get("seq") == 2)

        await down()
        # Events written behind (large ones: a full disk may still have room for
        # small ones): their batches fail.
        strings.pull("r-flight", "big", "tool", "big")
        kinds = refused if set(refused) & set(READS) else (*refused, *READS)
        replies = await requests_while_down(alice, "r-refused", "t-refused", kinds)
        assert replies["start"]["error_code"] == "STORE_UNAVAILABLE"
        assert replies["start"]["message_id"]
        for kind in kinds:
            error = replies[kind].get("error_code")
            assert error == ("STORE_UNAVAILABLE" if kind in refused else None), replies[kind]
        assert alice.events("r-refused") == []
        await wait_ready(server, 503)
        strings.pull("r-flight", "done")
        await alice.wait_final("r-flight")  # after FINAL_TIMEOUT, without its commit

        await up()
        await wait_ready(server, 200)
        with trio.fail_after(NOTICE):
            await server.history.writer.wait_flushed()
        await check_nothing_half_written(alice, "r-refused", "t-refused")
        await check_in_flight_run(alice, "r-flight")
        # And the same server runs again.
        strings.pull("r2", "think", "done")
        await start(alice, "r2", "t-refused")
        assert (await alice.wait_final("r2"))["data"]["status"] == "completed"
        assert "history_saved" not in (await alice.wait_final("r2"))["data"]
    stats = server.statistics()
    assert stats.store_operations_total[("begin_run", "error")] >= 1
    assert stats.store_operations_total[("write_batch", "error")] >= 1


# -- PostgreSQL ---------------------------------------------------------------------


@pytest.fixture
def schema_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture
async def proxy(nursery: trio.Nursery, schema_url: str) -> TcpProxy:
    relay: TcpProxy = await nursery.start(TcpProxy(POSTGRES_URL).serve)
    return relay


async def test_postgres_cut_refuses_with_store_unavailable_then_recovers_in_place(
    nursery: trio.Nursery, strings: Strings, schema_url: str, proxy: TcpProxy
) -> None:
    store = make_store(via(schema_url, proxy.port), op_timeout=OP_TIMEOUT)
    srv = await serve(nursery, store, strings)

    async def down() -> None:
        proxy.cut()

    async def up() -> None:
        proxy.restore()

    with trio.fail_after(60):
        # Each refusal waits for the pool's time limit (1 s here): a few kinds only.
        await outage(
            srv, strings, down, up, refused=("list_threads", "resume_run", "rename_thread")
        )


# -- SQLite -------------------------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path) -> SqliteStore:
    """Not opened yet: the server opens it, and closes it when it stops."""
    store = make_store(f"sqlite:///{tmp_path}/chat.db", op_timeout=OP_TIMEOUT)
    assert isinstance(store, SqliteStore)
    return store


async def test_a_read_only_sqlite_file_refuses_writes_then_recovers_in_place(
    nursery: trio.Nursery, strings: Strings, sqlite_store: SqliteStore
) -> None:
    srv = await serve(nursery, sqlite_store, strings)
    made_read_only = read_only(sqlite_store)

    async def down() -> None:
        made_read_only.__enter__()

    async def up() -> None:
        made_read_only.__exit__(None, None, None)

    with trio.fail_after(60):
        await outage(srv, strings, down, up, refused=WRITES)  # reads go on


async def test_a_full_disk_refuses_writes_then_recovers_in_place(
    nursery: trio.Nursery, strings: Strings, sqlite_store: SqliteStore
) -> None:
    srv = await serve(nursery, sqlite_store, strings)

    async def down() -> None:
        row = await sqlite_store._write("test", lambda db: db.one("PRAGMA page_count"))
        assert row is not None
        await pragma(sqlite_store, f"PRAGMA max_page_count = {row[0]}")

    async def up() -> None:
        await pragma(sqlite_store, "PRAGMA max_page_count = 1073741823")

    with trio.fail_after(60):
        # Reads go on, and so do writes that need no new page (a rename).
        await outage(srv, strings, down, up, refused=())


async def test_readyz_says_503_while_a_read_only_store_refuses_every_run(
    nursery: trio.Nursery, strings: Strings, sqlite_store: SqliteStore
) -> None:
    """No run in flight: nothing but the refused requests shows the store is unusable."""
    srv = await serve(nursery, sqlite_store, strings)
    async with linked(srv, "alice") as (alice,):
        with read_only(sqlite_store):
            for number in range(3):
                reply = await alice.reply(await start(alice, f"r{number}", f"t-{number}"))
                assert reply["error_code"] == "STORE_UNAVAILABLE"
            await wait_ready(srv, 503, within=3)  # more than one store check (2 s)
        await wait_ready(srv, 200)
