"""Listening sockets that keep up with a busy server, and are not shared by accident.

trio accepts one connection per scheduler pass on a listener. On a busy server
(thousands of runnable tasks, a pass taking tens of milliseconds) that capped
accepts at a few hundred a second; the backlog overflowed and clients waited
out SYN retransmits. Two things help, both here:

- several listening sockets share the port (SO_REUSEPORT; the kernel spreads
  new connections over them), each with its own accept loop;
- each :class:`BurstListener` accepts every connection already waiting (up to
  ``burst``, and up to the free :class:`SocketSlots`) when its socket turns
  readable, and hands them out one per ``accept()`` without a schedule point
  in between.

SO_REUSEPORT lets *any* process of the same user join the port, so a second
``python -m server --port P`` used to start without error and take a share of
the connections. :func:`open_listeners` therefore first binds (and closes) a
probe socket without SO_REUSEPORT: that bind fails if anything listens on the
address already, a reuseport group included, and that is a start-up error
(:class:`ConfigurationError`, exit 2). The race left open: two servers started
within the same few microseconds could both pass their probes before either
listens, and share the port. Worker processes of one server that are meant to
share a port (``--workers N``) pass ``exclusive=False``: their parent has
probed, and holds the port with :func:`reserve_port` for as long as it runs.

Where SO_REUSEPORT does not exist this is one listening socket per address.
"""

from __future__ import annotations

import errno
import socket as stdlib_socket
from collections import deque

import trio

from agents import ConfigurationError

from ._descriptors import SocketSlots

#: Accept loops per address (each its own listening socket).
DEFAULT_ACCEPTORS = 8
BACKLOG = 4096
#: Connections one listener takes from the kernel at a time.
BURST = 64
# As trio.SocketListener: the peer gave up before we accepted; try the next one.
_IGNORED_ACCEPT_ERRNOS = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}


