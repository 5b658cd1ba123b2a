"""Following a run of another process: its committed history, then its broker stream.

``follow_remote_run`` against the real Redis and a memory store standing
for the shared one. The store's view is controlled by the test (what a
reader can see of the owner's commits), so each path is taken on purpose:
a stream that lacks events (read from the store once committed) and a run
that ended with nothing on its stream (the store says so; the follower stops).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import orjson
import pytest
import trio
from _redis import delete_prefix, new_prefix, redis_test_url
from _store import end, event, events, frame, start

from server.broker import Broker, open_broker
from server.runs import RemoteRun
from server.runs._remote import follow_remote_run
from server.store import MemoryStore, RunStart, StoredEvent

pytestmark = pytest.mark.timeout(30)


class PartlyVisible(MemoryStore):
    """A memory store whose readers see committed events only up to ``visible``.

    ``gap_asked`` is set when a reader asks for exactly the ``gap`` events
    after ``gap_after`` (what a follower does to fill a gap in the stream; its
    replay of what is committed asks for pages of 256).
    """

    def __init__(self) -> None:
        super().__init__(node_id="owner")
        self.visible = 10**9
        self.gap_after: int | None = None
        self.gap = 0
        self.gap_asked = trio.Event()

    async def _read_events(self, run_key: str, after_seq: int, limit: int) -> list[StoredEvent]:
        visible = self.visible  # as of the question, whatever happens meanwhile
        if (after_seq, limit) == (self.gap_after, self.gap):
            self.gap_asked.set()
        found = await super()._read_events(run_key, after_seq, limit)
        return [e for e in found if e.seq <= visible]


@pytest.fixture
async def node() -> AsyncIterator[Broker]:
    url = redis_test_url()
    prefix = new_prefix()
    try:
        async with open_broker(url, node_id="reader", key_prefix=prefix) as broker:
            yield broker
    finally:
        await delete_prefix(url, prefix)


async def running(store: MemoryStore) -> tuple[RunStart, RemoteRun]:
    begin = start("u", "t1", run_id="r1")
    await store.begin_run(begin, history_turns=0)
    return begin, RemoteRun("u", "r1", begin.run_key, "t1", "owner")


def seqs(delivered: Sequence[bytes]) -> list[int]:
    return [int(orjson.loads(payload)["seq"]) for payload in delivered]


async def test_events_missing_from_the_stream_are_read_from_the_store_once_committed(
    node: Broker,
) -> None:
    store = PartlyVisible()
    begin, run = await running(store)
    key = begin.run_key
    await store.append_events(events(key, 1, 4))
    store.visible = 2  # 3 and 4 are committed, but not yet seen by this reader
    store.gap_after, store.gap = 2, 2
    stream = node.run_stream("u", "t1", key)
    # Published after 3 and 4 were lost (a full buffer, a broker blip).
    await node.publish(
        [(stream, 5, frame(key, 5)), (stream, 6, frame(key, 6, final=True))], gated=False
    )
    delivered: list[bytes] = []

    async def deliver(payload: bytes) -> bool:
        delivered.append(payload)
        return True

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: follow_remote_run(
                    run, 0, store=store, broker=node, stream=stream, deliver=deliver
                )
            )
            await store.gap_asked.wait()  # 5 came first: it waits for 3 and 4
            store.visible = 6
            await store.write_batch([event(key, 5), event(key, 6, final=True)], [end(key, 6)])
    assert seqs(delivered) == [1, 2, 3, 4, 5, 6]
    assert [payload.endswith(b',"replay":true}') for payload in delivered] == [True] * 4 + [
        False
    ] * 2


async def test_a_run_that_ended_with_nothing_on_its_stream_is_followed_to_its_end(
    node: Broker,
) -> None:
    """Its end is in the store (a sweep's, or published before anyone asked):
    the follower replays it and stops, rather than waiting on a silent stream."""
    store = MemoryStore(node_id="owner")
    begin, run = await running(store)
    key = begin.run_key
    await store.write_batch([*events(key, 1, 2), event(key, 3, final=True)], [end(key, 3)])
    stream = node.run_stream("u", "t1", key)
    for after, expected in ((0, [1, 2, 3]), (3, [])):
        delivered: list[bytes] = []

        async def deliver(payload: bytes, delivered: list[bytes] = delivered) -> bool:
            delivered.append(payload)
            return True

        with trio.fail_after(5):
            await follow_remote_run(
                run, after, store=store, broker=node, stream=stream, deliver=deliver
            )
        assert seqs(delivered) == expected
