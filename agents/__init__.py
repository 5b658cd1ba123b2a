"""The agent framework of trio-agent-server.

``BaseAgent`` (what an agent author subclasses), ``AgentClassRegistry`` (agent
*classes* by name), ``AgentRuntime`` (what a server's runs share: registry,
tools, model provider, faults, time limits; frozen), the lifecycle that drives
each run (``RunScope``, ``execute_run``) and the immutable
``UserExecutionContext`` every agent instance gets, whose emitter is the only
way out of a run.

The framework knows nothing about sockets or the server, and nothing about
the built-in line-up: that is :mod:`agents.builtin`, chosen where a server is
assembled. The exceptions are the project's one tree (:mod:`server.protocol`).
"""

from server.protocol import AgentError as AgentError
from server.protocol import AgentFailed as AgentFailed
from server.protocol import AgentTimeout as AgentTimeout
from server.protocol import ChatServerError as ChatServerError
from server.protocol import ConfigurationError as ConfigurationError
from server.protocol import InjectedFault as InjectedFault
from server.protocol import ProviderError as ProviderError
from server.protocol import ToolParameterError as ToolParameterError

from ._base import BaseAgent as BaseAgent
from ._context import EndCause as EndCause
from ._context import RunEmitter as RunEmitter
from ._context import Turn as Turn
from ._context import UserExecutionContext as UserExecutionContext
from ._faults import FaultKind as FaultKind
from ._faults import FaultPlan as FaultPlan
from ._faults import FaultSpec as FaultSpec
from ._lifecycle import AgentStep as AgentStep
from ._lifecycle import RunScope as RunScope
from ._lifecycle import describe_exception as describe_exception
from ._lifecycle import execute_run as execute_run
from ._providers import ChatMessage as ChatMessage
from ._providers import ChatResult as ChatResult
from ._providers import ModelProvider as ModelProvider
from ._providers import OfflineProvider as OfflineProvider
from ._registry import AgentClassRegistry as AgentClassRegistry
from ._runtime import AgentObserver as AgentObserver
from ._runtime import AgentRuntime as AgentRuntime
from ._thoughts import ThoughtStream as ThoughtStream
from ._tools import Tool as Tool
from ._tools import ToolRegistry as ToolRegistry
from ._tools import ToolResult as ToolResult

__all__ = [
    "AgentClassRegistry",
    "AgentError",
    "AgentFailed",
    "AgentObserver",
    "AgentRuntime",
    "AgentStep",
    "AgentTimeout",
    "BaseAgent",
    "ChatMessage",
    "ChatResult",
    "ChatServerError",
    "ConfigurationError",
    "EndCause",
    "FaultKind",
    "FaultPlan",
    "FaultSpec",
    "InjectedFault",
    "ModelProvider",
    "OfflineProvider",
    "ProviderError",
    "RunEmitter",
    "RunScope",
    "ThoughtStream",
    "Tool",
    "ToolParameterError",
    "ToolRegistry",
    "ToolResult",
    "Turn",
    "UserExecutionContext",
    "describe_exception",
    "execute_run",
]