class BurstListener(trio.abc.Listener[trio.SocketStream]):
    """A listening socket whose accept loop takes every waiting connection at once.

    With ``slots``, a connection is taken from the kernel only when a slot is
    free, and takes it (the server gives it back when it closes the socket).
    """

    def __init__(
        self, sock: stdlib_socket.socket, *, burst: int = BURST, slots: SocketSlots | None = None
    ) -> None:
        self._listening = sock
        #: The trio socket (for getsockname(), as on trio.SocketListener).
        self.socket = trio.socket.from_stdlib_socket(sock)  # makes it non-blocking
        self._burst = burst
        self._slots = slots
        self._ready: deque[stdlib_socket.socket] = deque()

    async def accept(self) -> trio.SocketStream:
        """The next connection; a schedule point only when none is waiting."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._ready:
            if self._slots is not None:
                await self._slots.wait_room()
            await trio.lowlevel.wait_readable(self._listening)
            self._take_waiting()
        return trio.SocketStream(trio.socket.from_stdlib_socket(self._ready.popleft()))

    def _take_waiting(self) -> None:
        slots = self._slots
        for _ in range(self._burst if slots is None else min(self._burst, slots.room())):
            try:
                conn, _ = self._listening.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _IGNORED_ACCEPT_ERRNOS:
                    continue
                if self._ready:
                    return  # hand out what we have; the error comes back next time
                raise  # EMFILE and the like: the accept loop pauses (server/_accept.py)
            if slots is not None:
                slots.take()
            self._ready.append(conn)

    async def aclose(self) -> None:
        while self._ready:
            self._ready.popleft().close()
            if self._slots is not None:
                self._slots.release()
        self.socket.close()
        await trio.lowlevel.checkpoint()


async def open_listeners(
    host: str,
    port: int,
    *,
    count: int = DEFAULT_ACCEPTORS,
    exclusive: bool = True,
    slots: SocketSlots | None = None,
) -> list[BurstListener]:
    """Listen on ``host:port`` (0: a free port, the same for all of one address's sockets).

    ``exclusive``: raise :class:`ConfigurationError` if something already
    listens on the address, even a group of SO_REUSEPORT sockets that would
    let us join it. ``slots`` bounds the sockets accepted and not yet closed.
    """
    reuseport = count > 1 and hasattr(stdlib_socket, "SO_REUSEPORT")
    infos = await trio.socket.getaddrinfo(
        host, port, type=stdlib_socket.SOCK_STREAM, flags=stdlib_socket.AI_PASSIVE
    )
    listeners: list[BurstListener] = []
    try:
        for family, type_, proto, _, sockaddr in infos:
            address = sockaddr
            if exclusive and port != 0:  # port 0 is a fresh port: nobody listens there
                with _socket(family, type_, proto, reuseport=False) as probe:
                    _bind(probe, address, port)
            for _ in range(count if reuseport else 1):
                sock = _socket(family, type_, proto, reuseport=reuseport)
                try:
                    _bind(sock, address, port)
                    address = (sockaddr[0], sock.getsockname()[1], *sockaddr[2:])
                    sock.listen(BACKLOG)
                except BaseException:
                    sock.close()
                    raise
                listeners.append(BurstListener(sock, slots=slots))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


def _socket(family: int, type_: int, proto: int, *, reuseport: bool) -> stdlib_socket.socket:
    sock = stdlib_socket.socket(family, type_, proto)
    try:
        # Not for sharing: lets a restarted server bind despite TIME_WAIT connections.
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT, 1)
        if family == stdlib_socket.AF_INET6:
            sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind(sock: stdlib_socket.socket, address: tuple[object, ...], port: int) -> None:
    """Bind to a numeric address from getaddrinfo (no lookup); a clear error if it is taken."""
    try:
        sock.bind(address)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise ConfigurationError(
            f"port {port} on {address[0]} is already in use (another server running?): "
            "stop it or choose another --port"
        ) from None


class PortReservation:
    """Sockets bound to a port and never listening: the port belongs to our workers.

    Each has SO_REUSEPORT and *not* SO_REUSEADDR. It takes no connections, but
    while it is bound a socket without SO_REUSEPORT cannot bind the address
    (Linux lets two SO_REUSEADDR sockets share an address when neither
    listens, hence none here). So the probe of another server fails even at a
    moment when none of our workers is listening (all of them being
    replaced), while the workers' SO_REUSEPORT sockets, of the same user, bind
    beside it.
    """

    def __init__(self, sockets: list[stdlib_socket.socket]) -> None:
        self._sockets = sockets

    @property
    def host(self) -> str:
        host: str = self._sockets[0].getsockname()[0]
        return host

    @property
    def port(self) -> int:
        port: int = self._sockets[0].getsockname()[1]
        return port

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


async def reserve_port(host: str, port: int) -> PortReservation:
    """Make sure nothing listens on ``host:port``, then hold it for worker processes.

    Raises :class:`ConfigurationError` if something listens there already (as
    :func:`open_listeners` with ``exclusive=True``) or if this system has no
    SO_REUSEPORT. Port 0 picks a free port, the same for every address of ``host``.
    """
    if not hasattr(stdlib_socket, "SO_REUSEPORT"):
        raise ConfigurationError("--workers needs SO_REUSEPORT, which this system lacks")
    infos = await trio.socket.getaddrinfo(
        host, port, type=stdlib_socket.SOCK_STREAM, flags=stdlib_socket.AI_PASSIVE
    )
    sockets: list[stdlib_socket.socket] = []
    try:
        for family, type_, proto, _, sockaddr in infos:
            address = (sockaddr[0], port, *sockaddr[2:])
            if port != 0:
                with _socket(family, type_, proto, reuseport=False) as probe:
                    _bind(probe, address, port)
            sock = stdlib_socket.socket(family, type_, proto)
            sockets.append(sock)
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT, 1)
            if family == stdlib_socket.AF_INET6:
                sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
            _bind(sock, address, port)
            port = sock.getsockname()[1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return PortReservation(sockets)
