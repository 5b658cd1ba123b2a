"""PostgreSQL under trouble: cancelled queries, time limits, the server going away and back.

The server "goes away" through a TCP proxy that this test owns and can cut
(the shared PostgreSQL keeps running for everyone else).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import trio
from _store import POSTGRES_URL, end, events, postgres_schema, start

from server.store import PostgresStore, StoreUnavailableError, _sql, open_store
from server.store._sql import Db


@pytest.fixture
def url() -> Iterator[str]:
    with postgres_schema() as schema_url:
        yield schema_url


class CuttableProxy:
    """A TCP proxy to PostgreSQL that can drop every connection and refuse new ones."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.blocked = False
        self._links: set[trio.CancelScope] = set()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._link, listeners)
            task_status.started(listeners[0].socket.getsockname()[1])

    async def _link(self, client: trio.SocketStream) -> None:
        async with client:
            if self.blocked:
                return
            upstream = await trio.open_tcp_stream(*self._target)
            async with upstream:
                with trio.CancelScope() as scope:
                    self._links.add(scope)
                    try:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(_pump, client, upstream, nursery.cancel_scope)
                            nursery.start_soon(_pump, upstream, client, nursery.cancel_scope)
                    finally:
                        self._links.discard(scope)

    def cut(self) -> None:
        """Drop every connection now and refuse new ones until :meth:`restore`."""
        self.blocked = True
        for scope in self._links:
            scope.cancel()

    def restore(self) -> None:
        self.blocked = False


async def _pump(source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except trio.BrokenResourceError:
        pass
    done.cancel()


def via(url: str, port: int) -> str:
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, *parts[2:]))


@pytest.fixture
async def proxied(url: str, nursery: trio.Nursery) -> tuple[CuttableProxy, str]:
    target = urlsplit(POSTGRES_URL)
    proxy = CuttableProxy(target.hostname or "127.0.0.1", target.port or 5432)
    port = await nursery.start(proxy.serve)
    return proxy, via(url, port)


def sleeping_queries(marker: str) -> int:
    """How many queries containing ``marker`` are running on the server now."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
            " AND query LIKE %s AND pid <> pg_backend_pid()",
            (f"%{marker}%",),
        ).fetchone()
    assert row is not None
    return int(row[0])


def terminate(marker: str) -> None:
    """End the server processes still running ``marker`` (a cut client's query)."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE query LIKE %s AND pid <> pg_backend_pid()",
            (f"%{marker}%",),
        )


async def wait_until_running(marker: str) -> None:
    # The server's own view is the only signal that the query has started.
    while not await trio.to_thread.run_sync(sleeping_queries, marker):  # noqa: ASYNC110
        await trio.sleep(0.02)


def pool_of(store: object) -> dict[str, int]:
    assert isinstance(store, PostgresStore)
    return store._pool.get_stats()


async def test_a_cancelled_query_leaves_the_pool_clean(url: str) -> None:
    async with open_store(url) as store:
        assert isinstance(store, PostgresStore)
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:

                async def sleeper() -> None:
                    await store._write("test", lambda db: db.one("SELECT pg_sleep(30) -- m1"))

                nursery.start_soon(sleeper)
                await wait_until_running("-- m1")
                nursery.cancel_scope.cancel()
            # The worker thread has returned before the cancellation went on:
            # the query is no longer running, and the connection is back, idle.
            assert await trio.to_thread.run_sync(sleeping_queries, "-- m1") == 0
            stats = pool_of(store)
            assert stats["pool_available"] == stats["pool_size"]
            assert stats.get("returns_bad", 0) == 0
            conn = store._pool.getconn()
            try:
                assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            finally:
                store._pool.putconn(conn)
            await store.ping()


async def test_the_time_limit_cancels_the_query_and_says_store_unavailable(url: str) -> None:
    async with open_store(url, op_timeout=0.5) as store:
        assert isinstance(store, PostgresStore)
        begin = start("alice", "t-1")
        with trio.fail_after(20):

            def slow_begin(db: Db) -> None:
                db.run(
                    "INSERT INTO threads VALUES (?, 'alice', 'half', 0, 0, 0, NULL)",
                    (begin.thread_id,),
                )
                db.one("SELECT pg_sleep(30) -- m2")

            with pytest.raises(StoreUnavailableError, match="did not answer"):
                await store._op("begin_run", lambda: store._write("begin_run", slow_begin))
            store.timeout = 10  # room for the checks on a loaded machine
            assert await trio.to_thread.run_sync(sleeping_queries, "-- m2") == 0
            # Rolled back: the thread row inserted before the sleep is not there.
            assert await store.get_thread("alice", begin.thread_id) is None
            assert pool_of(store).get("returns_bad", 0) == 0
            await store.begin_run(begin, history_turns=0)


async def test_unreachable_postgres_is_store_unavailable_and_recovers_in_place(
    proxied: tuple[CuttableProxy, str],
) -> None:
    proxy, url = proxied
    async with open_store(url, op_timeout=2.0) as store:
        first = start("alice", "t-1")
        await store.begin_run(first, history_turns=0)
        proxy.cut()
        with trio.fail_after(30):
            with pytest.raises(StoreUnavailableError):
                await store.begin_run(start("alice", "t-2"), history_turns=0)
            with pytest.raises(StoreUnavailableError):
                await store.finish_run(end(first.run_key, 2), events(first.run_key, 1, 2))
            with pytest.raises(StoreUnavailableError):
                await store.ping()
            proxy.restore()
            # The same store object recovers (no reopen): the pool replaces the
            # connections the cut broke. It may take its reconnection backoff.
            while True:
                try:
                    await store.ping()
                    break
                except StoreUnavailableError:
                    await trio.sleep(0.1)
        # Nothing of the refused requests was written.
        assert await store.get_thread("alice", "t-2") is None
        info = await store.get_run("alice", first.run_id)
        assert info is not None
        assert info.running
        assert await store.read_events(first.run_key) == []
        assert await store.finish_run(end(first.run_key, 2), events(first.run_key, 1, 2))


async def test_a_transaction_cut_mid_way_writes_nothing(
    proxied: tuple[CuttableProxy, str],
) -> None:
    proxy, url = proxied
    async with open_store(url, op_timeout=10.0) as opened:
        assert isinstance(opened, PostgresStore)
        store = opened
        begin = start("alice", "t-1")
        await store.begin_run(begin, history_turns=0)

        def half_batch(db: Db) -> None:
            _sql.write_batch(db, events(begin.run_key, 1, 5), [])
            db.one("SELECT pg_sleep(30) -- m3")

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                failed = trio.Event()

                async def writer() -> None:
                    with pytest.raises(StoreUnavailableError):
                        await store._op("write_batch", lambda: store._write("x", half_batch))
                    failed.set()

                nursery.start_soon(writer)
                await wait_until_running("-- m3")
                proxy.cut()
                await failed.wait()
            # PostgreSQL notices the cut only when the sleep ends and it writes:
            # end that backend now (its transaction rolls back either way).
            await trio.to_thread.run_sync(terminate, "-- m3")
            proxy.restore()
            while True:
                try:
                    await store.ping()
                    break
                except StoreUnavailableError:
                    await trio.sleep(0.1)
        assert await store.read_events(begin.run_key) == []


async def test_a_server_that_cannot_be_reached_at_start_is_store_unavailable() -> None:
    # A port nobody listens on: no PostgreSQL needed for this one.
    with trio.fail_after(20), pytest.raises(StoreUnavailableError):
        async with open_store("postgresql://postgres@127.0.0.1:9/test", op_timeout=1.0):
            pass
