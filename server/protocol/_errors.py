"""Every exception this project raises on purpose, in one tree.

::

    ChatServerError                  root: catch this to catch all of ours
    ├── ConfigurationError           settings or registrations that cannot work (start-up)
    ├── InjectedFault                raised by a ``--fault AGENT:raise:RATE`` draw
    ├── ToolParameterError           a tool call's parameters do not fit its schema
    ├── ProviderError                the language model could not answer
    ├── AgentError                   an agent step ended without a result
    │   ├── AgentFailed              status failed,  code AGENT_ERROR
    │   └── AgentTimeout             status timeout, code TIMEOUT
    ├── ProtocolError                answered with an ``error_message`` frame
    │   ├── FormatError              FORMAT_ERROR
    │   ├── UnknownTypeError         UNKNOWN_TYPE
    │   ├── AgentNotFoundError       AGENT_NOT_FOUND
    │   ├── RunNotFoundError         RUN_NOT_FOUND
    │   ├── RateLimitedError         RATE_LIMITED (``details.retry_after``)
    │   ├── TooManyRunsError         TOO_MANY_RUNS
    │   ├── ShuttingDownError        SHUTTING_DOWN
    │   ├── InternalError            INTERNAL_ERROR (a message handler raised)
    │   ├── ThreadNotFoundError      THREAD_NOT_FOUND
    │   ├── ThreadBusyError          THREAD_BUSY
    │   ├── TooManySubscriptionsError TOO_MANY_SUBSCRIPTIONS
    │   ├── StoreUnavailableError    STORE_UNAVAILABLE
    │   └── BrokerUnavailableError   BROKER_UNAVAILABLE (the Redis broker did not answer)
    ├── HandshakeRejected            an HTTP status instead of the WebSocket upgrade
    ├── CloseConnection              close one connection with a WebSocket close code
    ├── ConnectionClosed             the WebSocket is closed (code and reason)
    └── InvariantViolation           a run's events break a protocol invariant (also an
                                     AssertionError: the test helpers raise it)

Cancellation is never an exception of ours: ``stop_agent``, drains and
disconnects cancel trio scopes, and the agent lifecycle maps the recorded
cause to a status and code. The error codes the server can send
(:data:`ERROR_CODES`) are read off the ``ProtocolError`` classes, so adding a
class is all it takes to add a code.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ChatServerError(Exception):
    """Root of every exception this project raises on purpose."""


class ConfigurationError(ChatServerError):
    """Settings or registrations that cannot work (raised at start-up)."""


class InjectedFault(ChatServerError):
    """The exception a ``raise`` fault throws inside an agent."""


class ToolParameterError(ChatServerError, ValueError):
    """A tool call's parameters do not match the tool's declared schema (or no such tool)."""


class ProviderError(ChatServerError):
    """The language model could not answer (after the provider's own retries)."""


class AgentError(ChatServerError):
    """An agent step ended without a result.

    ``status`` and ``code`` are what its ``agent_error`` event carried; an
    enclosing agent that does not handle it closes with the same pair.
    """

    status: ClassVar[str] = "failed"
    code: ClassVar[str] = "AGENT_ERROR"

    def __init__(self, agent_name: str, message: str) -> None:
        super().__init__(f"{agent_name}: {message}")
        self.agent_name = agent_name
        self.message = message


class AgentFailed(AgentError):
    status = "failed"
    code = "AGENT_ERROR"


class AgentTimeout(AgentError):
    status = "timeout"
    code = "TIMEOUT"


class ProtocolError(ChatServerError):
    """A client message the server refuses with an ``error_message``; the connection stays.

    Subclasses set ``error_code``; ``details`` goes into the frame as it is and
    ``message_id`` is echoed.
    """

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
    """Not JSON, not an object, a missing or wrong-typed field, a bad id or cursor."""

    error_code = "FORMAT_ERROR"


class UnknownTypeError(ProtocolError):
    error_code = "UNKNOWN_TYPE"


class AgentNotFoundError(ProtocolError):
    error_code = "AGENT_NOT_FOUND"


class RunNotFoundError(ProtocolError):
    """No such run of this user (another user's run is reported the same way)."""

    error_code = "RUN_NOT_FOUND"


class RateLimitedError(ProtocolError):
    """Over the connection's message rate; ``details.retry_after`` says when to try again."""

    error_code = "RATE_LIMITED"


class TooManyRunsError(ProtocolError):
    error_code = "TOO_MANY_RUNS"


class ShuttingDownError(ProtocolError):
    error_code = "SHUTTING_DOWN"


class InternalError(ProtocolError):
    """A message handler failed; the connection goes on."""

    error_code = "INTERNAL_ERROR"


class ThreadNotFoundError(ProtocolError):
    """No such thread of this user (another user's thread is reported the same way)."""

    error_code = "THREAD_NOT_FOUND"


class ThreadBusyError(ProtocolError):
    """A thread already has a run in progress."""

    error_code = "THREAD_BUSY"


class TooManySubscriptionsError(ProtocolError):
    error_code = "TOO_MANY_SUBSCRIPTIONS"


class StoreUnavailableError(ProtocolError):
    """The history store cannot be reached; the request was refused, nothing half-written."""

    error_code = "STORE_UNAVAILABLE"


class BrokerUnavailableError(ProtocolError):
    """The broker (``--broker``) is unreachable, or did not answer within its time limit.

    Raised by every cross-process operation of :mod:`server.broker` instead of a
    hang or a driver exception; a request that needed it (following a thread
    or a run of another process) is answered ``BROKER_UNAVAILABLE`` and the
    connection stays open. What stays within one process keeps working.
    """

    error_code = "BROKER_UNAVAILABLE"


class HandshakeRejected(ChatServerError):
    """Refuse the WebSocket upgrade with an HTTP status (400, 401, 403, 404, 503)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class CloseConnection(ChatServerError):
    """Close this one connection with a WebSocket close code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class ConnectionClosed(ChatServerError):
    """The WebSocket connection is closed: by the peer, by us, or dropped (1006).

    ``code`` and ``reason`` are the close frame's (1006 and empty when the TCP
    connection went without one).
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed ({code}{' ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class InvariantViolation(ChatServerError, AssertionError):
    """A run's events break one of the protocol's invariants (raised by the checker)."""


def _protocol_error_codes() -> tuple[str, ...]:
    codes: list[str] = []
    pending = list(ProtocolError.__subclasses__())
    while pending:
        cls = pending.pop(0)
        if cls.error_code not in codes:
            codes.append(cls.error_code)
        pending.extend(cls.__subclasses__())
    return tuple(codes)


#: Every ``error_code`` the server can send, in the order the classes are defined.
ERROR_CODES: tuple[str, ...] = _protocol_error_codes()
