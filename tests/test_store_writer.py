"""HistoryWriter: group commit, ordering, the final event's compare-and-set, and failures.

The store is a MemoryStore that can fail, or hold a batch in flight, on demand;
timing runs on trio's virtual clock (``autojump_clock``).
"""

from __future__ import annotations

from collections.abc import Sequence

import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from _store import end, event, events, start
from hypothesis import given, settings

from server.store import (
    EventRecord,
    HistoryWriter,
    MemoryStore,
    RunEnd,
    RunStart,
    StoreUnavailableError,
)


class FlakyStore(MemoryStore):
    """A memory store whose batches can fail or wait at a gate; it logs each attempt."""

    def __init__(self) -> None:
        super().__init__(node_id="node-a", timeout=3600)
        self.failing = False
        self.gate: trio.Event | None = None
        self.attempts: list[tuple[float, int, int]] = []  # (time, events, ends)
        self.committed: list[tuple[int, int]] = []

    async def _write_batch(
        self, events: Sequence[EventRecord], ends: Sequence[RunEnd]
    ) -> list[bool]:
        self.attempts.append((trio.current_time(), len(events), len(ends)))
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise StoreUnavailableError("down")
        results = await super()._write_batch(events, ends)
        self.committed.append((len(events), len(ends)))
        return results


async def begin(store: MemoryStore, n: int = 1) -> list[RunStart]:
    runs = [start("alice") for _ in range(n)]
    for run in runs:
        await store.begin_run(run, history_turns=0)
    return runs


async def seqs(store: MemoryStore, run: RunStart) -> list[int]:
    return [e.seq for e in await store.read_events(run.run_key, 0, 10_000)]


async def status(store: MemoryStore, run: RunStart) -> tuple[str, int]:
    info = await store.get_run(run.user_id, run.run_id)
    assert info is not None
    return info.status, info.last_seq


@pytest.fixture
def store() -> FlakyStore:
    return FlakyStore()


async def test_appends_commit_in_one_batch_and_the_final_after_them(
    store: FlakyStore, nursery: trio.Nursery
) -> None:
    writer = HistoryWriter(store)
    await nursery.start(writer.run)
    a, b = await begin(store, 2)
    for seq in range(1, 6):
        assert writer.append(event(a.run_key, seq))
        assert writer.append(event(b.run_key, seq))
    assert store.attempts == []  # append never waits nor writes
    with trio.fail_after(5):
        assert await writer.commit_final(end(a.run_key, 6), event(a.run_key, 6, final=True))
    # The writer had not run yet: everything, final included, is one transaction.
    assert store.committed == [(11, 1)]
    assert await seqs(store, a) == [1, 2, 3, 4, 5, 6]
    assert await status(store, a) == ("completed", 6)
    assert await seqs(store, b) == [1, 2, 3, 4, 5]
    assert await status(store, b) == ("running", 5)
    assert writer.pending_events(a.run_key) == []
    assert writer.statistics().pending_bytes == 0


async def test_everything_pending_during_a_commit_goes_in_the_next_one(
    store: FlakyStore, nursery: trio.Nursery
) -> None:
    writer = HistoryWriter(store)
    await nursery.start(writer.run)
    runs = await begin(store, 3)
    store.gate = trio.Event()
    writer.append(event(runs[0].run_key, 1))
    await trio.testing.wait_all_tasks_blocked()
    assert [a[1:] for a in store.attempts] == [(1, 0)]  # in flight, at the gate
    for run in runs:
        for seq in range(2 if run is runs[0] else 1, 31):
            writer.append(event(run.run_key, seq))
    results: list[bool] = []

    async def final(run: RunStart) -> None:
        results.append(await writer.commit_final(end(run.run_key, 31), event(run.run_key, 31)))

    for run in runs:
        nursery.start_soon(final, run)
    await trio.testing.wait_all_tasks_blocked()
    store.gate.set()
    store.gate = None
    with trio.fail_after(5):
        await writer.wait_flushed()
        await trio.testing.wait_all_tasks_blocked()
    assert store.committed == [(1, 0), (92, 3)]  # the rest: one batch, three ends
    assert results == [True, True, True]
    for run in runs:
        assert await seqs(store, run) == list(range(1, 32))


