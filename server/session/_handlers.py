"""Message handlers: one instance of each class per connection, made from a router of classes.

The router is process-wide and immutable (it holds classes only); the
instances it creates belong to one connection and die with it. A handler
sees its connection only through a narrow :class:`HandlerContext`: who the
user is, how to reply, the connection's runs and what it follows, and the
server's history store and live runs.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ClassVar

import attrs

from server.protocol import (
    ClientMessage,
    Heartbeat,
    Ping,
    StartRun,
    StopRun,
    encode_heartbeat_ack,
    encode_pong,
)

if TYPE_CHECKING:
    from .._cluster import Cluster
    from ..runs import Follows, History, RunDirectory, RunTable


@attrs.frozen
class HandlerContext:
    """What a connection's handlers may use: who the user is, replies, and its runs."""

    user_id: str
    connection_id: str
    #: The connection's run table (start, stop).
    runs: RunTable = attrs.field(repr=False)
    #: Queue a reply (UTF-8 JSON) for this connection's client (may wait for room).
    send: Callable[[bytes], Awaitable[None]] = attrs.field(repr=False)
    #: Queue a run event (UTF-8 JSON) for this connection's client (may wait for room).
    send_event: Callable[[bytes], Awaitable[None]] = attrs.field(repr=False)
    #: The runs and threads this connection follows.
    follows: Follows = attrs.field(repr=False)
    #: The server's live runs (of every user: always look up with this user's id).
    directory: RunDirectory = attrs.field(repr=False)
    #: The server's history store.
    history: History = attrs.field(repr=False)
    #: This process among others (None: one process, no broker).
    cluster: Cluster | None = attrs.field(default=None, repr=False)


class MessageHandler(abc.ABC):
    """Handles the client messages of ``message_types`` for one connection.

    Raise a :class:`~server.ProtocolError` to answer with that error; any
    other exception is answered with ``INTERNAL_ERROR`` and the connection
    goes on.
    """

    message_types: ClassVar[tuple[str, ...]]
    # Every connection has one of each: slots keep an idle connection small.
    # (Subclasses may leave __slots__ out; they then simply get a __dict__.)
    __slots__ = ("__weakref__", "context")

    def __init__(self, context: HandlerContext) -> None:
        self.context = context

    @abc.abstractmethod
    async def handle(self, message: ClientMessage) -> None: ...


class StartRunHandler(MessageHandler):
    __slots__ = ()
    message_types = ("user_message", "chat", "start_agent")

    async def handle(self, message: ClientMessage) -> None:
        assert isinstance(message, StartRun)
        await self.context.runs.start(message)


class StopRunHandler(MessageHandler):
    __slots__ = ()
    message_types = ("stop_agent",)

    async def handle(self, message: ClientMessage) -> None:
        assert isinstance(message, StopRun)
        await self.context.runs.stop(message.run_id, message_id=message.message_id)


class PingHandler(MessageHandler):
    __slots__ = ()
    message_types = ("ping",)

    async def handle(self, message: ClientMessage) -> None:
        assert isinstance(message, Ping)
        context = self.context
        await context.send(encode_pong(user_id=context.user_id, message_id=message.message_id))


class HeartbeatHandler(MessageHandler):
    __slots__ = ()
    message_types = ("heartbeat",)

    async def handle(self, message: ClientMessage) -> None:
        assert isinstance(message, Heartbeat)
        await self.context.send(encode_heartbeat_ack(message_id=message.message_id))
