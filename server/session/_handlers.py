"""Message handlers: one instance of each class per connection, made from a router of classes.

The router is process-wide and immutable (it holds classes only); the
instances it creates belong to one connection and die with it. A handler
sees its connection only through a narrow :class:`HandlerContext`: who the
user is, how to reply, and the connection's runs.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, ClassVar

import attrs

from server.protocol import (
    MESSAGE_TYPES,
    ClientMessage,
    ConfigurationError,
    Heartbeat,
    Ping,
    StartRun,
    StopRun,
    encode_heartbeat_ack,
    encode_pong,
)

if TYPE_CHECKING:
    from ..runs import RunTable


@attrs.frozen
class HandlerContext:
    """What a connection's handlers may use: who the user is, replies, and its runs."""

    user_id: str
    connection_id: str
    #: The connection's run table (start, stop).
    runs: RunTable = attrs.field(repr=False)
    #: Queue a reply (UTF-8 JSON) for this connection's client.
    send: Callable[[bytes], Awaitable[None]] = attrs.field(repr=False)


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
        self.context.runs.start(message)


class StopRunHandler(MessageHandler):
    __slots__ = ()
    message_types = ("stop_agent",)

    async def handle(self, message: ClientMessage) -> None:
        assert isinstance(message, StopRun)
        self.context.runs.stop(message.run_id, message_id=message.message_id)


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


@attrs.frozen
class HandlerRouter:
    """Which handler class serves each message type. Immutable; holds classes only."""

    classes: tuple[type[MessageHandler], ...]
    _by_type: Mapping[str, type[MessageHandler]] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        by_type: dict[str, type[MessageHandler]] = {}
        for cls in self.classes:
            for kind in cls.message_types:
                if kind not in MESSAGE_TYPES:
                    raise ConfigurationError(f"{cls.__qualname__} handles unknown type {kind!r}")
                if kind in by_type:
                    raise ConfigurationError(f"two handler classes for message type {kind!r}")
                by_type[kind] = cls
        missing = [kind for kind in MESSAGE_TYPES if kind not in by_type]
        if missing:
            raise ConfigurationError(f"no handler class for message types {missing}")
        object.__setattr__(self, "_by_type", by_type)

    def replace(self, *classes: type[MessageHandler]) -> HandlerRouter:
        """A router where ``classes`` take over the message types they declare."""
        taken = {kind for cls in classes for kind in cls.message_types}
        kept = [c for c in self.classes if not taken.intersection(c.message_types)]
        return HandlerRouter((*kept, *classes))

    def create(self, context: HandlerContext) -> dict[str, MessageHandler]:
        """One fresh instance of every class, keyed by each message type it serves."""
        instances = {cls: cls(context) for cls in self.classes}
        return {kind: instances[cls] for kind, cls in self._by_type.items()}

    def __len__(self) -> int:
        return len(self.classes)


def default_router() -> HandlerRouter:
    return HandlerRouter((StartRunHandler, StopRunHandler, PingHandler, HeartbeatHandler))
