"""Registry of agent *classes*: the only agent-related object that is process-wide."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from server.protocol import ConfigurationError

if TYPE_CHECKING:
    from ._base import BaseAgent

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class AgentClassRegistry(Mapping[str, "type[BaseAgent]"]):
    """Maps agent names to agent classes; frozen once a server starts.

    It never holds instances: the lifecycle (:func:`agents.execute_run`) makes a fresh one
    for every step of every run.
    """

    def __init__(self) -> None:
        self._classes: dict[str, type[BaseAgent]] = {}
        self._frozen = False

    def register(self, cls: type[BaseAgent]) -> type[BaseAgent]:
        """Add ``cls`` under ``cls.name``; usable as a class decorator."""
        name = getattr(cls, "name", None)
        if self._frozen:
            raise ConfigurationError(f"registry is frozen; cannot register {name!r}")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigurationError(f"{cls.__qualname__} needs a lowercase `name`, got {name!r}")
        if name in self._classes and self._classes[name] is not cls:
            raise ConfigurationError(f"agent name {name!r} is already registered")
        self._classes[name] = cls
        return cls

    def freeze(self) -> AgentClassRegistry:
        """Refuse further registrations (idempotent); returns self."""
        self._frozen = True
        return self

    @property
    def frozen(self) -> bool:
        return self._frozen

    def top_level_names(self) -> frozenset[str]:
        """Names a client may pass as ``start_agent.agent_name``."""
        return frozenset(name for name, cls in self._classes.items() if cls.top_level)

    def copy(self) -> AgentClassRegistry:
        """An unfrozen registry with the same classes, to extend in tests."""
        new = AgentClassRegistry()
        new._classes = dict(self._classes)
        return new

    def __getitem__(self, name: str) -> type[BaseAgent]:
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)
