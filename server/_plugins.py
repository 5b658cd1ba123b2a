"""``--plugin MODULE``: let a module add agents and tools at start-up."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from agents import AgentClassRegistry, ConfigurationError, ToolRegistry


def load_plugins(modules: Iterable[str], agents: AgentClassRegistry, tools: ToolRegistry) -> None:
    """Import each module and call its ``register(agents, tools)``."""
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(f"--plugin {name}: cannot import it ({exc})") from None
        register = getattr(module, "register", None)
        if not callable(register):
            raise ConfigurationError(f"--plugin {name}: it has no register(agents, tools)")
        register(agents, tools)
