"""Accuracy of the answers on the labelled evaluation set (issue 15).

    python -m benchmarks.answers [--split dev|holdout|all] [--show-failures]

Runs every request of ``tests/data/answer_cases.json`` through the default
``supervisor`` pipeline in this process (offline model provider, no server),
reads what the answer says from the run's results, and prints the accuracy
per field (the share of the cases labelled with that field that got it
right), per split, and writes ``benchmarks/reports/answers.{json,md}``.
A follow-up case first runs the earlier requests of its thread and hands
their results to the follow-up as ``context.history``.

Where a field's value is read from (the first that exists):

==================  ===========================================================
reply, language     the supervisor's result (``reply``, ``language``); absent:
                    ``answer`` and ``en``
category            the triage result
figures             the data step's ``figures`` (and triage's entities for error
                    rates, the older place)
monthly_cost        ``figures.monthly_cost`` {amount, currency}, else
                    ``figures.monthly_cost_usd``
saving              the optimization recommendation whose ``to_model`` is the
                    labelled model: ``estimated_monthly_savings_usd``
model_costs         ``figures.model_costs`` and the optimization step's ``model_costs``
target              the first ``figures.target_deltas`` entry of the labelled kind
spend_check         ``figures.spend_check`` (the reported spend and the cost of the
                    volumes disagree over 2x): null for none, else which is
                    ``larger`` and ``spend_to_cost``
target_reach        the optimization step's ``target_check``: ``reached``, the
                    chosen plan's ``saving_pct`` and ``switch``
answer_has/lacks    the Markdown answer, lower-cased (``answer_has_cased``: as is)
==================  ===========================================================

Numbers match within 0.5% (or 0.01 absolute).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from agents import RunScope, Turn, UserExecutionContext, execute_run
from agents.builtin import default_runtime

from ._common import add_report_arguments, write_report

CASES_FILE = Path(__file__).parent.parent / "tests" / "data" / "answer_cases.json"
FIELDS = (
    "reply",
    "language",
    "category",
    "figures",
    "monthly_cost",
    "cost_per_request_usd",
    "saving",
    "model_costs",
    "models_priced",
    "target",
    "spend_check",
    "target_reach",
    "answer_text",
)
REL_TOL = 0.005


def load_cases(path: Path = CASES_FILE) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(path.read_text("utf-8"))["cases"]
    return cases


class _Recorder:
    """Keeps each agent's result (the last one of each name) and the final result."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}

    async def emit(
        self, agent_name: str, event_type: str, data: dict[str, Any], *, final: bool = False
    ) -> None:
        if event_type == "agent_completed":
            self.results[agent_name] = data["result"]


async def run_request(
    text: str, history: tuple[Turn, ...] = (), *, run_id: str = "r-eval"
) -> dict[str, dict[str, Any]]:
    """The agents' results of one offline run of ``text`` (by agent name)."""
    recorder = _Recorder()
    context = UserExecutionContext("eval", "t-eval", run_id, "c-eval", text, recorder)
    if history:
        context = UserExecutionContext(
            "eval", "t-eval", run_id, "c-eval", text, recorder, history=history
        )
    runtime = default_runtime()
    with trio.fail_after(30):
        await execute_run(RunScope(context, runtime), "supervisor")
    return recorder.results


