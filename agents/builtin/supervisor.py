"""Supervisor: the default top-level agent, running the five-step workflow.

Triage runs first; its ``data_sufficiency`` picks the steps after it:

==================  =========================================
data_sufficiency    pipeline after triage
==================  =========================================
sufficient          data -> optimization -> actions -> reporting
partial             data_helper -> data -> reporting
insufficient        data_helper -> reporting
triage failed       data_helper -> reporting (degraded)
==================  =========================================

A triage result without a known ``data_sufficiency`` is taken as
``insufficient``. A message that calls for a short reply (triage's ``reply``:
small talk, gibberish, an injection attempt without a question) goes from
triage straight to reporting. Every step but reporting is optional: its
``AgentError`` (failure or time limit) is recorded in ``failed`` and the run
goes on, and reporting says what is missing. A reporting error fails the run.
Cancellation (``stop_agent``, drain, the run's time limit) is never caught.

The final result holds the ``answer`` and its ``language`` and ``reply`` kind,
``degraded`` with every reason in ``degraded_reasons`` (a failed step, a model
that could not be used), and ``memory``: what a later turn of the thread may
reuse (the category, the models, the figures with where each came from, and
the entities triage found), bounded in size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.protocol import AgentError

from .._base import BaseAgent
from .memory import build_memory

PIPELINES: Mapping[str, tuple[str, ...]] = {
    "sufficient": ("data", "optimization", "actions"),
    "partial": ("data_helper", "data"),
    "insufficient": ("data_helper",),
}
TRIAGE_FAILED: tuple[str, ...] = ("data_helper",)
OPTIONAL_STEPS = frozenset({"data", "optimization", "actions", "data_helper"})
REQUIRED_STEP = "reporting"


#: Replies that need no analysis: triage then reporting.
SHORT_REPLIES = frozenset({"smalltalk", "gibberish", "injection"})


def plan_for(triage: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The optional steps between triage and reporting (pure)."""
    if triage is None:
        return TRIAGE_FAILED
    if triage.get("reply") in SHORT_REPLIES and not (
        triage.get("reply") == "injection" and triage.get("category") not in (None, "general")
    ):
        return ()
    return PIPELINES.get(str(triage.get("data_sufficiency")), PIPELINES["insufficient"])


class SupervisorAgent(BaseAgent):
    name = "supervisor"
    top_level = True
    description = (
        "Runs triage, then the steps its data sufficiency calls for, then reporting; "
        "degrades past failed optional steps."
    )

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        request = self.context.request
        await self.think("Plan: triage the request, then choose the steps", progress=0)
        pipeline = ["triage"]
        steps: dict[str, Any] = {}
        failed: dict[str, str] = {}
        triage: dict[str, Any] | None
        try:
            triage = await self.run_agent("triage", {"request": request})
        except AgentError as exc:
            triage = None
            failed["triage"] = f"{exc.status}: {exc.message}"
        plan = plan_for(triage)
        if triage is None:
            reason = "triage did not finish, so the answer will be generic"
        elif not plan:
            reason = f"a {triage.get('reply')} message needs a short reply"
        else:
            reason = f"data is {triage.get('data_sufficiency', 'unknown')}"
        route = " -> ".join((*plan, REQUIRED_STEP))
        await self.think(f"{reason.capitalize()}: {route}", progress=20)

        def step_inputs() -> dict[str, Any]:
            return {
                "request": request,
                "triage": triage,
                "steps": dict(steps),
                "failed": dict(failed),
            }

        for index, name in enumerate(plan):
            pipeline.append(name)
            try:
                steps[name] = await self.run_agent(name, step_inputs())
            except AgentError as exc:
                failed[name] = f"{exc.status}: {exc.message}"
                await self.think(
                    f"{name} {exc.status}; going on without it",
                    progress=20 + 70 * (index + 1) / (len(plan) + 1),
                )
        await self.think("Writing the answer", progress=90)
        pipeline.append(REQUIRED_STEP)
        report = await self.run_agent(REQUIRED_STEP, step_inputs())
        reasons = [f"{step} {reason}" for step, reason in failed.items()]
        reasons += [str(r) for r in report.get("degraded_reasons") or () if r not in reasons]
        return {
            "answer": report["markdown"],
            "pipeline": pipeline,
            "triage": triage,
            "reply": (triage or {}).get("reply", "answer"),
            "language": report.get("language", "en"),
            "degraded": bool(failed) or bool(reasons),
            "degraded_reasons": reasons,
            "failed_steps": list(failed),
            "memory": build_memory(triage, steps),
        }
