"""The server's branch of the exception tree (the root lives in ``agents``).

::

    ChatServerError
    ├── ProtocolError             answered with an error_message frame
    │   ├── FormatError           FORMAT_ERROR
    │   ├── UnknownTypeError      UNKNOWN_TYPE
    │   ├── AgentNotFoundError    AGENT_NOT_FOUND
    │   ├── RunNotFoundError      RUN_NOT_FOUND
    │   ├── RateLimitedError      RATE_LIMITED (details.retry_after)
    │   ├── TooManyRunsError      TOO_MANY_RUNS
    │   ├── ShuttingDownError     SHUTTING_DOWN
    │   ├── InternalError         INTERNAL_ERROR (a handler raised)
    │   ├── ThreadNotFoundError   THREAD_NOT_FOUND (missing, or another user's)
    │   ├── ThreadBusyError       THREAD_BUSY (the thread has a run in progress)
    │   └── StoreUnavailableError STORE_UNAVAILABLE (the history store failed)
    ├── HandshakeRejected         HTTP status before upgrade (400, 404, ...)
    └── CloseConnection           close this one connection with a close code
"""

from __future__ import annotations

from typing import Any, ClassVar

from agents import ChatServerError


class ProtocolError(ChatServerError):
    """A client frame the server answers with ``error_message``; the connection stays."""

    error_code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.message_id = message_id


class FormatError(ProtocolError):
    error_code = "FORMAT_ERROR"


class UnknownTypeError(ProtocolError):
    error_code = "UNKNOWN_TYPE"


class AgentNotFoundError(ProtocolError):
    error_code = "AGENT_NOT_FOUND"


class RunNotFoundError(ProtocolError):
    error_code = "RUN_NOT_FOUND"


class RateLimitedError(ProtocolError):
    error_code = "RATE_LIMITED"


class TooManyRunsError(ProtocolError):
    error_code = "TOO_MANY_RUNS"


class ShuttingDownError(ProtocolError):
    error_code = "SHUTTING_DOWN"


class InternalError(ProtocolError):
    error_code = "INTERNAL_ERROR"


class ThreadNotFoundError(ProtocolError):
    """The thread does not exist or belongs to another user (the two look the same)."""

    error_code = "THREAD_NOT_FOUND"


class ThreadBusyError(ProtocolError):
    """The thread has a run in progress (a new run, or deleting the thread)."""

    error_code = "THREAD_BUSY"


class StoreUnavailableError(ProtocolError):
    """The history store failed or timed out; nothing of the request was written."""

    error_code = "STORE_UNAVAILABLE"


#: Every error code the server can send, for metrics pre-set to 0.
ERROR_CODES: tuple[str, ...] = (
    "FORMAT_ERROR",
    "UNKNOWN_TYPE",
    "AGENT_NOT_FOUND",
    "RUN_NOT_FOUND",
    "RATE_LIMITED",
    "TOO_MANY_RUNS",
    "SHUTTING_DOWN",
    "INTERNAL_ERROR",
    "THREAD_NOT_FOUND",
    "THREAD_BUSY",
    "STORE_UNAVAILABLE",
)


class HandshakeRejected(ChatServerError):
    """Refuse the WebSocket upgrade with an HTTP status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class CloseConnection(ChatServerError):
    """Close this connection with a WebSocket close code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
