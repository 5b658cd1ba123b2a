"""This process among others: what goes through the broker (``--broker redis://…``).

With several processes (``--workers``, several machines) sharing one store,
a user's connections may be served by different processes. The
:class:`Cluster` is this process's side of that, over the broker:

- a run whose thread another process follows (a subscribed connection there)
  or that another process asked for (``resume_run`` there) publishes its
  events to its stream; its owner tells the following processes it started;
- commands from other processes: stop a run, publish a run, a run started;
- the global per-user connection limit (leases, freed within ``--lease-seconds``
  of a process's death);
- the ``NODE_LOST`` sweep: a run whose process is no longer alive is ended by
  exactly one other process (the store's compare-and-set decides), and its
  closing events go to its followers.

Everything here fails soft: with the broker unreachable, this process serves
its own connections as usual; what crosses processes is refused with
``BROKER_UNAVAILABLE``-style errors or waits for the broker's return, never hangs.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import trio

from agents import EndCause
from server.broker import Broker, BrokerUnavailableError, Publisher, RunStream, stream_id
from server.protocol import StoreUnavailableError
from server.store import RunInfo

from ._history_tasks import end_lost_runs
from .runs import History, RemoteRun, RemoteRuns, Run, RunDirectory

log = logging.getLogger("trio_agent_server.cluster")

#: Most events a sweep takes back from a dead process's stream, per run (the
#: writer commits within milliseconds: far fewer are ever uncommitted).
RECOVER_MAX = 10_000


@attrs.define(eq=False)
class BrokerSink:
    """A run's events on their way to its broker stream (an ``EventSink``; never waits)."""

    publisher: Publisher
    stream: RunStream

    def deliver(self, seq: int, payload: bytes, *, final: bool) -> None:
        self.publisher.append_nowait(self.stream, seq, payload)


