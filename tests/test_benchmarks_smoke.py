"""One tiny run of each benchmark script, so they cannot rot.

Figures are not checked (they depend on the machine), but what each report
says is: its checks passed, every server and stage it promises is there and
measured, and the counts add up. Reports go to a temporary directory, never
into the repository.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from _procs import ROOT, read_report, run_script
from _redis import redis_test_url
from _store import POSTGRES_URL, require_postgres


def collapsed_stacks(path: Path) -> int:
    """The samples in py-spy's raw output (``frame;frame;... COUNT`` per line)."""
    lines = path.read_text().splitlines()
    return sum(int(line.rpartition(" ")[2]) for line in lines if line.strip())


def reports_in_repository() -> set[Path]:
    return set((ROOT / "benchmarks" / "reports").glob("*"))


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("benchmarks.churn", ["--cycles", "30", "--concurrency", "5", "--fault",
                              "triage:raise:0.5", "--quiet"]),
        ("benchmarks.soak", ["--seconds", "2", "--clients", "5", "--churners", "2",
                             "--slow", "1"]),
        ("benchmarks.load", ["--clients", "6", "--runs-per-client", "2", "--ramp", "0.5",
                             "--churn", "0.5", "--processes", "2", "--duration", "20",
                             "--no-plots", "--quiet"]),
    ],
    ids=["churn", "soak", "load"],
)  # fmt: skip
async def test_checking_script_passes_its_checks_and_writes_only_where_told(
    module: str, args: list[str], tmp_path: Path
) -> None:
    before = reports_in_repository()
    await run_script(module, *args, "--report-dir", str(tmp_path), "--report-name", "smoke")
    report = read_report(tmp_path, "smoke")
    assert report["checks"], "a checking script reports at least one check"
    assert all(report["checks"].values()), report["checks"]
    assert reports_in_repository() == before


@pytest.mark.timeout(90)
async def test_the_multi_node_soak_kills_and_restarts_a_node_and_loses_nothing(
    tmp_path: Path,
) -> None:
    redis_url = redis_test_url()
    require_postgres()
    await run_script(
        "benchmarks.soak", "--nodes", "2", "--seconds", "5", "--clients", "6", "--watchers",
        "6", "--churners", "2", "--slow", "1", "--kill-at", "0.3", "--broker", redis_url,
        "--store", POSTGRES_URL, "--report-dir", str(tmp_path), "--report-name", "nodes",
        seconds=80,
    )  # fmt: skip
    report = read_report(tmp_path, "nodes")
    assert all(report["checks"].values()), report["checks"]
    assert report["lost_runs"] == []
    assert report["broken_sequences"] == []
    assert report["killed_at_s"] > 0
    assert report["restarted_at_s"] > report["killed_at_s"]
    # Every node's gauges were read, the restarted one's included.
    assert set(report["final_gauges"]) == {"node0", "node1"}


async def test_run_cost_counts_every_event_of_its_runs(tmp_path: Path) -> None:
    await run_script(
        "benchmarks.run_cost", "--runs", "20", "--clients", "2", "--report-dir", str(tmp_path)
    )
    report = read_report(tmp_path, "run_cost")
    assert report["runs"] == 20
    assert report["outcomes"]["status_completed"] == 20
    # The server's counter and the clients' count agree on the events sent.
    assert report["server_events_sent"] == round(report["events_per_run"] * 20)
    assert report["server_cpu_us_per_event"] is None or report["server_cpu_us_per_event"] > 0


async def test_compare_reports_every_baseline_and_ratio_over_its_repetitions(
    tmp_path: Path,
) -> None:
    before = reports_in_repository()
    stdout = await run_script(
        "benchmarks.compare", "--clients", "4", "--runs", "2", "--connections", "30",
        "--repeat", "2", "--report-dir", str(tmp_path), "--report-name", "cmp",
        seconds=150,
    )  # fmt: skip
    report = read_report(tmp_path, "cmp")
    assert reports_in_repository() == before
    servers = report["servers"]
    assert servers == [
        "trio-agent-server",
        "trio-agent-server, event path only",
        "bare trio-websocket",
        "bare websockets (asyncio)",
        "bare FastAPI + uvicorn[standard]",
    ]
    assert len(report["runs"]) == 2
    for run in report["runs"]:
        full = run["cpu"]["trio-agent-server"]
        # Every server delivered the same number of frames as our full pipeline.
        assert {run["cpu"][name]["frames_delivered"] for name in servers} == {
            full["frames_delivered"]
        }
        assert full["frames_server_metric"] == full["frames_delivered"]
        assert full["run_outcomes"] == {"completed": 8}
        # Every server but the event-path row (same process) had its idle memory taken.
        assert set(run["memory"]) == set(servers) - {"trio-agent-server, event path only"}
        assert all(m["connections"] == 30 for m in run["memory"].values())
    summary = report["summary"]
    for key in ("event_path_vs_fastapi", "full_pipeline_vs_fastapi"):
        figure = summary["ratios"][key]
        assert len(figure["values"]) == 2
        known = [v for v in figure["values"] if v is not None]
        if known:  # at this load one /proc tick may be all a server spends
            assert figure["min"] <= figure["median"] <= figure["max"]
    fastapi = summary["cpu_us_per_frame"]["bare FastAPI + uvicorn[standard]"]
    assert len(fastapi["values"]) == 2
    assert report["targets"] == {
        "event_path_vs_fastapi": 1.0,
        "full_pipeline_vs_fastapi": 2.0,
        "idle_kib_per_connection": 24.0,
    }
    assert "| bare FastAPI + uvicorn[standard] | 344 |" in stdout
    assert "- event path / FastAPI+uvicorn: **" in stdout


