"""The Redis broker against the real Redis: leases, the limit, streams, commands, interest."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from _redis import delete_prefix, new_prefix, open_raw_client, redis_test_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server._metrics import Metrics
from server.broker import (
    Broker,
    BrokerUnavailableError,
    Keys,
    RunStream,
    StreamEntry,
    open_broker,
    open_publisher,
    seq_of,
    stream_id,
)

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def redis_url() -> str:
    return redis_test_url()


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    value = new_prefix()
    yield value
    await delete_prefix(redis_url, value)


def broker(
    url: str, prefix: str, node_id: str, **options: Any
) -> AbstractAsyncContextManager[Broker]:
    options.setdefault("call_timeout", 2.0)
    options.setdefault("health_interval", 0.2)
    return open_broker(url, node_id=node_id, key_prefix=prefix, **options)


# -- pure parts ------------------------------------------------------------------

ids = st.text(alphabet="ab:-_.", min_size=1, max_size=6)


@given(a=st.tuples(ids, ids, ids), b=st.tuples(ids, ids, ids))
def test_two_runs_never_share_a_stream_or_an_interest_key(
    a: tuple[str, str, str], b: tuple[str, str, str]
) -> None:
    keys = Keys("p:")
    if a[0] != b[0] or a[2] != b[2]:
        assert keys.run_stream(*a).key != keys.run_stream(*b).key
    if a[:2] != b[:2]:
        assert keys.interest(a[0], a[1]) != keys.interest(b[0], b[1])


@given(seq=st.integers(min_value=0, max_value=2**53))
def test_stream_ids_stand_for_their_seq(seq: int) -> None:
    assert seq_of(stream_id(seq)) == seq


def test_a_negative_seq_has_no_stream_id() -> None:
    with pytest.raises(ValueError, match="seq"):
        stream_id(-1)


def test_metrics_count_broker_messages_by_direction() -> None:
    metrics = Metrics()
    assert 'chat_broker_messages_total{direction="in"} 0' in metrics.render()
    metrics.broker_messages("out", 3)
    metrics.broker_messages("in", 2)
    assert metrics.statistics().broker_messages_total == {"in": 2, "out": 3}
    assert 'chat_broker_messages_total{direction="out"} 3' in metrics.render()


# -- opening and closing -----------------------------------------------------------


async def test_an_unreachable_redis_fails_the_open_with_our_error(prefix: str) -> None:
    with trio.socket.socket() as sock:  # a port nothing listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with trio.fail_after(5), pytest.raises(BrokerUnavailableError):
        async with broker(f"redis://127.0.0.1:{port}/0", prefix, "n1", call_timeout=1.0):
            pytest.fail("opened without Redis")


async def test_an_exception_in_the_block_comes_out_as_it_is(redis_url: str, prefix: str) -> None:
    with trio.fail_after(10), pytest.raises(KeyError):
        async with broker(redis_url, prefix, "n1"):
            raise KeyError("mine")


# -- nodes -------------------------------------------------------------------------


async def test_open_nodes_are_alive_and_a_clean_exit_leaves_at_once(
    redis_url: str, prefix: str
) -> None:
    with trio.fail_after(10):
        async with broker(redis_url, prefix, "n1") as one:
            async with broker(redis_url, prefix, "n2") as two:
                assert await one.live_nodes() == {"n1", "n2"}
                assert await one.is_alive("n2")
                assert two.healthy
            assert not await one.is_alive("n2")
            assert await one.live_nodes() == {"n1"}
            assert not await one.is_alive("never-there")


async def test_a_node_lease_outlives_many_lease_periods_while_renewed(
    redis_url: str, prefix: str
) -> None:
    with trio.fail_after(10):
        async with broker(redis_url, prefix, "n1", lease_seconds=0.3) as one:
            async with open_raw_client(redis_url) as raw:
                for _ in range(4):
                    # Each lap spans the lease: only the renewals keep the node alive.
                    await trio.sleep(0.3)
                    assert await raw.exists([Keys(prefix).node("n1")]) == 1
            assert await one.live_nodes() == {"n1"}
            assert one.statistics().node_lease_lapses == 0


async def test_exactly_one_node_claims_the_sweep_of_a_dead_node(
    redis_url: str, prefix: str
) -> None:
    with trio.fail_after(10):
        async with (
            broker(redis_url, prefix, "n1") as one,
            broker(redis_url, prefix, "n2") as two,
        ):
            wins: list[bool] = []

            async def claim(node: Broker) -> None:
                wins.append(await node.claim_sweep("dead"))

            async with trio.open_nursery() as nursery:
                for node in (one, two, one, two):
                    nursery.start_soon(claim, node)
            assert sorted(wins) == [False, False, False, True]


# -- the global connection limit ---------------------------------------------------


async def test_concurrent_acquires_across_nodes_get_exactly_the_limit(
    redis_url: str, prefix: str
) -> None:
    with trio.fail_after(20):
        async with (
            broker(redis_url, prefix, "n1") as one,
            broker(redis_url, prefix, "n2") as two,
        ):
            granted: list[str] = []

            async def connect(node: Broker, connection_id: str) -> None:
                if await node.acquire_connection("alice", connection_id, 7):
                    granted.append(connection_id)

            async with trio.open_nursery() as nursery:
                for i in range(60):
                    nursery.start_soon(connect, (one, two)[i % 2], f"c{i}")
            assert len(granted) == 7
            # Full: nobody else gets in, and another user is not affected.
            assert not await one.acquire_connection("alice", "late", 7)
            assert await two.acquire_connection("bob", "b1", 7)
            # A held lease asked for again is not a second slot.
            holder = one if int(granted[0][1:]) % 2 == 0 else two
            assert await holder.acquire_connection("alice", granted[0], 7)
            # Releasing one frees exactly one.
            await holder.release_connection("alice", granted[0])
            assert await one.acquire_connection("alice", "late", 7)
            assert not await two.acquire_connection("alice", "later", 7)
            assert one.statistics().connection_leases + two.statistics().connection_leases == 8


async def test_a_lapsed_lease_beside_live_ones_is_no_slot(redis_url: str, prefix: str) -> None:
    """A process that died holding a connection leaves a lapsed lease in the
    user's set, beside leases others keep renewing: an acquire does not count it."""
    with trio.fail_after(10):
        async with broker(redis_url, prefix, "n1") as one:
            assert await one.acquire_connection("alice", "c1", 2)
            async with open_raw_client(redis_url) as raw:
                # Scored by its expiry: 1 ms after the epoch, long lapsed.
                await raw.zadd(Keys(prefix).connections("alice"), {"dead-node-c": 1})
            assert await one.acquire_connection("alice", "c2", 2)
            assert not await one.acquire_connection("alice", "c3", 2)  # the limit still holds


