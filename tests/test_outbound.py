"""server/_outbound.py: the bounded queue between a connection's producers and its writer."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from server._outbound import CLOSE, EVENT, FRAME, OutboundQueue


def test_put_nowait_refuses_beyond_the_bound_and_after_close() -> None:
    queue = OutboundQueue(2)
    queue.put_nowait((b"a", FRAME))
    queue.put_nowait((b"b", EVENT))
    with pytest.raises(trio.WouldBlock):
        queue.put_nowait((b"c", EVENT))
    assert queue.statistics().current_buffer_used == 2
    queue.close()
    queue.take_batch(1 << 20)
    with pytest.raises(trio.ClosedResourceError):
        queue.put_nowait((b"d", EVENT))


def test_a_batch_ends_at_a_close_marker_or_once_it_reaches_max_bytes() -> None:
    queue = OutboundQueue(10)
    for item in [(b"x" * 10, EVENT), (b"y" * 10, EVENT), (b"", CLOSE), (b"z", FRAME)]:
        queue.put_nowait(item)
    assert queue.take_batch(15) == [(b"x" * 10, EVENT), (b"y" * 10, EVENT)]
    assert queue.take_batch(15) == [(b"", CLOSE)]
    assert queue.take_batch(0) == [(b"z", FRAME)]  # at least one item
    assert queue.take_batch(15) == []


async def test_a_producer_waits_for_room_and_goes_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = OutboundQueue(1)
    queue.put_nowait((b"first", EVENT))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.put, (b"second", EVENT))
        await trio.testing.wait_all_tasks_blocked()
        assert queue.statistics().tasks_waiting_send == 1
        assert queue.take_batch(100) == [(b"first", EVENT)]
    assert queue.take_batch(100) == [(b"second", EVENT)]


async def test_a_cancelled_wait_queues_nothing(autojump_clock: trio.testing.MockClock) -> None:
    queue = OutboundQueue(1)
    queue.put_nowait((b"first", EVENT))
    with trio.move_on_after(1) as waited:
        await queue.put((b"never", EVENT))
    assert waited.cancelled_caught
    assert queue.take_batch(100) == [(b"first", EVENT)]
    assert len(queue) == 0


async def test_close_wakes_waiting_producers_with_closed_resource_error() -> None:
    queue = OutboundQueue(1)
    queue.put_nowait((b"first", EVENT))
    errors: list[BaseException] = []

    async def producer() -> None:
        try:
            await queue.put((b"late", EVENT))
        except trio.ClosedResourceError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        queue.close()
    assert len(errors) == 2
    assert queue.take_batch(100) == [(b"first", EVENT)]
