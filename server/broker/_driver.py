"""A fix for the driver: connections that never connected close their buffers.

A coredis 6 connection makes six anyio memory streams when it is built and
closes them only once it has connected. A connection attempt that fails
(Redis down, the attempt timed out) leaves them to the garbage collector,
which warns (``ResourceWarning: Unclosed MemoryObjectSendStream``) for every
failed attempt: a stream of warnings for as long as Redis is unreachable.
The subclasses here close them whatever happens (closing is idempotent).
"""

from __future__ import annotations

from typing import Any

import trio
from coredis.connection import BaseConnection, TCPConnection, UnixDomainSocketConnection

_BUFFERS = (
    "_write_buffer_in",
    "_write_buffer_out",
    "_push_message_buffer_in",
    "_push_message_buffer_out",
    "_streamed_message_buffer_in",
    "_streamed_message_buffer_out",
)


def _close_buffers(connection: BaseConnection) -> None:
    for name in _BUFFERS:
        stream: Any = getattr(connection, name, None)
        if stream is not None:
            stream.close()


class ClosingTCPConnection(TCPConnection):
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await super().run(task_status=task_status)
        finally:
            _close_buffers(self)


class ClosingUnixConnection(UnixDomainSocketConnection):
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await super().run(task_status=task_status)
        finally:
            _close_buffers(self)


def closing_buffers(cls: type[BaseConnection]) -> type[BaseConnection]:
    """The closing variant of a driver connection class (``cls`` itself if none)."""
    if cls is TCPConnection:
        return ClosingTCPConnection
    if cls is UnixDomainSocketConnection:
        return ClosingUnixConnection
    return cls