async def test_a_lapsed_node_or_follower_is_not_listed_before_anyone_cleans_up(
    redis_url: str, prefix: str
) -> None:
    """Lapsed members stay in a lease set until a renewal removes them (up to a
    third of a lease later): reading the set must already leave them out, or a
    sweep waits for a dead node and a publish is gated open by one."""
    keys = Keys(prefix)
    with trio.fail_after(10):
        async with broker(redis_url, prefix, "n1") as one:
            await one.follow("alice", "t1")
            async with open_raw_client(redis_url) as raw:
                await raw.zadd(keys.nodes, {"dead": 1})  # expired 1 ms after the epoch
                await raw.zadd(keys.interest("alice", "t1"), {"dead": 1})
            assert await one.live_nodes() == {"n1"}
            assert await one.followers("alice", "t1") == {"n1"}


async def test_a_gated_publish_is_not_opened_by_a_lapsed_follower(
    redis_url: str, prefix: str
) -> None:
    """The only follower of the thread died (its interest lapsed, not yet
    cleaned up): a gated publish appends nothing."""
    keys = Keys(prefix)
    with trio.fail_after(10):
        async with broker(redis_url, prefix, "n1") as one:
            async with open_raw_client(redis_url) as raw:
                await raw.zadd(keys.interest("alice", "t1"), {"dead": 1})  # lapsed long ago
            stream = one.run_stream("alice", "t1", "r1")
            outcome = await one.publish([(stream, 1, b"a"), (stream, 2, b"b")])
            assert (outcome.appended, outcome.skipped) == (0, 2)
            assert await one.read(stream, "0-0") == []


