"""AgentInstanceFactory: fresh agent instances per run step, from a frozen registry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ._errors import AgentFailed, ConfigurationError
from ._faults import FaultPlan
from ._providers import ModelProvider, OfflineProvider
from ._registry import AgentClassRegistry
from ._tools import ToolRegistry

if TYPE_CHECKING:
    from ._run import RunScope


class AgentObserver(Protocol):
    """What the factory reports about agent instances (the server's metrics)."""

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


def default_tools() -> ToolRegistry:
    from .builtin.tools import default_tools as builtin_tools

    return builtin_tools()


class AgentInstanceFactory:
    """Creates, drives and drops one agent instance per step of a run.

    Owned by a server; holds only immutable configuration, the server's
    fault plan and its metrics. Instances are never cached or shared: each
    ``drive`` makes one from its class and the run's context, and nothing
    keeps it once its step has closed.
    """

    def __init__(
        self,
        registry: AgentClassRegistry,
        *,
        agent_timeout: float = 30.0,
        run_timeout: float = 300.0,
        faults: FaultPlan | None = None,
        observer: AgentObserver | None = None,
        tools: ToolRegistry | None = None,
        provider: ModelProvider | None = None,
    ) -> None:
        self.registry = registry.freeze()
        self.tools = (tools if tools is not None else default_tools()).freeze()
        self.provider: ModelProvider = provider if provider is not None else OfflineProvider()
        self.agent_timeout = agent_timeout
        self.run_timeout = run_timeout
        self.faults = faults if faults is not None else FaultPlan()
        self._observer: AgentObserver = observer if observer is not None else _NoObserver()
        unknown = sorted(self.faults.agents - set(registry))
        if unknown:
            known = ", ".join(sorted(registry))
            raise ConfigurationError(
                f"--fault names unknown agent(s) {', '.join(unknown)}; known agents: {known}"
            )

    def top_level_names(self) -> frozenset[str]:
        return self.registry.top_level_names()

    async def drive(
        self, name: str, run: RunScope, inputs: Mapping[str, Any], *, top_level: bool
    ) -> dict[str, Any]:
        """Create a fresh ``name`` for ``run``, run its lifecycle, and let it go."""
        try:
            cls = self.registry[name]
        except KeyError:
            raise AgentFailed(name, f"no agent named {name!r} is registered") from None
        agent = cls(run.context)
        observer = self._observer
        observer.agent_opened(name)
        released = False
        # Its agent_started is the next thing this step does (trio clock:
        # virtual under an autojump clock, so tests can assert exact durations).
        opened_at = trio.current_time()

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                observer.agent_closed(name, trio.current_time() - opened_at)

        limit = self.run_timeout if top_level else self.agent_timeout
        try:
            return await agent._drive(
                run, inputs, top_level=top_level, time_limit=limit, on_close=release
            )
        finally:
            release()
