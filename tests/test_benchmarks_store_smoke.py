"""One tiny run of each benchmark mode issues 12 and 13 added, so they cannot rot.

The history store (``--store``: a SQLite file in a temporary directory), clients
that drop mid-run and resume, second connections subscribed to a thread:
figures are not checked (they depend on the machine), but what each report
says is: its checks passed, nothing was lost or repeated, the gauges came
back to 0, and every row and ratio it promises is there. Reports go to a
temporary directory; nothing is written into the checkout (no ./data/).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _procs import ROOT, read_report, run_script

pytestmark = pytest.mark.timeout(240)


def untouched() -> set[Path]:
    """What a benchmark must not add to: the checkout's reports and data."""
    return {*ROOT.glob("benchmarks/reports/*"), *ROOT.glob("data/*")}


@pytest.mark.parametrize("grace", ["0", "1"])
async def test_churn_with_the_store_drops_resumes_and_subscribers_loses_nothing(
    tmp_path: Path, grace: str
) -> None:
    before = untouched()
    await run_script(
        "benchmarks.churn", "--cycles", "60", "--concurrency", "4", "--store", "sqlite",
        "--resume", "0.5", "--subscribe", "0.5", "--resume-grace", grace, "--quiet",
        # Memory and the file's growth are only meaningful over long runs.
        "--rss-tolerance", "1", "--db-growth-tolerance", "10",
        "--report-dir", str(tmp_path), "--report-name", "smoke",
    )  # fmt: skip
    report = read_report(tmp_path, "smoke")
    assert all(report["checks"].values()), report["checks"]
    assert (
        "no event lost or duplicated, by any resumed or subscribed connection" in (report["checks"])
    )
    follow = report["follow"]
    assert (follow["lost_events"], follow["duplicated_events"]) == (0, 0)
    outcome = follow["outcome"]
    resumed = outcome.get("resumed_live", 0) + outcome.get("resumed_ended", 0)
    assert resumed + outcome.get("finished_before_drop", 0) > 0
    assert outcome.get("subscriber_runs", 0) > 0
    if grace != "0":
        assert outcome.get("session_resumed", 0) > 0
    assert report["final_gauges"]["chat_sessions_lingering"] == 0
    assert report["final_gauges"]["chat_subscriptions_active"] == 0
    # The SQLite file was measured, and it grew with the runs recorded.
    sizes = report["store_bytes"]
    assert report["store"] == "sqlite"
    assert sizes["end"] > sizes["start"] > 0
    assert untouched() == before


async def test_compare_runs_our_server_with_each_store_and_a_subscriber(tmp_path: Path) -> None:
    before = untouched()
    stdout = await run_script(
        "benchmarks.compare", "--clients", "3", "--runs", "2", "--connections", "20",
        "--store", "memory:", "--store", "sqlite", "--only-ours", "--idle-memory",
        "--subscribers", "--report-dir", str(tmp_path), "--report-name", "cmp",
    )  # fmt: skip
    report = read_report(tmp_path, "cmp")
    assert report["servers"] == [
        "trio-agent-server",
        "trio-agent-server, event path only",
        "trio-agent-server, sqlite store",
        "trio-agent-server, event path only, sqlite store",
        "trio-agent-server, event path, runs on a thread",
        "trio-agent-server, event path, runs on a thread, 1 subscriber",
    ]
    assert report["memory_servers"] == ["trio-agent-server", "trio-agent-server, sqlite store"]
    (run,) = report["runs"]
    cpu = run["cpu"]
    # The same load on each store: same frames, every run completed.
    assert (
        cpu["trio-agent-server, sqlite store"]["frames_delivered"]
        == (cpu["trio-agent-server"]["frames_delivered"])
    )
    assert cpu["trio-agent-server, sqlite store"]["run_outcomes"] == {"completed": 6}
    # The subscriber received every event its thread's runs sent.
    sub = cpu["trio-agent-server, event path, runs on a thread, 1 subscriber"]
    assert sub["subscriber_frames_delivered"] == sub["frames_delivered"]
    assert sub["frames_server_metric"] == 2 * sub["frames_delivered"]
    assert set(report["summary"]["ratios"]) == {
        "full_pipeline_sqlite_vs_memory",
        "event_path_sqlite_vs_memory",
        "event_path_one_subscriber_vs_none",
    }
    assert report["targets"]["event_path_sqlite_vs_memory"] == 1.15
    assert report["targets"]["idle_kib_per_connection_sqlite"] == 24.0
    assert "- event path, sqlite store / memory: store: **" in stdout
    assert "- cost of one subscriber per event of the runs" in stdout
    assert untouched() == before


async def test_load_reports_the_wait_for_the_final_and_resumes_after_a_drop(
    tmp_path: Path,
) -> None:
    before = untouched()
    await run_script(
        "benchmarks.load", "--clients", "6", "--runs-per-client", "3", "--ramp", "0.5",
        "--churn", "1", "--resume", "--store", "sqlite", "--agent", "stream",
        "--request", "20 50", "--server-arg=--plugin=benchmarks._stream_agent",
        "--server-arg=--resume-grace=1", "--duration", "30", "--no-plots", "--quiet",
        "--report-dir", str(tmp_path), "--report-name", "smoke",
    )  # fmt: skip
    report = read_report(tmp_path, "smoke")
    assert all(report["checks"].values()), report["checks"]
    assert report["store"] == "sqlite"
    # Every client left one run after agent_started and resumed it.
    resume = report["resume"]
    assert resume["resumes"] == report["runs"]["abandoned_by_churn"] == 6
    assert resume["sessions_resumed"] == 6  # each over a session take-over
    assert (resume["lost_events"], resume["duplicated_events"]) == (0, 0)
    # Every run read to its end had events before its final one.
    assert report["ms_last_event_to_final"]["n"] == report["runs"]["final"] == 12
    assert untouched() == before


async def test_soak_with_resuming_clients_loses_nothing(tmp_path: Path) -> None:
    await run_script(
        "benchmarks.soak", "--seconds", "3", "--clients", "3", "--churners", "1", "--slow", "1",
        "--resumers", "3", "--resume-grace", "1", "--store", "sqlite",
        "--report-dir", str(tmp_path), "--report-name", "smoke",
    )  # fmt: skip
    report = read_report(tmp_path, "smoke")
    assert all(report["checks"].values()), report["checks"]
    assert report["follow"]["lost_events"] == report["follow"]["duplicated_events"] == 0
    assert report["final_follow_gauges"] == {
        "chat_sessions_lingering": 0.0,
        "chat_subscriptions_active": 0.0,
    }
