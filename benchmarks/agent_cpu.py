"""The agents' own work on the normal request, for a deterministic count of instructions.

    valgrind --tool=cachegrind --cache-sim=no .venv/bin/python -m benchmarks.agent_cpu 1
    valgrind --tool=cachegrind --cache-sim=no .venv/bin/python -m benchmarks.agent_cpu 101

Runs the default pipeline in this process (no server, no encoding: an emitter
that drops events) ``N`` times on the README's request, clearing the
per-request caches before each run so that every run does all its work. The
difference of the two ``I refs`` totals, divided by 100, is the instructions
of one run: the same on every run of the command, unlike CPU time on a shared
machine. Without valgrind it prints the process time per run.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import trio

from agents import RunScope, UserExecutionContext
from agents import execute_run as _execute_run
from agents.builtin import default_runtime

from .agent_worst_case import NORMAL, clear_caches


class _Drop:
    async def emit(
        self, agent_name: str, event_type: str, data: dict[str, Any], *, final: bool = False
    ) -> None:
        pass


async def main(runs: int) -> None:
    runtime = default_runtime()
    started = time.process_time()
    for _ in range(runs):
        clear_caches()
        context = UserExecutionContext("bench", "t-1", "r-1", "c-1", NORMAL, _Drop())
        await _execute_run(RunScope(context, runtime), "supervisor")
    elapsed = time.process_time() - started
    print(f"{runs} runs, {elapsed / runs * 1e6:.0f} µs of CPU per run (process time)")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
