"""The server-wide heartbeat schedule (server/session/_heartbeat.py), and stalls.

The timing seen by a client (first ping after one interval, 1011 after the
timeout) is tested end to end in test_limits.py; here: the schedule's order,
joining and leaving, and that an idle connection has no task of its own
(neither one waiting to ping nor a writer waiting for frames).
"""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import Sequence

import trio
import trio.testing

from server import default_router
from server._handshake import Identity
from server.protocol import ClientMessage, ConnectionClosed
from server.session._handlers import HeartbeatHandler
from server.session._heartbeat import HeartbeatSchedule
from server.testing import ChatClient, open_memory_client, start_test_server
from server.transport import MemoryPeer, Transport, memory_transport_pair


class Peer:
    def __init__(self, name: str, pings: list[tuple[str, float]]) -> None:
        self.name = name
        self._pings = pings

    def ping_soon(self) -> None:
        self._pings.append((self.name, trio.current_time()))


def running(
    nursery: trio.Nursery, interval: float
) -> tuple[HeartbeatSchedule, list[tuple[str, float]]]:
    """A schedule running in ``nursery``, and the list its peers note their pings in."""
    schedule = HeartbeatSchedule(interval)
    nursery.start_soon(schedule.run)
    return schedule, []


async def test_each_member_is_pinged_every_interval_from_when_it_joined(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    schedule, pings = running(nursery, 10.0)
    start = trio.current_time()
    a, b, c = Peer("a", pings), Peer("b", pings), Peer("c", pings)
    schedule.add(a)
    await trio.sleep(3)
    schedule.add(b)
    await trio.sleep(4)
    schedule.add(c)
    await trio.sleep(18)  # t = 25
    schedule.discard(b)
    await trio.sleep(20)  # t = 45
    assert [(name, at - start) for name, at in pings] == [
        ("a", 10.0),
        ("b", 13.0),
        ("c", 17.0),
        ("a", 20.0),
        ("b", 23.0),
        ("c", 27.0),
        ("a", 30.0),
        ("c", 37.0),
        ("a", 40.0),
    ]
    assert len(schedule) == 2


async def test_an_empty_schedule_sleeps_until_someone_joins(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    schedule, pings = running(nursery, 5.0)
    peer = Peer("p", pings)
    schedule.add(peer)
    schedule.discard(peer)
    await trio.sleep(100)
    assert pings == []
    start = trio.current_time()
    schedule.add(peer)
    await trio.sleep(6)
    assert [(name, at - start) for name, at in pings] == [("p", 5.0)]


async def test_a_stalled_schedule_does_not_catch_up_with_a_burst(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    schedule = HeartbeatSchedule(1.0)
    pings: list[tuple[str, float]] = []
    schedule.add(Peer("p", pings))
    start = trio.current_time()
    await trio.sleep(10)  # nothing ran the schedule for ten intervals
    nursery.start_soon(schedule.run)
    await trio.sleep(2.5)
    assert [at - start for _, at in pings] == [10.0, 11.0, 12.0]


def _all_tasks() -> list[trio.lowlevel.Task]:
    tasks: list[trio.lowlevel.Task] = []
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None:
            continue
        tasks.append(task)
        for child in task.child_nurseries:
            todo.extend(child.child_tasks)
    return tasks


class PingLog(Transport):
    """A transport that keeps the pong event of every ping sent over it (set once answered)."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner
        self.pongs: list[trio.Event] = []

    def frame(self, message: bytes) -> bytes:
        return self._inner.frame(message)

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        await self._inner.send_frames(frames)

    async def receive_message(self) -> str:
        return await self._inner.receive_message()

    async def ping(self) -> trio.Event:
        pong = await self._inner.ping()
        self.pongs.append(pong)
        return pong

    def unread_input(self) -> bool:
        return self._inner.unread_input()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self._inner.aclose(code, reason)

    @property
    def close_code(self) -> int | None:
        return self._inner.close_code

    @property
    def torn(self) -> bool:
        return self._inner.torn


async def test_an_idle_connection_has_no_task_of_its_own(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_test_server(
        nursery, heartbeat_interval=5, heartbeat_timeout=3, admin_port=None
    )
    before = {id(task) for task in _all_tasks()}
    transport, peer = memory_transport_pair()
    pings = PingLog(transport)
    async with trio.open_nursery() as connections:
        connections.start_soon(server.serve_transport, pings, Identity("idle"))
        client = ChatClient(peer, json.loads(await peer.get_message()))
        await trio.sleep(12)
        assert [pong.is_set() for pong in pings.pongs] == [True, True]  # sent and answered
        await client.send({"type": "ping", "message_id": "m"})
        assert (await client.receive_frame("pong"))["message_id"] == "m"
        await trio.testing.wait_all_tasks_blocked()  # the writer has had its turn
        added = [task.name for task in _all_tasks() if id(task) not in before]
        await peer.aclose()
    # Only the task serving it: a ping task lives until its pong has come back,
    # the writer while frames are queued.
    assert any(name.endswith("serve_transport") for name in added), added
    assert not [name for name in added if name.startswith("server.session.")], added
    assert server.statistics().connections_total == 1


async def test_a_member_that_left_is_not_kept_alive_by_the_sleeping_schedule(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    schedule, pings = running(nursery, 25.0)
    peer = Peer("gone", pings)
    schedule.add(peer)
    await trio.sleep(1)  # run() now sleeps until the peer is due
    schedule.discard(peer)
    ref = weakref.ref(peer)
    del peer
    gc.collect()
    assert ref() is None
    await trio.sleep(30)
    assert pings == []


# -- a stall of the server's own does not make a live peer look dead ----------------

_STALL: list[trio.Event] = []


class _StallingHeartbeat(HeartbeatHandler):
    """Answers ``heartbeat`` only once ``_STALL[0]`` is set: the reader stalls meanwhile,
    as it would during a long synchronous step of the server."""

    __slots__ = ()

    async def handle(self, message: ClientMessage) -> None:
        await _STALL[0].wait()
        await super().handle(message)


async def _stalled_client_scenario(
    nursery: trio.Nursery, *, pong: bool
) -> tuple[float, int | None, dict[int | str, int]]:
    """A peer whose pong arrives while the server's reader is stalled past the timeout.

    Returns when the connection was judged (seconds after it opened), its close
    code if it was closed (None if it is alive after the stall), and the closes.
    """
    interval, timeout = 10.0, 5.0
    server = await start_test_server(
        nursery,
        heartbeat_interval=interval,
        heartbeat_timeout=timeout,
        router=default_router().replace(_StallingHeartbeat),
        admin_port=None,
    )
    _STALL[:] = [trio.Event()]
    async with open_memory_client(server, user_id="u", receive_timeout=100) as client:
        peer = client.ws
        assert isinstance(peer, MemoryPeer)
        peer.answers_pings = False
        opened = trio.current_time()
        await client.send({"type": "heartbeat", "message_id": "stall"})
        await trio.sleep_until(opened + interval + 1)  # the ping went out at `interval`
        if pong:
            await peer.pong()  # it arrives, but the stalled reader does not read it
        await trio.sleep_until(opened + interval + timeout + 1)  # past the timeout
        _STALL[0].set()  # the stall ends
        try:
            ack = await client.receive_frame("heartbeat_ack")
            assert ack["message_id"] == "stall"
            await client.send({"type": "ping", "message_id": "after"})
            assert (await client.receive_frame("pong"))["message_id"] == "after"
            code = None
        except ConnectionClosed as closed:
            code = closed.code
        judged = trio.current_time() - opened
    await server.wait_idle()
    return judged, code, server.statistics().connections_closed_total


async def test_a_pong_that_arrived_during_a_stall_of_the_server_is_counted(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    _, code, closed = await _stalled_client_scenario(nursery, pong=True)
    assert code is None
    assert closed[1011] == 0


async def test_without_a_pong_the_stalled_peer_is_still_closed_1011_at_the_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    judged, code, closed = await _stalled_client_scenario(nursery, pong=False)
    assert code == 1011
    assert closed[1011] == 1
    assert judged == 16.0  # interval + timeout + the 1 s the stall outlasted it