@attrs.define(eq=False)
class Cluster:
    """This process's link to the others; owned by one server."""

    broker: Broker
    publisher: Publisher
    history: History
    directory: RunDirectory
    lease_seconds: float
    _interest: set[tuple[str, str]] = attrs.field(factory=set)
    _interest_changed: trio.Event = attrs.field(factory=trio.Event)
    #: No NODE_LOST sweep before this moment (trio clock): see serve_sweeps.
    _sweep_after: float = 0.0

    @property
    def node_id(self) -> str:
        return self.history.node_id

    @property
    def healthy(self) -> bool:
        return self.broker.healthy

    def remote_runs(self) -> RemoteRuns:
        return RemoteRuns(self.history.store, self.broker, self.node_id)

    # -- runs of this process -------------------------------------------------------

    def publish(self, run: Run) -> None:
        """Publish ``run``'s events from its first to its stream (once; no await)."""
        if any(isinstance(sink, BrokerSink) for sink in run.sinks):
            return
        stream = self.broker.run_stream(run.user_id, run.thread_id, run.run_key)
        sink = BrokerSink(self.publisher, stream)
        for seq, payload in enumerate(run.follow(sink, 0), start=1):
            sink.deliver(seq, payload, final=False)

    async def announce(self, run: Run) -> None:
        """A run started here: publish it if another process follows its thread, and say so."""
        try:
            nodes = await self.broker.followers(run.user_id, run.thread_id)
        except BrokerUnavailableError:
            return
        others = nodes - {self.node_id}
        if not others:
            return
        self.publish(run)
        command = RemoteRun(run.user_id, run.run_id, run.run_key, run.thread_id, self.node_id)
        for node in others:
            try:
                await self.broker.send(node, command.command("run_started"))
            except BrokerUnavailableError:
                return

    async def stop_elsewhere(self, user_id: str, run_id: str, message_id: str | None) -> bool:
        """Stop ``user_id``'s run ``run_id`` if another live process runs it.

        False if no other live process runs it. Raises ``BROKER_UNAVAILABLE``
        when the store says another process runs it but the broker cannot
        carry the stop: the run goes on, and "no such run" would be untrue.
        """
        try:
            info = await self.history.store.get_run(user_id, run_id)
        except StoreUnavailableError:
            return False
        if info is None or not info.running or info.node_id == self.node_id:
            return False
        try:
            return await self.broker.send(info.node_id, RemoteRun.of(info).command("stop"))
        except BrokerUnavailableError as exc:
            raise BrokerUnavailableError(
                "the run is on another process and the broker cannot be reached; "
                "it goes on: try stop_agent again",
                details={"run_id": run_id},
                message_id=message_id,
            ) from exc

    # -- commands from other processes -------------------------------------------------

    async def on_command(self, command: dict[str, Any]) -> None:
        kind = command.get("cmd")
        run = RemoteRun.from_command(command)
        if kind == "run_started":
            for follows in self.directory.subscribers(run.user_id, run.thread_id):
                follows.follow_remote(run, 0, via_subscription=True)
            return
        local = self.directory.find(run.user_id, run.run_id)
        if local is None or local.run_key != run.run_key:
            return  # over already (its final event is in the store)
        if kind == "stop":
            local.scope.cancel(EndCause.CANCELLED)
        elif kind == "publish_run":
            self.publish(local)

    # -- thread interest ---------------------------------------------------------------

    async def follow_thread(self, user_id: str, thread_id: str) -> None:
        """This process has a subscriber for the thread: other processes must publish to it."""
        key = (user_id, thread_id)
        if key not in self._interest:
            await self.broker.follow(user_id, thread_id)
            self._interest.add(key)
        self._interest_changed.set()

    def interest_may_have_ended(self) -> None:
        self._interest_changed.set()

    async def serve_interest(self) -> None:
        """Stop following threads nobody here subscribes to any more (lazily)."""
        while True:
            await self._interest_changed.wait()
            self._interest_changed = trio.Event()
            for user_id, thread_id in list(self._interest):
                if next(self.directory.subscribers(user_id, thread_id), None) is None:
                    try:
                        await self.broker.unfollow(user_id, thread_id)
                    except BrokerUnavailableError:
                        continue  # its lease lapses by itself
                    self._interest.discard((user_id, thread_id))

    # -- runs of processes that died ---------------------------------------------------------

    async def serve_sweeps(self) -> None:
        """End the runs of processes that died, every half lease (one process per dead one).

        After an outage of its own link to Redis, this process sweeps nothing
        for a whole lease: if Redis itself was away, every process's lease
        lapsed meanwhile, and the others, alive, renew theirs as soon as they
        reach Redis again. Sweeping at once could end their live runs.
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._hold_sweeps_after_outages)
            while True:
                await trio.sleep(self.lease_seconds / 2)
                if trio.current_time() < self._sweep_after:
                    continue
                try:
                    await self.sweep()
                except (BrokerUnavailableError, StoreUnavailableError) as exc:
                    log.warning("NODE_LOST sweep skipped: %s", exc)

    async def _hold_sweeps_after_outages(self) -> None:
        while True:
            await self.broker.wait_unhealthy()
            await self.broker.wait_healthy()
            self._sweep_after = trio.current_time() + self.lease_seconds

    async def sweep(self) -> int:
        running = await self.history.store.running_runs(None)
        nodes = {run.node_id for run in running} - {self.node_id}
        if not nodes:
            return 0
        alive = await self.broker.live_nodes()
        ended = 0
        for node in sorted(nodes - alive):
            if not await self.broker.claim_sweep(node):
                continue  # another process sweeps it
            ended_runs = await end_lost_runs(
                self.history, node_id=node, recover=self._delivered_uncommitted
            )
            for run, records in ended_runs:
                stream = self.broker.run_stream(run.user_id, run.thread_id, run.run_key)
                await self.broker.publish(
                    [(stream, record.seq, record.frame) for record in records], gated=False
                )
                ended += 1
        return ended

    async def _delivered_uncommitted(self, run: RunInfo) -> list[bytes]:
        """Events of a dead process's run that it published but had not committed.

        A run's events reach its clients and its stream before the store's
        group commit; the final event alone is committed first. What the
        stream holds after the last committed seq, in an unbroken line and
        short of a final event, is what followers may have seen: the sweep
        records it before the closing events.
        """
        stream = self.broker.run_stream(run.user_id, run.thread_id, run.run_key)
        try:
            entries = await self.broker.read(stream, stream_id(run.last_seq), count=RECOVER_MAX)
        except BrokerUnavailableError:
            return []
        delivered: list[bytes] = []
        for entry in entries:
            if entry.seq != run.last_seq + len(delivered) + 1 or b'"final":true' in entry.payload:
                break
            delivered.append(entry.payload)
        return delivered
