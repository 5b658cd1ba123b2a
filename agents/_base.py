"""BaseAgent: what an agent author writes against.

A subclass sets ``name`` (and ``top_level = True`` if clients may start it)
and writes ``execute``. Everything around ``execute`` (the opening and closing
events, deadlines, faults, cancellation) is the lifecycle's
(:mod:`agents._lifecycle`); the methods here act through the step the
lifecycle binds to each instance before calling ``execute``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ._context import UserExecutionContext
from ._thoughts import THOUGHT_INTERVAL, ThoughtStream
from ._tools import ToolResult

if TYPE_CHECKING:
    from ._lifecycle import AgentStep
    from ._providers import ModelProvider


class BaseAgent(abc.ABC):
    """One step of a run. A fresh instance is made for every step of every run."""

    #: Registry key, also the ``agent_name`` of this agent's events.
    name: ClassVar[str]
    #: Whether clients may start this agent with ``start_agent``.
    top_level: ClassVar[bool] = False
    #: One line for humans (shown in docs and logs).
    description: ClassVar[str] = ""

    def __init__(self, context: UserExecutionContext) -> None:
        self.context = context
        self.__step: AgentStep | None = None

    @abc.abstractmethod
    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Do the work; return the JSON object that ``agent_completed`` carries.

        Raise to fail (the run sees ``agent_error`` status ``failed``). ``inputs``
        is what the parent agent passed (empty for a top-level agent, which
        reads ``self.context.request``).
        """

    async def think(self, reasoning: str, *, progress: float | None = None) -> None:
        """Emit ``agent_thinking`` with the next step number."""
        step = self.__step  # the _step property inlined: every thinking event comes here
        if step is None:
            step = self._step  # raises
        await step.think(reasoning, progress)

    async def use_tool(self, tool_name: str, /, **parameters: Any) -> ToolResult:
        """Call a registered tool; return its :class:`ToolResult`, never raise for it.

        Unknown tools, parameters that do not fit the tool's schema, an
        exception in the tool and the tool's own time limit all give a
        ``failed`` result. Cancellation of the run propagates as usual.
        """
        return await self._step.use_tool(tool_name, parameters)

    async def call_tool(
        self, tool_name: str, parameters: dict[str, Any], func: Callable[..., Any]
    ) -> Any:
        """Call ``func(**parameters)`` (sync or async) as an ad-hoc tool; return its value.

        Emits the same two events as :meth:`use_tool`, but a failure raises
        (the exception of ``func``) instead of returning a failed result.
        """
        return await self._step.call_tool(tool_name, parameters, func)

    async def run_agent(self, name: str, inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run a fresh instance of agent ``name`` as a step inside this one.

        Returns its result, or raises :class:`~agents.AgentError` (``AgentFailed``
        or ``AgentTimeout``) after its ``agent_error`` went out; catch it to
        degrade gracefully, or let it end this agent with the same status.
        """
        return await self._step.run_agent(name, inputs or {})

    @property
    def model(self) -> ModelProvider:
        """The server's language-model provider (offline and deterministic by default)."""
        return self._step.provider

    def thoughts(self, *, interval: float = THOUGHT_INTERVAL) -> ThoughtStream:
        """A sink for streamed model text that emits coalesced ``agent_thinking`` events.

        Use as ``async with self.thoughts() as sink: await self.model.chat(msgs,
        on_delta=sink.add)``: at most one event per ``interval`` seconds, the
        rest flushed when the block ends.
        """
        return ThoughtStream(self, interval)

    @property
    def _step(self) -> AgentStep:
        if self.__step is None:
            raise RuntimeError(f"agent {self.name!r} is not running as a step of a run")
        return self.__step

    def _bind(self, step: AgentStep) -> None:
        self.__step = step


def bind_step(agent: BaseAgent, step: AgentStep) -> None:
    """Attach the lifecycle's ``step`` to a fresh ``agent`` (the lifecycle calls this)."""
    agent._bind(step)
