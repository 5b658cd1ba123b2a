"""Group commit: run events reach the store in batches, behind the hot path.

A run calls :meth:`HistoryWriter.append` for every event it emits: a list
append and, at most, waking the writer task. The writer takes everything
pending and commits it in one ``write_batch`` transaction, then takes what
arrived meanwhile, and so on; so the more events arrive, the more each commit
carries. :meth:`HistoryWriter.commit_final` puts a run's final event in the
queue with its end and waits until both are committed (compare-and-set: it
returns False if someone else had ended the run). The server sends a final
event only after that: the durability rule.

Per run, a batch carries all of that run's pending events, so what is
committed of a run is always a prefix ``1..n`` of its events, and its final
event is committed with or after every earlier one.

While the store fails, the writer keeps the records, retries with a backoff
(``retry_min`` doubling to ``retry_max``), and reports ``healthy = False``
until a commit succeeds; ``commit_final`` gives up after ``final_timeout``
with ``StoreUnavailableError`` (its final stays queued and is committed when
the store is back). The records kept are bounded by ``max_pending_bytes``
(frame bytes): an event that would cross it *drops its run*: that run's
uncommitted events are discarded, later ones ignored (``append`` returns
False), and its ``commit_final`` raises ``StoreUnavailableError`` at once,
leaving the run recorded as ``running`` with a complete prefix of events
(``RunInfo.last_seq`` is that prefix's end), for the owner to end it as a sweep
ends a lost run. Finals are always accepted: they are one per run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import attrs
import trio

from server.protocol import StoreUnavailableError

from ._base import Store
from ._records import EventRecord, RunEnd

logger = logging.getLogger(__name__)

DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024


@attrs.define
class _Final:
    end: RunEnd
    done: trio.Event = attrs.field(factory=trio.Event)
    in_flight: bool = False
    committed: bool | None = None


@attrs.frozen
class WriterStatistics:
    """A snapshot of :class:`HistoryWriter`'s counters."""

    healthy: bool
    pending_events: int
    pending_bytes: int
    pending_finals: int
    batches: int
    events_committed: int
    failures: int
    runs_dropped: int


