"""Schema migrations on SQLite and PostgreSQL: from empty, from v1, again, and two at once."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import trio
from _store import end, events, postgres_schema, start

from server.store import LATEST_VERSION, open_store
from server.store._schema import MIGRATIONS

V2_INDEXES = {"threads_by_age", "runs_running_by_node"}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/chat.db"
    else:
        with postgres_schema() as schema_url:
            yield schema_url


def inspect(url: str) -> tuple[list[tuple[int, int]], set[str]]:
    """(version, applied_at) rows and the index names, read outside the store."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            versions = conn.execute(
                "SELECT version, applied_at FROM schema_version ORDER BY version"
            ).fetchall()
            indexes = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
            }
        finally:
            conn.close()
        return versions, indexes
    with psycopg.connect(url) as pg:
        versions = pg.execute(
            "SELECT version, applied_at FROM schema_version ORDER BY version"
        ).fetchall()
        indexes = {
            r[0]
            for r in pg.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            )
        }
    return [tuple(v) for v in versions], indexes


async def test_from_an_empty_database_every_version_is_applied(url: str) -> None:
    async with open_store(url) as store:
        await store.ping()
    versions, indexes = await trio.to_thread.run_sync(inspect, url)
    assert [v for v, _ in versions] == [m.version for m in MIGRATIONS] == [1, 2]
    assert LATEST_VERSION == 2
    assert indexes >= V2_INDEXES
    assert {"runs_one_running", "runs_by_thread", "threads_by_user"} <= indexes


async def test_from_v1_to_v2_keeps_the_data_and_a_rerun_changes_nothing(url: str) -> None:
    begin = start("alice", "t-1")
    async with open_store(url, target_version=1) as store:
        await store.begin_run(begin, history_turns=0)
        assert await store.finish_run(end(begin.run_key, 2), events(begin.run_key, 1, 2))
    versions, indexes = await trio.to_thread.run_sync(inspect, url)
    assert [v for v, _ in versions] == [1]
    assert not V2_INDEXES & indexes

    async with open_store(url) as store:
        info = await store.get_run("alice", begin.run_id)
        assert info is not None
        assert info.status == "completed"
        assert [e.seq for e in await store.read_events(begin.run_key)] == [1, 2]
    upgraded, indexes = await trio.to_thread.run_sync(inspect, url)
    assert [v for v, _ in upgraded] == [1, 2]
    assert indexes >= V2_INDEXES

    async with open_store(url) as store:
        await store.ping()
    again, _ = await trio.to_thread.run_sync(inspect, url)
    assert again == upgraded  # nothing applied twice, not even its timestamp


async def test_two_processes_starting_at_once_apply_each_version_once(url: str) -> None:
    opened: list[int] = []

    async def open_one() -> None:
        async with open_store(url) as store:
            await store.ping()
            opened.append(1)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(open_one)
    assert len(opened) == 4
    versions, _ = await trio.to_thread.run_sync(inspect, url)
    assert [v for v, _ in versions] == [1, 2]


async def test_a_database_newer_than_the_server_refuses_to_start(url: str) -> None:
    from agents import ConfigurationError

    async with open_store(url) as store:
        await store.ping()

    # One version ahead: the next release's database, the case that happens.
    future = LATEST_VERSION + 1

    def bump() -> None:
        if url.startswith("sqlite"):
            conn = sqlite3.connect(url.removeprefix("sqlite:///"))
            with conn:
                conn.execute("INSERT INTO schema_version VALUES (?, 'future', 0)", (future,))
            conn.close()
        else:
            with psycopg.connect(url) as pg:
                pg.execute("INSERT INTO schema_version VALUES (%s, 'future', 0)", (future,))

    await trio.to_thread.run_sync(bump)
    with pytest.raises(ConfigurationError, match="newer"):
        async with open_store(url):
            pass
