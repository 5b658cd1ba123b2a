"""Listening sockets that keep up with a busy server.

trio accepts one connection per scheduler pass on a listener. On a busy server
(thousands of runnable tasks, a pass taking tens of milliseconds) that capped
accepts at a few hundred a second; the backlog overflowed and clients waited
out SYN retransmits. Two things help, both here:

- several listening sockets share the port (SO_REUSEPORT; the kernel spreads
  new connections over them), each with its own accept loop;
- each :class:`BurstListener` accepts every connection already waiting (up to
  ``burst``) when its socket turns readable, and hands them out one per
  ``accept()`` without a schedule point in between.

Where SO_REUSEPORT does not exist this is one trio listener per address, as
``trio.open_tcp_listeners`` makes.
"""

from __future__ import annotations

import errno
import socket as stdlib_socket
from collections import deque

import trio

#: Accept loops per address (each its own listening socket).
DEFAULT_ACCEPTORS = 8
BACKLOG = 4096
#: Connections one listener takes from the kernel at a time.
BURST = 64
# As trio.SocketListener: the peer gave up before we accepted; try the next one.
_IGNORED_ACCEPT_ERRNOS = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}


class BurstListener(trio.abc.Listener[trio.SocketStream]):
    """A listening socket whose accept loop takes every waiting connection at once."""

    def __init__(self, sock: stdlib_socket.socket, *, burst: int = BURST) -> None:
        self._listening = sock
        #: The trio socket (for getsockname(), as on trio.SocketListener).
        self.socket = trio.socket.from_stdlib_socket(sock)  # makes it non-blocking
        self._burst = burst
        self._ready: deque[stdlib_socket.socket] = deque()

    async def accept(self) -> trio.SocketStream:
        """The next connection; a schedule point only when none is waiting."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._ready:
            await trio.lowlevel.wait_readable(self._listening)
            self._take_waiting()
        return trio.SocketStream(trio.socket.from_stdlib_socket(self._ready.popleft()))

    def _take_waiting(self) -> None:
        for _ in range(self._burst):
            try:
                conn, _ = self._listening.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _IGNORED_ACCEPT_ERRNOS:
                    continue
                if self._ready:
                    return  # hand out what we have; the error comes back next time
                raise  # trio.serve_listeners pauses on EMFILE and the like
            self._ready.append(conn)

    async def aclose(self) -> None:
        while self._ready:
            self._ready.popleft().close()
        self.socket.close()
        await trio.lowlevel.checkpoint()


async def open_listeners(
    host: str, port: int, *, count: int = DEFAULT_ACCEPTORS
) -> list[trio.SocketListener | BurstListener]:
    """Listen on ``host:port`` (0: a free port, the same for all of one address's sockets)."""
    if count <= 1 or not hasattr(trio.socket, "SO_REUSEPORT"):
        return list(await trio.open_tcp_listeners(port, host=host, backlog=BACKLOG))
    infos = await trio.socket.getaddrinfo(
        host, port, type=stdlib_socket.SOCK_STREAM, flags=stdlib_socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener | BurstListener] = []
    try:
        for family, type_, proto, _, sockaddr in infos:
            bound_port = None
            for _ in range(count):
                sock = stdlib_socket.socket(family, type_, proto)
                try:
                    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
                    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT, 1)
                    if family == stdlib_socket.AF_INET6:
                        sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
                    address = (
                        sockaddr if bound_port is None else (sockaddr[0], bound_port, *sockaddr[2:])
                    )
                    sock.bind(address)  # a numeric address from getaddrinfo: no lookup
                    bound_port = sock.getsockname()[1]
                    sock.listen(BACKLOG)
                except BaseException:
                    sock.close()
                    raise
                listeners.append(BurstListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners
