"""The broker when Redis stops answering: fail fast, never hang, recover without reopening.

Each test reaches Redis through a :class:`TcpProxy` it can block (nothing
answers) or cut (connections dropped and refused, as if Redis stopped); the
shared Redis is never touched. Leases are short so that "dead within
lease_seconds" takes a fraction of a second of real (Redis) time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio
import trio.testing
from _redis import TcpProxy, delete_prefix, eventually, new_prefix, open_raw_client, redis_test_url

from server.broker import (
    Broker,
    BrokerUnavailableError,
    Keys,
    open_broker,
    open_publisher,
    stream_id,
)

pytestmark = pytest.mark.timeout(60)

CALL_TIMEOUT = 0.5


@pytest.fixture
def redis_url() -> str:
    return redis_test_url()


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    value = new_prefix()
    yield value
    await delete_prefix(redis_url, value)


@pytest.fixture
async def proxy(redis_url: str, nursery: trio.Nursery) -> TcpProxy:
    started: TcpProxy = await nursery.start(TcpProxy(redis_url).serve)
    return started


def broker(
    url: str, prefix: str, node_id: str, **options: Any
) -> AbstractAsyncContextManager[Broker]:
    options.setdefault("call_timeout", CALL_TIMEOUT)
    options.setdefault("health_interval", 0.1)
    return open_broker(url, node_id=node_id, key_prefix=prefix, **options)


async def check_works(node: Broker, run_key: str) -> None:
    run = node.run_stream("alice", "t1", run_key)
    await node.publish([(run, 1, b"x")], gated=False)
    assert [e.seq for e in await node.read(run, stream_id(0))] == [1]


@pytest.mark.parametrize("outage", ["block", "cut"])
async def test_an_outage_turns_unhealthy_fails_fast_and_recovers_without_reopening(
    redis_url: str, prefix: str, proxy: TcpProxy, outage: str
) -> None:
    with trio.fail_after(20):
        async with broker(proxy.url, prefix, "n1") as node:
            await check_works(node, "before")
            proxy.block() if outage == "block" else proxy.cut()
            # A call made as the outage starts ends within its deadline, with our error.
            with trio.fail_after(CALL_TIMEOUT + 1.0), pytest.raises(BrokerUnavailableError):
                await node.live_nodes()
            assert not node.healthy
            # While unhealthy, calls fail at once instead of each waiting its deadline.
            with trio.fail_after(CALL_TIMEOUT / 2):
                for call in (
                    node.live_nodes(),
                    node.acquire_connection("alice", "c1", 3),
                    node.follow("alice", "t1"),
                    node.send("n1", {"type": "stop_agent"}),
                    node.read(node.run_stream("alice", "t1", "r"), stream_id(0), block=5),
                ):
                    with pytest.raises(BrokerUnavailableError):
                        await call
            assert node.statistics().follows == 0  # the refused follow left nothing behind
            proxy.unblock() if outage == "block" else proxy.restore()
            with trio.fail_after(5):
                await node.wait_healthy()
            assert node.healthy
            await check_works(node, "after")
            assert node.statistics().failures >= 1


async def test_the_health_ping_notices_an_outage_without_any_call(
    prefix: str, proxy: TcpProxy
) -> None:
    with trio.fail_after(20):
        async with broker(proxy.url, prefix, "n1") as node:
            proxy.block()
            with trio.fail_after(CALL_TIMEOUT + 2.0):
                await node.wait_unhealthy()
            proxy.unblock()
            with trio.fail_after(5):
                await node.wait_healthy()


async def test_a_reader_continues_from_its_last_id_after_a_disconnect(
    redis_url: str, prefix: str, proxy: TcpProxy
) -> None:
    with trio.fail_after(20):
        async with (
            broker(redis_url, prefix, "owner") as owner,
            broker(proxy.url, prefix, "reader") as reader,
        ):
            run = owner.run_stream("alice", "t1", "r1")
            await owner.publish([(run, s, b"%d" % s) for s in range(1, 6)], gated=False)
            seen = await reader.read(run, stream_id(0), count=3)
            assert [e.seq for e in seen] == [1, 2, 3]
            proxy.cut()
            with pytest.raises(BrokerUnavailableError):
                await reader.read(run, seen[-1].id, block=1.0)
            await owner.publish([(run, s, b"%d" % s) for s in range(6, 9)], gated=False)
            proxy.restore()
            await reader.wait_healthy()
            rest = await reader.read(run, seen[-1].id, count=100)
            assert [e.seq for e in seen + rest] == list(range(1, 9))
            assert [e.payload for e in rest] == [b"%d" % s for s in range(4, 9)]


async def test_a_dead_nodes_leases_and_interest_lapse_within_the_lease(
    redis_url: str, prefix: str, proxy: TcpProxy
) -> None:
    lease = 0.6
    with trio.fail_after(20):
        async with (
            broker(redis_url, prefix, "alive", lease_seconds=lease) as alive,
            broker(proxy.url, prefix, "doomed", lease_seconds=lease) as doomed,
        ):
            assert await doomed.acquire_connection("alice", "d1", 2)
            assert await doomed.acquire_connection("alice", "d2", 2)
            await doomed.follow("alice", "t1")
            proxy.cut()  # the node can neither renew nor clean up: as if killed
            cut_at = trio.current_time()
            assert await alive.is_alive("doomed")  # the lease has not run out yet
            assert not await alive.acquire_connection("alice", "a1", 2)
            # Everything it held lapses within the lease (each lease runs from
            # its own last renewal, so they may lapse a few ms apart).
            with trio.fail_after(lease + 0.5):

                async def lapsed() -> bool:
                    return not (
                        await alive.is_alive("doomed") or await alive.followers("alice", "t1")
                    )

                await eventually(lapsed)
                await eventually(lambda: alive.acquire_connection("alice", "a1", 2))
            assert trio.current_time() - cut_at <= lease + 0.5
            assert await alive.live_nodes() == {"alive"}
            assert await alive.acquire_connection("alice", "a2", 2)
            # The node comes back: alive again, but the slots it lost stay lost.
            proxy.restore()
            await doomed.wait_healthy()
            with trio.fail_after(5):

                async def renewed() -> bool:
                    return doomed.statistics().leases_lost == 2

                await eventually(renewed)
            stats = doomed.statistics()
            assert stats.node_lease_lapses >= 1
            assert stats.connection_leases == 0
            assert await alive.is_alive("doomed")
            assert await alive.followers("alice", "t1") == {"doomed"}
            assert not await alive.acquire_connection("alice", "a3", 2)


async def test_a_stop_sent_to_a_live_node_during_its_blip_is_acted_on(
    redis_url: str, prefix: str, proxy: TcpProxy
) -> None:
    received: list[dict[str, Any]] = []
    got_it = trio.Event()

    async def handler(command: dict[str, Any]) -> None:
        received.append(command)
        got_it.set()

    with trio.fail_after(20):
        async with (
            broker(proxy.url, prefix, "target", lease_seconds=5) as target,
            broker(redis_url, prefix, "sender", lease_seconds=5) as sender,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(target.serve_commands, handler)
            proxy.cut()
            with trio.fail_after(CALL_TIMEOUT + 2.0):
                await target.wait_unhealthy()
            assert await sender.send("target", {"type": "stop_agent", "run_id": "r1"})
            proxy.restore()
            await got_it.wait()
            assert received == [{"type": "stop_agent", "run_id": "r1"}]
            nursery.cancel_scope.cancel()


async def test_the_publisher_never_blocks_while_the_broker_is_down(
    prefix: str, proxy: TcpProxy
) -> None:
    with trio.fail_after(20):
        async with broker(proxy.url, prefix, "n1") as node:
            async with open_publisher(node, capacity=50, gated=False) as publisher:
                run = node.run_stream("alice", "t1", "r1")
                proxy.cut()
                with pytest.raises(BrokerUnavailableError):
                    await node.live_nodes()
                accepted = [publisher.append_nowait(run, seq, b"e") for seq in range(1, 101)]
                assert accepted.count(True) == 50  # bounded: the rest are refused, not waited for
                await publisher.flush()
                stats = publisher.statistics()
                assert (stats.failed, stats.dropped, stats.published) == (50, 50, 0)
                proxy.restore()
                await node.wait_healthy()
                assert publisher.append_nowait(run, 101, b"e")
                await publisher.flush()
                assert publisher.statistics().published == 1
            assert [e.seq for e in await node.read(run, stream_id(0))] == [101]


async def test_leases_are_renewed_the_moment_the_broker_answers_again(
    redis_url: str, prefix: str, proxy: TcpProxy, mock_clock: trio.testing.MockClock
) -> None:
    """An outage may outlast the node's lease: once Redis answers again the node
    renews at once, not at its next scheduled renewal (up to a third of a lease
    later), so the others stop taking it for dead. Trio's clock stands still
    here but for the health ping's short naps: only the recovery can renew."""
    keys = Keys(prefix)
    async with (
        broker(proxy.url, prefix, "n1", lease_seconds=3000, health_interval=0.04) as node,
        open_raw_client(redis_url) as raw,
    ):
        proxy.cut()
        with pytest.raises(BrokerUnavailableError):
            await node.live_nodes()
        assert not node.healthy
        # Meanwhile its lease lapsed, as far as the other nodes can tell.
        await raw.delete([keys.node("n1")])
        await raw.zrem(keys.nodes, ["n1"])
        proxy.restore()
        while not node.healthy:  # let the ping, asleep for health_interval / 4, try again
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(0.01)
        for _ in range(1000):  # a few round trips: the renewal that recovery starts
            if await raw.exists([keys.node("n1")]):
                break
        assert await raw.exists([keys.node("n1")]) == 1
        assert trio.current_time() < 3000 / 3  # no scheduled renewal could have run
        assert await node.live_nodes() == {"n1"}
