"""Spend checks, cost targets and provider names (issue 15, third round).

- A reported spend (or cost per request) that disagrees with the cost of the
  stated volumes by more than 2x is found, and said at the top of the answer.
- Whether the recommendations together reach a cost target: overlapping
  options are not added (caching and trimming count once, on the model
  switched to; switches exclude each other), and a target out of reach says
  by how much and what else would close the gap.
- Provider names are written as the catalogue spells them (OpenAI, xAI), never
  as a capitalised id.
- The triage readings these answers rest on: a population times what each
  member does, a budget beside a spend, an average rate after a peak.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.builtin.advice import batching
from agents.builtin.catalogue import load_catalogue, parse_catalogue
from agents.builtin.data import Amount, spend_check
from agents.builtin.reach import Plan, cost_of, plans, target_check
from agents.builtin.triage import extract_entities
from agents.builtin.triage._history import _reperiod_of
from benchmarks.answers import run_request
from server.protocol import ConfigurationError

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
TRIM, CACHE = Decimal("0.2"), Decimal("0.3")
MONTHLY = {"token_volumes": [{"tokens": 3e6, "kind": "input", "period": "month"}]}


def _usd(amount: float) -> Amount:
    return Amount(amount, "USD", amount)


# -- the spend check ---------------------------------------------------------------------


def test_a_spend_1100_times_the_cost_of_the_volumes_is_found() -> None:
    check = spend_check(13.5, "list prices", _usd(15_000.0), MONTHLY)

    assert check is not None
    assert check["larger"] == "spend"
    assert check["spend_to_cost"] == pytest.approx(1111.11, rel=1e-4)
    assert "if_per_day_usd" not in check  # x30 would still be 37x short: not offered


def test_a_spend_near_30_times_the_monthly_cost_suggests_the_volumes_are_per_day() -> None:
    check = spend_check(90.0, "list prices", _usd(4_000.0), MONTHLY)

    assert check is not None
    assert check["if_per_day_usd"] == 2_700.0


def test_a_cost_above_the_spend_is_found_too_and_volumes_per_day_get_no_per_day_hint() -> None:
    per_day = {"token_volumes": [{"tokens": 2e6, "kind": "total", "period": "day"}]}
    check = spend_check(2_250.0, "list prices", _usd(800.0), per_day)

    assert check is not None
    assert check["larger"] == "cost"
    assert check["volumes_per_month"] is False


def test_the_spend_itself_is_never_checked_against_itself() -> None:
    assert spend_check(15_000.0, "reported spend", _usd(15_000.0), {}) is None


def test_a_cost_per_request_is_checked_as_a_monthly_spend_when_no_spend_is_given() -> None:
    check = spend_check(800.0, "list prices", None, {}, requests=100_000, per_request=0.5)

    assert check is not None
    assert check["reported_monthly_spend_usd"] == 50_000.0
    assert check["computed_cost_per_request_usd"] == pytest.approx(0.008)


@settings(max_examples=200, deadline=None)
@given(
    cost=st.floats(min_value=0.01, max_value=1e7),
    spend=st.floats(min_value=0.01, max_value=1e7),
)
def test_the_check_fires_exactly_when_spend_and_cost_differ_by_more_than_2x(
    cost: float, spend: float
) -> None:
    check = spend_check(cost, "list prices", _usd(spend), MONTHLY)
    ratio = Decimal(repr(spend)) / Decimal(repr(cost))

    assert (check is None) == (Decimal("0.5") <= ratio <= 2)


# -- reaching a cost target --------------------------------------------------------------


def _lead_plans() -> list[Plan]:
    catalogue = load_catalogue()
    entry = catalogue.find("gpt-4o")
    assert entry is not None
    recs = [
        {"to_model": "gpt-4.1", "estimated_monthly_savings_usd": 2.7, "tier_change": 0},
        {"to_model": "gpt-4.1-mini", "estimated_monthly_savings_usd": 11.34, "tier_change": 1},
        {"measure": "cache", "estimated_monthly_savings_usd": 1.125},
        {"measure": "trim", "estimated_monthly_savings_usd": 1.5},
    ]
    return plans(entry, (3e6, 6e5), recs, catalogue, trim=TRIM, cache=CACHE)


def test_trimming_and_caching_count_once_on_the_model_switched_to() -> None:
    options = _lead_plans()

    # 13.50 today; trim 20% and cache 30% of the rest: 7.50 -> 6.00 -> 5.10 input + 6.00 output
    assert [(p.switch, p.saving_pct) for p in options] == [
        (None, 17.78),
        ("gpt-4.1", 36.89),  # 4.80 input less 25% of it cached at 75% off, + 4.80 output
        ("gpt-4.1-mini", 87.38),
    ]
    # Not the sum of the separate savings (2.70 + 1.125 + 1.50 = 5.325, 39%).
    assert options[1].saving_pct < (2.7 + 1.125 + 1.5) / 13.5 * 100


def test_the_smallest_change_that_reaches_the_target_is_chosen() -> None:
    catalogue = load_catalogue()
    entry = catalogue.find("gpt-4o")
    assert entry is not None
    delta = {"reduction_pct": 40.0, "current_monthly_cost_usd": 15_000.0}

    check = target_check(delta, _lead_plans(), entry, (3e6, 6e5), catalogue, trim=TRIM, cache=CACHE)

    assert check is not None
    assert check["reached"]
    assert check["plan"]["switch"] == "gpt-4.1-mini"
    assert check["plan"]["saving"] == {"amount": 13_106.67, "currency": "USD"}
    assert check["without_switch"]["saving_pct"] == 17.78
    # gpt-4o with trimming and caching costs 82.2% of today; the target 60%; gpt-4.1-mini
    # 12.6%: (82.2 - 60) / (82.2 - 12.6) = 31.9% of requests moved, the rest on gpt-4o.
    assert check["partial"] == {
        "share_pct": 31.9,
        "model": "gpt-4.1-mini",
        "rest": "gpt-4o",
        "measures": ["trim", "cache"],
    }


def test_a_target_out_of_reach_says_by_how_much_and_what_else_would_close_it() -> None:
    catalogue = load_catalogue()
    entry = catalogue.find("gpt-4o-mini")
    assert entry is not None
    volume = (4e10, 6e9)
    recs = [
        {"to_model": "gpt-4.1-nano", "estimated_monthly_savings_usd": 3200.0, "tier_change": 0},
        {"measure": "cache", "estimated_monthly_savings_usd": 900.0},
        {"measure": "trim", "estimated_monthly_savings_usd": 1200.0},
    ]
    options = plans(entry, volume, recs, catalogue, trim=TRIM, cache=CACHE)
    delta = {"reduction_pct": 80.0, "current_monthly_cost_usd": 10_000.0}

    check = target_check(delta, options, entry, volume, catalogue, trim=TRIM, cache=CACHE)

    assert check is not None
    assert not check["reached"]
    assert check["plan"]["saving_pct"] == 49.17
    assert check["short_pct"] == pytest.approx(30.83, abs=0.01)
    more = {m["kind"]: m for m in check["more"]}
    assert more["route_all"]["model"] == "gemini-1.5-flash"
    # 50.8% of today's cost must fall to 20%: 60.7% fewer tokens.
    assert more["fewer_tokens"]["cut_pct"] == pytest.approx(60.7, abs=0.05)


def test_a_target_already_met_is_said_to_be_met() -> None:
    catalogue = load_catalogue()
    entry = catalogue.find("gpt-4.1")
    assert entry is not None
    delta = {
        "current_monthly_cost_usd": 2304.0,
        "target_monthly_cost_usd": 3000.0,
        "savings_needed_usd": 0.0,
    }
    options = plans(entry, (8.64e8, 7.2e7), [], catalogue, trim=TRIM, cache=CACHE)

    check = target_check(delta, options, entry, (8.64e8, 7.2e7), catalogue, trim=TRIM, cache=CACHE)

    assert check is not None
    assert check["already"]
    assert check["target"] == {"amount": 3000.0, "currency": "USD"}


_MODELS = [m.id for m in load_catalogue().models]


@settings(max_examples=150, deadline=None)
@given(
    model=st.sampled_from(_MODELS),
    tokens_in=st.floats(min_value=1e3, max_value=1e11),
    tokens_out=st.floats(min_value=1e3, max_value=1e11),
    needed=st.floats(min_value=0.5, max_value=99.0),
)
def test_a_target_is_reached_exactly_when_some_plan_costs_no_more_than_it_allows(
    model: str, tokens_in: float, tokens_out: float, needed: float
) -> None:
    catalogue = load_catalogue()
    entry = catalogue.find(model)
    assert entry is not None
    recs: list[dict[str, Any]] = [{"measure": "trim"}, {"measure": "cache"}]
    for other in catalogue.models:
        if other.tier_rank in (entry.tier_rank, entry.tier_rank + 1) and other.id != entry.id:
            saving = cost_of(entry, tokens_in, tokens_out, Decimal(0), Decimal(0)) - cost_of(
                other, tokens_in, tokens_out, Decimal(0), Decimal(0)
            )
            recs.append(
                {
                    "to_model": other.id,
                    "estimated_monthly_savings_usd": float(saving),
                    "tier_change": other.tier_rank - entry.tier_rank,
                }
            )
    volume = (tokens_in, tokens_out)
    options = plans(entry, volume, recs, catalogue, trim=TRIM, cache=CACHE)
    delta = {"reduction_pct": needed, "current_monthly_cost_usd": 1000.0}

    check = target_check(delta, options, entry, volume, catalogue, trim=TRIM, cache=CACHE)

    assert check is not None
    goal = 1 - Decimal(repr(needed)) / 100
    assert check["reached"] == any(p.cost_share <= goal for p in options)
    for plan in options:
        # Trimming and caching never save more than their separate savings added up.
        on = catalogue.find(plan.model) or entry
        none = Decimal(0)
        trimmed = cost_of(on, *volume, TRIM, none)
        cached = cost_of(on, *volume, none, CACHE)
        full = cost_of(on, *volume, none, none)
        combined = cost_of(on, *volume, TRIM, CACHE)
        assert full - combined <= (full - trimmed) + (full - cached) + Decimal("1e-9")
        assert 0 < plan.cost_share <= 1


# -- provider names ----------------------------------------------------------------------


def test_every_provider_of_the_catalogue_has_its_name_as_written() -> None:
    catalogue = load_catalogue()

    assert {m.provider for m in catalogue.models} <= set(catalogue.provider_names)
    assert catalogue.provider_name("openai") == "OpenAI"
    assert catalogue.provider_name("xai") == "xAI"
    assert catalogue.provider_name("deepseek") == "DeepSeek"
    assert catalogue.provider_name("someone-new") == "someone-new"  # never .capitalize()d


def test_a_catalogue_with_a_provider_without_a_name_is_a_configuration_error() -> None:
    raw = json.loads((ROOT / "agents/builtin/data/catalogue.json").read_text("utf-8"))
    del raw["providers"]["openai"]

    with pytest.raises(ConfigurationError, match="providers without a name: openai"):
        parse_catalogue(raw)


@pytest.mark.parametrize(
    ("model", "name"), [("gpt-4o", "OpenAI"), ("claude-3-5-haiku", "Anthropic")]
)
def test_the_batch_advice_names_the_provider_as_it_is_written(model: str, name: str) -> None:
    catalogue = load_catalogue()
    entry = catalogue.find(model)

    [rec] = batching({"monthly_cost_usd": 700.0}, entry, catalogue)

    assert rec["detail"].startswith(f"{name}'s batch API bills 50% below list prices")


def test_no_built_in_agent_capitalises_a_provider_id() -> None:
    sources = (ROOT / "agents/builtin").rglob("*.py")
    found = [
        f"{path.name}: {m.group(0)}"
        for path in sources
        for m in re.finditer(r"provider\w*\)?\.(?:capitalize|title)\(\)", path.read_text("utf-8"))
    ]

    assert found == []


# -- the readings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "requests", "period"),
    [
        ("2,000 users, each sending ~30 messages a day", 60_000, "day"),
        ("Each of our 120 analysts runs about 40 queries a day", 4_800, "day"),
        ("50 customers, each running about 400 document summaries a month", 20_000, "month"),
        ("We have 2k seats, each making 15 calls per day", 30_000, "day"),
        # No "each": the users are not multiplied.
        ("We have 2,000 users and handle 30 requests a day", 30, "day"),
    ],
)
def test_a_population_times_what_each_member_does_is_the_request_volume(
    text: str, requests: float, period: str
) -> None:
    [volume] = extract_entities(text)["request_volumes"]

    assert (volume["requests"], volume["period"]) == (requests, period)


def test_a_budget_beside_a_spend_or_volumes_is_the_target_and_alone_it_stays_an_amount() -> None:
    both = extract_entities("We spend $4,000 a month on gpt-4o. Budget is $2,500 a month.")
    volumes = extract_entities("Budget: $800/month. Current: 2k requests/day, each 3k in / 1k out.")
    alone = extract_entities("Our budget is $2,500 a month for gpt-4o.")

    assert [m["amount"] for m in both["money"]] == [4000.0]
    assert [(t["metric"], t["value"]) for t in both["targets"]] == [("cost", 2500.0)]
    assert volumes["money"] == []
    assert [(t["metric"], t["value"]) for t in volumes["targets"]] == [("cost", 800.0)]
    assert [m["amount"] for m in alone["money"]] == [2500.0]
    assert alone["targets"] == []


def test_calls_per_item_multiply_the_items_and_a_large_count_before_input_is_tokens() -> None:
    turns = extract_entities("500k conversations a month, ~6 turns each, ~900 tokens per turn")
    sides = extract_entities("claude-3-7-sonnet, 120M input + 30M output a month")
    small = extract_entities("We have 5 input fields and 2 output formats")

    [volume] = turns["request_volumes"]
    assert (volume["requests"], volume["each"], volume["unit"]) == (3e6, 6, "turns")
    assert [(v["tokens"], v["kind"], v["period"]) for v in sides["token_volumes"]] == [
        (1.2e8, "input", "month"),
        (3e7, "output", "month"),
    ]
    assert small["token_volumes"] == []


def test_an_average_rate_after_a_peak_is_read_and_answer_sizes_are_output() -> None:
    entities = extract_entities(
        "We peak at 50 requests per second but average 12, with ~500-token answers per query."
    )
    metrics = {m["name"]: m["value"] for m in entities["metrics"]}

    assert metrics["peak_throughput"] == 50
    assert metrics["throughput"] == 12
    assert metrics["output_tokens_per_request"] == 500


def test_a_period_written_with_a_pair_wins_over_nightly_before_it() -> None:
    entities = extract_entities("Nightly jobs: 200M input and 20M output tokens a month.")

    assert [v["period"] for v in entities["token_volumes"]] == ["month", "month"]


async def test_the_check_comes_before_what_the_user_said_and_the_target_after_the_advice() -> None:
    request = (
        "We run gpt-4o at 3M input and 600k output tokens a month and spend about "
        "$15k/month. How do we cut that by 40%?"
    )
    with trio.fail_after(20):
        results = await run_request(request)
    answer = results["supervisor"]["answer"]

    check = answer.index("> **Check:** your tokens at list prices come to $13.50 a month")
    assert check < answer.index("### What you told us")
    assert answer.index("### Recommendations") < answer.index("### Against your target")
    assert "about $3,000 a month of your reported spend" in answer


@pytest.mark.parametrize(
    ("text", "period"),
    [
        ("Sorry, those volumes are per day.", "day"),
        ("I meant per hour, not per month.", "hour"),
        ("That's per week, actually", "week"),
        ("The token counts are actually per day", "day"),
        ("Would it be cheaper per day on gpt-4.1-mini?", None),
        ("We want a report per day", None),
    ],
)
def test_a_follow_up_that_corrects_the_period_of_the_earlier_volumes_is_read(
    text: str, period: str | None
) -> None:
    assert _reperiod_of(text) == period
