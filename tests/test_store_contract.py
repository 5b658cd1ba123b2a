"""One contract for every store backend: memory, SQLite (a file in tmp_path), PostgreSQL.

Each test gets an empty store of each kind (PostgreSQL: its own schema).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import hypothesis.strategies as st
import pytest
import trio
from _store import end, event, events, frame, postgres_schema, start
from hypothesis import HealthCheck, given, settings

from server import FormatError
from server.store import (
    DeleteResult,
    RunInfo,
    Store,
    ThreadBusyError,
    ThreadNotFoundError,
    open_store,
)

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
T0 = 1_763_719_200_000  # 2025-11-21T10:00:00.000Z


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory:"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/db/chat.db"
    else:
        with postgres_schema() as url:
            yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with open_store(store_url, node_id="node-a") as opened:
        yield opened


async def finished_run(
    store: Store,
    user_id: str = "alice",
    thread_id: str | None = None,
    *,
    at_ms: int = T0,
    n_events: int = 3,
    request: str = "a request",
    memory: dict[str, object] | None = None,
) -> RunInfo:
    """Begin a run, write its events and end it; return its record."""
    begin = start(user_id, thread_id, at_ms=at_ms, request=request)
    await store.begin_run(begin, history_turns=0)
    assert await store.finish_run(
        end(begin.run_key, n_events, at_ms=at_ms, answer=f"answer to {request}", memory=memory),
        events(begin.run_key, 1, n_events),
    )
    info = await store.get_run(user_id, begin.run_id)
    assert info is not None
    return info


# -- runs ----------------------------------------------------------------------------


async def test_begin_run_creates_the_thread_titled_by_the_first_line(store: Store) -> None:
    request = "\n   " + "x" * 100 + "  \nsecond line"
    begin = start("alice", "t-1", request=request, at_ms=T0 + 123)
    begun = await store.begin_run(begin, history_turns=20)
    assert begun.created
    assert begun.history == ()
    thread = begun.thread
    assert (thread.thread_id, thread.user_id, thread.title) == ("t-1", "alice", "x" * 80)
    assert thread.created_at == thread.updated_at == "2025-11-21T10:00:00.123Z"
    assert (thread.run_count, thread.last_status) == (1, "running")

    info = await store.get_run("alice", begin.run_id)
    assert info is not None
    assert info.running
    assert info.status == "running"
    assert (info.run_key, info.thread_id, info.request, info.node_id) == (
        begin.run_key,
        "t-1",
        request,
        "node-a",
    )
    assert info.ended_at is None
    assert info.answer is None
    assert info.result is None
    assert info.last_seq == 0
    assert ISO.fullmatch(info.started_at)


async def test_history_is_the_last_ended_turns_oldest_first(store: Store) -> None:
    for i in range(4):
        await finished_run(
            store, "alice", "t-1", at_ms=T0 + i, request=f"q{i}", memory={"figures": i}
        )
    begun = await store.begin_run(start("alice", "t-1", at_ms=T0 + 10), history_turns=3)
    assert not begun.created
    assert [t.request for t in begun.history] == ["q1", "q2", "q3"]
    last = begun.history[-1]
    assert (last.status, last.answer, dict(last.memory)) == (
        "completed",
        "answer to q3",
        {"figures": 3},
    )
    assert begun.thread.run_count == 5
    assert begun.thread.title == "q0"


async def test_history_turns_zero_gives_no_history(store: Store) -> None:
    await finished_run(store, "alice", "t-1")
    begun = await store.begin_run(start("alice", "t-1", at_ms=T0 + 5), history_turns=0)
    assert begun.history == ()


async def test_a_non_string_answer_and_non_object_memory_are_left_out(store: Store) -> None:
    begin = start("alice", "t-1")
    await store.begin_run(begin, history_turns=0)
    bad = attrs.evolve(end(begin.run_key, 1), result={"answer": 42, "memory": ["x"]}, answer=None)
    assert await store.finish_run(bad, [event(begin.run_key, 1)])
    begun = await store.begin_run(start("alice", "t-1", at_ms=T0 + 5), history_turns=5)
    assert begun.history[0].answer is None
    assert dict(begun.history[0].memory) == {}


async def test_another_users_thread_is_not_found_everywhere(store: Store) -> None:
    run = await finished_run(store, "alice", "t-1")
    with pytest.raises(ThreadNotFoundError):
        await store.begin_run(start("bob", "t-1"), history_turns=5)
    assert await store.get_thread("bob", "t-1") is None
    assert await store.rename_thread("bob", "t-1", "mine now") is None
    assert await store.delete_thread("bob", "t-1") is DeleteResult.NOT_FOUND
    assert (await store.list_threads("bob")).items == ()
    assert await store.get_run("bob", run.run_id) is None
    # ... and exactly as for a thread that does not exist.
    assert await store.get_thread("bob", "t-missing") is None
    assert await store.delete_thread("bob", "t-missing") is DeleteResult.NOT_FOUND
    # Alice's thread is untouched.
    found = await store.get_thread("alice", "t-1")
    assert found is not None
    assert found[0].title == "a request"


async def test_a_running_run_makes_the_thread_busy(store: Store) -> None:
    first = start("alice", "t-1")
    await store.begin_run(first, history_turns=0)
    with pytest.raises(ThreadBusyError):
        await store.begin_run(start("alice", "t-1"), history_turns=0)
    assert await store.delete_thread("alice", "t-1") is DeleteResult.BUSY
    assert await store.finish_run(end(first.run_key, 1), [event(first.run_key, 1)])
    await store.begin_run(start("alice", "t-1", at_ms=T0 + 1), history_turns=0)
    thread = await store.get_thread("alice", "t-1")
    assert thread is not None
    assert thread[0].run_count == 2


@pytest.mark.parametrize("existing", [False, True], ids=["new-thread", "existing-thread"])
async def test_concurrent_begin_runs_on_one_thread_one_wins(
    store_url: str, store: Store, existing: bool
) -> None:
    if existing:
        await finished_run(store, "alice", "t-1")
    # A second store on the same database: two processes, for the SQL backends.
    async with open_store(store_url, node_id="node-b") as other:
        peer = other if store.kind != "memory" else store
        outcomes: list[str] = []

        async def begin(target: Store) -> None:
            try:
                await target.begin_run(start("alice", "t-1", at_ms=T0 + 7), history_turns=5)
            except ThreadBusyError:
                outcomes.append("busy")
            else:
                outcomes.append("ok")

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for target in (store, peer, store, peer):
                    nursery.start_soon(begin, target)
    assert sorted(outcomes) == ["busy", "busy", "busy", "ok"]
    assert len(await store.running_runs(None)) == 1


async def test_finish_is_compare_and_set(store: Store) -> None:
    begin = start("alice", "t-1")
    await store.begin_run(begin, history_turns=0)
    await store.append_events(events(begin.run_key, 1, 2))
    first = end(begin.run_key, 3, status="completed")
    assert await store.finish_run(first, [event(begin.run_key, 3, final=True)])
    # A second end (a sweep that came too late) writes nothing at all.
    late = end(begin.run_key, 4, status="failed", at_ms=T0 + 99)
    assert not await store.finish_run(late, [event(begin.run_key, 4, final=True)])
    # The same end again (a retry after a lost acknowledgement) is ours.
    assert await store.finish_run(first, [event(begin.run_key, 3, final=True)])
    info = await store.get_run("alice", begin.run_id)
    assert info is not None
    assert (info.status, info.last_seq, info.answer, info.error_code) == (
        "completed",
        3,
        "the answer",
        None,
    )
    assert info.result == {"answer": "the answer", "pipeline": ["triage"]}
    assert info.ended_at == "2025-11-21T10:00:01.000Z"
    stored = await store.read_events(begin.run_key, 0, 100)
    assert [e.seq for e in stored] == [1, 2, 3]
    assert stored[2].frame == frame(begin.run_key, 3, final=True)
    thread = await store.get_thread("alice", "t-1")
    assert thread is not None
    assert thread[0].last_status == "completed"


async def test_unknown_run_cannot_be_finished(store: Store) -> None:
    assert not await store.finish_run(end("rk-nobody", 1), [event("rk-nobody", 1)])
    assert await store.read_events("rk-nobody", 0, 10) == []


async def test_events_land_only_while_their_run_runs(store: Store) -> None:
    running, ended = start("alice"), start("alice")
    await store.begin_run(running, history_turns=0)
    await store.begin_run(ended, history_turns=0)
    assert await store.finish_run(end(ended.run_key, 1), [event(ended.run_key, 1)])
    results = await store.write_batch(
        [*events(running.run_key, 1, 3), event(ended.run_key, 2), event("rk-unknown", 1)]
    )
    assert results == []
    assert [e.seq for e in await store.read_events(running.run_key)] == [1, 2, 3]
    assert [e.seq for e in await store.read_events(ended.run_key)] == [1]
    assert await store.read_events("rk-unknown") == []
    info = await store.get_run("alice", running.run_id)
    assert info is not None
    assert info.last_seq == 3


async def test_a_batch_committed_twice_changes_nothing(store: Store) -> None:
    a, b = start("alice"), start("alice")
    for begin in (a, b):
        await store.begin_run(begin, history_turns=0)
    batch = [*events(a.run_key, 1, 2), *events(b.run_key, 1, 3)]
    ends = [end(b.run_key, 3)]
    assert await store.write_batch(batch, ends) == [True]
    assert await store.write_batch(batch, ends) == [True]
    assert [e.seq for e in await store.read_events(a.run_key)] == [1, 2]
    assert [e.seq for e in await store.read_events(b.run_key)] == [1, 2, 3]


async def test_read_events_pages_by_seq(store: Store) -> None:
    begin = start("alice")
    await store.begin_run(begin, history_turns=0)
    # Out of order within a batch: the store keeps them by seq.
    await store.append_events(list(reversed(events(begin.run_key, 1, 10))))
    page = await store.read_events(begin.run_key, after_seq=3, limit=4)
    assert [e.seq for e in page] == [4, 5, 6, 7]
    assert all(e.frame == frame(begin.run_key, e.seq) for e in page)
    assert await store.read_events(begin.run_key, after_seq=10, limit=5) == []


async def test_a_batch_with_a_missing_seq_keeps_every_event_at_its_own_seq(store: Store) -> None:
    """The writer never leaves a gap, but the store does not rely on it: an
    event after a missing seq is not read back under the missing one's number."""
    begin = start("alice")
    await store.begin_run(begin, history_turns=0)
    key = begin.run_key
    await store.append_events([*events(key, 1, 2), *events(key, 4, 5)])
    page = await store.read_events(key, after_seq=0)
    assert [e.seq for e in page] == [1, 2, 4, 5]
    assert all(e.frame == frame(key, e.seq) for e in page)


