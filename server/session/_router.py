"""The router: which handler class serves each message type (immutable; classes only)."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from server.protocol import MESSAGE_TYPES, ConfigurationError

from ._handlers import (
    HandlerContext,
    HeartbeatHandler,
    MessageHandler,
    PingHandler,
    StartRunHandler,
    StopRunHandler,
)
from ._threads import FollowHandler, ThreadsHandler


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
    """The built-in handlers: runs, pings, heartbeats, threads, and following runs."""
    return HandlerRouter(
        (
            StartRunHandler,
            StopRunHandler,
            PingHandler,
            HeartbeatHandler,
            ThreadsHandler,
            FollowHandler,
        )
    )
