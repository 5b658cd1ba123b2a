"""One tiny run of benchmarks/store_bench.py, so it cannot rot (figures are not checked)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent


async def test_store_bench_runs_and_writes_its_report() -> None:
    name = "smoke-store_bench"
    args = ["--runs", "20", "--concurrency", "4", "--events", "5", "--backends", "memory,sqlite"]
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "benchmarks.store_bench", *args, "--baseline-runs", "2",
             "--report-name", name],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    report_path = ROOT / "benchmarks" / "reports" / f"{name}.json"
    report = json.loads(report_path.read_text())
    assert set(report["backends"]) == {"memory", "sqlite"}
    assert report["backends"]["sqlite"]["group_commit"]["events"] == 100
    report_path.unlink()
    (ROOT / "benchmarks" / "reports" / f"{name}.md").unlink()
