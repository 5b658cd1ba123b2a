"""server/_outbound.py: the bounded queue between a connection's producers and its writer,
and the writer's handling of it when a connection ends."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio
import trio.testing
from wsproto.connection import ConnectionState

from agents import AgentClassRegistry, AgentInstanceFactory
from server._connection import Connection, ServerServices
from server._errors import CloseConnection
from server._handlers import default_router
from server._handshake import Identity
from server._metrics import Metrics
from server._outbound import CLOSE, EVENT, FRAME, OutboundQueue
from server._settings import Settings


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


class _GatedStream:
    """Stands in for the socket: every write waits for ``gate``."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.written: list[bytes] = []

    async def send_all(self, data: bytes) -> None:
        await self.gate.wait()
        self.written.append(data)


def _connection_on(stream: _GatedStream) -> Connection:
    # Just the parts of a trio-websocket connection that server/_wire.py uses.
    ws = SimpleNamespace(
        _close_reason=None,
        _stream_lock=trio.StrictFIFOLock(),
        _wsproto=SimpleNamespace(state=ConnectionState.OPEN),
        _stream=stream,
        closed=None,
    )
    settings = Settings(outbound_queue=1, slow_consumer_timeout=5, close_timeout=2,
                        heartbeat_interval=0)  # fmt: skip
    services = ServerServices(
        settings=settings, factory=AgentInstanceFactory(AgentClassRegistry()), metrics=Metrics(),
        router=default_router(), top_level_agents=frozenset(), is_draining=lambda: False,
    )  # fmt: skip
    return Connection(ws, Identity("u"), services)  # type: ignore[arg-type]


@pytest.mark.parametrize("ending", ["close_1003", "peer_gone"])
async def test_an_ending_connection_lets_a_producer_waiting_for_room_go_at_once(
    autojump_clock: trio.testing.MockClock, ending: str
) -> None:
    # A final event (queued shielded) waits for room while the connection ends:
    # the writer, cancelled, must close the queue, or the producer holds the
    # connection open for --slow-consumer-timeout and it ends as a false 1013.
    stream = _GatedStream()
    conn = _connection_on(stream)
    started = trio.current_time()

    async def final_event() -> None:
        with trio.CancelScope(shield=True):
            await conn.send_event(b"final")

    async with trio.open_nursery() as nursery:
        conn._nursery = nursery
        await conn.send(b"one")  # the writer takes it and waits in send_all
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