async def test_an_error_answer_from_redis_fails_the_call_but_not_the_link(
    redis_url: str, prefix: str
) -> None:
    """Redis answered (with an error): the broker is reachable, so the link stays
    healthy and other calls go on, instead of all failing fast for a while."""
    with trio.fail_after(10):
        async with broker(redis_url, prefix, "n1") as one:
            stream = one.run_stream("alice", "t1", "r1")
            async with open_raw_client(redis_url) as raw:
                await raw.set(stream.key, "not a stream")  # XREAD answers WRONGTYPE
            with pytest.raises(BrokerUnavailableError, match="refused"):
                await one.read(stream, "0-0")
            assert one.healthy
            assert one.statistics().failures == 0
            assert await one.live_nodes() == {"n1"}


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    limit=st.integers(min_value=0, max_value=6),
    attempts=st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=16),
)
async def test_the_limit_holds_for_any_mix_of_nodes_and_attempts(
    redis_url: str, prefix: str, limit: int, attempts: list[int]
) -> None:
    user = new_prefix()  # a user of its own per example
    with trio.fail_after(20):
        async with (
            broker(redis_url, prefix, "n0") as n0,
            broker(redis_url, prefix, "n1") as n1,
            broker(redis_url, prefix, "n2") as n2,
        ):
            nodes = (n0, n1, n2)
            results: list[bool] = []

            async def connect(i: int, node_index: int) -> None:
                results.append(await nodes[node_index].acquire_connection(user, f"c{i}", limit))

            async with trio.open_nursery() as nursery:
                for i, node_index in enumerate(attempts):
                    nursery.start_soon(connect, i, node_index)
            expected = len(attempts) if limit <= 0 else min(limit, len(attempts))
            assert results.count(True) == expected


async def test_held_leases_and_interest_are_renewed_past_the_lease(
    redis_url: str, prefix: str
) -> None:
    with trio.fail_after(10):
        async with (
            broker(redis_url, prefix, "n1", lease_seconds=0.3) as one,
            broker(redis_url, prefix, "n2", lease_seconds=0.3) as two,
        ):
            assert await one.acquire_connection("alice", "c1", 1)
            await one.follow("alice", "t1")
            for _ in range(4):
                await trio.sleep(0.3)  # real time, on Redis's clock: a lease period a lap
                assert not await two.acquire_connection("alice", "c2", 1)
                assert await two.followers("alice", "t1") == {"n1"}
            assert one.statistics().leases_lost == 0


# -- interest --------------------------------------------------------------------------


async def test_follow_is_counted_per_node_and_seen_by_every_node(
    redis_url: str, prefix: str
) -> None:
    with trio.fail_after(10):
        async with (
            broker(redis_url, prefix, "n1") as one,
            broker(redis_url, prefix, "n2") as two,
        ):
            assert await one.followers("alice", "t1") == set()
            await one.follow("alice", "t1")
            await one.follow("alice", "t1")
            await two.follow("alice", "t1")
            assert await two.followers("alice", "t1") == {"n1", "n2"}
            assert await two.followers("alice", "t2") == set()
            assert await two.followers("bob", "t1") == set()
            await one.unfollow("alice", "t1")
            assert await two.followers("alice", "t1") == {"n1", "n2"}
            await one.unfollow("alice", "t1")
            assert await two.followers("alice", "t1") == {"n2"}
        async with broker(redis_url, prefix, "n3") as three:
            # n2 left cleanly: its interest went with it.
            assert await three.followers("alice", "t1") == set()


# -- run event streams -----------------------------------------------------------------


def events(stream: RunStream, seqs: range) -> list[tuple[RunStream, int, bytes]]:
    return [(stream, seq, b'{"seq":%d}' % seq) for seq in seqs]