async def test_breakdown_times_every_stage_and_accounts_for_the_measured_total(
    tmp_path: Path,
) -> None:
    stdout = await run_script(
        "benchmarks.breakdown", "--clients", "3", "--runs", "4", "--events", "10",
        "--passes", "1", "--number", "300", "--repeat", "2", "--report-dir", str(tmp_path),
    )  # fmt: skip
    report = read_report(tmp_path, "breakdown")
    measured = report["measured"]
    assert measured["runs"] == 12
    assert measured["events"] == 12 * 12  # agent_started, 10 thinking, agent_completed
    assert measured["events_per_batch"] >= 1
    stages = report["per_event"]["stages"]
    assert list(stages) == [
        "agent think()", "run emit()", "envelope", "timestamp", "JSON",
        "cancellation check", "queue", "framing", "write", "scheduling",
    ]  # fmt: skip
    timed = [name for name, stage in stages.items() if not stage["derived"]]
    assert all(stages[name]["ns"] > 0 for name in timed), stages
    for part in (report["per_event"], report["per_run"]):
        assert part["attributed_ns"] == pytest.approx(
            sum(stage["ns"] for stage in part["stages"].values()), abs=1
        )
        assert part["attributed_ns"] + part["unattributed_ns"] == pytest.approx(
            part["measured_ns"], abs=1
        )
    assert set(report["per_run"]["stages"]) == {"scheduling", "decoding start_agent", "writes"}
    assert "## Per event" in stdout
    assert "| **measured** |" in stdout


@pytest.mark.skipif(
    not Path(sys.executable).with_name("py-spy").exists() and shutil.which("py-spy") is None,
    reason="py-spy is not installed (the bench extra)",
)
async def test_profile_attributes_the_samples_of_a_loaded_server(tmp_path: Path) -> None:
    try:
        stdout = await run_script(
            "benchmarks.profile", "--clients", "4", "--runs", "10", "--rate", "200",
            "--report-dir", str(tmp_path),
        )  # fmt: skip
    except AssertionError as failure:
        if "ptrace" in str(failure) or "Permission denied" in str(failure):
            pytest.skip(f"py-spy may not read another process here: {failure}")
        raise
    report = read_report(tmp_path, "profile")
    assert report["runs"] == 40
    assert report["frames"] == 40 * 43
    summary = report["summary"]
    if summary["samples"]:
        assert sum(share for _, share in summary["by_package"]) == pytest.approx(100, abs=1)
        assert summary["self"]
    samples = Path(report["samples_file"])
    assert samples.parent == tmp_path
    assert collapsed_stacks(samples) == summary["samples"]
    assert "| package (innermost frame) |" in stdout


async def test_stall_sends_the_worst_cases_and_reports_each_figure(tmp_path: Path) -> None:
    before = reports_in_repository()
    await run_script(
        "benchmarks.stall", "--attackers", "2", "--repeat", "1", "--alone", "2",
        "--seconds", "5", "--report-dir", str(tmp_path), "--report-name", "smoke",
    )  # fmt: skip
    report = read_report(tmp_path, "smoke")
    assert report["parameters"]["input_bytes"] == 64_000
    assert report["worst_case_alone"]["runs"] == 2
    assert report["worst_case_runs"] == 2  # one from each attacker
    # Bounded output: the cut events and the run's own bound, not megabytes.
    assert 0 < report["bytes_per_worst_case_max"] < 1024 * 1024
    assert report["healthz_ms"]["count"] > 0
    assert report["normal_run"]["runs"] > 0
    assert reports_in_repository() == before


async def test_mutation_kills_a_mutant_in_a_copy_and_leaves_the_tree_alone(tmp_path: Path) -> None:
    mutated = ROOT / "server" / "protocol" / "_limits.py"
    before = mutated.read_text()
    output = await run_script(
        "benchmarks.mutation", "--only", "limits.bucket_last_token_refused", "--no-baseline",
        "--report-dir", str(tmp_path), "--report-name", "smoke", seconds=120,
    )  # fmt: skip
    assert "killed 1 of 1 mutants: **100.0%**" in output
    report = read_report(tmp_path, "smoke")
    assert (report["mutants"], report["killed"], report["kill_rate"]) == (1, 1, 1.0)
    (outcome,) = report["outcomes"]
    assert outcome["result"] == "killed"
    assert outcome["detail"].startswith("FAILED tests/")
    assert mutated.read_text() == before
