"""Tools: named functions with declared parameter schemas, called through agents.

A tool call always emits ``tool_executing`` then ``tool_completed``. A tool
that raises, gets bad parameters or runs past its own time limit produces a
``failed`` :class:`ToolResult` the agent can look at; cancellation of the run
still cancels the call (and closes it with ``failed``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from server.protocol import ConfigurationError, ToolParameterError

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list, tuple),
}


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

    def __attrs_post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ConfigurationError(f"tool name {self.name!r} must be lowercase snake_case")
        if self.parameters.get("type") != "object":
            raise ConfigurationError(f"tool {self.name}: parameters must be a JSON object schema")

    def validate(self, params: Mapping[str, Any]) -> None:
        """Raise :class:`ToolParameterError` unless ``params`` fit the schema."""
        properties: Mapping[str, Any] = self.parameters.get("properties", {})
        for name in self.parameters.get("required", ()):
            if name not in params:
                raise ToolParameterError(f"missing parameter {name!r}")
        for name, value in params.items():
            spec = properties.get(name)
            if spec is None:
                raise ToolParameterError(f"unknown parameter {name!r}")
            expected = spec.get("type")
            types = _JSON_TYPES.get(expected) if isinstance(expected, str) else None
            if types is not None and (
                not isinstance(value, types) or (expected != "boolean" and isinstance(value, bool))
            ):
                raise ToolParameterError(f"parameter {name!r} must be of type {expected}")
            if "enum" in spec and value not in spec["enum"]:
                raise ToolParameterError(f"parameter {name!r} must be one of {spec['enum']}")

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
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register the decorated function as a tool and return it unchanged."""

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            self.register(Tool(name, description, parameters, func, timeout))
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
