"""Connections following runs they did not start: resumed runs and subscribed threads.

Each connection has one :class:`Follows`: the runs it receives as a follower
(each through a :class:`Follower` sink attached to the run) and the threads it
subscribed to. A follower never makes the run wait: it hands each event to its
connection's ``deliver`` without waiting, and a connection that cannot keep
up closes itself (1013), which detaches it; the run goes on. Closing the
connection detaches all of its followers and subscriptions. A run of another
process is followed by a task of the connection, which receives its events
in bursts (pages of the store, batches of the broker stream) and so waits
for room in the connection's queue, as the connection's own runs do.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import trio

from server.protocol import TooManySubscriptionsError, as_replay

if TYPE_CHECKING:
    from .._metrics import Metrics
    from ._directory import RunDirectory
    from ._remote import RemoteRun, RemoteRuns
    from ._run import Run

log = logging.getLogger("trio_agent_server.runs")

#: Start a task in the connection's nursery (for following runs of other processes).
Spawn = Callable[..., None]

#: ``deliver(payload) -> bool``: queue one frame's payload without waiting; False
#: once the connection cannot take it (closed, lingering, or too slow).
Deliver = Callable[[bytes], bool]
#: ``await deliver_waiting(payload) -> bool``: the same, waiting for room in the
#: queue (up to the slow-consumer timeout), for the tasks that follow runs of
#: other processes: their events come in bursts, not one by one.
DeliverWaiting = Callable[[bytes], Awaitable[bool]]


class Follower:
    """One connection receiving one run's live events (an :class:`EventSink`)."""

    __slots__ = ("__weakref__", "_follows", "after_seq", "run", "via_subscription")

    def __init__(
        self, follows: Follows, run: Run, *, via_subscription: bool, after_seq: int = 0
    ) -> None:
        self._follows = follows
        self.run = run
        self.via_subscription = via_subscription
        #: The client has the events up to this seq: only later ones go out
        #: (resume_run with an after_seq past what the run has sent so far).
        self.after_seq = after_seq

    def deliver(self, seq: int, payload: bytes, *, final: bool) -> None:
        if (seq > self.after_seq and not self._follows.deliver(payload)) or final:
            self._follows.stop_following(self.run)


