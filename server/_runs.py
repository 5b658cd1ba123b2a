"""One run as the connection sees it: ids, sequence numbers, and its emitter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from agents import AgentInstanceFactory, RunScope, UserExecutionContext

from ._metrics import Metrics
from ._protocol import encode_run_event

if TYPE_CHECKING:
    from ._connection import Connection


class Run:
    """A run started on one connection; the only emitter its agents get.

    ``emit`` numbers events, adds the envelope, and queues them on this
    connection's outbound channel, which is all it can reach. The final event
    first retires the run (gauges, run table) and is then queued shielded,
    so a run can never end twice or be stopped after its final event.
    """

    def __init__(
        self,
        connection: Connection,
        factory: AgentInstanceFactory,
        *,
        run_id: str,
        thread_id: str,
        agent_name: str,
        request: str,
        message_id: str | None,
        metrics: Metrics | None = None,
    ) -> None:
        self._connection = connection
        #: The server's metrics (a throwaway set when driven without a server).
        self._metrics = metrics if metrics is not None else Metrics()
        #: When the start was accepted (trio clock), for the latency histograms.
        self._accepted_at = trio.current_time()
        self.run_id = run_id
        self.thread_id = thread_id
        self.agent_name = agent_name
        self.message_id = message_id
        self.finished = False
        self._seq = 0
        context = UserExecutionContext(
            user_id=connection.user_id,
            thread_id=thread_id,
            run_id=run_id,
            connection_id=connection.connection_id,
            request=request,
            emitter=self,
            message_id=message_id,
        )
        self.scope = RunScope(context=context, factory=factory)

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
            # The final event retires the run and is then queued shielded, so
            # a pending cancellation must win here, before anything changes.
            # Other events get this check from the queue itself.
            await trio.lowlevel.checkpoint_if_cancelled()
        self._seq += 1
        seq = self._seq
        if seq == 1:
            data["user_request"] = self.scope.context.request
            if self.message_id is not None:
                data["message_id"] = self.message_id
        frame = encode_run_event(
            event_type=event_type,
            run_id=self.run_id,
            thread_id=self.thread_id,
            user_id=self._connection.user_id,
            agent_name=agent_name,
            seq=seq,
            final=final,
            data=data,
        )
        if not final:
            try:
                await self._connection.send_event(frame)
            except BaseException:
                # Cancelled (already, or while waiting for room): nothing was
                # queued, so the number is free again (invariant 1: no gaps).
                if self._seq == seq:
                    self._seq -= 1
                raise
            if seq == 1:
                self._metrics.time_to_first_event.observe(trio.current_time() - self._accepted_at)
                # Let the writer send agent_started now, before the rest of the
                # run: emits do not yield otherwise, and a run whose agents never
                # wait (the offline provider) would send its first event last.
                # Twice: trio runs a batch of ready tasks in random order, so
                # after the second the writer has surely had its first step
                # (which writes; see _wire.send_frames).
                await trio.lowlevel.cancel_shielded_checkpoint()
                await trio.lowlevel.cancel_shielded_checkpoint()
            return
        status = str(data.get("status", "failed"))
        self._connection.finish_run(self, status)
        with trio.CancelScope(shield=True):
            await self._connection.send_event(frame)
        self._metrics.run_finished(status, trio.current_time() - self._accepted_at)
