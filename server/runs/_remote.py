"""Following a run that another process runs: its history, then its broker stream.

A connection that resumes, or is subscribed to the thread of, a run owned by
another process receives it here, in a task of that connection: the events
committed to the shared store after ``after_seq`` first (marked as replayed),
then the run's stream on the broker, which its owner publishes once asked.
Entries the stream lacks (published before anyone asked, trimmed, lost in a
broker outage) are read from the store, waiting a little for them to be
committed if need be; a stream that falls silent is checked against the
store, which says when the run has ended (its final event is committed before
it is published). Every seq from ``after_seq + 1`` is delivered once, in order.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import orjson
import trio

from server.broker import Broker, BrokerUnavailableError, RunStream, stream_id
from server.protocol import StoreUnavailableError, as_replay
from server.store import RunInfo, Store

log = logging.getLogger("trio_agent_server.runs")

#: Seconds a blocked read of the stream waits; after it, the store is asked.
READ_BLOCK = 1.0
#: How long a gap may wait for its events to be committed before giving up.
GAP_TIMEOUT = 10.0
#: Seconds a follower keeps waiting while the broker is down, between checks.
RETRY = 0.5


@attrs.frozen
class RemoteRun:
    """A run owned by another process, as its followers here know it."""

    user_id: str
    run_id: str
    run_key: str
    thread_id: str
    #: The process that owns it.
    node_id: str

    @classmethod
    def of(cls, info: RunInfo) -> RemoteRun:
        return cls(info.user_id, info.run_id, info.run_key, info.thread_id, info.node_id)

    def command(self, cmd: str) -> dict[str, Any]:
        """A broker command about this run."""
        return {"cmd": cmd, "user_id": self.user_id, "run_id": self.run_id,
                "run_key": self.run_key, "thread_id": self.thread_id,
                "node_id": self.node_id}  # fmt: skip

    @classmethod
    def from_command(cls, command: dict[str, Any]) -> RemoteRun:
        return cls(
            str(command["user_id"]),
            str(command["run_id"]),
            str(command["run_key"]),
            str(command["thread_id"]),
            str(command["node_id"]),
        )


@attrs.frozen
class RemoteRuns:
    """What following runs of other processes needs: the shared store and the broker."""

    store: Store
    broker: Broker
    #: This process.
    node_id: str

    def stream(self, run: RemoteRun) -> RunStream:
        return self.broker.run_stream(run.user_id, run.thread_id, run.run_key)

    async def request_publish(self, run: RemoteRun) -> bool:
        """Ask the run's owner to publish its events; False if the owner is not alive."""
        try:
            return await self.broker.send(run.node_id, run.command("publish_run"))
        except BrokerUnavailableError:
            return False

    async def follow(
        self, run: RemoteRun, after_seq: int, deliver: Callable[[bytes], Awaitable[bool]]
    ) -> None:
        await follow_remote_run(
            run,
            after_seq,
            store=self.store,
            broker=self.broker,
            stream=self.stream(run),
            deliver=deliver,
        )


async def follow_remote_run(
    run: RemoteRun,
    after_seq: int,
    *,
    store: Store,
    broker: Broker,
    stream: RunStream,
    deliver: Callable[[bytes], Awaitable[bool]],
) -> None:
    """Deliver ``run``'s events after ``after_seq`` until its final event (see the module doc).

    Returns when the final event was delivered, or the connection could not
    take an event (``deliver`` returned False). Cancel to stop following.
    ``deliver`` may wait for room in the connection's queue: events come
    here in bursts (a page of the store, a batch of the stream), and a
    follower that waits holds back nobody but itself.
    """

    async def send(payload: bytes) -> None:
        if not await deliver(payload):
            raise _Stop

    with contextlib.suppress(_Stop):
        await _follow(run, after_seq + 1, store, broker, stream, send)


#: Queue one event for the follower's connection (raises _Stop if it cannot take it).
_Send = Callable[[bytes], Awaitable[None]]


class _Stop(Exception):
    """The connection could not take an event: stop following."""


async def _follow(
    run: RemoteRun,
    next_seq: int,
    store: Store,
    broker: Broker,
    stream: RunStream,
    send: _Send,
) -> None:
    # 1. What the store has committed.
    next_seq, ended = await _replay_committed(run, next_seq, store, send)
    if ended:
        return
    # 2. The live stream, with gaps filled from the store.
    while True:
        try:
            entries = await broker.read(stream, stream_id(next_seq - 1), block=READ_BLOCK)
        except BrokerUnavailableError:
            entries = []
            await trio.sleep(RETRY)
        for entry in entries:
            if entry.seq < next_seq:
                continue
            if entry.seq > next_seq:
                next_seq = await _fill_gap(run, next_seq, entry.seq, store, send)
            await send(entry.payload)
            next_seq = entry.seq + 1
            if _is_final(entry.payload):
                return
        if not entries:
            next_seq, ended = await _replay_committed(run, next_seq, store, send)
            if ended:
                return


async def _replay_committed(
    run: RemoteRun, next_seq: int, store: Store, send: _Send
) -> tuple[int, bool]:
    """Send the committed events from ``next_seq``; whether the run has ended with them."""
    try:
        info = await store.get_run(run.user_id, run.run_id)
        while True:
            events = await store.read_events(run.run_key, next_seq - 1, 256)
            if not events:
                break
            for event in events:
                await send(as_replay(event.frame))
                next_seq = event.seq + 1
    except StoreUnavailableError:
        return next_seq, False
    if info is None or info.run_key != run.run_key:
        return next_seq, True  # deleted with its thread, or replaced: nothing more will come
    return next_seq, not info.running and next_seq > info.last_seq


async def _fill_gap(run: RemoteRun, next_seq: int, until: int, store: Store, send: _Send) -> int:
    """Send ``next_seq .. until - 1`` from the store, waiting for their commit."""
    with trio.move_on_after(GAP_TIMEOUT):
        while next_seq < until:
            try:
                events = await store.read_events(run.run_key, next_seq - 1, until - next_seq)
            except StoreUnavailableError:
                events = []
            for event in events:
                if event.seq >= until:
                    break
                await send(as_replay(event.frame))
                next_seq = event.seq + 1
            if next_seq < until:
                await trio.sleep(0.01)  # the owner's writer commits within milliseconds
        return next_seq
    log.error("events %d-%d of run %s never reached the store", next_seq, until - 1, run.run_id)
    raise _Stop


def _is_final(payload: bytes) -> bool:
    if b'"final":true' not in payload:
        return False
    return bool(orjson.loads(payload).get("final") is True)