async def test_publish_then_read_gives_each_event_once_in_order(
    redis_url: str, prefix: str
) -> None:
    metrics = Metrics()
    with trio.fail_after(10):
        async with broker(redis_url, prefix, "n1", observer=metrics.broker_messages) as node:
            run = node.run_stream("alice", "t1", "r1")
            other = node.run_stream("alice", "t1", "r2")
            outcome = await node.publish(
                [*events(run, range(1, 4)), *events(other, range(1, 3))], gated=False
            )
            assert (outcome.appended, outcome.skipped) == (5, 0)
            # The same batch again (a retry): nothing doubles.
            again = await node.publish(events(run, range(1, 4)), gated=False)
            assert (again.appended, again.skipped) == (0, 3)
            got = await node.read(run, stream_id(0))
            assert got == [StreamEntry(stream_id(s), s, b'{"seq":%d}' % s) for s in (1, 2, 3)]
            assert [e.seq for e in await node.read(run, stream_id(2))] == [3]
            assert await node.read(run, stream_id(3)) == []
            both = await node.read_many({run: stream_id(1), other: stream_id(0)})
            assert {s.key: [e.seq for e in got] for s, got in both.items()} == {
                run.key: [2, 3],
                other.key: [1, 2],
            }
            assert metrics.broker_messages_total == {"in": 3 + 1 + 4, "out": 5}
            async with open_raw_client(redis_url) as raw:
                assert 0 < await raw.ttl(run.key) <= 600


async def test_gated_publish_appends_only_while_the_thread_is_followed(
    redis_url: str, prefix: str
) -> None:
    with trio.fail_after(10):
        async with (
            broker(redis_url, prefix, "owner") as owner,
            broker(redis_url, prefix, "reader") as reader,
        ):
            run = owner.run_stream("alice", "t1", "r1")
            nobody = await owner.publish(events(run, range(1, 3)))
            assert (nobody.appended, nobody.skipped) == (0, 2)
            async with open_raw_client(redis_url) as raw:
                assert await raw.exists([run.key]) == 0  # nothing nobody may read
            await reader.follow("alice", "t1")
            followed = await owner.publish(events(run, range(3, 5)))
            assert followed.appended == 2
            assert [e.seq for e in await reader.read(run, stream_id(0))] == [3, 4]
            await reader.unfollow("alice", "t1")
            after = await owner.publish(events(run, range(5, 6)))
            assert after.appended == 0
            # Another user's thread of the same id is another interest set.
            await reader.follow("bob", "t1")
            assert (await owner.publish(events(run, range(5, 6)))).appended == 0


async def test_streams_are_bounded_by_maxlen(redis_url: str, prefix: str) -> None:
    with trio.fail_after(20):
        async with broker(redis_url, prefix, "n1", stream_maxlen=100) as node:
            run = node.run_stream("alice", "t1", "r1")
            for start in range(1, 3001, 500):
                await node.publish(events(run, range(start, start + 500)), gated=False)
            async with open_raw_client(redis_url) as raw:
                length = await raw.xlen(run.key)
            # MAXLEN ~ trims whole radix-tree nodes (100 entries each by default).
            assert 100 <= length <= 300
            tail = await node.read(run, stream_id(2990), count=100)
            assert [e.seq for e in tail] == list(range(2991, 3001))
            head = await node.read(run, stream_id(0), count=1)
            assert head[0].seq > 2000  # the reader sees the jump: read the rest from history


async def test_a_blocked_read_wakes_for_an_entry_published_meanwhile(
    redis_url: str, prefix: str
) -> None:
    with trio.fail_after(10):
        async with (
            broker(redis_url, prefix, "n1") as one,
            broker(redis_url, prefix, "n2") as two,
        ):
            run = one.run_stream("alice", "t1", "r1")
            got: list[StreamEntry] = []

            async def wait_for_it() -> None:
                got.extend(await two.read(run, stream_id(0), block=5.0))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_for_it)
                await trio.testing.wait_all_tasks_blocked()
                await one.publish(events(run, range(1, 2)), gated=False)
            assert [e.seq for e in got] == [1]
            assert await two.read(run, stream_id(1), block=0.05) == []


async def test_a_block_longer_than_the_maximum_is_refused(redis_url: str, prefix: str) -> None:
    with trio.fail_after(10):
        async with broker(redis_url, prefix, "n1") as node:
            with pytest.raises(ValueError, match="block"):
                await node.read(node.run_stream("a", "t", "r"), stream_id(0), block=60)


# -- commands --------------------------------------------------------------------------


