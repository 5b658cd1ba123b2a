"""trio-agent-server: a WebSocket chat server that runs agents per request.

Start one with ``python -m server`` or, from trio code,
``server = await nursery.start(serve_chat, Settings(port=0))``.

The package is layered; each layer imports only those below it::

    server._server, server._cli, server._admin       assembly and I/O at the edges
    server.session                                   connections: reader, writer, handlers
    server.runs                                      run tables, run emitters, event sinks
    agents.builtin                                   the built-in agent line-up
    agents                                           the agent framework
    server.transport                                 WebSocket transports (wsproto, memory)
    server.protocol                                  the protocol as pure code, the exceptions

Importing ``server`` loads only the exceptions; the names below that need the
rest of the server load it when first used, so ``server.protocol`` and the
terminal client (``server.client``) stay light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .protocol import AgentNotFoundError as AgentNotFoundError
from .protocol import ChatServerError as ChatServerError
from .protocol import CloseConnection as CloseConnection
from .protocol import ConfigurationError as ConfigurationError
from .protocol import ConnectionClosed as ConnectionClosed
from .protocol import FormatError as FormatError
from .protocol import HandshakeRejected as HandshakeRejected
from .protocol import InternalError as InternalError
from .protocol import ProtocolError as ProtocolError
from .protocol import RateLimitedError as RateLimitedError
from .protocol import RunNotFoundError as RunNotFoundError
from .protocol import ShuttingDownError as ShuttingDownError
from .protocol import StoreUnavailableError as StoreUnavailableError
from .protocol import ThreadBusyError as ThreadBusyError
from .protocol import ThreadNotFoundError as ThreadNotFoundError
from .protocol import TooManyRunsError as TooManyRunsError
from .protocol import TooManySubscriptionsError as TooManySubscriptionsError
from .protocol import UnknownTypeError as UnknownTypeError

if TYPE_CHECKING:
    from ._metrics import Metrics as Metrics
    from ._metrics import MetricsSnapshot as MetricsSnapshot
    from ._server import ChatServer as ChatServer
    from ._server import serve_chat as serve_chat
    from ._settings import Settings as Settings
    from .session import HandlerContext as HandlerContext
    from .session import HandlerRouter as HandlerRouter
    from .session import MessageHandler as MessageHandler
    from .session import default_router as default_router

#: Names loaded on first use, and the module each comes from.
_LAZY = {
    "ChatServer": "._server",
    "serve_chat": "._server",
    "Settings": "._settings",
    "Metrics": "._metrics",
    "MetricsSnapshot": "._metrics",
    "HandlerContext": ".session",
    "HandlerRouter": ".session",
    "MessageHandler": ".session",
    "default_router": ".session",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'server' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AgentNotFoundError",
    "ChatServer",
    "ChatServerError",
    "CloseConnection",
    "ConfigurationError",
    "ConnectionClosed",
    "FormatError",
    "HandlerContext",
    "HandlerRouter",
    "HandshakeRejected",
    "InternalError",
    "MessageHandler",
    "Metrics",
    "MetricsSnapshot",
    "ProtocolError",
    "RateLimitedError",
    "RunNotFoundError",
    "Settings",
    "ShuttingDownError",
    "StoreUnavailableError",
    "ThreadBusyError",
    "ThreadNotFoundError",
    "TooManyRunsError",
    "TooManySubscriptionsError",
    "UnknownTypeError",
    "default_router",
    "serve_chat",
]
