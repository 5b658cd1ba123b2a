"""Blocking database calls in worker threads that a trio cancellation can stop.

``trio.to_thread.run_sync`` either ignores cancellation (the task waits for the
thread however long it takes) or abandons the thread (which then goes on
using its connection behind our back). Neither is right for a database call:
on cancellation (a caller's cancel scope, or the store's own time limit) we
want the statement stopped, the transaction rolled back, and the connection
clean before it is used again. :func:`run_interruptible` does that:

1. the call runs in a worker thread, abandonable;
2. on cancellation the :class:`CallGuard` is tripped: the statement running
   is interrupted (``sqlite3.Connection.interrupt``, psycopg's
   ``cancel_safe``) and the worker refuses to run any further statement,
   including ``COMMIT``;
3. the task waits, shielded but bounded by ``grace``, for the worker to
   return, then re-raises ``Cancelled``, unless the call completed anyway
   (the interruption came too late, during its ``COMMIT``): then it returns
   the result, so a caller is never told that a committed write failed;
4. if the worker is still not back after ``grace`` (a hung network), the
   caller is told (``on_abandon``) so it never hands that connection to
   another call, and the worker cleans up after itself when it returns
   (``on_late_return``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")

logger = logging.getLogger(__name__)


class Interrupted(Exception):
    """Raised in a worker thread whose call was cancelled; never seen by callers."""


class CallGuard:
    """What a worker thread and the task waiting for it share."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._cancel_target: Callable[[], None] | None = None

    def attach(self, cancel: Callable[[], None] | None) -> None:
        """Worker: ``cancel`` now stops the statement this call runs (None: nothing to stop)."""
        with self._lock:
            self._cancel_target = cancel
            if self._cancelled:
                raise Interrupted

    def check(self) -> None:
        """Worker: raise :class:`Interrupted` if the call was cancelled (before each statement)."""
        if self._cancelled:
            raise Interrupted

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def trip(self) -> None:
        """Trio side (from a thread): no further statement; interrupt the one running."""
        # Under the lock: the worker detaches (attach(None)) before its
        # connection goes back to a pool, so this never reaches another call.
        with self._lock:
            self._cancelled = True
            if self._cancel_target is not None:
                try:
                    self._cancel_target()
                except Exception:  # a failed cancel request: the wait below is bounded
                    logger.warning("could not interrupt a store call", exc_info=True)


class _State:
    __slots__ = ("abandoned", "finished", "lock", "skipped", "started", "value")

    def __init__(self) -> None:
        self.value: tuple[Any] | None = None
        self.lock = threading.Lock()
        self.started = False
        self.skipped = False
        self.finished = False
        self.abandoned = False


async def run_interruptible(
    fn: Callable[[CallGuard], T],
    *,
    grace: float,
    limiter: trio.CapacityLimiter | None = None,
    on_abandon: Callable[[], None] | None = None,
    on_late_return: Callable[[], None] | None = None,
) -> T:
    """``fn(guard)`` in a worker thread; cancellation interrupts it (see the module doc).

    ``fn`` must call ``guard.attach`` with whatever interrupts its current
    statement, and ``guard.check()`` before every statement it runs.
    """
    state = _State()
    guard = CallGuard()
    token = trio.lowlevel.current_trio_token()
    returned = trio.Event()

    def worker() -> T:
        with state.lock:
            if state.skipped:
                raise Interrupted
            state.started = True
        try:
            value = fn(guard)
            state.value = (value,)
            return value
        finally:
            with state.lock:
                state.finished = True
                late = state.abandoned
            if late and on_late_return is not None:
                on_late_return()
            # The run may have ended meanwhile (an abandoned call returning late).
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(returned.set)

    try:
        return await trio.to_thread.run_sync(worker, abandon_on_cancel=True, limiter=limiter)
    except trio.Cancelled:
        with state.lock:
            state.skipped = not state.started
            started = state.started
        if started:
            with trio.move_on_after(grace) as cleanup:
                cleanup.shield = True
                await trio.to_thread.run_sync(guard.trip, abandon_on_cancel=True)
                await returned.wait()
            with state.lock:
                abandon = not state.finished
                state.abandoned = abandon
            if abandon and on_abandon is not None:
                on_abandon()
            if state.value is not None:
                # The call completed (say, its COMMIT went through before the
                # interruption): its caller gets the truth, not a failure. The
                # cancellation is still pending and fires at the next checkpoint.
                result: T = state.value[0]
                return result
        raise
