"""trio-agent-server: a WebSocket chat server that runs agents per request.

Start one with ``python -m server`` or, from trio code,
``server = await nursery.start(serve_chat, Settings(port=0))``.
"""

from agents import ChatServerError as ChatServerError
from agents import ConfigurationError as ConfigurationError

from ._connection import Connection as Connection
from ._errors import AgentNotFoundError as AgentNotFoundError
from ._errors import CloseConnection as CloseConnection
from ._errors import FormatError as FormatError
from ._errors import HandshakeRejected as HandshakeRejected
from ._errors import InternalError as InternalError
from ._errors import ProtocolError as ProtocolError
from ._errors import RunNotFoundError as RunNotFoundError
from ._errors import ShuttingDownError as ShuttingDownError
from ._errors import TooManyRunsError as TooManyRunsError
from ._errors import UnknownTypeError as UnknownTypeError
from ._handlers import HandlerRouter as HandlerRouter
from ._handlers import MessageHandler as MessageHandler
from ._handlers import default_router as default_router
from ._metrics import Metrics as Metrics
from ._metrics import MetricsSnapshot as MetricsSnapshot
from ._server import ChatServer as ChatServer
from ._server import serve_chat as serve_chat
from ._settings import Settings as Settings

__all__ = [
    "AgentNotFoundError",
    "ChatServer",
    "ChatServerError",
    "CloseConnection",
    "ConfigurationError",
    "Connection",
    "FormatError",
    "HandlerRouter",
    "HandshakeRejected",
    "InternalError",
    "MessageHandler",
    "Metrics",
    "MetricsSnapshot",
    "ProtocolError",
    "RunNotFoundError",
    "Settings",
    "ShuttingDownError",
    "TooManyRunsError",
    "UnknownTypeError",
    "default_router",
    "serve_chat",
]
