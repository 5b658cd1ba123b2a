"""The root of the project's exception tree and the agent-side branch.

The whole tree (the server adds its branch in ``server/_errors.py``)::

    ChatServerError
    ├── ConfigurationError        bad settings, frozen registry, unknown fault target
    ├── InjectedFault             raised by a ``--fault AGENT:raise:RATE`` draw
    ├── AgentError                an agent step ended badly; carries status and code
    │   ├── AgentFailed           status "failed",  code AGENT_ERROR
    │   └── AgentTimeout          status "timeout", code TIMEOUT
    └── (server) ProtocolError, HandshakeRejected, CloseConnection

Cancellation is never an exception of ours: ``stop_agent``, drains and
disconnects cancel trio scopes, and the lifecycle maps the cause to a status.
"""

from __future__ import annotations

from typing import ClassVar


class ChatServerError(Exception):
    """Root of every exception this project raises on purpose."""


class ConfigurationError(ChatServerError):
    """Settings or registrations that cannot work (raised at start-up)."""


class InjectedFault(ChatServerError):
    """The exception a ``raise`` fault throws inside an agent."""


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
