"""The server-wide heartbeat schedule (server/_heartbeat.py).

The timing seen by a client (first ping after one interval, 1011 after the
timeout) is tested end to end in test_limits.py; here: the schedule's order,
joining and leaving, and that an idle connection has no task of its own
(neither one waiting to ping nor a writer waiting for frames).
"""

from __future__ import annotations

import gc
import weakref

import trio
import trio.testing

from server.session._heartbeat import HeartbeatSchedule
from server.testing import open_chat_client, start_test_server


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


async def test_an_idle_connection_has_no_task_of_its_own(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_test_server(nursery, heartbeat_interval=5, heartbeat_timeout=3)
    before = {id(task) for task in _all_tasks()}
    async with open_chat_client(server, user_id="idle") as client:
        await trio.sleep(12)  # two pings sent and answered in between
        await client.send({"type": "ping", "message_id": "m"})
        assert (await client.receive_frame("pong"))["message_id"] == "m"
        added = [task.name for task in _all_tasks() if id(task) not in before]
    # Only the task serving it and trio-websocket's reader: a ping task lives
    # until its pong has come back, the writer while frames are queued.
    assert not [name for name in added if name.startswith("server._connection.")], added
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
