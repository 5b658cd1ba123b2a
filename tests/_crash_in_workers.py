"""A ``--plugin`` that kills every worker of ``--workers N`` as it starts (for tests).

The parent loads plugins too (to check them before it starts anything); it
has no ``CHAT_WORKER_INDEX`` and is left alone.
"""

from __future__ import annotations

import os

from agents import AgentClassRegistry, ToolRegistry


def register(agents: AgentClassRegistry, tools: ToolRegistry) -> None:
    if os.environ.get("CHAT_WORKER_INDEX") is not None:
        os._exit(3)