class Follows:
    """What one connection follows, and the gauge of its subscriptions."""

    __slots__ = (
        "__weakref__",
        "_directory",
        "_followers",
        "_metrics",
        "_remote",
        "_remote_follows",
        "_spawn",
        "_threads",
        "deliver",
        "deliver_waiting",
        "max_subscriptions",
        "user_id",
    )

    def __init__(
        self,
        user_id: str,
        deliver: Deliver,
        directory: RunDirectory,
        metrics: Metrics,
        *,
        max_subscriptions: int,
        remote: RemoteRuns | None = None,
        spawn: Spawn | None = None,
        deliver_waiting: DeliverWaiting | None = None,
    ) -> None:
        self.user_id = user_id
        self.deliver = deliver
        self.deliver_waiting = deliver_waiting
        self._directory = directory
        self._metrics = metrics
        self.max_subscriptions = max_subscriptions
        self._followers: dict[Run, Follower] = {}
        self._threads: set[str] = set()
        #: Runs of other processes (with a broker), and how to follow them.
        self._remote = remote
        self._spawn = spawn
        #: run_key -> (its task's cancel scope, followed through a subscription?, thread)
        self._remote_follows: dict[str, tuple[trio.CancelScope, bool, str]] = {}

    # -- runs ----------------------------------------------------------------------

    def is_following(self, run: Run) -> bool:
        return run in self._followers

    def follow(
        self, run: Run, after_seq: int, *, via_subscription: bool = False, first: bytes = b""
    ) -> bool:
        """Start receiving ``run``: ``first`` (a reply), what it sent after ``after_seq``
        (marked as replayed), then its live events; all queued in order, now.

        False if the connection could not take it (then nothing is attached).
        """
        follower = Follower(self, run, via_subscription=via_subscription, after_seq=after_seq)
        backlog: Sequence[bytes] = run.follow(follower, after_seq)
        self._followers[run] = follower
        if first and not self.deliver(first):
            self.stop_following(run)
            return False
        for payload in backlog:
            if not self.deliver(as_replay(payload)):
                self.stop_following(run)
                return False
        return True

    async def catch_up(
        self,
        run: Run,
        after_seq: int,
        send: Callable[[bytes], Awaitable[None]],
        *,
        replayed_to: int,
    ) -> None:
        """Send what ``run`` sent after ``after_seq``, then receive its live events.

        The past goes out at the connection's own pace, each frame waiting for
        room like any reply (however long the run's backlog, the connection is
        not taken for a slow consumer; the run never waits: the backlog is the
        run's own list), with what the run sends meanwhile. Once caught up, in
        a step with no wait, the connection becomes a follower: nothing is
        missed or repeated at the seam. Events up to ``replayed_to`` (what the
        run had sent when it was asked for) are marked as replayed.
        """
        events = run.events  # the run's own list, growing until the run is released
        sent = after_seq
        while sent < len(events):
            payload = events[sent]
            sent += 1
            await send(as_replay(payload) if sent <= replayed_to else payload)
        if run.events is events and not run.ended:
            # Live and caught up: from here its events come through a sink.
            self.follow(run, max(after_seq, sent))

    def stop_following(self, run: Run) -> None:
        follower = self._followers.pop(run, None)
        if follower is not None:
            run.unfollow(follower)

    # -- runs of other processes ---------------------------------------------------

    def is_following_remote(self, run_key: str) -> bool:
        return run_key in self._remote_follows

    def follow_remote(
        self, run: RemoteRun, after_seq: int, *, via_subscription: bool = False, first: bytes = b""
    ) -> bool:
        """Receive a run another process runs: ``first``, then its events after ``after_seq``.

        They come from the shared store and the broker, in a task of this
        connection (:func:`~server.runs._remote.follow_remote_run`). False if
        there is no broker, or the connection could not take ``first``.
        """
        if self._remote is None or self._spawn is None or run.run_key in self._remote_follows:
            return False
        if first and not self.deliver(first):
            return False
        scope = trio.CancelScope()
        self._remote_follows[run.run_key] = (scope, via_subscription, run.thread_id)
        self._spawn(self._follow_remote, run, after_seq, scope)
        return True

    async def _follow_remote(self, run: RemoteRun, after_seq: int, scope: trio.CancelScope) -> None:
        remote = self._remote
        assert remote is not None
        try:
            with scope:
                await remote.follow(run, after_seq, self._deliver_waiting)
        except Exception:
            log.exception("following a run of another process failed")
        finally:
            if self._remote_follows.get(run.run_key, (None,))[0] is scope:
                del self._remote_follows[run.run_key]

    async def _deliver_waiting(self, payload: bytes) -> bool:
        if self.deliver_waiting is not None:
            return await self.deliver_waiting(payload)
        await trio.lowlevel.checkpoint()
        return self.deliver(payload)

    def _stop_remote(self, predicate: Callable[[bool, str], bool]) -> None:
        for run_key, (scope, via_subscription, thread_id) in list(self._remote_follows.items()):
            if predicate(via_subscription, thread_id):
                scope.cancel()
                del self._remote_follows[run_key]

    # -- threads -------------------------------------------------------------------

    def subscribe(self, thread_id: str, *, message_id: str | None) -> bool:
        """Follow every run that starts on the thread from now on; False if already so."""
        if thread_id in self._threads:
            return False
        if len(self._threads) >= self.max_subscriptions:
            raise TooManySubscriptionsError(
                f"this connection already follows {self.max_subscriptions} threads",
                details={"max_subscriptions": self.max_subscriptions, "thread_id": thread_id},
                message_id=message_id,
            )
        self._threads.add(thread_id)
        self._directory.subscribe(self.user_id, thread_id, self)
        self._metrics.subscriptions_active += 1
        return True

    def unsubscribe(self, thread_id: str) -> bool:
        """Stop following the thread, and the runs followed through it; False if not followed."""
        if thread_id not in self._threads:
            return False
        self._threads.discard(thread_id)
        self._directory.unsubscribe(self.user_id, thread_id, self)
        self._metrics.subscriptions_active -= 1
        for run, follower in list(self._followers.items()):
            if follower.via_subscription and run.thread_id == thread_id:
                self.stop_following(run)
        self._stop_remote(lambda via, thread: via and thread == thread_id)
        return True

    def subscribed(self, thread_id: str) -> bool:
        return thread_id in self._threads

    def threads(self) -> tuple[str, ...]:
        return tuple(self._threads)

    def run_started(self, run: Run) -> None:
        """A run started on a thread this connection subscribed to: follow it from its start."""
        self.follow(run, 0, via_subscription=True)

    def close(self) -> None:
        """The connection is over: nothing of it stays attached anywhere."""
        for run in list(self._followers):
            self.stop_following(run)
        for thread_id in list(self._threads):
            self.unsubscribe(thread_id)
        self._stop_remote(lambda via, thread: True)

    def detach_runs(self) -> None:
        """The socket went away (the session lingers): stop following runs, keep threads."""
        for run in list(self._followers):
            self.stop_following(run)
        self._stop_remote(lambda via, thread: True)

    def __len__(self) -> int:
        return len(self._followers)
