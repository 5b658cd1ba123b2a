"""Connections: one per client, each with its own nursery, handlers, outbound queue and runs."""

from ._connection import Connection as Connection
from ._connection import ConnectionServices as ConnectionServices
from ._connection import ConnectionStatistics as ConnectionStatistics
from ._handlers import HandlerContext as HandlerContext
from ._handlers import MessageHandler as MessageHandler
from ._heartbeat import HeartbeatSchedule as HeartbeatSchedule
from ._outbound import OutboundQueue as OutboundQueue
from ._router import HandlerRouter as HandlerRouter
from ._router import default_router as default_router
from ._sessions import SessionRegistry as SessionRegistry

__all__ = [
    "Connection",
    "ConnectionServices",
    "ConnectionStatistics",
    "HandlerContext",
    "HandlerRouter",
    "HeartbeatSchedule",
    "MessageHandler",
    "OutboundQueue",
    "SessionRegistry",
    "default_router",
]
