"""SQLite under trouble: a read-only file, a full disk, cancelled and slow queries.

"Read-only" is the file made immutable (``chattr +i``, as root: root ignores
permission bits, and an open file descriptor would too); elsewhere the
writer connection is switched to ``query_only``, which fails the same way
(SQLITE_READONLY). "Disk full" is ``PRAGMA max_page_count`` on the writer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from _store import end, events, start

from server.store import (
    EventRecord,
    RunStart,
    SqliteStore,
    StoreUnavailableError,
    ThreadBusyError,
    open_store,
)
from server.store._sql import Db

#: Counts to 10^9 in SQLite's VM: seconds of work, interruptible.
ENDLESS = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000)"
    " SELECT count(*) FROM c"
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_store(f"sqlite:///{tmp_path}/chat.db") as opened:
        assert isinstance(opened, SqliteStore)
        yield opened


def _chattr(flag: str, paths: list[Path]) -> bool:
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        return False
    result = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, check=False)
    return result.returncode == 0


@contextmanager
def read_only(store: SqliteStore) -> Iterator[str]:
    """The database file made read-only while inside; yields how."""
    files = [p for p in (store.path, Path(f"{store.path}-wal")) if p.exists()]
    if _chattr("+i", files):
        try:
            yield "immutable file"
        finally:
            _chattr("-i", files)
        return
    writer = store.writer_connection
    assert writer is not None
    writer.execute("PRAGMA query_only=1")
    try:
        yield "query_only"
    finally:
        writer.execute("PRAGMA query_only=0")


async def pragma(store: SqliteStore, statement: str) -> None:
    await store._write("test", lambda db: db.one(statement))


async def test_a_read_only_file_refuses_writes_keeps_reads_and_recovers(
    store: SqliteStore,
) -> None:
    done = start("alice", "t-1")
    await store.begin_run(done, history_turns=0)
    running = start("alice", "t-2")
    await store.begin_run(running, history_turns=0)
    with read_only(store):
        with pytest.raises(StoreUnavailableError):
            await store.begin_run(start("alice", "t-3"), history_turns=0)
        with pytest.raises(StoreUnavailableError):
            await store.finish_run(end(done.run_key, 2), events(done.run_key, 1, 2))
        # Reads go on.
        assert [t.thread_id for t in (await store.list_threads("alice")).items] == ["t-2", "t-1"]
        await store.ping()
    # Nothing half-written, and the same store object writes again.
    assert await store.get_thread("alice", "t-3") is None
    assert await store.read_events(done.run_key) == []
    assert await store.finish_run(end(done.run_key, 2), events(done.run_key, 1, 2))
    await store.begin_run(start("alice", "t-3"), history_turns=0)
    assert [e.seq for e in await store.read_events(done.run_key)] == [1, 2]


async def test_a_full_disk_fails_the_whole_batch_and_recovers(store: SqliteStore) -> None:
    small, big = start("alice", "t-1"), start("alice", "t-2")
    for begin in (small, big):
        await store.begin_run(begin, history_turns=0)
    row = await store._write("test", lambda db: db.one("PRAGMA page_count"))
    assert row is not None
    await pragma(store, f"PRAGMA max_page_count = {row[0] + 2}")
    huge = [EventRecord(run_key=big.run_key, seq=seq, frame=b"x" * 50_000) for seq in range(1, 11)]
    with pytest.raises(StoreUnavailableError, match="full"):
        await store.write_batch([*events(small.run_key, 1, 2), *huge], [end(small.run_key, 2)])
    # All or nothing: the small run's end and events were in the same batch.
    info = await store.get_run("alice", small.run_id)
    assert info is not None
    assert info.running
    assert await store.read_events(small.run_key) == []
    assert await store.read_events(big.run_key) == []
    await pragma(store, "PRAGMA max_page_count = 1073741823")
    assert await store.write_batch(
        [*events(small.run_key, 1, 2), *huge], [end(small.run_key, 2)]
    ) == [True]
    assert len(await store.read_events(big.run_key)) == 10


async def test_a_write_past_its_deadline_is_interrupted_and_rolled_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/chat.db"

    def slow_begin(db: Db) -> None:
        db.run("INSERT INTO threads VALUES (?, 'alice', 'half', 0, 0, 0, NULL)", ("t-1",))
        db.one(ENDLESS)

    with trio.fail_after(20):
        async with open_store(url, op_timeout=0.3) as store:
            assert isinstance(store, SqliteStore)
            sqlite = store
            with pytest.raises(StoreUnavailableError):
                await sqlite._op("begin_run", lambda: sqlite._write("test", slow_begin))
            await store.ping()
        async with open_store(url) as store:  # the default time limit for the checks
            assert await store.get_thread("alice", "t-1") is None
            await store.begin_run(start("alice", "t-1"), history_turns=0)


async def test_writes_queued_together_share_one_transaction_each_in_its_savepoint(
    store: SqliteStore, nursery: trio.Nursery
) -> None:
    """A cancelled caller's queued write never runs; one in the batch reports its truth."""
    token = trio.lowlevel.current_trio_token()
    inside = trio.Event()
    release = threading.Event()

    def held(db: Db) -> str:
        token.run_sync_soon(inside.set)
        release.wait(10)
        db.run("INSERT INTO threads VALUES ('t-held', 'alice', 'x', 0, 0, 0, NULL)")
        return "committed"

    def queued(db: Db) -> None:
        db.run("INSERT INTO threads VALUES ('t-queued', 'alice', 'x', 0, 0, 0, NULL)")

    results: dict[str, object] = {}
    scopes: dict[str, trio.CancelScope] = {}
    outcomes: list[str] = []
    all_begun = trio.Event()

    async def call(name: str, fn: Callable[[Db], object]) -> None:
        with trio.CancelScope() as scope:
            scopes[name] = scope
            results[name] = await store._write(name, fn)

    async def begin(run: RunStart) -> None:
        try:
            await store.begin_run(run, history_turns=0)
            outcomes.append("ok")
        except ThreadBusyError:
            outcomes.append("busy")
        if len(outcomes) == 3:
            all_begun.set()

    await store.begin_run(start("alice", "t-a"), history_turns=0)  # t-a is busy
    assert store._writes is not None
    with trio.fail_after(20):
        nursery.start_soon(call, "held", held)
        await inside.wait()  # the writer thread is inside the first batch
        batches = store._writes.batches
        nursery.start_soon(call, "queued", queued)
        for thread_id in ("t-a", "t-b", "t-c"):
            nursery.start_soon(begin, start("alice", thread_id))
        await trio.testing.wait_all_tasks_blocked()
        scopes["held"].cancel()
        scopes["queued"].cancel()
        release.set()
        await all_begun.wait()
    assert results == {"held": "committed"}  # its caller got the truth, not Cancelled
    assert await store.get_thread("alice", "t-held") is not None
    assert await store.get_thread("alice", "t-queued") is None  # taken out, never ran
    # The three begin_runs went in one transaction; THREAD_BUSY undid only its own.
    assert store._writes.batches == batches + 2
    assert sorted(outcomes) == ["busy", "ok", "ok"]
    assert await store.get_thread("alice", "t-b") is not None
    assert await store.get_thread("alice", "t-c") is not None


