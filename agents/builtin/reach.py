"""Do the recommendations reach the user's cost target, and does the spend fit the volumes?

Savings of separate recommendations do not add up: caching and trimming priced
on the current model are worth less after a switch to a cheaper model, and two
switches exclude each other. :func:`plans` prices each combination the
recommendations allow (no switch, or one of the switches, each with the
trimming and caching that were recommended, on the model switched to) as a
share of today's cost at list prices; :func:`target_check` picks the smallest
change that reaches the target (no switch, then a switch in the same tier,
then one tier down), or else the one that saves most, and says what more it
would take (moving a share of requests to a cheaper model, the batch API,
fewer tokens). The text helpers write both checks for the answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

from .catalogue import Catalogue, ModelEntry
from .data import fmt_money, fmt_usd

#: ``measure`` of a recommendation that the plans combine with a switch.
TRIM, CACHE = "trim", "cache"
_MILLION = Decimal(1_000_000)
_WORDS = {TRIM: "trimming prompts", CACHE: "caching the repeated prefix"}
_SHORT = {TRIM: "trimming", CACHE: "caching"}


def _d(value: float) -> Decimal:
    return Decimal(repr(value))


@attrs.frozen
class Plan:
    """One combination of the recommendations and what it costs (share of today's cost)."""

    model: str
    switch: str | None
    tier_change: int
    measures: tuple[str, ...]
    cost_share: Decimal

    @property
    def saving_pct(self) -> float:
        return float(round((1 - self.cost_share) * 100, 2))


def cost_of(
    entry: ModelEntry, tokens_in: float, tokens_out: float, trim: Decimal, cache: Decimal
) -> Decimal:
    """USD a month on ``entry`` at list prices, with ``trim`` of the input removed and
    ``cache`` of the rest served from the prompt cache (where the model has a cache price)."""
    kept = _d(tokens_in) * (1 - trim)
    price_in = _d(entry.input_per_million)
    cached = entry.cached_input_per_million
    if cached is not None and cached < entry.input_per_million and cache:
        price_in = (1 - cache) * price_in + cache * _d(cached)
    return (kept * price_in + _d(tokens_out) * _d(entry.output_per_million)) / _MILLION


def plans(
    entry: ModelEntry,
    volume: tuple[float, float],
    recommendations: Sequence[Mapping[str, Any]],
    catalogue: Catalogue,
    *,
    trim: Decimal,
    cache: Decimal,
) -> list[Plan]:
    """Every plan the recommendations allow, in the order of how much they change."""
    measures = tuple(
        m for m in (TRIM, CACHE) if any(r.get("measure") == m for r in recommendations)
    )
    shares = (trim if TRIM in measures else Decimal(0), cache if CACHE in measures else Decimal(0))
    base = cost_of(entry, *volume, Decimal(0), Decimal(0))
    if not base:
        return []
    out = [Plan(entry.id, None, 0, measures, cost_of(entry, *volume, *shares) / base)]
    for rec in recommendations:
        target = catalogue.find(str(rec.get("to_model") or ""))
        if target is None or not isinstance(rec.get("estimated_monthly_savings_usd"), int | float):
            continue
        if rec["estimated_monthly_savings_usd"] <= 0 or target.id == entry.id:
            continue
        tier = int(rec.get("tier_change") or 0)
        out.append(
            Plan(target.id, target.id, tier, measures, cost_of(target, *volume, *shares) / base)
        )
    return sorted(out, key=lambda p: (p.switch is not None, p.tier_change, p.cost_share))


def _base(delta: Mapping[str, Any]) -> tuple[Decimal, str] | None:
    """The amount a cost target is measured from (the reported spend, else the cost)."""
    current = delta.get("current_monthly_cost")
    if isinstance(current, Mapping) and isinstance(current.get("amount"), int | float):
        return _d(current["amount"]), str(current.get("currency", "USD"))
    if isinstance(delta.get("current_monthly_cost_usd"), int | float):
        return _d(delta["current_monthly_cost_usd"]), "USD"
    return None


def _target_amount(delta: Mapping[str, Any]) -> dict[str, Any] | None:
    target = delta.get("target_monthly_cost")
    if isinstance(target, Mapping) and isinstance(target.get("amount"), int | float):
        return {"amount": float(target["amount"]), "currency": str(target.get("currency", "USD"))}
    if isinstance(delta.get("target_monthly_cost_usd"), int | float):
        return {"amount": float(delta["target_monthly_cost_usd"]), "currency": "USD"}
    return None


def _needed_pct(delta: Mapping[str, Any], base: Decimal) -> Decimal | None:
    if isinstance(delta.get("reduction_pct"), int | float):
        return _d(delta["reduction_pct"])
    needed = delta.get("savings_needed")
    amount = needed.get("amount") if isinstance(needed, Mapping) else None
    if amount is None:
        amount = delta.get("savings_needed_usd")
    if not isinstance(amount, int | float) or not base:
        return None
    return _d(amount) / base * 100


def _money(amount: Decimal, currency: str) -> dict[str, Any]:
    return {"amount": float(round(amount, 2)), "currency": currency}


def target_check(
    delta: Mapping[str, Any],
    options: Sequence[Plan],
    entry: ModelEntry,
    volume: tuple[float, float],
    catalogue: Catalogue,
    *,
    trim: Decimal,
    cache: Decimal,
) -> dict[str, Any] | None:
    """Whether the plans reach the cost target ``delta`` (a ``target_deltas`` entry)."""
    found = _base(delta)
    if found is None or not options:
        return None
    base, currency = found
    needed = _needed_pct(delta, base)
    if needed is None:
        return None
    goal_share = 1 - needed / 100
    if needed <= 0:
        # Already at or under the target: nothing to reach.
        return {
            "needed_pct": 0.0,
            "relative": False,
            "base": _money(base, currency),
            "reached": True,
            "already": True,
            "target": _target_amount(delta) or _money(base, currency),
        }
    reaching = [p for p in options if p.cost_share <= goal_share]
    chosen = reaching[0] if reaching else min(options, key=lambda p: p.cost_share)
    out: dict[str, Any] = {
        "needed_pct": float(round(needed, 2)),
        "relative": isinstance(delta.get("reduction_pct"), int | float),
        "base": _money(base, currency),
        "reached": bool(reaching),
        "plan": _plan_dict(chosen, base, currency),
    }
    if not out["relative"]:
        out["target"] = _target_amount(delta) or _money(base * goal_share, currency)
    alone = options[0]
    if chosen is not alone and alone.measures:
        out["without_switch"] = _plan_dict(alone, base, currency)
    if reaching and chosen.tier_change > 0:
        # A smaller model reaches the target: moving only part of the requests to it, the
        # rest staying on today's model (with the same trimming and caching), may do.
        before = alone
        if before.cost_share > chosen.cost_share:
            moved = (before.cost_share - goal_share) / (before.cost_share - chosen.cost_share)
            if 0 < moved < 1:
                out["partial"] = {
                    "share_pct": float(round(moved * 100, 1)),
                    "model": chosen.model,
                    "rest": before.model,
                    "measures": list(before.measures),
                }
    if not reaching:
        out["short"] = _money((chosen.cost_share - goal_share) * base, currency)
        out["short_pct"] = float(round((chosen.cost_share - goal_share) * 100, 2))
        out["more"] = _more(chosen, goal_share, entry, volume, catalogue, trim=trim, cache=cache)
    return out


def _plan_dict(plan: Plan, base: Decimal, currency: str) -> dict[str, Any]:
    return {
        "switch": plan.switch,
        "model": plan.model,
        "tier_change": plan.tier_change,
        "measures": list(plan.measures),
        "saving_pct": plan.saving_pct,
        "saving": _money((1 - plan.cost_share) * base, currency),
    }


def _more(
    plan: Plan,
    goal_share: Decimal,
    entry: ModelEntry,
    volume: tuple[float, float],
    catalogue: Catalogue,
    *,
    trim: Decimal,
    cache: Decimal,
) -> list[dict[str, Any]]:
    """What else would close the gap: routing requests to a cheaper model, batching."""
    out: list[dict[str, Any]] = []
    base = cost_of(entry, *volume, Decimal(0), Decimal(0))
    shares = (
        trim if TRIM in plan.measures else Decimal(0),
        cache if CACHE in plan.measures else Decimal(0),
    )
    now = catalogue.find(plan.model) or entry
    cheaper = [
        (cost_of(m, *volume, *shares) / base, m)
        for m in catalogue.models
        if m.id != now.id and now.tier_rank <= m.tier_rank <= now.tier_rank + 1
    ]
    cheaper = [(share, m) for share, m in cheaper if share < plan.cost_share]
    if cheaper:
        share, model = min(cheaper, key=lambda c: (c[0], c[1].id))
        if share <= goal_share:
            moved = (plan.cost_share - goal_share) / (plan.cost_share - share)
            out.append(
                {
                    "kind": "route",
                    "model": model.id,
                    "share_pct": float(round(moved * 100, 1)),
                }
            )
        else:
            out.append(
                {
                    "kind": "route_all",
                    "model": model.id,
                    "saving_pct": float(round((1 - share) * 100, 1)),
                }
            )
    found = catalogue.batch_discounts.get(now.provider)
    if found is not None:
        discount = _d(found[0])
        batched = (1 - goal_share / plan.cost_share) / discount
        if batched <= 1:
            out.append(
                {
                    "kind": "batch",
                    "provider": catalogue.provider_name(now.provider),
                    "discount_pct": float(discount * 100),
                    "share_pct": float(round(batched * 100, 1)),
                }
            )
    # Fewer tokens (input and output alike) on the plan's model.
    out.append(
        {
            "kind": "fewer_tokens",
            "cut_pct": float(round((1 - goal_share / plan.cost_share) * 100, 1)),
        }
    )
    return out


# -- text -----------------------------------------------------------------------------


def fmt_about(amount: float, currency: str) -> str:
    """An estimate to three significant figures: ``$13,100``, ``$967``, ``$2.70``."""
    if abs(amount) >= 100:
        return fmt_money(float(f"{amount:.3g}"), currency).removesuffix(".00")
    return fmt_money(amount, currency)


def _pct(value: float, near: float | None = None) -> str:
    """``37%``; with one decimal when it is within a point of ``near`` (the target)."""
    if near is not None and abs(value - near) < 1 and round(value) == round(near):
        return f"{value:.1f}%"
    return f"{value:.0f}%"


def _share(value: float) -> str:
    """``32`` for 31.9; ``0.4`` under one (never "about 0")."""
    return f"{value:.0f}" if value >= 1 else f"{value:.1g}"


def _ratio(ratio: float, reported: str) -> str:
    """How the computed cost compares with the reported amount, in words."""
    shown = float(f"{(ratio if ratio > 1 else 1 / ratio):.2g}")
    text = f"{shown:,.0f}" if shown >= 10 else f"{shown:g}"
    if ratio > 1 and shown >= 10:
        return f"about 1/{text} of the {reported} you reported"
    if ratio > 1:
        return f"while you reported {reported}, about {text} times as much"
    return f"about {text} times the {reported} you reported"


def spend_check_line(check: Mapping[str, Any], model: str | None) -> str:
    """The warning, near the top of the answer, that the spend and the volumes disagree."""
    cost = float(check["computed_monthly_cost_usd"])
    spend = check["reported_monthly_spend"]
    shown = fmt_money(float(spend["amount"]), str(spend.get("currency", "USD")))
    whose = "your" if check.get("cost_basis") == "your prices" else "list"
    on = f"`{model}` " if model else ""
    ratio = float(check["spend_to_cost"])
    per = check.get("reported_cost_per_request_usd")
    if isinstance(per, int | float):
        requests = float(check.get("monthly_requests") or 0)
        head = (
            f"> **Check:** your tokens at {whose} prices come to "
            f"{fmt_usd(float(check['computed_cost_per_request_usd']))} a request "
            f"({fmt_usd(cost)} a month for {requests:,.0f} requests), "
            + _ratio(ratio, f"{fmt_usd(float(per))} a request ({shown} a month)")
        )
    else:
        head = (
            f"> **Check:** your tokens at {whose} prices come to {fmt_usd(cost)} a month, "
            f"{_ratio(ratio, shown)}"
        )
    if check.get("larger") == "spend":
        volumes = (
            "the volumes are per day or per request, or larger than you wrote"
            if check.get("volumes_per_month")
            else "the volumes (requests or tokens) are larger than you wrote"
        )
        why = f"either {volumes}, or the spend covers more than this {on}traffic"
        if isinstance(check.get("if_per_day_usd"), int | float):
            why += (
                f" (if those volumes are per day, they come to "
                f"{fmt_usd(float(check['if_per_day_usd']))} a month)"
            )
    else:
        volumes = (
            "the volumes are smaller than you wrote (per month, not per day?)"
            if check.get("volumes_per_month")
            else "the volumes (requests or tokens) are smaller than you wrote"
        )
        why = (
            f"either {volumes}, or you pay less than list prices (discounts, cached input, "
            "batches), or the spend covers only part of this traffic"
        )
    tail = (
        "The savings below are also given as percentages and as a share of your spend, "
        f"which carry over to your real bill if it is all {on}traffic with this mix of input "
        "and output."
    )
    return f"{head}: {why}. {tail}"


def _plan_words(plan: Mapping[str, Any], current: str | None) -> str:
    measures = " and ".join(_WORDS[m] for m in plan.get("measures") or () if m in _WORDS)
    switch = plan.get("switch")
    if switch is None:
        on = f" on {current}" if current else ""
        return f"{measures[:1].upper()}{measures[1:]}{on}" if measures else "No change"
    tier = {0: "same tier", 1: "one tier smaller", 2: "two tiers smaller"}.get(
        int(plan.get("tier_change") or 0), ""
    )
    words = f"Switching to {switch}" + (f" ({tier})" if tier else "")
    if measures:
        words += f", with {measures} on it,"
    return words


def target_lines(check: Mapping[str, Any], current: str | None) -> list[str]:
    """ "Together these save about X%: short of / enough for the Y% you want", and what more."""
    needed = float(check["needed_pct"])
    base = check["base"]
    of = fmt_money(float(base["amount"]), str(base["currency"]))
    if check.get("already"):
        aim = check.get("target") or base
        return [
            f"- At {of} a month you are already under the "
            f"{fmt_money(float(aim['amount']), str(aim.get('currency', 'USD')))} a month you aim "
            "for; the options above are savings on top."
        ]
    goal = check.get("target")
    if isinstance(goal, Mapping) and isinstance(goal.get("amount"), int | float):
        aim = fmt_money(float(goal["amount"]), str(goal.get("currency", "USD")))
        want = f"the {_pct(needed)} cut that {aim} a month needs"
    else:
        want = f"the {_pct(needed)} you want"
    lines = []
    alone = check.get("without_switch")
    if alone is not None:
        lines.append(
            f"- {_plan_words(alone, current)} alone "
            f"{'save' if len(alone.get('measures') or ()) > 1 else 'saves'} about "
            f"{_pct(float(alone['saving_pct']), needed)}: short of {want}."
        )
    plan = check["plan"]
    saving = plan["saving"]
    verb = "saves" if plan.get("switch") or len(plan.get("measures") or ()) == 1 else "save"
    amount = fmt_about(float(saving["amount"]), str(saving["currency"]))
    head = (
        f"- {_plan_words(plan, current)} {verb} about "
        f"{_pct(float(plan['saving_pct']), needed)} (about {amount} of {of} a month)"
    )
    if check.get("reached"):
        quality = ", if its quality holds on your evaluation set" if plan.get("switch") else ""
        lines.append(f"{head}: enough for {want}{quality}.")
        partial = check.get("partial")
        if isinstance(partial, Mapping):
            lines.append(
                f"- Moving only about {_share(float(partial['share_pct']))}% of requests (the "
                f"simple ones) to {partial['model']}, and keeping the rest on "
                f"{partial['rest']}, would already be enough"
                + (
                    f" (with the same {' and '.join(_SHORT[m] for m in partial['measures'])})"
                    if partial.get("measures")
                    else ""
                )
                + "."
            )
    else:
        short = check["short"]
        lines.append(
            f"{head}: short of {want} by about {_share(float(check['short_pct']))} percentage "
            f"points ({fmt_about(float(short['amount']), str(short['currency']))} a month)."
        )
        more = [m for m in check.get("more") or () if isinstance(m, Mapping)]
        for item in more:
            if item.get("kind") == "route_all":
                lines.append(
                    f"- A cheaper model alone cannot get there: even all requests on "
                    f"{item['model']} would save about {float(item['saving_pct']):.0f}%."
                )
        options = [_more_words(m) for m in more if m.get("kind") != "route_all"]
        options = [o for o in options if o]
        if options:
            lines.append("- To get there you would also need " + "; or ".join(options) + ".")
    lines.append(
        "- These savings are not added one by one: caching and trimming are counted once, on "
        "the model you end up on, and the model switches exclude each other."
    )
    return lines


def _more_words(more: Mapping[str, Any]) -> str:
    kind = more.get("kind")
    if kind == "route":
        return (
            f"to move about {more['share_pct']:g}% of requests (the simple ones) to "
            f"{more['model']} as well, if it handles them well"
        )
    if kind == "batch":
        return (
            f"to send about {more['share_pct']:g}% of the traffic that is left through "
            f"{more['provider']}'s batch API ({more['discount_pct']:g}% off, results within "
            "24 hours)"
        )
    if kind == "fewer_tokens":
        return (
            f"about {more['cut_pct']:.0f}% fewer tokens on top (shorter prompts and outputs, a "
            "max_tokens cap, fewer calls per task)"
        )
    return ""
