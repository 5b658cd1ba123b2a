"""One run as the server sees it: ids, sequence numbers, and the emitter its agents get."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from agents import AgentRuntime, EndCause, RunScope, Turn, UserExecutionContext
from server.protocol import EventEncoder, StoreUnavailableError

from .._logging import ids
from .._metrics import Metrics
from ._sinks import EventSink, RunOwner

if TYPE_CHECKING:
    from ._history import RunRecorder

log = logging.getLogger("trio_agent_server.runs")


class Run:
    """A run: the only emitter its agents get.

    ``emit`` numbers each event, wraps it in the envelope, encodes it once,
    and hands it to the run's owner (the connection that started it, which
    may make the run wait for room), then to its history (the store, behind
    the hot path), then to every sink (other connections following it). The
    final event first retires the run (``on_final``: gauges, run table), is
    committed to the history (the durability rule: a final event goes out
    only once the run is stored), and is then delivered, shielded, so a run
    can never end twice or be stopped after its final event.

    While it runs, the run keeps every event it delivered (its output is
    bounded), so a connection that starts following it mid-way gets what it
    missed and then the live events in one step, with no gap and no repeat
    (:meth:`follow`).
    """

    __slots__ = (
        "__weakref__",
        "_accepted_at",
        "_encoder",
        "_metrics",
        "_on_delivered",
        "_on_final",
        "_output_left",
        "_owner",
        "_seq",
        "agent_name",
        "ended",
        "events",
        "finished",
        "history",
        "message_id",
        "run_id",
        "run_key",
        "scope",
        "sinks",
        "thread_id",
        "user_id",
    )

    def __init__(
        self,
        owner: RunOwner,
        runtime: AgentRuntime,
        *,
        run_id: str,
        thread_id: str,
        agent_name: str,
        request: str,
        message_id: str | None,
        on_final: Callable[[Run, str], None],
        on_delivered: Callable[[Run], None] | None = None,
        metrics: Metrics | None = None,
        max_event_size: int | None = None,
        max_output: int | None = None,
        run_key: str | None = None,
        history: RunRecorder | None = None,
        turns: tuple[Turn, ...] = (),
    ) -> None:
        self._owner: RunOwner | None = owner
        self._on_final = on_final
        self._on_delivered = on_delivered
        #: The server's metrics (a throwaway set when driven without a server).
        self._metrics = metrics if metrics is not None else Metrics()
        #: When the start was accepted (trio clock), for the latency histograms.
        self._accepted_at = trio.current_time()
        self.run_id = run_id
        self.run_key = run_key if run_key is not None else run_id
        self.thread_id = thread_id
        self.agent_name = agent_name
        self.message_id = message_id
        self.user_id = owner.user_id
        self.finished = False
        #: Where the run is recorded (None: nowhere).
        self.history = history
        #: Where the run's events go after its owner and its history: connections
        #: following it (resume_run, subscribe_thread).
        self.sinks: list[EventSink] = []
        #: Every event delivered so far, in seq order (``events[n - 1]`` has seq n).
        self.events: list[bytes] = []
        #: Whether the final event has been delivered (it is then the last of ``events``).
        self.ended = False
        self._seq = 0
        #: The run's envelopes, from parts encoded once.
        self._encoder = EventEncoder(
            run_id=run_id, thread_id=thread_id, user_id=owner.user_id, max_bytes=max_event_size
        )
        #: Bytes the run may still send before it is ended (None: no bound).
        self._output_left = max_output
        context = UserExecutionContext(
            user_id=owner.user_id,
            thread_id=thread_id,
            run_id=run_id,
            connection_id=owner.connection_id,
            request=request,
            emitter=self,
            message_id=message_id,
            history=turns,
        )
        self.scope = RunScope(context=context, runtime=runtime)

    @property
    def last_seq(self) -> int:
        """The seq of the last event delivered (0 before the first)."""
        return len(self.events)

    @property
    def owner(self) -> RunOwner | None:
        """The connection that started the run, while its socket is the run's (else None)."""
        return self._owner

    def detach_owner(self) -> None:
        """The owner's socket went away: its events now go only to history and followers."""
        self._owner = None

    def follow(self, sink: EventSink, after_seq: int) -> Sequence[bytes]:
        """Attach ``sink`` for the live events; return the delivered ones after ``after_seq``.

        One step with no await: every event is either in what this returns or
        delivered to ``sink`` later, never both, never neither.
        """
        self.sinks.append(sink)
        return self.events[after_seq:]

    def unfollow(self, sink: EventSink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)

    def release(self) -> None:
        """The run is over: drop its scope and what it kept.

        The scope's context holds this Run as its emitter, a reference cycle;
        breaking it lets reference counting free the run's objects at once. Left
        to the garbage collector, they made its young-generation passes long
        enough to show in the p99 of time to agent_started (benchmarks/README.md).
        """
        del self.scope
        self.events = []
        self.sinks = []

    async def emit(
        self, agent_name: str, event_type: str, data: dict[str, Any], *, final: bool = False
    ) -> None:
        if final:
            # The final event retires the run and is then delivered shielded, so
            # a pending cancellation must win here, before anything changes.
            # Other events get this check from the owner's queue itself.
            await trio.lowlevel.checkpoint_if_cancelled()
        self._seq += 1
        seq = self._seq
        if seq == 1:
            data["user_request"] = self.scope.context.request
            if self.message_id is not None:
                data["message_id"] = self.message_id
        payload = self._encoder.encode(event_type, agent_name, seq, final, data)
        if self._output_left is not None:
            self._output_left -= len(payload)
            if self._output_left < 0 and not final:
                # Past the run's output bound: end it. The closing events still
                # go out (they are small), so the bound is exceeded by at most those.
                self.scope.cancel(EndCause.OUTPUT_LIMIT)
        if final:
            await self._emit_final(agent_name, event_type, data, seq, payload)
            return
        owner = self._owner
        written = False
        if owner is not None:
            try:
                if seq == 1 and (at_once := getattr(owner, "send_event_at_once", None)):
                    written = await at_once(payload)  # a connection writes it now
                else:
                    await owner.send_event(payload)
            except BaseException:
                # Cancelled (already, or while waiting for room): nothing was
                # queued, so the number is free again (invariant 1: no gaps).
                if self._seq == seq:
                    self._seq -= 1
                raise
        # _delivered(), inlined for the events that are not final.
        self.events.append(payload)
        if self.history is not None:
            self.history.append(seq, payload)
        if self.sinks:
            for sink in tuple(self.sinks):  # a sink may detach itself as it delivers
                sink.deliver(seq, payload, final=False)
        if seq == 1:
            self._metrics.time_to_first_event.observe(trio.current_time() - self._accepted_at)
            if not written:
                # Let the writer send agent_started now, before the rest of the
                # run: emits do not yield otherwise, and a run whose agents never
                # wait (the offline provider) would send its first event last.
                # Twice: trio runs a batch of ready tasks in random order, so
                # after the second the writer has surely had its first step
                # (which writes).
                await trio.lowlevel.cancel_shielded_checkpoint()
                await trio.lowlevel.cancel_shielded_checkpoint()

    def _encode(
        self, agent_name: str, event_type: str, data: dict[str, Any], seq: int, final: bool
    ) -> bytes:
        return self._encoder.encode(event_type, agent_name, seq, final, data)

    def _delivered(self, seq: int, payload: bytes, *, final: bool) -> None:
        """The event is the owner's: now history, the buffer and the followers (no await)."""
        self.events.append(payload)
        if final:
            self.ended = True
        if self.history is not None:
            self.history.append(seq, payload)
        if self.sinks:
            for sink in tuple(self.sinks):  # a sink may detach itself as it delivers
                sink.deliver(seq, payload, final=final)

    async def _emit_final(
        self, agent_name: str, event_type: str, data: dict[str, Any], seq: int, payload: bytes
    ) -> None:
        status = str(data.get("status", "failed"))
        self._on_final(self, status)
        with trio.CancelScope(shield=True):
            if self.history is not None:
                try:
                    if not await self.history.commit_final(seq, payload, data):
                        # Someone else ended the run (the sweep of a run whose
                        # process was thought lost): exactly one final event, theirs.
                        log.warning("run was ended elsewhere; its own final event is dropped",
                                    extra=self._log_ids())  # fmt: skip
                        self._finished_elsewhere()
                        return
                except StoreUnavailableError as exc:
                    # The store stayed unreachable: the client still gets its
                    # final event, saying the history does not have it yet (the
                    # writer keeps it and commits it when the store is back).
                    log.error("final event sent before its run was stored: %s", exc,
                              extra=self._log_ids())  # fmt: skip
                    data["history_saved"] = False
                    payload = self._encode(agent_name, event_type, data, seq, True)
            owner = self._owner
            if owner is not None:
                at_once = getattr(owner, "send_event_at_once", None)
                if at_once is not None:
                    await at_once(payload)  # the run ends here: no writer task for it
                else:
                    await owner.send_event(payload)
            self._delivered(seq, payload, final=True)
        if self._on_delivered is not None:
            self._on_delivered(self)
        self._metrics.run_finished(status, trio.current_time() - self._accepted_at)

    def _finished_elsewhere(self) -> None:
        if self._on_delivered is not None:
            self._on_delivered(self)

    def _log_ids(self) -> dict[str, str]:
        return ids(run_id=self.run_id, user_id=self.user_id, thread_id=self.thread_id)