@pytest.mark.timeout(10)
async def test_a_batch_stops_taking_runs_at_max_batch_events(
    store: FlakyStore, nursery: trio.Nursery
) -> None:
    """Whole runs go in a batch until it holds max_batch_events; the rest waits for the next."""
    writer = HistoryWriter(store, max_batch_events=4)
    await nursery.start(writer.run)
    runs = await begin(store, 3)
    for run in runs:
        for seq in (1, 2, 3):
            writer.append(event(run.run_key, seq))
    with trio.fail_after(5):
        await writer.wait_flushed()
    # A run's pending events are never split (what is committed stays a
    # prefix), so a batch may pass the bound by the last run it took.
    assert store.committed == [(6, 0), (3, 0)]
    for run in runs:
        assert await seqs(store, run) == [1, 2, 3]


async def test_pending_events_cover_the_batch_in_flight_and_what_waits(
    store: FlakyStore, nursery: trio.Nursery
) -> None:
    writer = HistoryWriter(store)
    await nursery.start(writer.run)
    (run,) = await begin(store)
    store.gate = trio.Event()
    for record in events(run.run_key, 1, 3):
        writer.append(record)
    await trio.testing.wait_all_tasks_blocked()
    for record in events(run.run_key, 4, 5):
        writer.append(record)
    assert [r.seq for r in writer.pending_events(run.run_key)] == [1, 2, 3, 4, 5]
    assert writer.statistics().pending_events == 5
    store.gate.set()
    store.gate = None
    with trio.fail_after(5):
        await writer.wait_flushed()
    assert writer.pending_events(run.run_key) == []
    assert await seqs(store, run) == [1, 2, 3, 4, 5]


