"""AgentRuntime: everything a server's runs share, frozen at start-up."""

from __future__ import annotations

from typing import Protocol

import attrs

from server.protocol import ConfigurationError

from ._faults import FaultPlan
from ._providers import ModelProvider, OfflineProvider
from ._registry import AgentClassRegistry
from ._tools import ToolRegistry


class AgentObserver(Protocol):
    """What the lifecycle reports about agent instances (the server's metrics)."""

    def agent_opened(self, name: str) -> None: ...

    def agent_closed(self, name: str, seconds: float) -> None:
        """``name``'s step has closed, ``seconds`` (trio clock) after it was opened.

        Called just before its closing event is emitted, or, for a step cut
        off with no closing event (the connection went), when it unwinds.
        """


class _NoObserver:
    def agent_opened(self, name: str) -> None:
        pass

    def agent_closed(self, name: str, seconds: float) -> None:
        pass


def _frozen_registry(registry: AgentClassRegistry) -> AgentClassRegistry:
    return registry.freeze()


def _frozen_tools(tools: ToolRegistry) -> ToolRegistry:
    return tools.freeze()


@attrs.frozen
class AgentRuntime:
    """The agent classes, tools, model provider, fault plan and time limits of one server.

    Immutable (its registries are frozen when it is made) and shared by every
    run of that server; it holds classes, never agent instances: the lifecycle
    makes a fresh instance from :attr:`registry` for every step of every run.
    Which agents and tools a server has is chosen where the server is
    assembled (the built-in line-up is :func:`agents.builtin.default_registry`
    and :func:`agents.builtin.default_tools`), never here.
    """

    registry: AgentClassRegistry = attrs.field(converter=_frozen_registry)
    tools: ToolRegistry = attrs.field(factory=ToolRegistry, converter=_frozen_tools)
    provider: ModelProvider = attrs.field(factory=OfflineProvider)
    faults: FaultPlan = attrs.field(factory=FaultPlan)
    #: Seconds each agent below the top level may take (``--agent-timeout``).
    agent_timeout: float = 30.0
    #: Seconds a whole run may take (``--run-timeout``).
    run_timeout: float = 300.0
    observer: AgentObserver = attrs.field(factory=_NoObserver)

    def __attrs_post_init__(self) -> None:
        unknown = sorted(self.faults.agents - set(self.registry))
        if unknown:
            known = ", ".join(sorted(self.registry))
            raise ConfigurationError(
                f"--fault names unknown agent(s) {', '.join(unknown)}; known agents: {known}"
            )

    def top_level_names(self) -> frozenset[str]:
        """Agents a client may start with ``start_agent``."""
        return self.registry.top_level_names()
