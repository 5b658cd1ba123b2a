"""Actions: ordered steps from the recommendations.

Cheap, reversible changes come first (caching, trimming, streaming, output
caps), then model switches, which need an evaluation and a staged rollout,
then monitoring to confirm the effect. Without recommendations (the
optimization step failed or had nothing) the plan starts from measuring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._base import BaseAgent
from .data import fmt_usd


def _savings(rec: Mapping[str, Any]) -> str:
    amount = rec.get("estimated_monthly_savings_usd")
    if isinstance(amount, int | float) and amount > 0:
        pct = rec.get("savings_pct")
        share = f", {pct:.0f}%" if isinstance(pct, int | float) and pct >= 0.5 else ""
        return f" (about {fmt_usd(amount)} a month{share})"
    return ""


def _steps_for(rec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The steps of one recommendation, each with a rank (quick wins first)."""
    title = str(rec.get("title", ""))
    if rec.get("kind") == "finding":
        return []  # what the figures say, not something to do
    if rec.get("to_model"):
        old, new = rec.get("from_model"), rec["to_model"]
        return [
            {
                "action": f"Run {new} and {old} side by side on an evaluation set of 100-200 "
                "real requests; compare quality, cost per request and p95 latency",
                "owner": "ML engineer",
                "effort": "medium",
                "rank": 2,
            },
            {
                "action": f"Route 10% of traffic to {new} behind a flag for a week and compare "
                "live metrics with the evaluation",
                "owner": "backend engineer",
                "effort": "medium",
                "rank": 2,
            },
            {
                "action": f"Switch to {new} if quality holds{_savings(rec)}; keep {old} as "
                "fallback for hard requests",
                "owner": "backend engineer",
                "effort": "low",
                "rank": 2,
            },
        ]
    return [
        {
            "action": f"{title}{_savings(rec)}",
            "owner": "platform engineer" if "metric" in title.lower() else "backend engineer",
            "effort": "low",
            "rank": 1,
        }
    ]


#: The last step, by what the request is about: confirm each change with a metric.
TRACK: Mapping[str, dict[str, str]] = {
    "cost": {
        "action": "Track cost per request and p95 latency per model on a dashboard and "
        "alert on regressions, to confirm each change",
        "owner": "platform engineer",
        "effort": "low",
    },
    "reliability": {
        "action": "Track failed requests by status code, provider and model, and retries, on "
        "a dashboard; alert when the error rate rises, to confirm each change",
        "owner": "platform engineer",
        "effort": "low",
    },
    "self_hosting": {
        "action": "Track GPU utilisation, requests per GPU-hour and cost per request on a "
        "dashboard, to confirm each change",
        "owner": "platform engineer",
        "effort": "low",
    },
}


def plan(
    recommendations: Sequence[Mapping[str, Any]], *, have_figures: bool, focus: str = "cost"
) -> list[dict[str, Any]]:
    """Ordered, numbered steps (pure)."""
    steps: list[dict[str, Any]] = []
    if not recommendations:
        steps.append(
            {
                "action": "Measure a baseline: tokens in and out, requests, cost and p50/p95/p99 "
                "latency per model over the last 30 days"
                + (" (the figures above are a start)" if have_figures else ""),
                "owner": "platform engineer",
                "effort": "low",
                "rank": 0,
            }
        )
    seen: set[str] = set()
    for rec in recommendations:
        for step in _steps_for(rec):
            if step["action"] not in seen:
                seen.add(step["action"])
                steps.append(step)
    steps.append({**TRACK.get(focus, TRACK["cost"]), "rank": 3})
    steps.sort(key=lambda s: s["rank"])  # stable: recommendation order within a rank
    return [
        {"order": i, "action": s["action"], "owner": s["owner"], "effort": s["effort"]}
        for i, s in enumerate(steps, 1)
    ]


class ActionsAgent(BaseAgent):
    name = "actions"
    description = "Turns the recommendations into ordered steps with owner and effort."

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        steps_in = inputs.get("steps") or {}
        optimization = steps_in.get("optimization") or {}
        recommendations = [
            r for r in optimization.get("recommendations") or [] if isinstance(r, Mapping)
        ]
        await self.think(
            f"Ordering {len(recommendations)} recommendation(s) into steps", progress=30
        )
        triage = inputs.get("triage") if isinstance(inputs.get("triage"), Mapping) else {}
        category = str((triage or {}).get("category", ""))
        steps = plan(
            recommendations,
            have_figures=bool((steps_in.get("data") or {}).get("figures")),
            focus=category if category in TRACK else "cost",
        )
        await self.think(f"{len(steps)} steps, quick wins first", progress=100)
        return {"steps": steps}