async def test_a_failing_store_is_retried_with_a_bounded_backoff(
    store: FlakyStore, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    writer = HistoryWriter(store, retry_min=0.05, retry_max=1.0)
    await nursery.start(writer.run)
    (run,) = await begin(store)
    store.failing = True
    started = trio.current_time()
    writer.append(event(run.run_key, 1))
    await trio.sleep(5)
    times = [round(t - started, 6) for t, _, _ in store.attempts]
    assert times[:8] == [0, 0.05, 0.15, 0.35, 0.75, 1.55, 2.55, 3.55]
    assert not writer.healthy
    assert writer.statistics().failures == len(times)
    writer.append(event(run.run_key, 2))  # kept with the first, in order
    store.failing = False
    with trio.fail_after(5):
        await writer.wait_flushed()
    assert writer.healthy
    assert store.committed == [(2, 0)]
    assert await seqs(store, run) == [1, 2]


async def test_commit_final_gives_up_after_its_timeout_and_commits_later(
    store: FlakyStore, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    writer = HistoryWriter(store, final_timeout=5.0)
    await nursery.start(writer.run)
    (run,) = await begin(store)
    for record in events(run.run_key, 1, 3):
        writer.append(record)
    store.failing = True
    asked = trio.current_time()
    with pytest.raises(StoreUnavailableError):
        await writer.commit_final(end(run.run_key, 4), event(run.run_key, 4, final=True))
    assert trio.current_time() - asked == 5.0
    assert await status(store, run) == ("running", 0)  # nothing half-written
    store.failing = False
    with trio.fail_after(10):
        await writer.wait_flushed()
    # The final stayed queued: the run's record is complete once the store is back.
    assert await status(store, run) == ("completed", 4)
    assert await seqs(store, run) == [1, 2, 3, 4]


async def test_a_run_ended_elsewhere_gets_false_and_nothing_more(
    store: FlakyStore, nursery: trio.Nursery
) -> None:
    writer = HistoryWriter(store)
    await nursery.start(writer.run)
    (run,) = await begin(store)
    writer.append(event(run.run_key, 1))
    with trio.fail_after(5):
        await writer.wait_flushed()
    # A sweep (say, NODE_LOST from another process) ends the run first.
    assert await store.finish_run(end(run.run_key, 2, status="failed"), [event(run.run_key, 2)])
    writer.append(event(run.run_key, 3))
    with trio.fail_after(5):
        assert not await writer.commit_final(end(run.run_key, 4), event(run.run_key, 4))
    assert await status(store, run) == ("failed", 2)
    assert await seqs(store, run) == [1, 2]


async def test_past_the_pending_bound_a_run_is_dropped_keeping_a_committed_prefix(
    store: FlakyStore, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    size = len(event("x" * 35, 1).frame)
    writer = HistoryWriter(store, max_pending_bytes=10 * size)
    await nursery.start(writer.run)
    big, small = await begin(store, 2)
    writer.append(event(big.run_key, 1))
    with trio.fail_after(5):
        await writer.wait_flushed()
    store.failing = True
    accepted = [writer.append(event(big.run_key, seq)) for seq in range(2, 12)]
    assert accepted == [True] * 9 + [False]  # the 10th would cross the bound
    assert writer.statistics().pending_bytes == 0  # its uncommitted events are gone
    assert not writer.append(event(big.run_key, 12))  # and later ones ignored
    assert writer.append(event(small.run_key, 1))  # other runs go on
    before = trio.current_time()
    with pytest.raises(StoreUnavailableError, match="could not be kept"):
        await writer.commit_final(end(big.run_key, 13), event(big.run_key, 13))
    assert trio.current_time() == before  # at once: not after final_timeout
    store.failing = False
    with trio.fail_after(10):
        assert await writer.commit_final(end(small.run_key, 2), event(small.run_key, 2))
    assert writer.statistics().runs_dropped == 1
    # What is committed of the dropped run is a prefix, recorded as running
    # with last_seq at its end: what a sweep needs to end it.
    assert await status(store, big) == ("running", 1)
    assert await seqs(store, big) == [1]
    assert await seqs(store, small) == [1, 2]


async def test_a_final_must_be_the_runs_last_seq(store: FlakyStore) -> None:
    writer = HistoryWriter(store)
    with pytest.raises(ValueError, match="last_seq"):
        await writer.commit_final(end("rk-1", 3), event("rk-1", 2))


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 3)),
        st.tuples(st.just("final"), st.integers(0, 3)),
        st.tuples(st.just("fail"), st.booleans()),
        st.tuples(st.just("wait"), st.integers(0, 2)),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(schedule=ops)
async def test_no_gap_between_committed_and_pending_and_finals_complete(
    schedule: list[tuple[str, object]],
) -> None:
    """Random appends, finals, store failures and scheduling points.

    At every step, for every run: committed events + pending_events are
    exactly the events appended (no gap: resume can always be served).
    At the end: each run whose commit_final returned True is complete in
    order, and nothing else of it exists.
    """
    store = FlakyStore()
    writer = HistoryWriter(store, retry_min=0.001, retry_max=0.004, final_timeout=30)
    appended = [0, 0, 0, 0]
    finals: dict[int, bool | None] = {}
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            runs = await begin(store, 4)

            async def final(i: int) -> None:
                run = runs[i]
                appended[i] += 1  # commit_final queues the final before it first waits
                finals[i] = await writer.commit_final(
                    end(run.run_key, appended[i]), event(run.run_key, appended[i], final=True)
                )

            async def check() -> None:
                for i, run in enumerate(runs):
                    committed = set(await seqs(store, run))
                    pending = [r.seq for r in writer.pending_events(run.run_key)]
                    assert pending == sorted(set(pending)), "pending out of order"
                    assert committed | set(pending) == set(range(1, appended[i] + 1))

            for op, arg in schedule:
                assert isinstance(arg, (int, bool))
                if op == "append" and arg not in finals:
                    appended[arg] += 1
                    assert writer.append(event(runs[arg].run_key, appended[arg]))
                elif op == "final" and arg not in finals:
                    finals[arg] = None
                    nursery.start_soon(final, arg)
                elif op == "fail":
                    store.failing = bool(arg)
                elif op == "wait":
                    for _ in range(int(arg)):
                        await trio.lowlevel.checkpoint()
                await check()
            store.failing = False
            while any(result is None for result in finals.values()):
                await writer.wait_flushed()
                await trio.testing.wait_all_tasks_blocked()
            await writer.wait_flushed()
            await check()
            nursery.cancel_scope.cancel()
    for i, run in enumerate(runs):
        assert await seqs(store, run) == list(range(1, appended[i] + 1))
        if i in finals:
            assert finals[i] is True
            assert await status(store, run) == ("completed", appended[i])
        else:
            assert await status(store, run) == ("running", appended[i])