class HistoryWriter:
    """The one task that writes run events to the store (see the module doc).

    ``await nursery.start(writer.run)`` starts it; cancelling its nursery
    stops it. Everything else is called from the runs' tasks.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        max_batch_events: int = 5000,
        final_timeout: float = 5.0,
        retry_min: float = 0.05,
        retry_max: float = 2.0,
    ) -> None:
        self._store = store
        self._max_pending_bytes = max_pending_bytes
        self._max_batch_events = max_batch_events
        self._final_timeout = final_timeout
        self._retry_min = retry_min
        self._retry_max = retry_max
        #: Not yet taken by a batch, by run, in seq order.
        self._pending: dict[str, list[EventRecord]] = {}
        #: In the batch being committed, by run.
        self._in_flight: dict[str, list[EventRecord]] = {}
        self._finals: dict[str, _Final] = {}
        self._dropped: set[str] = set()
        self._bytes = 0
        self._wake = trio.Event()
        self._batch_done = trio.Event()
        #: Whether run() is running: a final queued with no writer would wait in vain.
        self._running = False
        #: False from a failed commit until the next successful one (for /readyz).
        self.healthy = True
        self._batches = 0
        self._events_committed = 0
        self._failures = 0
        self._runs_dropped = 0

    # -- the hot path -------------------------------------------------------------

    def append(self, record: EventRecord) -> bool:
        """Queue one event; never waits. False if its run was dropped (see the module doc)."""
        run_key = record.run_key
        if run_key in self._dropped:
            return False
        size = len(record.frame)
        if self._bytes + size > self._max_pending_bytes:
            self._drop(run_key)
            return False
        records = self._pending.get(run_key)
        if records is None:
            self._pending[run_key] = records = []
        records.append(record)
        self._bytes += size
        self._wake.set()
        return True

    def _drop(self, run_key: str) -> None:
        logger.error(
            "history writer: %d bytes pending, over its bound; dropping run %s",
            self._bytes,
            run_key,
        )
        self._dropped.add(run_key)
        self._runs_dropped += 1
        for record in self._pending.pop(run_key, ()):
            self._bytes -= len(record.frame)

    async def commit_final(self, end: RunEnd, final: EventRecord) -> bool:
        """Queue the run's final event with its end; return once committed.

        True if the run was ended by this call, False if it had already ended
        (nothing of it was written). ``StoreUnavailableError`` if that did not
        happen within ``final_timeout`` (the final stays queued), or at once for
        a dropped run.
        """
        run_key = end.run_key
        if final.run_key != run_key or final.seq != end.last_seq:
            raise ValueError("the final event must be the run's event number end.last_seq")
        if run_key in self._dropped:
            self._dropped.discard(run_key)
            raise StoreUnavailableError(
                "the run's history could not be kept (the store was unavailable too long)"
            )
        if run_key in self._finals:
            raise ValueError(f"run {run_key} already has a final event queued")
        if not self._running:
            raise StoreUnavailableError("the history writer is not running")
        self._finals[run_key] = pending = _Final(end=end)
        records = self._pending.get(run_key)
        if records is None:
            self._pending[run_key] = records = []
        records.append(final)
        self._bytes += len(final.frame)
        self._wake.set()
        with trio.move_on_after(self._final_timeout):
            await pending.done.wait()
        if pending.committed is None:
            raise StoreUnavailableError(
                f"the store did not commit the run's end within {self._final_timeout:g} s"
            )
        return pending.committed

    def unsaved_end(self, run_key: str) -> RunEnd | None:
        """The end of a run whose final event waits to be committed (None: none waits)."""
        final = self._finals.get(run_key)
        return final.end if final is not None else None

    def pending_events(self, run_key: str) -> list[EventRecord]:
        """The run's events not yet committed (in a batch being committed, or waiting), in order."""
        return [*self._in_flight.get(run_key, ()), *self._pending.get(run_key, ())]

    # -- the writer task ----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit batches until cancelled; then finals still waiting fail at once."""
        self._running = True
        try:
            task_status.started()
            await self._commit_batches()
        finally:
            self._running = False
            for final in self._finals.values():
                final.done.set()  # committed stays None: commit_final raises

    async def _commit_batches(self) -> None:
        delay = 0.0
        while True:
            if not self._pending:
                await self._wake.wait()
            self._wake = trio.Event()
            events, ends = self._take()
            try:
                results = await self._store.write_batch(events, ends)
            except Exception as error:
                if not isinstance(error, StoreUnavailableError):
                    logger.exception("history writer: unexpected failure")
                self.healthy = False
                self._failures += 1
                self._put_back()
                delay = min(max(delay * 2, self._retry_min), self._retry_max)
                await trio.sleep(delay)
                continue
            delay = 0.0
            self.healthy = True
            self._committed(events, ends, results)

    def _take(self) -> tuple[list[EventRecord], list[RunEnd]]:
        events: list[EventRecord] = []
        ends: list[RunEnd] = []
        for run_key in list(self._pending):
            if len(events) >= self._max_batch_events:
                break
            records = self._pending.pop(run_key)
            self._in_flight[run_key] = records
            events.extend(records)
            final = self._finals.get(run_key)
            if final is not None and not final.in_flight and records[-1].seq == final.end.last_seq:
                final.in_flight = True
                ends.append(final.end)
        return events, ends

    def _put_back(self) -> None:
        for run_key, records in self._in_flight.items():
            if run_key in self._dropped:
                for record in records:
                    self._bytes -= len(record.frame)
                continue
            self._pending[run_key] = [*records, *self._pending.get(run_key, ())]
            final = self._finals.get(run_key)
            if final is not None:
                final.in_flight = False
        self._in_flight.clear()

    def _committed(
        self, events: Sequence[EventRecord], ends: Sequence[RunEnd], results: Sequence[bool]
    ) -> None:
        for record in events:
            self._bytes -= len(record.frame)
        self._in_flight.clear()
        for end, ok in zip(ends, results, strict=True):
            final = self._finals.pop(end.run_key)
            final.committed = ok
            final.done.set()
        self._batches += 1
        self._events_committed += len(events)
        self._batch_done.set()
        self._batch_done = trio.Event()

    async def wait_flushed(self) -> None:
        """Return once nothing is pending or being committed (callers bound the wait)."""
        while self._pending or self._in_flight:
            await self._batch_done.wait()

    def statistics(self) -> WriterStatistics:
        pending = sum(len(r) for r in self._pending.values())
        pending += sum(len(r) for r in self._in_flight.values())
        return WriterStatistics(
            healthy=self.healthy,
            pending_events=pending,
            pending_bytes=self._bytes,
            pending_finals=len(self._finals),
            batches=self._batches,
            events_committed=self._events_committed,
            failures=self._failures,
            runs_dropped=self._runs_dropped,
        )
