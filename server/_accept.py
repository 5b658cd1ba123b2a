"""Accept loops: one per listening socket, with out-of-descriptors errors paused and counted.

``trio.serve_listeners`` does the same, but logs every failed accept with a
traceback: a server out of descriptors (EMFILE) wrote 1,303 such tracebacks
(870 KB) in 15 s. Here each loop pauses as trio's does, and the failures are
summed into one log line per :data:`ACCEPT_ERROR_LOG_INTERVAL` by
:class:`EveryInterval`.
"""

from __future__ import annotations

import errno
import logging
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Final, NoReturn

import attrs
import trio

log = logging.getLogger("trio_agent_server.accept")

#: Errors that mean "out of some resource, try again later", as in trio.serve_listeners.
RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: How long an accept loop pauses after such an error (trio's figure).
ACCEPT_PAUSE: Final = 0.1
#: At most one log line about failed accepts per this many seconds (per server).
ACCEPT_ERROR_LOG_INTERVAL: Final = 10.0


@attrs.define
class EveryInterval:
    """Counts events; says when to report them: the first at once, then at most once an interval."""

    interval: float
    _pending: int = 0
    _last_report: float = -math.inf

    def record(self, now: float) -> int | None:
        """Count one event at ``now``; the number to report now (this one included), or None."""
        self._pending += 1
        if now - self._last_report < self.interval:
            return None
        count, self._pending, self._last_report = self._pending, 0, now
        return count


async def serve_accepts(
    listener: trio.abc.Listener[trio.SocketStream],
    on_accept: Callable[[trio.SocketStream], None],
    errors: EveryInterval,
    *,
    what: str = "connections",
) -> NoReturn:
    """Accept forever; hand each stream to ``on_accept`` (which must not block).

    Out of descriptors or memory: pause :data:`ACCEPT_PAUSE` seconds and try
    again, logging through ``errors`` (one line per interval with a count).
    The listener is closed when this ends (as trio.serve_listeners does), so
    a stopped server refuses new connections instead of leaving them queued.
    """
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in RESOURCE_ERRNOS:
                    raise
                count = errors.record(trio.current_time())
                if count is not None:
                    log.error(
                        "accepting %s failed %d time(s) in the last %g s, last: %s; "
                        "pausing %g s after each",
                        what,
                        count,
                        errors.interval,
                        exc.strerror or exc,
                        ACCEPT_PAUSE,
                    )
                await trio.sleep(ACCEPT_PAUSE)
                continue
            on_accept(stream)


async def serve_listeners(
    listeners: Sequence[trio.abc.Listener[trio.SocketStream]],
    on_accept: Callable[[trio.SocketStream], None],
    *,
    what: str = "connections",
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """One :func:`serve_accepts` loop per listener (sharing one error log); until cancelled."""
    errors = EveryInterval(ACCEPT_ERROR_LOG_INTERVAL)
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(partial(serve_accepts, listener, on_accept, errors, what=what))
        task_status.started()
    raise AssertionError("accept loops never return")  # pragma: no cover
