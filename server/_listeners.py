"""Listening sockets: several per address with SO_REUSEPORT, so accepting keeps up.

trio accepts one connection per scheduler pass on a listener. On a busy server
(thousands of runnable tasks) that caps accepts at a few hundred a second, the
backlog overflows and clients wait out SYN retransmits. With ``count``
listeners sharing the port (the kernel spreads new connections over them), each
pass accepts up to ``count``. Where SO_REUSEPORT does not exist this is one
listener per address, as ``trio.open_tcp_listeners`` makes.
"""

from __future__ import annotations

import socket as stdlib_socket

import trio

#: Accept loops per address (each its own listening socket).
DEFAULT_ACCEPTORS = 8
BACKLOG = 4096


async def open_listeners(
    host: str, port: int, *, count: int = DEFAULT_ACCEPTORS
) -> list[trio.SocketListener]:
    """Listen on ``host:port`` (0: a free port, the same for all of one address's sockets)."""
    if count <= 1 or not hasattr(trio.socket, "SO_REUSEPORT"):
        return await trio.open_tcp_listeners(port, host=host, backlog=BACKLOG)
    infos = await trio.socket.getaddrinfo(
        host, port, type=stdlib_socket.SOCK_STREAM, flags=stdlib_socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    try:
        for family, type_, proto, _, sockaddr in infos:
            bound_port = None
            for _ in range(count):
                sock = trio.socket.socket(family, type_, proto)
                try:
                    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
                    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
                    if family == trio.socket.AF_INET6:
                        sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
                    address = (
                        sockaddr if bound_port is None else (sockaddr[0], bound_port, *sockaddr[2:])
                    )
                    await sock.bind(address)
                    bound_port = sock.getsockname()[1]
                    sock.listen(BACKLOG)
                except BaseException:
                    sock.close()
                    raise
                listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners
