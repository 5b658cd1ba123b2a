"""Agents for trio-agent-server: the framework and the built-in line-up.

The framework (``BaseAgent``, ``AgentClassRegistry``, ``AgentInstanceFactory``,
``UserExecutionContext``) knows nothing about sockets; the server hands each
run an emitter that reaches only the connection that started it.
"""

from ._base import BaseAgent as BaseAgent
from ._base import describe_exception as describe_exception
from ._context import EndCause as EndCause
from ._context import RunEmitter as RunEmitter
from ._context import Turn as Turn
from ._context import UserExecutionContext as UserExecutionContext
from ._errors import AgentError as AgentError
from ._errors import AgentFailed as AgentFailed
from ._errors import AgentTimeout as AgentTimeout
from ._errors import ChatServerError as ChatServerError
from ._errors import ConfigurationError as ConfigurationError
from ._errors import InjectedFault as InjectedFault
from ._factory import AgentInstanceFactory as AgentInstanceFactory
from ._factory import AgentObserver as AgentObserver
from ._faults import FaultKind as FaultKind
from ._faults import FaultPlan as FaultPlan
from ._faults import FaultSpec as FaultSpec
from ._providers import ChatMessage as ChatMessage
from ._providers import ChatResult as ChatResult
from ._providers import ModelProvider as ModelProvider
from ._providers import OfflineProvider as OfflineProvider
from ._providers import ProviderError as ProviderError
from ._registry import AgentClassRegistry as AgentClassRegistry
from ._run import RunScope as RunScope
from ._run import execute_run as execute_run
from ._thoughts import ThoughtStream as ThoughtStream
from ._tools import Tool as Tool
from ._tools import ToolParameterError as ToolParameterError
from ._tools import ToolRegistry as ToolRegistry
from ._tools import ToolResult as ToolResult
from .builtin import default_registry as default_registry
from .builtin.tools import default_tools as default_tools

__all__ = [
    "AgentClassRegistry",
    "AgentError",
    "AgentFailed",
    "AgentInstanceFactory",
    "AgentObserver",
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
    "default_registry",
    "default_tools",
    "describe_exception",
    "execute_run",
]