async def test_the_time_limit_is_store_unavailable(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path}/chat.db", op_timeout=0.2) as store:
        assert isinstance(store, SqliteStore)
        with trio.fail_after(20):
            with pytest.raises(StoreUnavailableError, match="did not answer"):
                await store._op(
                    "list_threads", lambda: store._read("x", lambda db: db.one(ENDLESS))
                )
            await store.ping()


async def test_queries_run_off_the_event_loop(store: SqliteStore) -> None:
    ticks = 0
    finished = False

    async def ticker() -> None:
        nonlocal ticks
        while not finished:
            ticks += 1
            await trio.lowlevel.checkpoint()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)

            def busy(db: Db) -> object:
                return db.one(
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
                    " WHERE x < 300000) SELECT count(*) FROM c"
                )

            before = ticks
            await store._read("test", busy)
            during = ticks - before
            finished = True
    assert during > 10  # the loop kept running other tasks while the query ran


async def test_a_path_that_cannot_be_created_is_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreUnavailableError):
        async with open_store(f"sqlite:///{tmp_path}/file/sub/chat.db"):
            pass


async def test_a_reader_that_failed_is_replaced(store: SqliteStore) -> None:
    await store.ping()  # a reader connection now waits in the pool
    store._idle_readers[-1].close()  # it breaks (as after an I/O error)
    with pytest.raises(StoreUnavailableError):
        await store.ping()
    await store.ping()  # a fresh reader
    assert (await store.list_threads("alice")).items == ()


async def test_a_write_that_answers_after_changing_undoes_only_its_changes(
    store: SqliteStore, nursery: trio.Nursery
) -> None:
    token = trio.lowlevel.current_trio_token()
    inside = trio.Event()
    release = threading.Event()

    def hold(db: Db) -> None:
        token.run_sync_soon(inside.set)
        release.wait(10)

    def change_then_refuse(db: Db) -> None:
        db.run("INSERT INTO threads VALUES ('t-undone', 'alice', 'x', 0, 0, 0, NULL)")
        raise ThreadBusyError("busy after all")

    def change(db: Db) -> None:
        db.run("INSERT INTO threads VALUES ('t-kept', 'alice', 'x', 0, 0, 0, NULL)")

    outcomes: dict[str, str] = {}
    finished = trio.Event()

    async def call(name: str, fn: Callable[[Db], None]) -> None:
        try:
            await store._write(name, fn)
            outcomes[name] = "ok"
        except ThreadBusyError:
            outcomes[name] = "busy"
        if len(outcomes) == 3:
            finished.set()

    assert store._writes is not None
    with trio.fail_after(20):
        nursery.start_soon(call, "hold", hold)
        await inside.wait()
        batches = store._writes.batches
        nursery.start_soon(call, "refuse", change_then_refuse)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, "change", change)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
        await finished.wait()
    assert store._writes.batches == batches + 2  # the two queued writes: one batch
    assert outcomes == {"hold": "ok", "refuse": "busy", "change": "ok"}
    assert await store.get_thread("alice", "t-undone") is None
    assert await store.get_thread("alice", "t-kept") is not None


def test_connections_opening_a_new_file_at_once_all_get_wal_mode(tmp_path: Path) -> None:
    # Switching a new file to WAL takes an exclusive lock, and SQLite refuses a
    # second switcher at once ("database is locked", no busy handler): workers
    # starting together on a new file failed about one time in four without
    # the retry (8 openers, 100 files).
    import sqlite3

    from server.store._sqlite import _use_wal

    def open_one(
        path: Path, barrier: threading.Barrier, modes: list[str], errors: list[BaseException]
    ) -> None:
        conn = sqlite3.connect(path, timeout=5, isolation_level=None)
        try:
            barrier.wait()
            _use_wal(conn, 5.0)
            modes.append(conn.execute("PRAGMA journal_mode").fetchone()[0])
        except BaseException as error:
            errors.append(error)
        finally:
            conn.close()

    for trial in range(40):
        barrier = threading.Barrier(8)
        modes: list[str] = []
        errors: list[BaseException] = []
        args = (tmp_path / f"new-{trial}.db", barrier, modes, errors)
        threads = [threading.Thread(target=open_one, args=args) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        assert modes == ["wal"] * 8