async def test_events_written_over_many_batches_read_back_across_them(store: Store) -> None:
    begin = start("alice")
    await store.begin_run(begin, history_turns=0)
    key = begin.run_key
    await store.append_events(events(key, 1, 3))
    await store.append_events([*events(key, 2, 7), event(key, 5)])  # repeats are skipped
    await store.append_events(events(key, 8, 10))
    page = await store.read_events(key, after_seq=2, limit=6)
    assert [e.seq for e in page] == [3, 4, 5, 6, 7, 8]
    assert all(e.frame == frame(key, e.seq) for e in page)
    assert [e.seq for e in await store.read_events(key, after_seq=9)] == [10]
    assert await store.read_events(key, after_seq=0, limit=0) == []
    info = await store.get_run("alice", begin.run_id)
    assert info is not None
    assert info.last_seq == 10


async def test_get_run_finds_the_latest_run_with_a_reused_id(store: Store) -> None:
    first = start("alice", "t-1", run_id="mine", at_ms=T0)
    await store.begin_run(first, history_turns=0)
    assert await store.finish_run(end(first.run_key, 1), [event(first.run_key, 1)])
    second = start("alice", "t-2", run_id="mine", at_ms=T0 + 50)
    await store.begin_run(second, history_turns=0)
    info = await store.get_run("alice", "mine")
    assert info is not None
    assert info.run_key == second.run_key
    assert info.running
    assert await store.get_run("alice", "other") is None


async def test_running_runs_by_node(store_url: str, store: Store) -> None:
    mine = start("alice", at_ms=T0 + 2)
    await store.begin_run(mine, history_turns=0)
    done = await finished_run(store, "alice")
    async with open_store(store_url, node_id="node-b") as other:
        theirs = start("bob", at_ms=T0 + 1)
        await (other if store.kind != "memory" else store).begin_run(theirs, history_turns=0)
        ours = [r.run_key for r in await store.running_runs("node-a")]
        if store.kind == "memory":  # one process: everything is node-a's
            assert ours == [theirs.run_key, mine.run_key]
            return
        assert ours == [mine.run_key]
        assert [r.run_key for r in await store.running_runs("node-b")] == [theirs.run_key]
        everyone = [r.run_key for r in await store.running_runs(None)]
        assert everyone == [theirs.run_key, mine.run_key]  # oldest first
        assert done.run_key not in everyone


# -- threads ----------------------------------------------------------------------------


async def test_list_threads_newest_first_with_counts_and_status(store: Store) -> None:
    await finished_run(store, "alice", "t-old", at_ms=T0)
    await finished_run(store, "alice", "t-old", at_ms=T0 + 10)
    await store.begin_run(start("alice", "t-new", at_ms=T0 + 20), history_turns=0)
    await finished_run(store, "bob", "t-bob", at_ms=T0 + 30)
    page = await store.list_threads("alice", limit=10)
    assert page.next_cursor is None
    assert [(t.thread_id, t.run_count, t.last_status) for t in page.items] == [
        ("t-new", 1, "running"),
        ("t-old", 2, "completed"),
    ]
    assert page.items[1].updated_at == "2025-11-21T10:00:00.010Z"


