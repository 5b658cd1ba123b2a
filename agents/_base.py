"""BaseAgent: the lifecycle every agent step goes through.

A subclass sets ``name`` (and ``top_level = True`` if clients may start it)
and writes ``execute``. The lifecycle around it guarantees, for every outcome,
one ``agent_started`` and exactly one closing event (``agent_completed`` or
``agent_error``), tool calls closed before their agent, inner agents before
outer ones, and nothing at all once the connection has gone.
"""

from __future__ import annotations

import abc
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import trio

from ._context import UserExecutionContext
from ._errors import AgentError, AgentFailed, AgentTimeout
from ._faults import apply_faults
from ._providers import ModelProvider
from ._run import result_or_error
from ._thoughts import THOUGHT_INTERVAL, ThoughtStream
from ._tools import ToolParameterError, ToolResult, shown_parameters

if TYPE_CHECKING:
    from ._run import RunScope


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
        self._run: RunScope | None = None
        self._steps = 0
        self._closed = False
        self._time_limit = 0.0

    # -- API for subclasses -------------------------------------------------

    @abc.abstractmethod
    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Do the work; return the JSON object that ``agent_completed`` carries.

        Raise to fail (the run sees ``agent_error`` status ``failed``). ``inputs``
        is what the parent agent passed (empty for a top-level agent, which
        reads ``self.context.request``).
        """

    async def think(self, reasoning: str, *, progress: float | None = None) -> None:
        """Emit ``agent_thinking`` with the next step number."""
        self._steps += 1
        data: dict[str, Any] = {"reasoning": reasoning, "step_number": self._steps}
        if progress is not None:
            data["progress_percentage"] = max(0.0, min(100.0, float(progress)))
        await self._emit("agent_thinking", data)

    async def call_tool(
        self,
        tool_name: str,
        parameters: dict[str, Any],
        func: Callable[..., Any],
    ) -> Any:
        """Call ``func(**parameters)`` (sync or async) as an ad-hoc tool; return its value.

        Emits the same two events as :meth:`use_tool`, but a failure raises
        (the exception of ``func``) instead of returning a failed result.
        """

        async def body() -> Any:
            value = func(**parameters)
            return await value if inspect.isawaitable(value) else value

        result, error = await self._tool_span(tool_name, parameters, body)
        if error is not None:
            raise error
        return result.value

    async def use_tool(self, tool_name: str, /, **parameters: Any) -> ToolResult:
        """Call a registered tool; return its :class:`ToolResult`, never raise for it.

        Unknown tools, parameters that do not fit the tool's schema, an
        exception in the tool and the tool's own time limit all give a
        ``failed`` result. Cancellation of the run propagates as usual.
        """
        tool = self._scope.factory.tools.get(tool_name)

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
        run = self._scope
        call_id = run.next_tool_call_id()
        await self._emit(
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
            await self._emit("tool_completed", data)
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
                cause = run.cancellation_cause()
                if cause.emits:
                    with trio.CancelScope(shield=True):
                        await close("failed", {"error": cause.code, "message": cause.describe()})
            raise

    @property
    def model(self) -> ModelProvider:
        """The server's language-model provider (offline and deterministic by default)."""
        return self._scope.factory.provider

    def thoughts(self, *, interval: float = THOUGHT_INTERVAL) -> ThoughtStream:
        """A sink for streamed model text that emits coalesced ``agent_thinking`` events.

        Use as ``async with self.thoughts() as sink: await self.model.chat(msgs,
        on_delta=sink.add)``: at most one event per ``interval`` seconds, the
        rest flushed when the block ends.
        """
        return ThoughtStream(self, interval)

    async def run_agent(self, name: str, inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run a fresh instance of agent ``name`` as a step inside this one.

        Returns its result, or raises :class:`AgentError` (``AgentFailed`` or
        ``AgentTimeout``) after its ``agent_error`` went out; catch it to
        degrade gracefully, or let it end this agent with the same status.
        """
        run = self._scope
        return await run.factory.drive(name, run, inputs or {}, top_level=False)

    # -- lifecycle (driven by AgentInstanceFactory) ---------------------------

    @property
    def _scope(self) -> RunScope:
        if self._run is None:
            raise RuntimeError(f"agent {self.name!r} is not bound to a run")
        return self._run

    async def _emit(self, event_type: str, data: dict[str, Any], *, final: bool = False) -> None:
        await self.context.emitter.emit(self.name, event_type, data, final=final)

    async def _drive(
        self,
        run: RunScope,
        inputs: Mapping[str, Any],
        *,
        top_level: bool,
        time_limit: float,
        on_close: Callable[[], None],
    ) -> dict[str, Any]:
        self._run = run
        self._time_limit = time_limit
        started = time.perf_counter()
        opening = {"status": "started", "message": f"{self.name} started"}
        if top_level:
            # The run's first event goes out even if the run was stopped before
            # it began: invariant 2 wants it, invariant 7 wants a final event.
            with trio.CancelScope(shield=True):
                await self._emit("agent_started", opening)
        else:
            await self._emit("agent_started", opening)
        deadline = trio.current_time() + time_limit
        run.push_deadline(deadline)

        async def close(event_type: str, data: dict[str, Any]) -> None:
            data["execution_time_ms"] = _elapsed_ms(started)
            on_close()
            await self._emit(event_type, data, final=top_level)
            self._closed = True

        async def close_error(status: str, code: str, message: str) -> None:
            error = {"code": code, "message": message}
            await close("agent_error", {"status": status, "error": error})

        try:
            try:
                result = await self._work(inputs, deadline)
            except AgentError as exc:
                await close_error(exc.status, exc.code, exc.message)
                raise type(exc)(self.name, exc.message) from exc
            await close("agent_completed", {"status": "completed", "result": result})
            return result
        except BaseException as exc:
            if not self._closed and is_cancellation(exc):
                cause = run.cancellation_cause()
                if cause.emits:
                    with trio.CancelScope(shield=True):
                        await close_error(cause.status, cause.code, cause.describe())
            raise
        finally:
            run.pop_deadline()

    async def _work(self, inputs: Mapping[str, Any], deadline: float) -> dict[str, Any]:
        faults = self._scope.factory.faults.draw(self.name)
        with trio.CancelScope(deadline=deadline) as limit:
            try:
                if faults:
                    await apply_faults(self.name, faults)
                return result_or_error(await self.execute(inputs))
            except AgentError:
                raise
            except Exception as exc:
                raise AgentFailed(self.name, describe_exception(exc)) from exc
        assert limit.cancelled_caught
        raise AgentTimeout(
            self.name, f"{self.name} exceeded its time limit of {self._time_limit:g} s"
        )