async def run_case(case: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Run the case's earlier requests (if any), then the case itself."""
    turns: list[Turn] = []
    for index, earlier in enumerate(case.get("history") or ()):
        results = await run_request(earlier, tuple(turns), run_id=f"r-eval-{index}")
        final = results.get("supervisor") or {}
        turns.append(
            Turn(
                run_id=f"r-eval-{index}",
                request=earlier,
                status="completed",
                answer=final.get("answer"),
                memory=final.get("memory") or {},
            )
        )
    return await run_request(case["request"], tuple(turns))


# -- reading the results --------------------------------------------------------------


def _close(actual: Any, expected: float) -> bool:
    if isinstance(actual, bool) or not isinstance(actual, int | float):
        return False
    return math.isclose(float(actual), expected, rel_tol=REL_TOL, abs_tol=0.01)


def _money(value: Any) -> tuple[float, str] | None:
    if isinstance(value, Mapping) and isinstance(value.get("amount"), int | float):
        return float(value["amount"]), str(value.get("currency", "USD"))
    return None


def _money_ok(actual: tuple[float, str] | None, expected: Sequence[Any]) -> bool:
    return actual is not None and actual[1] == expected[1] and _close(actual[0], expected[0])


def _figures(results: Mapping[str, Any]) -> dict[str, Any]:
    figures = (results.get("data") or {}).get("figures")
    return figures if isinstance(figures, dict) else {}


def _entities(results: Mapping[str, Any]) -> Mapping[str, Any]:
    triage = results.get("triage") or {}
    entities = triage.get("entities") if isinstance(triage, Mapping) else None
    return entities if isinstance(entities, Mapping) else {}


def _figure(results: Mapping[str, Any], name: str) -> Any:
    """The value of figure ``name`` as the answer holds it (None: not there)."""
    figures = _figures(results)
    tokens = figures.get("monthly_tokens") or {}
    gpu = figures.get("gpu") or {}
    reliability = figures.get("reliability") or {}
    log = figures.get("log") or {}
    if name == "input_tokens_month":
        return tokens.get("input")
    if name == "output_tokens_month":
        return tokens.get("output")
    if name == "total_tokens_month":
        return tokens.get("total")
    if name == "requests_month":
        return figures.get("monthly_requests")
    if name == "spend_month":
        spend = _money(figures.get("reported_monthly_spend"))
        if spend is None and isinstance(figures.get("reported_monthly_spend_usd"), int | float):
            spend = (float(figures["reported_monthly_spend_usd"]), "USD")
        return spend
    if name == "gpus":
        return gpu.get("count")
    if name == "gpu_utilisation_pct":
        return gpu.get("utilisation_pct")
    if name == "gpu_hour":
        return _money(gpu.get("hourly"))
    if name == "status_codes":
        codes = reliability.get("status_codes") or log.get("status_codes") or {}
        return sorted(int(c) for c in codes) if isinstance(codes, Mapping | list) else []
    if name in ("error_rate_pct", "timeout_rate_pct"):
        value = reliability.get(name)
        if value is None:
            metric = "error_rate" if name == "error_rate_pct" else "timeout_rate"
            value = next(
                (
                    m.get("value")
                    for m in _entities(results).get("metrics") or ()
                    if isinstance(m, Mapping) and m.get("name") == metric
                ),
                None,
            )
        return value
    if name == "latency_ms":
        latency = dict(figures.get("latency_ms") or {})
        summary = figures.get("latency_summary_ms") or {}
        for key in ("p50", "p95", "p99"):
            if f"{key}_ms" in summary:
                latency.setdefault(key, summary[f"{key}_ms"])
        return latency
    if name == "log_lines":
        return log.get("lines")
    return figures.get(name)


def _check_figure(results: Mapping[str, Any], name: str, expected: Any) -> bool:
    actual = _figure(results, name)
    if name in ("spend_month", "gpu_hour"):
        return _money_ok(actual, expected)
    if name == "status_codes":
        return bool(actual == sorted(expected))
    if name == "latency_ms":
        if not expected:
            return not {k: v for k, v in (actual or {}).items() if isinstance(v, int | float)}
        return all(_close((actual or {}).get(k), v) for k, v in expected.items())
    return _close(actual, float(expected))


def _monthly_cost(results: Mapping[str, Any]) -> tuple[float, str] | None:
    figures = _figures(results)
    cost = _money(figures.get("monthly_cost"))
    if cost is None and isinstance(figures.get("monthly_cost_usd"), int | float):
        cost = (float(figures["monthly_cost_usd"]), "USD")
    return cost


def _model_costs(results: Mapping[str, Any]) -> dict[str, Any]:
    found = dict(_figures(results).get("model_costs") or {})
    found.update((results.get("optimization") or {}).get("model_costs") or {})
    return found


def _recommendations(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    recs = (results.get("optimization") or {}).get("recommendations") or []
    return [r for r in recs if isinstance(r, Mapping)]


def _target(results: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    deltas = [d for d in _figures(results).get("target_deltas") or [] if isinstance(d, Mapping)]
    if "latency_ms" in expected:
        return any(_close(d.get("target_ms"), expected["latency_ms"]) for d in deltas)
    want = expected["monthly_cost"]
    for d in deltas:
        target = _money(d.get("target_monthly_cost"))
        if target is None and isinstance(d.get("target_monthly_cost_usd"), int | float):
            target = (float(d["target_monthly_cost_usd"]), "USD")
        if _money_ok(target, want):
            return True
    return False


def _spend_check(results: Mapping[str, Any], expected: Mapping[str, Any] | None) -> bool:
    check = _figures(results).get("spend_check")
    if not expected:
        return check is None
    if not isinstance(check, Mapping) or check.get("larger") != expected.get("larger"):
        return False
    ratio = expected.get("spend_to_cost")
    return ratio is None or _close(check.get("spend_to_cost"), float(ratio))


def _target_reach(results: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    check = (results.get("optimization") or {}).get("target_check")
    if not isinstance(check, Mapping) or bool(check.get("reached")) != expected["reached"]:
        return False
    plan = check.get("plan") or {}
    if "saving_pct" in expected and not _close(plan.get("saving_pct"), expected["saving_pct"]):
        return False
    return "switch" not in expected or plan.get("switch") == expected["switch"]


def score_case(case: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, bool]:
    """Per labelled field of ``case``: whether the answer got it right."""
    final = results.get("supervisor") or {}
    triage = results.get("triage") or {}
    out: dict[str, bool] = {}
    out["reply"] = final.get("reply", "answer") == case.get("reply", "answer")
    out["language"] = final.get("language", "en") == case.get("language", "en")
    if "category" in case:
        out["category"] = isinstance(triage, Mapping) and triage.get("category") == case["category"]
    if "figures" in case:
        out["figures"] = all(
            _check_figure(results, name, value) for name, value in case["figures"].items()
        )
    if "monthly_cost" in case:
        out["monthly_cost"] = _money_ok(_monthly_cost(results), case["monthly_cost"])
    if "cost_per_request_usd" in case:
        out["cost_per_request_usd"] = _close(
            _figures(results).get("cost_per_request_usd"), case["cost_per_request_usd"]
        )
    if "saving" in case:
        want = case["saving"]
        out["saving"] = any(
            r.get("to_model") == want["to"]
            and _close(r.get("estimated_monthly_savings_usd"), want["usd"])
            for r in _recommendations(results)
        )
    if "model_costs" in case:
        costs = _model_costs(results)
        out["model_costs"] = all(_close(costs.get(m), v) for m, v in case["model_costs"].items())
    if "models_priced" in case:
        out["models_priced"] = all(m in _model_costs(results) for m in case["models_priced"])
    if "target" in case:
        out["target"] = _target(results, case["target"])
    if "spend_check" in case:
        out["spend_check"] = _spend_check(results, case["spend_check"])
    if "target_reach" in case:
        out["target_reach"] = _target_reach(results, case["target_reach"])
    if "answer_has" in case or "answer_lacks" in case or "answer_has_cased" in case:
        raw = str(final.get("answer", ""))
        answer = raw.lower()
        out["answer_text"] = (
            all(s in answer for s in case.get("answer_has", ()))
            and not any(s in answer for s in case.get("answer_lacks", ()))
            and all(s in raw for s in case.get("answer_has_cased", ()))
        )
    return out


def figure_failures(case: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    """For a report: each labelled figure that is wrong, with the value found."""
    return {
        name: _figure(results, name)
        for name, value in (case.get("figures") or {}).items()
        if not _check_figure(results, name, value)
    }


# -- the report -------------------------------------------------------------------------


def accuracy(scored: Sequence[Mapping[str, bool]]) -> dict[str, tuple[int, int]]:
    """Per field: (right, labelled), plus ``all`` (cases with every field right)."""
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for fields in scored:
        for name, ok in fields.items():
            total[name] += 1
            right[name] += ok
        total["all"] += 1
        right["all"] += all(fields.values())
    return {name: (right[name], total[name]) for name in (*FIELDS, "all") if total[name]}


def _table(title: str, acc: Mapping[str, tuple[int, int]]) -> list[str]:
    lines = [f"### {title}", "", "| field | right | labelled | accuracy |", "|---|---|---|---|"]
    for name, (ok, total) in acc.items():
        lines.append(f"| {name} | {ok} | {total} | {ok / total:.1%} |")
    return [*lines, ""]


async def main(args: argparse.Namespace) -> int:
    cases = [c for c in load_cases() if args.split in ("all", c["split"])]
    scored: dict[str, list[dict[str, bool]]] = {"dev": [], "holdout": []}
    failures: list[str] = []
    started = time.perf_counter()
    for case in cases:
        results = await run_case(case)
        fields = score_case(case, results)
        scored[case["split"]].append(fields)
        wrong = [name for name, ok in fields.items() if not ok]
        if wrong:
            failures.append(f"{case['id']} ({case['split']}): {', '.join(wrong)}")
            if args.show_failures:
                final = results.get("supervisor") or {}
                triage = results.get("triage") or {}
                print(f"--- {case['id']}: {case['request'][:160]!r}")
                print(f"    wrong: {wrong}")
                print(f"    category={triage.get('category')} reply={final.get('reply')}")
                print(f"    figures wrong: {figure_failures(case, results)}")
    elapsed = time.perf_counter() - started
    everything = scored["dev"] + scored["holdout"]
    tables = {"all": accuracy(everything)}
    for split in ("dev", "holdout"):
        if scored[split]:
            tables[split] = accuracy(scored[split])
    lines = [
        "# Answers: accuracy per field",
        "",
        f"{len(everything)} cases ({len(scored['dev'])} dev, {len(scored['holdout'])} holdout) "
        f"from {CASES_FILE.name}, offline provider, {elapsed:.1f} s.",
        "",
    ]
    for split, acc in tables.items():
        lines += _table(f"{split} cases", acc)
    lines += ["### Cases with a wrong field", "", *(f"- {f}" for f in failures), ""]
    markdown = "\n".join(lines)
    print("\n".join(lines[: lines.index("### Cases with a wrong field")]))
    print(f"{len(failures)} case(s) with a wrong field")
    report = {
        "cases": len(everything),
        "accuracy": {
            split: {name: {"right": ok, "labelled": total} for name, (ok, total) in acc.items()}
            for split, acc in tables.items()
        },
        "failures": failures,
    }
    print(f"report: {write_report(args.report_dir, args.report_name, report, markdown)}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.answers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--split", choices=("all", "dev", "holdout"), default="all")
    parser.add_argument("--show-failures", action="store_true")
    add_report_arguments(parser, "answers")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(trio.run(main, parse_args()))
