"""One tiny run of benchmarks/store_bench.py, so it cannot rot (figures are not checked)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent


async def test_store_bench_runs_and_writes_its_report(tmp_path: Path) -> None:
    name = "smoke-store_bench"
    args = ["--runs", "20", "--concurrency", "4", "--events", "5", "--backends", "memory,sqlite"]
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "benchmarks.store_bench", *args, "--baseline-runs", "2",
             "--report-name", name, "--report-dir", str(tmp_path)],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    report = json.loads((tmp_path / f"{name}.json").read_text())
    assert set(report["backends"]) == {"memory", "sqlite"}
    assert report["backends"]["sqlite"]["group_commit"]["events"] == 100
    assert (tmp_path / f"{name}.md").exists()
