"""Tools: named functions with declared parameter schemas, called through agents.

A tool call always emits ``tool_executing`` then ``tool_completed``. A tool
that raises, gets bad parameters or runs past its own time limit produces a
``failed`` :class:`ToolResult` the agent can look at; cancellation of the run
still cancels the call (and closes it with ``failed``).

A tool declared ``cpu_bound`` is a pure, synchronous computation whose cost
grows with its input: :meth:`Tool.invoke` runs it in a worker thread (at most
:data:`CPU_THREADS` at once per trio run) when its input is larger than
:data:`CPU_BOUND_THRESHOLD` characters, so the event loop keeps serving other
connections meanwhile. Smaller inputs run inline: the hop to a thread costs
about 0.1 ms, more than the work. A cancelled or timed-out call abandons its
thread (the work is bounded anyway) and returns at once.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import trio

from server.protocol import ConfigurationError, ToolParameterError

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list, tuple),
    "null": (type(None),),
}
#: Input size (characters of its string parameters, items of its lists) above
#: which a ``cpu_bound`` tool runs in a worker thread. Measured on the development
#: machine: a hop to a worker thread and back costs about 0.1 ms of CPU; triage's
#: entity extraction costs 0.44 ms for a typical 170-character request, 1.2 ms at
#: 500 characters, 2 ms at 1,000 and levels off at about 5.5 ms from 8,000 (it reads
#: a bounded part in detail). Below this size the loop is held for at most ~2 ms,
#: and the hop would cost a quarter of the work or more.
CPU_BOUND_THRESHOLD = 1_000
#: Worker threads CPU-bound tools may occupy at once, per trio run.
CPU_THREADS = 2
#: Longest string of a tool's parameters shown in its ``tool_executing`` event.
SHOWN_STRING = 2_000

_CPU_LIMITER: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("cpu_limiter")


def validate_json(schema: Mapping[str, Any], value: Any, where: str = "value") -> None:
    """Raise :class:`ToolParameterError` unless ``value`` fits ``schema``.

    The subset of JSON Schema that model APIs use for function calling:
    ``type`` (a name or a list of names), ``enum``, ``properties``,
    ``required``, ``additionalProperties: false``, ``items``, ``minimum``,
    ``maximum``, ``maxItems``, ``maxLength``.
    """
    expected = schema.get("type")
    names = [expected] if isinstance(expected, str) else list(expected or ())
    if names and not any(_is_type(value, name) for name in names):
        raise ToolParameterError(f"{where} must be of type {' or '.join(names)}")
    if "enum" in schema and value not in schema["enum"]:
        raise ToolParameterError(f"{where} must be one of {schema['enum']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise ToolParameterError(f"{where} must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise ToolParameterError(f"{where} must be at most {schema['maximum']}")
    if isinstance(value, str) and len(value) > schema.get("maxLength", math.inf):
        raise ToolParameterError(f"{where} is longer than {schema['maxLength']} characters")
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                raise ToolParameterError(f"{where} is missing {name!r}")
        for name, item in value.items():
            spec = properties.get(name)
            if spec is None:
                if schema.get("additionalProperties", True) is False:
                    raise ToolParameterError(f"{where} has an unknown property {name!r}")
                continue
            validate_json(spec, item, f"{where}.{name}")
    if isinstance(value, list | tuple):
        if len(value) > schema.get("maxItems", math.inf):
            raise ToolParameterError(f"{where} has more than {schema['maxItems']} items")
        items = schema.get("items")
        if isinstance(items, Mapping):
            for index, item in enumerate(value):
                validate_json(items, item, f"{where}[{index}]")


def _is_type(value: Any, name: str) -> bool:
    types = _JSON_TYPES.get(name)
    if types is None:
        return True
    if name != "boolean" and isinstance(value, bool):
        return False
    if name == "number" and isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, types)


def input_size(parameters: Mapping[str, Any]) -> int:
    """Characters of the string parameters plus items of the list parameters."""
    return sum(len(v) for v in parameters.values() if isinstance(v, str | list | tuple))


def shown_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``parameters`` as a ``tool_executing`` event shows them: long strings cut.

    A string over :data:`SHOWN_STRING` characters keeps its start and says how
    much was left out; the tool itself still gets all of it.
    """
    shown: dict[str, Any] = {}
    for name, value in parameters.items():
        if isinstance(value, str) and len(value) > SHOWN_STRING:
            left = len(value) - SHOWN_STRING
            value = f"{value[:SHOWN_STRING]}… [{left:,} more characters]"
        shown[name] = value
    return shown


def _cpu_limiter() -> trio.CapacityLimiter:
    try:
        return _CPU_LIMITER.get()
    except LookupError:
        limiter = trio.CapacityLimiter(CPU_THREADS)
        _CPU_LIMITER.set(limiter)
        return limiter