async def test_a_page_that_ends_the_list_exactly_offers_no_next_cursor(store: Store) -> None:
    """A cursor means "there is more": a full last page must not send the
    client for an empty one (threads and a thread's runs alike)."""
    for i in range(4):
        await finished_run(store, "alice", f"t-{i}", at_ms=T0 + i)
    await finished_run(store, "alice", "t-0", at_ms=T0 + 9)
    first = await store.list_threads("alice", limit=2)
    assert first.next_cursor is not None
    last = await store.list_threads("alice", limit=2, cursor=first.next_cursor)
    assert len(last.items) == 2
    assert last.next_cursor is None
    assert (await store.list_threads("alice", limit=4)).next_cursor is None
    found = await store.get_thread("alice", "t-0", limit=2)
    assert found is not None
    assert len(found[1].items) == 2
    assert found[1].next_cursor is None


async def test_get_thread_pages_runs_newest_first(store: Store) -> None:
    for i in range(5):
        await finished_run(store, "alice", "t-1", at_ms=T0 + i, request=f"q{i}")
    found = await store.get_thread("alice", "t-1", limit=2)
    assert found is not None
    thread, page = found
    assert thread.run_count == 5
    seen = [r.request for r in page.items]
    cursor = page.next_cursor
    # A run added while the client walks the pages changes nothing after the cursor.
    await finished_run(store, "alice", "t-1", at_ms=T0 + 9, request="late")
    while cursor is not None:
        found = await store.get_thread("alice", "t-1", limit=2, cursor=cursor)
        assert found is not None
        seen += [r.request for r in found[1].items]
        cursor = found[1].next_cursor
    assert seen == ["q4", "q3", "q2", "q1", "q0"]
    first = await store.get_thread("alice", "t-1", limit=1)
    assert first is not None
    run = first[1].items[0]
    assert (run.request, run.answer, run.status, run.last_seq) == (
        "late",
        "answer to late",
        "completed",
        3,
    )


async def test_cursors_from_elsewhere_or_malformed_are_format_errors(store: Store) -> None:
    for i in range(3):
        await finished_run(store, "alice", "t-1", at_ms=T0 + i)
        await finished_run(store, "alice", f"t-{i + 2}", at_ms=T0 + i)
    threads = await store.list_threads("alice", limit=1)
    runs = await store.get_thread("alice", "t-1", limit=1)
    assert runs is not None
    assert threads.next_cursor
    assert runs[1].next_cursor
    for bad in ("", "!!!", "e30", "bm90IGpzb24", "WyJ0IiwiYSIsMSwiYiJd", runs[1].next_cursor):
        with pytest.raises(FormatError):
            await store.list_threads("alice", limit=1, cursor=bad)
    with pytest.raises(FormatError):  # another user's list
        await store.list_threads("bob", limit=1, cursor=threads.next_cursor)
    with pytest.raises(FormatError):  # another thread's runs
        await store.get_thread("alice", "t-2", limit=1, cursor=runs[1].next_cursor)
    with pytest.raises(FormatError):
        await store.get_thread("alice", "t-1", limit=1, cursor=threads.next_cursor)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    initial=st.lists(st.integers(0, 6), min_size=0, max_size=14),
    limit=st.integers(1, 5),
    inserts=st.lists(st.lists(st.integers(0, 8), max_size=3), max_size=6),
)
async def test_thread_pages_walk_every_thread_once_in_order_under_inserts(
    store_url: str, initial: list[int], limit: int, inserts: list[list[int]]
) -> None:
    """Small timestamps force ties; threads inserted mid-walk never shift it."""
    # pytest-trio runs each example in its own trio.run: one store per example,
    # one database per test, one user per example.
    async with open_store(store_url) as store:
        await walk_pages(store, initial, limit, inserts)


