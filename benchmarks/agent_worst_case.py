"""CPU and output of one full agent run on adversarial 64 KB requests (issue 10, part 1).

    python -m benchmarks.agent_worst_case [--repeat 3]

Runs the default ``supervisor`` pipeline in this process, without a server
(an emitter that encodes every event as the server would and keeps only its
size), on each input below, and prints per input: the CPU time of the whole
run (the best of ``--repeat``, process time), the number of events, the
bytes of all events and the largest event (the per-request caches are cleared
before every run, so each does all its work). Writes
``benchmarks/reports/agent_worst_case.{json,md}``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson
import trio

from agents import RunScope, UserExecutionContext
from agents import execute_run as _execute_run
from agents.builtin import default_runtime

from ._common import add_report_arguments, write_report

LIMIT = 65_536
NORMAL = (
    "We send 40M input tokens and 10M output tokens a month to gpt-4o and our p95 latency "
    "is 1200 ms. How much would switching to gpt-4o-mini save? Target: cut cost by 30%."
)


def _fill(unit: str) -> str:
    return (unit * (LIMIT // len(unit) + 1))[:LIMIT]


#: name -> 64 KB request (or smaller where the text says so).
INPUTS: dict[str, Callable[[], str]] = {
    "normal request": lambda: NORMAL,
    "'9%' * 32000 (the issue's reproduction)": lambda: "9%" * 32_000,
    "digits only": lambda: "9" * LIMIT,
    "digits with thousand separators": lambda: _fill("1,000,"),
    "'$1 ' repeated": lambda: _fill("$1 "),
    "'€5.000 ' repeated": lambda: _fill("€5.000 "),
    "'1k tokens ' repeated": lambda: _fill("1k tokens "),
    "'2 s ' repeated": lambda: _fill("2 s "),
    "model names": lambda: _fill("gpt-4o vs claude 3.5 sonnet, "),
    "deep punctuation": lambda: _fill("(((((((((([[[[[{{{{{"),
    "dots and commas": lambda: _fill(".,"),
    "one long word": lambda: "a" * LIMIT,
    "alert thresholds": lambda: _fill("alert if p95 above 2 s; "),
    "HTTP 429 log lines": lambda: _fill("2025-05-01T10:00:00Z POST /v1/chat 429 1234 ms\n"),
    "log lines with every field": lambda: _fill(
        "2025-05-01T10:00:00Z ERROR POST /v1/chat model=gpt-4o status=500 latency_ms=1234 "
        "prompt_tokens=900 completion_tokens=90\n"
    ),
    "short log lines": lambda: _fill("10:00:00 x\n"),
    "normal request repeated": lambda: _fill(NORMAL + " "),
    "German number formats": lambda: _fill("Wir zahlen 5.000,50 € im Monat. "),
}


class SizeEmitter:
    """Encodes each event as the server does (orjson) and keeps its size only."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.largest = 0

    async def emit(
        self, agent_name: str, event_type: str, data: dict[str, Any], *, final: bool = False
    ) -> None:
        size = len(orjson.dumps({"type": event_type, "agent_name": agent_name, "data": data}))
        self.count += 1
        self.total += size
        self.largest = max(self.largest, size)


def clear_caches() -> None:
    """Forget what earlier runs read, so that every run does all its work."""
    from agents.builtin.data import _split_models
    from agents.builtin.triage import read_request

    read_request.cache_clear()
    _split_models.cache_clear()


async def one_run(text: str) -> tuple[float, SizeEmitter, str]:
    clear_caches()
    emitter = SizeEmitter()
    context = UserExecutionContext("bench", "t-1", "r-1", "c-1", text, emitter)
    runtime = default_runtime()
    started = time.process_time()
    status = await _execute_run(RunScope(context, runtime), "supervisor")
    return time.process_time() - started, emitter, status


async def main(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    await one_run(NORMAL)  # warm-up: imports, the catalogue, compiled patterns
    for name, make in INPUTS.items():
        text = make()
        best: tuple[float, SizeEmitter, str] | None = None
        for _ in range(args.repeat):
            measured = await one_run(text)
            if best is None or measured[0] < best[0]:
                best = measured
        assert best is not None
        cpu, emitter, status = best
        rows.append(
            {
                "input": name,
                "chars": len(text),
                "status": status,
                "cpu_ms": round(cpu * 1000, 2),
                "events": emitter.count,
                "bytes": emitter.total,
                "largest_event_bytes": emitter.largest,
            }
        )
        print(
            f"{name:45} {len(text):6} chars  {cpu * 1000:9.2f} ms CPU  {emitter.count:3} events  "
            f"{emitter.total:9} B  largest {emitter.largest:8} B  {status}"
        )
    worst = max(rows[1:], key=lambda r: r["cpu_ms"])
    lines = [
        "# One agent run on adversarial requests",
        "",
        "| input | chars | CPU ms | events | bytes | largest event | status |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['input']} | {r['chars']} | {r['cpu_ms']} | {r['events']} | {r['bytes']} | "
            f"{r['largest_event_bytes']} | {r['status']} |"
            for r in rows
        ),
        "",
        f"Worst adversarial case: {worst['input']}, {worst['cpu_ms']} ms of CPU.",
    ]
    markdown = "\n".join(lines) + "\n"
    print(f"\nworst: {worst['input']}: {worst['cpu_ms']} ms CPU")
    report: dict[str, object] = {"rows": rows, "worst": worst}
    print(f"report: {write_report(args.report_dir, args.report_name, report, markdown)}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.agent_worst_case",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeat", type=int, default=3)
    add_report_arguments(parser, "agent_worst_case")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(trio.run(main, parse_args()))
