"""The agent lifecycle: a run's scope, each step's driving, each outcome's closing event.

Everything that happens around an agent's ``execute`` is here, in the order
it happens:

1. :func:`execute_run` opens the run's cancel scope and runs the top-level
   agent as the run's first step.
2. :func:`run_step` makes a fresh instance of the agent's class (never a
   cached one), emits its ``agent_started``, arms its deadline, applies
   injected faults and awaits ``execute``.
3. :class:`AgentStep` is what the instance's methods act through while it
   runs: events (``think``), tool calls (``use_tool``, ``call_tool``, each
   between ``tool_executing`` and exactly one ``tool_completed``), inner
   steps (``run_agent``) and the model provider.
4. Whatever the outcome, exactly one closing event goes out, inner steps and
   open tool calls first:

   ========================================  =====================================
   outcome                                   closing event
   ========================================  =====================================
   ``execute`` returned a dict               ``agent_completed``
   ``execute`` raised                        ``agent_error`` failed / AGENT_ERROR
   its own deadline passed                   ``agent_error`` timeout / TIMEOUT
   an inner step's error not handled         ``agent_error``, the inner status/code
   the run was cancelled (stop, drain, ...)  ``agent_error`` with the cause's pair
   the connection went                       ``agent_error`` cancelled / DISCONNECTED
                                             (to the history and other followers)
   ========================================  =====================================

Cancellation is a trio cancel scope, never an exception of ours: whoever
cancels a run records why first (:meth:`RunScope.cancel`); deadlines are
recorded as steps open, so when ``trio.Cancelled`` passes through a step the
lifecycle looks up the cause and emits the matching event, shielded.
"""

from __future__ import annotations

import inspect
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from server.protocol import AgentError, AgentFailed, AgentTimeout, ToolParameterError

from ._base import bind_step
from ._context import EndCause, UserExecutionContext
from ._faults import apply_faults
from ._providers import ModelProvider
from ._thoughts import THOUGHT_INTERVAL, ThoughtStream
from ._tools import ToolResult, shown_parameters

if TYPE_CHECKING:
    from ._base import BaseAgent
    from ._runtime import AgentRuntime


def describe_exception(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def is_cancellation(exc: BaseException) -> bool:
    """``trio.Cancelled``, or a group holding one (an agent's own nursery was cancelled)."""
    if isinstance(exc, trio.Cancelled):
        return True
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(trio.Cancelled) is not None


def _elapsed_ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 3)


@attrs.define(eq=False)
class RunScope:
    """Mutable state of one run, owned by the task that runs it.

    ``cancel(cause)`` is how anything outside the run ends it: the first cause
    wins, and every open agent and tool call closes with that cause's status.
    """

    context: UserExecutionContext
    runtime: AgentRuntime
    cancel_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    cause: EndCause | None = None
    _deadlines: list[float] = attrs.field(factory=list)
    _tool_ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))

    def cancel(self, cause: EndCause) -> None:
        if self.cause is None:
            self.cause = cause
        self.cancel_scope.cancel()

    def cancellation_cause(self) -> EndCause:
        """Why a ``trio.Cancelled`` is passing through a step of this run."""
        if self.cause is not None:
            return self.cause
        now = trio.current_time()
        if any(deadline <= now for deadline in self._deadlines):
            return EndCause.TIMEOUT
        # Cancelled from outside the run with no cause given: the connection is going.
        return EndCause.DISCONNECTED


async def execute_run(scope: RunScope, agent_name: str) -> str:
    """Run ``agent_name`` as the top-level agent of ``scope``; return the run's status.

    Every outcome but a vanished connection has produced the final event
    before this returns. Cancellation from outside the run propagates. The
    caller checks that ``agent_name`` is registered (the server answers
    AGENT_NOT_FOUND); an unknown name fails at once, with no event.
    """
    with scope.cancel_scope:
        try:
            await run_step(scope, agent_name, {}, top_level=True)
        except AgentError as exc:
            return exc.status
        return "completed"
    return scope.cancellation_cause().status


async def run_step(
    scope: RunScope, name: str, inputs: Mapping[str, Any], *, top_level: bool
) -> dict[str, Any]:
    """Run a fresh instance of agent ``name`` as one step of ``scope``; return its result.

    Raises :class:`AgentError` after the step's ``agent_error`` went out.
    Nothing keeps the instance once its step has closed.
    """
    runtime = scope.runtime
    try:
        cls = runtime.registry[name]
    except KeyError:
        raise AgentFailed(name, f"no agent named {name!r} is registered") from None
    agent = cls(scope.context)
    observer = runtime.observer
    observer.agent_opened(name)
    # Its agent_started is the next thing this step does (trio clock: virtual
    # under an autojump clock, so tests can assert exact durations).
    step = AgentStep(scope, name, opened_at=trio.current_time())
    bind_step(agent, step)
    try:
        return await step.drive(agent, inputs, top_level=top_level)
    finally:
        step.release()


