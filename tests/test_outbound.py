"""server/session/_outbound.py: the bounded queue between a connection's producers and its writer,
and the writer's handling of it when a connection ends."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import AgentClassRegistry, AgentRuntime
from server._handshake import Identity
from server._metrics import Metrics
from server._settings import Settings
from server.protocol import CloseConnection
from server.runs import History, RunDirectory
from server.session import default_router
from server.session._connection import Connection, ConnectionServices
from server.session._outbound import CLOSE, EVENT, FRAME, OutboundQueue
from server.store import HistoryWriter, MemoryStore
from server.transport import Transport


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


async def test_a_producer_waits_for_room_and_keeps_its_place_against_later_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = OutboundQueue(1)
    queue.put_nowait((b"first", EVENT))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.put, (b"waited", EVENT))
        await trio.testing.wait_all_tasks_blocked()
        assert queue.statistics().tasks_waiting_send == 1
        with pytest.raises(trio.WouldBlock):  # room or not, it is behind the waiter
            queue.put_nowait((b"later", EVENT))
        assert queue.take_batch(100) == [(b"first", EVENT)]
        # The room went to the waiter at once: nobody can take it first.
        with pytest.raises(trio.WouldBlock):
            queue.put_nowait((b"later", EVENT))
    assert queue.take_batch(100) == [(b"waited", EVENT)]
    queue.put_nowait((b"later", EVENT))
    assert queue.take_batch(100) == [(b"later", EVENT)]


@pytest.mark.parametrize("bound", [1, 2, 3])
async def test_room_goes_to_waiting_producers_in_order_but_never_past_the_bound(
    bound: int,
) -> None:
    queue = OutboundQueue(bound)
    for i in range(bound):
        queue.put_nowait((b"q%d" % i, EVENT))
    waiting = bound + 2  # more producers wait than one batch can make room for
    async with trio.open_nursery() as nursery:
        for i in range(waiting):
            nursery.start_soon(queue.put, (b"w%d" % i, EVENT))
            await trio.testing.wait_all_tasks_blocked()  # so they wait in this order
        assert queue.statistics().tasks_waiting_send == waiting
        order = [b"q%d" % i for i in range(bound)] + [b"w%d" % i for i in range(waiting)]
        written: list[bytes] = []
        while len(written) < len(order):
            written += [frame for frame, _ in queue.take_batch(1 << 20)]
            left = len(order) - len(written)
            assert len(queue) == min(bound, left)  # refilled at once, never past the bound
            assert queue.statistics().tasks_waiting_send == left - len(queue)
    assert written == order


@settings(deadline=None, max_examples=60)
@given(
    bound=st.integers(1, 4),
    steps=st.lists(st.sampled_from(["put", "take", "cancel"]), max_size=30),
    batch_bytes=st.integers(0, 6),
)
async def test_any_mix_of_producers_and_batches_keeps_the_bound_and_the_order(
    bound: int, steps: list[str], batch_bytes: int
) -> None:
    queue = OutboundQueue(bound)
    sent: list[bytes] = []
    cancelled: set[bytes] = set()
    written: list[bytes] = []
    producers: list[tuple[bytes, trio.CancelScope]] = []

    async def producer(frame: bytes, scope: trio.CancelScope) -> None:
        with scope:
            await queue.put((frame, EVENT))
        if scope.cancelled_caught:
            cancelled.add(frame)

    async with trio.open_nursery() as nursery:
        for number, step in enumerate(steps):
            if step == "put":
                frame = b"%d" % number
                sent.append(frame)
                scope = trio.CancelScope()
                producers.append((frame, scope))
                nursery.start_soon(producer, frame, scope)
            elif step == "take":
                written += [frame for frame, _ in queue.take_batch(batch_bytes)]
            elif producers:
                producers.pop(0)[1].cancel()  # may already have queued its frame
            await trio.testing.wait_all_tasks_blocked()
            assert len(queue) <= bound
            assert queue.statistics().tasks_waiting_send <= len(producers)
        while len(queue) or queue.statistics().tasks_waiting_send:
            written += [frame for frame, _ in queue.take_batch(batch_bytes)]
            assert len(queue) <= bound
            await trio.testing.wait_all_tasks_blocked()
    # Every frame whose put did not raise Cancelled went out, once, in put order.
    assert written == [frame for frame in sent if frame not in cancelled]


class _GatedTransport(Transport):
    """Stands in for the socket: every write waits for ``gate``."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.written: list[bytes] = []
        self._closed = False

    def frame(self, message: bytes) -> bytes:
        return message

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        await self.gate.wait()
        self.written.extend(frames)

    async def receive_message(self) -> str:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def ping(self) -> trio.Event:
        raise AssertionError("no heartbeats here")

    def unread_input(self) -> bool:
        return False

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        self._closed = True

    @property
    def close_code(self) -> int | None:
        return 1006 if self._closed else None

    @property
    def torn(self) -> bool:
        return False


def _connection_on(transport: _GatedTransport) -> Connection:
    settings = Settings(outbound_queue=1, slow_consumer_timeout=5, close_timeout=2,
                        heartbeat_interval=0)  # fmt: skip
    store = MemoryStore(node_id="node-1")
    services = ConnectionServices(
        settings=settings, runtime=AgentRuntime(AgentClassRegistry()), metrics=Metrics(),
        router=default_router(), is_draining=lambda: False,
        history=History(store, HistoryWriter(store), "node-1"), directory=RunDirectory(),
    )  # fmt: skip
    return Connection(transport, Identity("u"), services)


@pytest.mark.parametrize("ending", ["close_1003", "peer_gone"])
async def test_an_ending_connection_lets_a_producer_waiting_for_room_go_at_once(
    autojump_clock: trio.testing.MockClock, ending: str
) -> None:
    # A final event (queued shielded) waits for room while the connection ends:
    # the writer, cancelled, must close the queue, or the producer holds the
    # connection open for --slow-consumer-timeout and it ends as a false 1013.
    stream = _GatedTransport()
    conn = _connection_on(stream)
    started = trio.current_time()

    async def final_event() -> None:
        with trio.CancelScope(shield=True):
            await conn.send_event(b"final")

    async with trio.open_nursery() as nursery:
        conn._nursery = conn._socket_nursery = nursery
        await conn.send(b"one")  # the writer takes it and waits in send_frames
        await trio.testing.wait_all_tasks_blocked()
        await conn.send(b"two")  # the queue (1) is full
        nursery.start_soon(final_event)
        await trio.testing.wait_all_tasks_blocked()
        if ending == "close_1003":
            conn.close(CloseConnection(1003, "binary frames are not supported"))
        else:
            conn._end()  # what the reader loop does when the peer has gone
        stream.gate.set()  # the write in flight completes in time
    assert trio.current_time() - started == 0
    assert conn.close_code() == (1003 if ending == "close_1003" else 1006)
