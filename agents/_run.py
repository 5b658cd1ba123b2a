"""The scope of one run: its cancellation, its cause, the deadlines in force."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._context import EndCause, UserExecutionContext
from ._errors import AgentError

if TYPE_CHECKING:
    from ._factory import AgentInstanceFactory


@attrs.define(eq=False)
class RunScope:
    """Mutable state of one run, owned by the task that runs it.

    ``cancel(cause)`` is how anything outside the run ends it: the first cause
    wins, and every open agent and tool call closes with that cause's status.
    """

    context: UserExecutionContext
    factory: AgentInstanceFactory
    cancel_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    cause: EndCause | None = None
    _deadlines: list[float] = attrs.field(factory=list)
    _tool_ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))

    def cancel(self, cause: EndCause) -> None:
        if self.cause is None:
            self.cause = cause
        self.cancel_scope.cancel()

    def cancellation_cause(self) -> EndCause:
        """Why a ``trio.Cancelled`` is passing through an agent of this run."""
        if self.cause is not None:
            return self.cause
        now = trio.current_time()
        if any(deadline <= now for deadline in self._deadlines):
            return EndCause.TIMEOUT
        # Cancelled from outside the run with no cause given: the connection is going.
        return EndCause.DISCONNECTED

    def push_deadline(self, deadline: float) -> None:
        self._deadlines.append(deadline)

    def pop_deadline(self) -> None:
        self._deadlines.pop()

    def next_tool_call_id(self) -> str:
        return f"tc-{next(self._tool_ids)}"


async def execute_run(scope: RunScope, agent_name: str) -> str:
    """Run ``agent_name`` as the top-level agent of ``scope``; return the run's status.

    Every outcome but a vanished connection has produced the final event
    before this returns. Cancellation from outside the run propagates. The
    caller checks that ``agent_name`` is registered (the server answers
    AGENT_NOT_FOUND); an unknown name fails at once, with no event.
    """
    with scope.cancel_scope:
        try:
            await scope.factory.drive(agent_name, scope, {}, top_level=True)
        except AgentError as exc:
            return exc.status
        return "completed"
    return scope.cancellation_cause().status


def result_or_error(value: Any) -> dict[str, Any]:
    """Agents return a JSON object; anything else is a bug in the agent."""
    if not isinstance(value, dict):
        raise TypeError(f"execute() must return a dict, not {type(value).__name__}")
    return value
