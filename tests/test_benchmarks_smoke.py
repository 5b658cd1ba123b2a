"""One tiny run of each benchmark script, so they cannot rot (figures are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

ROOT = Path(__file__).resolve().parent.parent


async def run_script(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


@pytest.mark.parametrize(
    ("module", "args", "checks"),
    [
        ("benchmarks.churn", ["--cycles", "30", "--concurrency", "5", "--fault",
                              "triage:raise:0.5", "--quiet"], "checks"),
        ("benchmarks.soak", ["--seconds", "2", "--clients", "5", "--churners", "2",
                             "--slow", "1"], "checks"),
        ("benchmarks.run_cost", ["--runs", "20", "--clients", "2"], None),
        ("benchmarks.load", ["--clients", "6", "--runs-per-client", "2", "--ramp", "0.5",
                             "--churn", "0.5", "--processes", "2", "--duration", "20",
                             "--no-plots", "--quiet"], "checks"),
        ("benchmarks.compare", ["--clients", "4", "--runs", "2", "--connections", "100"],
         None),
    ],
    ids=["churn", "soak", "run_cost", "load", "compare"],
)  # fmt: skip
async def test_benchmark_script_runs_and_writes_its_report(
    module: str, args: list[str], checks: str | None, tmp_path: Path
) -> None:
    name = f"smoke-{module.rsplit('.', 1)[1]}"
    result = await run_script(module, *args, "--report-name", name)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    report_path = ROOT / "benchmarks" / "reports" / f"{name}.json"
    report = json.loads(report_path.read_text())
    if checks:
        assert all(report[checks].values()), report[checks]
    report_path.unlink()
    (ROOT / "benchmarks" / "reports" / f"{name}.md").unlink()
