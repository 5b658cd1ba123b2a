"""One run as the server sees it: ids, sequence numbers, and the emitter its agents get."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from agents import AgentRuntime, EndCause, RunScope, UserExecutionContext
from server.protocol import encode_run_event

from .._metrics import Metrics
from ._sinks import EventSink, RunOwner


class Run:
    """A run: the only emitter its agents get.

    ``emit`` numbers each event, wraps it in the envelope, encodes it once,
    and hands it to the run's owner (the connection that started it, which
    may make the run wait for room) and then to every sink. The final event
    first retires the run (``on_final``: gauges, run table) and is then
    delivered shielded, so a run can never end twice or be stopped after its
    final event.
    """

    __slots__ = (
        "__weakref__",
        "_accepted_at",
        "_max_event_size",
        "_metrics",
        "_on_final",
        "_output_left",
        "_owner",
        "_seq",
        "agent_name",
        "finished",
        "message_id",
        "run_id",
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
        metrics: Metrics | None = None,
        max_event_size: int | None = None,
        max_output: int | None = None,
    ) -> None:
        self._owner = owner
        self._on_final = on_final
        #: The server's metrics (a throwaway set when driven without a server).
        self._metrics = metrics if metrics is not None else Metrics()
        #: When the start was accepted (trio clock), for the latency histograms.
        self._accepted_at = trio.current_time()
        self.run_id = run_id
        self.thread_id = thread_id
        self.agent_name = agent_name
        self.message_id = message_id
        self.user_id = owner.user_id
        self.finished = False
        #: Where the run's events go after its owner (the history store, subscribers).
        self.sinks: list[EventSink] = []
        self._seq = 0
        self._max_event_size = max_event_size
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
        )
        self.scope = RunScope(context=context, runtime=runtime)

    @property
    def last_seq(self) -> int:
        return self._seq

    def release(self) -> None:
        """The run is over: drop its scope.

        The scope's context holds this Run as its emitter, a reference cycle;
        breaking it lets reference counting free the run's objects at once. Left
        to the garbage collector, they made its young-generation passes long
        enough to show in the p99 of time to agent_started (benchmarks/README.md).
        """
        del self.scope

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
        payload = encode_run_event(
            event_type=event_type,
            run_id=self.run_id,
            thread_id=self.thread_id,
            user_id=self.user_id,
            agent_name=agent_name,
            seq=seq,
            final=final,
            data=data,
            max_bytes=self._max_event_size,
        )
        if self._output_left is not None:
            self._output_left -= len(payload)
            if self._output_left < 0 and not final:
                # Past the run's output bound: end it. The closing events still
                # go out (they are small), so the bound is exceeded by at most those.
                self.scope.cancel(EndCause.OUTPUT_LIMIT)
        if final:
            status = str(data.get("status", "failed"))
            self._on_final(self, status)
            with trio.CancelScope(shield=True):
                await self._owner.send_event(payload)
            for sink in self.sinks:
                sink.deliver(seq, payload, final=True)
            self._metrics.run_finished(status, trio.current_time() - self._accepted_at)
            return
        try:
            await self._owner.send_event(payload)
        except BaseException:
            # Cancelled (already, or while waiting for room): nothing was
            # queued, so the number is free again (invariant 1: no gaps).
            if self._seq == seq:
                self._seq -= 1
            raise
        for sink in self.sinks:
            sink.deliver(seq, payload, final=False)
        if seq == 1:
            self._metrics.time_to_first_event.observe(trio.current_time() - self._accepted_at)
            # Let the writer send agent_started now, before the rest of the
            # run: emits do not yield otherwise, and a run whose agents never
            # wait (the offline provider) would send its first event last.
            # Twice: trio runs a batch of ready tasks in random order, so
            # after the second the writer has surely had its first step
            # (which writes).
            await trio.lowlevel.cancel_shielded_checkpoint()
            await trio.lowlevel.cancel_shielded_checkpoint()