async def walk_pages(
    store: Store, initial: list[int], limit: int, inserts: list[list[int]]
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    count = 0

    async def add(at: int) -> str:
        nonlocal count
        count += 1
        thread_id = f"t-{user}-{count:03d}"
        await store.begin_run(start(user, thread_id, at_ms=T0 + at), history_turns=0)
        return thread_id

    before = {await add(at): at for at in initial}
    expected = sorted(before, key=lambda t: (before[t], t), reverse=True)
    seen: list[tuple[str, str]] = []
    cursor: str | None = None
    pages = iter(inserts)
    with trio.fail_after(30):
        while True:
            page = await store.list_threads(user, limit=limit, cursor=cursor)
            assert len(page.items) <= limit
            seen += [(t.updated_at, t.thread_id) for t in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
            for at in next(pages, []):
                await add(at)
    ids = [thread_id for _, thread_id in seen]
    assert len(ids) == len(set(ids)), "a thread was listed twice"
    assert seen == sorted(seen, reverse=True), "out of order"
    assert [t for t in ids if t in before] == expected, "an existing thread was skipped"


async def test_rename_thread(store: Store) -> None:
    await finished_run(store, "alice", "t-1", at_ms=T0)
    renamed = await store.rename_thread("alice", "t-1", "  Cost plan  ")
    assert renamed is not None
    assert renamed.title == "Cost plan"
    assert renamed.updated_at == "2025-11-21T10:00:00.000Z"  # a rename is not activity
    found = await store.get_thread("alice", "t-1")
    assert found is not None
    assert found[0].title == "Cost plan"


async def test_delete_thread_removes_its_runs_and_events_for_good(store: Store) -> None:
    gone = await finished_run(store, "alice", "t-1")
    kept = await finished_run(store, "alice", "t-2")
    assert await store.delete_thread("alice", "t-1") is DeleteResult.DELETED
    assert await store.get_thread("alice", "t-1") is None
    assert await store.get_run("alice", gone.run_id) is None
    assert await store.read_events(gone.run_key) == []
    assert await store.delete_thread("alice", "t-1") is DeleteResult.NOT_FOUND
    assert [t.thread_id for t in (await store.list_threads("alice")).items] == ["t-2"]
    assert len(await store.read_events(kept.run_key)) == 3
    # The id is free again: a new thread, a new title.
    begun = await store.begin_run(start("bob", "t-1", request="fresh"), history_turns=5)
    assert begun.created
    assert begun.history == ()
    assert begun.thread.title == "fresh"


async def test_expire_threads_in_bounded_batches_never_a_busy_one(store: Store) -> None:
    old = [await finished_run(store, "alice", f"t-old-{i}", at_ms=T0 + i) for i in range(5)]
    busy = start("alice", "t-busy", at_ms=T0)
    await store.begin_run(busy, history_turns=0)
    await finished_run(store, "alice", "t-new", at_ms=T0 + 1000)
    cutoff = T0 + 500
    assert await store.expire_threads(cutoff, batch_size=2) == 2
    assert await store.expire_threads(cutoff, batch_size=2) == 2
    assert await store.expire_threads(cutoff, batch_size=2) == 1
    assert await store.expire_threads(cutoff, batch_size=2) == 0
    left = sorted(t.thread_id for t in (await store.list_threads("alice")).items)
    assert left == ["t-busy", "t-new"]
    assert [await store.read_events(run.run_key) for run in old] == [[]] * 5
    assert await store.get_run("alice", busy.run_id) is not None


async def test_ping_and_the_observer(store_url: str) -> None:
    seen: list[tuple[str, bool]] = []
    async with open_store(store_url, observer=lambda op, ok, s: seen.append((op, ok))) as store:
        await store.ping()
        begin = start("alice", "t-1")
        await store.begin_run(begin, history_turns=0)
        with pytest.raises(ThreadBusyError):
            await store.begin_run(start("alice", "t-1"), history_turns=0)
        await store.list_threads("alice")
    assert ("ping", True) in seen
    assert seen.count(("begin_run", True)) == 2  # THREAD_BUSY is an answer, not a failure
    assert ("list_threads", True) in seen


async def test_a_closed_store_is_unavailable(store_url: str) -> None:
    from server.store import StoreUnavailableError

    async with open_store(store_url) as store:
        pass
    with pytest.raises(StoreUnavailableError):
        await store.ping()
    await store.aclose()  # idempotent
