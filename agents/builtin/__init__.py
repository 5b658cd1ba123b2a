"""The built-in agent line-up: the five-step workflow of ``supervisor`` (top level).

``supervisor`` runs ``triage``, then by its data sufficiency some of ``data``,
``optimization``, ``actions`` and ``data_helper``, then ``reporting``
(see :mod:`agents.builtin.supervisor`).
"""

from __future__ import annotations

from typing import Any

from .._registry import AgentClassRegistry
from .._runtime import AgentRuntime
from .actions import ActionsAgent as ActionsAgent
from .catalogue import Catalogue as Catalogue
from .catalogue import ModelEntry as ModelEntry
from .catalogue import load_catalogue as load_catalogue
from .data import DataAgent as DataAgent
from .data_helper import DataHelperAgent as DataHelperAgent
from .optimization import OptimizationAgent as OptimizationAgent
from .reporting import ReportingAgent as ReportingAgent
from .supervisor import PIPELINES as PIPELINES
from .supervisor import SupervisorAgent as SupervisorAgent
from .tools import default_tools as default_tools
from .triage import TriageAgent as TriageAgent
from .triage import TriageResult as TriageResult
from .triage import classify as classify

BUILTIN_AGENTS = (
    SupervisorAgent,
    TriageAgent,
    DataAgent,
    OptimizationAgent,
    ActionsAgent,
    DataHelperAgent,
    ReportingAgent,
)


def default_runtime(**options: Any) -> AgentRuntime:
    """An :class:`~agents.AgentRuntime` with the built-in agents and tools.

    ``options`` are the runtime's other fields (``provider``, ``faults``,
    ``agent_timeout``, ``run_timeout``, ``observer``).
    """
    return AgentRuntime(default_registry(), tools=default_tools(), **options)


def default_registry() -> AgentClassRegistry:
    """A new, unfrozen registry holding the built-in agent classes."""
    registry = AgentClassRegistry()
    for cls in BUILTIN_AGENTS:
        registry.register(cls)
    return registry
