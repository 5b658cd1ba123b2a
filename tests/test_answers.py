"""The labelled evaluation set (``tests/data/answer_cases.json``): every answer right.

Each case is a request written from one of issue 15's failure classes (per-request
volumes, explicit outputs, spend and target phrasings, status codes, small talk
and injection, model comparisons, other languages, GPUs, pasted logs, retrieval
latency, follow-ups), with what its answer must say: the kind of reply, the
language, the category, the figures read, the monthly cost, the saving of a
named switch, the cost of each model compared, the target, and words the answer
must (not) contain. ``python -m benchmarks.answers`` prints the same scores as
accuracy per field; here every field of every case must be right.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

from agents.builtin.replies import EXAMPLES
from benchmarks.answers import FIELDS, figure_failures, load_cases, run_case, score_case

CASES = load_cases()
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
async def test_the_answer_to_a_labelled_request_is_right(case: dict[str, Any]) -> None:
    with trio.fail_after(20):
        results = await run_case(case)
    fields = score_case(case, results)

    wrong = {name for name, ok in fields.items() if not ok}
    assert not wrong, (wrong, figure_failures(case, results))
    assert set(fields) <= set(FIELDS)


def test_the_set_covers_every_failure_class_language_and_field() -> None:
    assert len(CASES) >= 150
    assert len({c["id"] for c in CASES}) == len(CASES)
    classes = Counter(c["class"] for c in CASES)
    assert set(classes) == set(range(12))  # 0: other categories; 1-11 the classes
    assert min(n for cls, n in classes.items() if cls) >= 8
    assert {c["language"] for c in CASES} >= {"en", "de", "fr", "es", "it", "nl", "pt"}
    assert {c["reply"] for c in CASES} == {"answer", "smalltalk", "gibberish", "injection"}
    holdout = [c for c in CASES if c["split"] == "holdout"]
    assert len(holdout) >= 0.2 * len(CASES)
    labelled = Counter(key for c in CASES for key in c if key in FIELDS)
    for field in ("monthly_cost", "saving", "model_costs", "target", "figures"):
        assert labelled[field] >= 5, field


@pytest.mark.parametrize(
    ("language", "which"),
    [(language, which) for language in EXAMPLES for which in (0, 1)],
)
async def test_the_example_questions_the_short_replies_offer_are_answered_right(
    language: str, which: int
) -> None:
    # A greeting's reply suggests these two questions in the user's language: they
    # must get the cost (40M in + 10M out on gpt-4o: $200, $188 saved on gpt-4o-mini)
    # and the latency target (p95 3 s, under 1.5 s) right themselves.
    with trio.fail_after(20):
        results = await run_case({"request": EXAMPLES[language][which]})
    figures = results["data"]["figures"]

    assert results["supervisor"]["language"] == language
    if which == 0:
        assert figures["monthly_cost_usd"] == 200.0
        assert figures["monthly_tokens"]["output"] == 10e6
        assert score_case({"saving": {"to": "gpt-4o-mini", "usd": 188.0}}, results)["saving"]
    else:
        assert figures["latency_ms"] == {"p95": 3000.0}
        assert score_case({"target": {"latency_ms": 1500.0}}, results)["target"]


async def run_module(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("benchmarks.answers", ["--split", "holdout"]),
        ("benchmarks.agent_worst_case", ["--repeat", "1"]),
    ],
    ids=["answers", "agent_worst_case"],
)
async def test_the_answer_scripts_run_and_write_their_reports(module: str, args: list[str]) -> None:
    name = f"smoke-{module.rsplit('.', 1)[1]}"
    result = await run_module(module, *args, "--report-name", name)

    assert result.returncode == 0, result.stderr.decode()[-2000:]
    report_path = ROOT / "benchmarks" / "reports" / f"{name}.json"
    report = json.loads(report_path.read_text())
    if module == "benchmarks.answers":
        assert "| field | right | labelled | accuracy |" in result.stdout.decode()
        accuracy = report["accuracy"]["holdout"]
        assert set(accuracy) >= {"reply", "language", "category", "figures", "all"}
    else:
        assert all(row["status"] == "completed" for row in report["rows"])
    report_path.unlink()
    (ROOT / "benchmarks" / "reports" / f"{name}.md").unlink()