@attrs.frozen
class ToolResult:
    """What a tool call gave: ``completed`` with a value, or ``failed`` with an error."""

    tool_name: str
    status: str
    value: Any = None
    error: str | None = None
    execution_time_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "completed"


@attrs.frozen
class Tool:
    """A function agents may call, with a JSON-Schema ``parameters`` object.

    ``parameters`` uses the subset of JSON Schema that model APIs use for
    function calling: ``{"type": "object", "properties": {name: {"type": ...,
    "description": ..., "enum": [...]}}, "required": [...]}``.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    func: Callable[..., Any] = attrs.field(repr=False)
    #: Seconds a call may take before it is a ``failed`` result (None: only
    #: the agent's own time limit applies).
    timeout: float | None = None
    #: A synchronous computation whose cost grows with its input: run it in a
    #: worker thread when the input is large (see the module's docstring).
    cpu_bound: bool = False
    #: Per parameter of a plain type (only "type" and "description"): the Python types
    #: it accepts, checked without the general validator.
    _plain: Mapping[str, tuple[type, ...]] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        properties: Mapping[str, Any] = self.parameters.get("properties", {})
        plain = {
            name: _JSON_TYPES[spec["type"]]
            for name, spec in properties.items()
            if isinstance(spec, Mapping)
            and spec.keys() <= {"type", "description"}
            and spec.get("type") in ("string", "number", "integer", "boolean")
        }
        object.__setattr__(self, "_plain", plain)
        if not _NAME.fullmatch(self.name):
            raise ConfigurationError(f"tool name {self.name!r} must be lowercase snake_case")
        if self.parameters.get("type") != "object":
            raise ConfigurationError(f"tool {self.name}: parameters must be a JSON object schema")
        if self.cpu_bound and inspect.iscoroutinefunction(self.func):
            raise ConfigurationError(f"tool {self.name}: a cpu_bound tool must be synchronous")

    def validate(self, params: Mapping[str, Any]) -> None:
        """Raise :class:`ToolParameterError` unless ``params`` fit the schema."""
        properties: Mapping[str, Any] = self.parameters.get("properties", {})
        for name in self.parameters.get("required", ()):
            if name not in params:
                raise ToolParameterError(f"missing parameter {name!r}")
        for name, value in params.items():
            types = self._plain.get(name)
            if (
                types is not None
                and isinstance(value, types)
                and (types == (bool,) or not isinstance(value, bool))
                and (not isinstance(value, float) or math.isfinite(value))
            ):
                continue  # the common case, checked in one step
            spec = properties.get(name)
            if spec is None:
                raise ToolParameterError(f"unknown parameter {name!r}")
            validate_json(spec, value, f"parameter {name!r}")

    def offloads(self, params: Mapping[str, Any]) -> bool:
        """Whether a call with ``params`` runs in a worker thread."""
        return self.cpu_bound and input_size(params) > CPU_BOUND_THRESHOLD

    async def invoke(self, params: Mapping[str, Any]) -> Any:
        """Validate ``params`` and call the function within the tool's time limit.

        Raises what the function raises, :class:`ToolParameterError`, or
        :class:`TimeoutError` past ``timeout``; cancellation propagates.
        """
        self.validate(params)
        limit = self.timeout if self.timeout is not None else math.inf
        with trio.move_on_after(limit) as timer:
            if self.offloads(params):
                return await trio.to_thread.run_sync(
                    lambda: self.func(**params),
                    limiter=_cpu_limiter(),
                    abandon_on_cancel=True,
                )
            value = self.func(**params)
            return await value if inspect.isawaitable(value) else value
        assert timer.cancelled_caught
        raise TimeoutError(f"{self.name} took longer than {limit:g} s")

    def schema(self) -> dict[str, Any]:
        """The function-calling description a model API expects."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


class ToolRegistry(Mapping[str, Tool]):
    """Tools by name; frozen once a server starts. Tools are stateless functions."""

    def __init__(self, tools: tuple[Tool, ...] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._frozen = False
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> Tool:
        if self._frozen:
            raise ConfigurationError(f"tool registry is frozen; cannot register {tool.name!r}")
        if tool.name in self._tools and self._tools[tool.name] is not tool:
            raise ConfigurationError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    def tool(
        self,
        name: str,
        description: str,
        parameters: Mapping[str, Any],
        *,
        timeout: float | None = None,
        cpu_bound: bool = False,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register the decorated function as a tool and return it unchanged."""

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            self.register(Tool(name, description, parameters, func, timeout, cpu_bound))
            return func

        return register

    def freeze(self) -> ToolRegistry:
        self._frozen = True
        return self

    def copy(self) -> ToolRegistry:
        return ToolRegistry(tuple(self._tools.values()))

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)