@attrs.define(eq=False)
class AgentStep:
    """One agent instance's step of a run: what :class:`~agents.BaseAgent`'s methods act on."""

    scope: RunScope
    name: str
    opened_at: float
    _thoughts: int = 0
    _closed: bool = False
    _released: bool = False

    # -- what agents do ---------------------------------------------------------

    @property
    def provider(self) -> ModelProvider:
        return self.scope.runtime.provider

    async def emit(self, event_type: str, data: dict[str, Any], *, final: bool = False) -> None:
        await self.scope.context.emitter.emit(self.name, event_type, data, final=final)

    async def think(self, reasoning: str, progress: float | None) -> None:
        self._thoughts += 1
        data: dict[str, Any] = {"reasoning": reasoning, "step_number": self._thoughts}
        if progress is not None:
            data["progress_percentage"] = max(0.0, min(100.0, float(progress)))
        # emit() inlined: the most frequent event of a run.
        await self.scope.context.emitter.emit(self.name, "agent_thinking", data)

    def thoughts(self, agent: BaseAgent, interval: float = THOUGHT_INTERVAL) -> ThoughtStream:
        return ThoughtStream(agent, interval)

    async def run_agent(self, name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return await run_step(self.scope, name, inputs, top_level=False)

    async def call_tool(
        self, tool_name: str, parameters: dict[str, Any], func: Callable[..., Any]
    ) -> Any:
        async def body() -> Any:
            value = func(**parameters)
            return await value if inspect.isawaitable(value) else value

        result, error = await self._tool_span(tool_name, parameters, body)
        if error is not None:
            raise error
        return result.value

    async def use_tool(self, tool_name: str, parameters: dict[str, Any]) -> ToolResult:
        tool = self.scope.runtime.tools.get(tool_name)

        async def body() -> Any:
            if tool is None:
                raise ToolParameterError(f"no tool named {tool_name!r}")
            return await tool.invoke(parameters)

        result, _ = await self._tool_span(tool_name, parameters, body)
        return result

    async def _tool_span(
        self,
        tool_name: str,
        parameters: dict[str, Any],
        body: Callable[[], Awaitable[Any]],
    ) -> tuple[ToolResult, Exception | None]:
        """Run ``body`` between ``tool_executing`` and exactly one ``tool_completed``."""
        scope = self.scope
        call_id = f"tc-{next(scope._tool_ids)}"
        await self.emit(
            "tool_executing",
            {
                "tool_call_id": call_id,
                "tool_name": tool_name,
                "parameters": shown_parameters(parameters),
            },
        )
        started = time.perf_counter()
        closed = False

        async def close(status: str, value: Any) -> float:
            nonlocal closed
            elapsed = _elapsed_ms(started)
            data = {
                "tool_call_id": call_id,
                "tool_name": tool_name,
                "status": status,
                "result": value,
                "execution_time_ms": elapsed,
            }
            await self.emit("tool_completed", data)
            closed = True
            return elapsed

        try:
            try:
                value = await body()
            except Exception as exc:
                error = describe_exception(exc)
                elapsed = await close("failed", {"error": error})
                return ToolResult(tool_name, "failed", None, error, elapsed), exc
            elapsed = await close("completed", value)
            return ToolResult(tool_name, "completed", value, None, elapsed), None
        except BaseException as exc:
            if not closed and is_cancellation(exc):
                cause = scope.cancellation_cause()
                with trio.CancelScope(shield=True):
                    await close("failed", {"error": cause.code, "message": cause.describe()})
            raise

    # -- driving ----------------------------------------------------------------

    def release(self) -> None:
        """The step is over: the instance no longer counts (idempotent)."""
        if not self._released:
            self._released = True
            self.scope.runtime.observer.agent_closed(
                self.name, trio.current_time() - self.opened_at
            )

    async def drive(
        self, agent: BaseAgent, inputs: Mapping[str, Any], *, top_level: bool
    ) -> dict[str, Any]:
        scope = self.scope
        runtime = scope.runtime
        time_limit = runtime.run_timeout if top_level else runtime.agent_timeout
        started = time.perf_counter()
        opening = {"status": "started", "message": f"{self.name} started"}
        if top_level:
            # The run's first event goes out even if the run was stopped before
            # it began: invariant 2 wants it, invariant 7 wants a final event.
            with trio.CancelScope(shield=True):
                await self.emit("agent_started", opening)
        else:
            await self.emit("agent_started", opening)
        deadline = trio.current_time() + time_limit
        scope._deadlines.append(deadline)

        async def close(event_type: str, data: dict[str, Any]) -> None:
            data["execution_time_ms"] = _elapsed_ms(started)
            self.release()  # the gauge drops before the closing event is queued
            await self.emit(event_type, data, final=top_level)
            self._closed = True

        async def close_error(status: str, code: str, message: str) -> None:
            error = {"code": code, "message": message}
            await close("agent_error", {"status": status, "error": error})

        try:
            try:
                result = await self._work(agent, inputs, deadline, time_limit)
            except AgentError as exc:
                await close_error(exc.status, exc.code, exc.message)
                raise type(exc)(self.name, exc.message) from exc
            await close("agent_completed", {"status": "completed", "result": result})
            return result
        except BaseException as exc:
            if not self._closed and is_cancellation(exc):
                cause = scope.cancellation_cause()
                with trio.CancelScope(shield=True):
                    await close_error(cause.status, cause.code, cause.describe())
            raise
        finally:
            scope._deadlines.pop()

    async def _work(
        self, agent: BaseAgent, inputs: Mapping[str, Any], deadline: float, time_limit: float
    ) -> dict[str, Any]:
        faults = self.scope.runtime.faults.draw(self.name)
        with trio.CancelScope(deadline=deadline) as limit:
            try:
                if faults:
                    await apply_faults(self.name, faults)
                return result_or_error(await agent.execute(inputs))
            except AgentError:
                raise
            except Exception as exc:
                raise AgentFailed(self.name, describe_exception(exc)) from exc
        assert limit.cancelled_caught
        raise AgentTimeout(self.name, f"{self.name} exceeded its time limit of {time_limit:g} s")


def result_or_error(value: Any) -> dict[str, Any]:
    """Agents return a JSON object; anything else is a bug in the agent."""
    if not isinstance(value, dict):
        raise TypeError(f"execute() must return a dict, not {type(value).__name__}")
    return value