async def test_commands_reach_a_live_node_in_order_and_a_dead_one_is_reported(
    redis_url: str, prefix: str
) -> None:
    received: list[dict[str, Any]] = []
    all_in = trio.Event()

    async def handler(command: dict[str, Any]) -> None:
        if command.get("boom"):
            raise RuntimeError("a handler bug")
        received.append(command)
        if len(received) == 3:
            all_in.set()

    with trio.fail_after(10):
        async with (
            broker(redis_url, prefix, "target") as target,
            broker(redis_url, prefix, "sender") as sender,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(target.serve_commands, handler)
            assert await sender.send("target", {"type": "stop_agent", "run_id": "r1"})
            assert await sender.send("target", {"boom": True})  # logged, serving goes on
            assert await sender.send("target", {"type": "stop_agent", "run_id": "r2"})
            assert await target.send("target", {"type": "note"})  # to itself, too
            await all_in.wait()
            assert [c.get("run_id") for c in received] == ["r1", "r2", None]
            assert not await sender.send("nobody", {"type": "stop_agent"})
            assert target.statistics().commands_received == 4
            nursery.cancel_scope.cancel()


async def test_commands_sent_before_serving_starts_are_not_lost(
    redis_url: str, prefix: str
) -> None:
    received: list[dict[str, Any]] = []
    got_it = trio.Event()

    async def handler(command: dict[str, Any]) -> None:
        received.append(command)
        got_it.set()

    with trio.fail_after(10):
        async with broker(redis_url, prefix, "sender") as sender:
            # An earlier life of the node left a command behind: not replayed.
            async with broker(redis_url, prefix, "target"):
                assert await sender.send("target", {"n": 0})
            async with broker(redis_url, prefix, "target") as target, trio.open_nursery() as n:
                assert await sender.send("target", {"n": 1})
                await n.start(target.serve_commands, handler)
                await got_it.wait()
                assert received == [{"n": 1}]
                n.cancel_scope.cancel()


# -- the publisher -----------------------------------------------------------------------


async def test_the_publisher_batches_appends_and_flushes_on_exit(
    redis_url: str, prefix: str
) -> None:
    with trio.fail_after(20):
        async with broker(redis_url, prefix, "n1") as node:
            runs = [node.run_stream("alice", "t1", f"r{i}") for i in range(4)]
            await node.follow("alice", "t1")
            async with open_publisher(node, max_batch=100) as publisher:
                for seq in range(1, 251):  # no checkpoint: one burst, as a run emits
                    for run in runs:
                        assert publisher.append_nowait(run, seq, b"%d" % seq)
                await publisher.flush()
                stats = publisher.statistics()
                assert (stats.accepted, stats.published, stats.buffered) == (1000, 1000, 0)
                assert stats.batches == 10  # 1,000 entries, 100 a round trip
                for seq in range(251, 261):
                    publisher.append_nowait(runs[0], seq, b"late")
            # Leaving the block published what was still buffered.
            got = await node.read_many({run: stream_id(0) for run in runs}, count=1000)
            assert [len(got[run]) for run in runs] == [260, 250, 250, 250]
            assert all(
                [e.seq for e in entries] == list(range(1, len(entries) + 1))
                for entries in got.values()
            )
            assert node.statistics().events_published == 1010


async def test_a_gated_publisher_publishes_nothing_for_an_unfollowed_thread(
    redis_url: str, prefix: str
) -> None:
    with trio.fail_after(10):
        async with broker(redis_url, prefix, "n1") as node:
            async with open_publisher(node) as publisher:
                run = node.run_stream("alice", "t1", "r1")
                for seq in range(1, 11):
                    publisher.append_nowait(run, seq, b"e")
                await publisher.flush()
                stats = publisher.statistics()
                assert (stats.published, stats.skipped) == (0, 10)
            assert await node.read(run, stream_id(0)) == []


async def test_the_benchmark_publishes_every_event_of_every_row(
    redis_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(90):
        done = await trio.run_process(
            [sys.executable, "-m", "benchmarks.broker_bench", "--redis-url", redis_url,
             "--events", "400", "--runs", "4", "--batches", "8", "64",
             "--report-dir", str(tmp_path)],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report = json.loads((tmp_path / "broker_bench.json").read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert len(rows) == 6
    for name, row in rows.items():
        expected = 0 if "nobody follows" in name else row["events"]
        assert row["appended"] == expected, name
        assert row["cpu_us_per_event"] > 0
    assert rows["publisher, max_batch 64"]["mean_batch"] > 8
