"""Supervisor: the default top-level agent. Triage first, then reporting."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._base import BaseAgent
from .._errors import AgentError


class SupervisorAgent(BaseAgent):
    name = "supervisor"
    top_level = True
    description = "Runs triage, then reporting; answers generically if triage fails."

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        request = self.context.request
        await self.think("Plan: triage the request, then write the answer", progress=0)
        triage: dict[str, Any] | None
        degraded: str | None = None
        try:
            triage = await self.run_agent("triage", {"request": request})
        except AgentError as exc:
            triage = None
            degraded = f"triage {exc.status}: {exc.message}"
            await self.think(f"Triage did not finish ({exc.status}); answering without it")
        await self.think("Writing the answer", progress=60)
        report = await self.run_agent(
            "reporting", {"request": request, "triage": triage, "degraded": degraded}
        )
        return {
            "answer": report["markdown"],
            "triage": triage,
            "degraded": degraded is not None,
        }
