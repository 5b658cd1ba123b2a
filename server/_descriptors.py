"""File descriptors: the process limit, and how many client sockets fit under it.

Every client socket is a descriptor. When the process runs out (EMFILE),
accept fails on every listener, the admin listener included, so a liveness
probe cannot get in either. Three things keep that from happening:

- at start-up ``python -m server`` raises the soft ``RLIMIT_NOFILE`` to the
  hard one (:func:`raise_open_file_limit`);
- it lowers ``--max-connections`` to what fits under that limit after a
  reserve for everything else: the admin listener's connections, the
  listening sockets, the log pipe, files (:func:`plan_max_connections`);
- the server never holds more than :func:`socket_limit` client sockets
  (connections plus a margin for handshakes being answered 503): past it, the
  accept loops wait (:class:`SocketSlots`) and new clients wait in the
  kernel's listen backlog.
"""

from __future__ import annotations

import os
import resource
from typing import Final

import trio

#: Descriptors kept for everything but client sockets: the admin listener's
#: connections (at most ADMIN_MAX_CONNECTIONS, 64) and some 32 more for the
#: listening sockets, the event loop's own, the log pipe, files read at run time.
RESERVED_DESCRIPTORS: Final = 96
#: Highest soft limit asked for when the hard limit is unlimited or huge.
_SOFT_LIMIT_CEILING: Final = 1 << 20


def socket_limit(max_connections: int) -> int:
    """Client sockets a server with ``max_connections`` holds at most.

    The margin lets handshakes past the connection limit be answered (HTTP
    503) rather than left waiting in the backlog.
    """
    return max_connections + max(8, max_connections // 8)


def plan_max_connections(requested: int, available: int) -> int:
    """The largest ``--max-connections`` up to ``requested`` whose sockets fit in ``available``.

    At least 1, so that a server with almost no descriptors still starts
    (and says so in its log).
    """
    if socket_limit(requested) <= available:
        return requested
    low, high = 1, requested  # socket_limit grows with its argument: bisect
    while low < high:
        middle = (low + high + 1) // 2
        if socket_limit(middle) <= available:
            low = middle
        else:
            high = middle - 1
    return low


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _SOFT_LIMIT_CEILING if hard == resource.RLIM_INFINITY else hard
    target = min(target, _SOFT_LIMIT_CEILING)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft  # (macOS caps it below the hard limit) keep what we have
        return target
    return _SOFT_LIMIT_CEILING if soft == resource.RLIM_INFINITY else soft


def open_descriptor_count() -> int:
    """Descriptors this process has open now (0 where that cannot be listed)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return max(0, len(os.listdir(folder)) - 1)  # minus the one listdir opened
        except OSError:
            continue
    return 0


class SocketSlots:
    """How many client sockets may be open at once; the accept loops wait for a free slot.

    A slot is taken when a socket is accepted (before any task serves it)
    and given back when the socket is closed.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._freed: trio.Event | None = None

    def room(self) -> int:
        return max(0, self.limit - self.in_use)

    def take(self) -> None:
        self.in_use += 1

    def release(self) -> None:
        self.in_use -= 1
        if self._freed is not None:
            self._freed.set()
            self._freed = None

    async def wait_room(self) -> None:
        """Return once a socket may be accepted."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while self.in_use >= self.limit:
            await self._wait_release()

    async def wait_empty(self) -> None:
        """Return once no client socket is open."""
        while self.in_use:
            await self._wait_release()

    async def _wait_release(self) -> None:
        if self._freed is None:
            self._freed = trio.Event()  # shared by every waiter
        await self._freed.wait()
