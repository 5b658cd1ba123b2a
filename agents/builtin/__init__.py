"""The built-in agent line-up: ``supervisor`` (top level), ``triage``, ``reporting``."""

from __future__ import annotations

from .._registry import AgentClassRegistry
from .reporting import ReportingAgent as ReportingAgent
from .supervisor import SupervisorAgent as SupervisorAgent
from .triage import TriageAgent as TriageAgent
from .triage import TriageResult as TriageResult
from .triage import classify as classify

BUILTIN_AGENTS = (SupervisorAgent, TriageAgent, ReportingAgent)


def default_registry() -> AgentClassRegistry:
    """A new, unfrozen registry holding the built-in agent classes."""
    registry = AgentClassRegistry()
    for cls in BUILTIN_AGENTS:
        registry.register(cls)
    return registry
