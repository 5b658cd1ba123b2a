"""Per-run cost of the agent pipeline: server CPU seconds and events per run.

    python -m benchmarks.run_cost --runs 2000 --clients 20

Starts ``python -m server`` (offline model provider, no faults), then
``--clients`` connections each run requests back to back until ``--runs``
have completed. The request mix sends every run down the full pipeline
(triage -> data -> optimization -> actions -> reporting) unless
``--request`` says otherwise. Server CPU comes from /proc for the server
process alone, so the client's own CPU is not counted.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import trio
from trio_websocket import open_websocket_url

from ._common import (
    add_report_arguments,
    cpu_seconds,
    open_server_process,
    scrape,
    write_report,
)

FULL_PIPELINE_REQUEST = (
    "We send 40M input tokens and 10M output tokens a month to gpt-4o and our p95 latency "
    "is 1200 ms. How much would switching to gpt-4o-mini save? Target: cut cost by 30%."
)


async def client(url: str, index: int, quota: list[int], request: str, stats: Counter[str]) -> None:
    async with open_websocket_url(f"{url}?user_id=cost{index}") as ws:
        await ws.get_message()
        while quota[0] > 0:
            quota[0] -= 1
            await ws.send_message(json.dumps({"type": "chat", "payload": {"content": request}}))
            events = 0
            while True:
                frame = json.loads(await ws.get_message())
                events += 1
                if frame.get("final"):
                    stats[f"status_{frame['data']['status']}"] += 1
                    pipeline = (frame["data"].get("result") or {}).get("pipeline")
                    if pipeline:
                        stats["pipeline " + " > ".join(pipeline)] += 1
                    break
            stats["events"] += events
            stats["runs"] += 1


async def main(args: argparse.Namespace) -> int:
    async with open_server_process(["--max-connections-per-user=0"]) as server:
        stats: Counter[str] = Counter()
        # Warm-up: imports, caches, the first connections.
        await client(server.url, 0, [20], args.request, Counter())
        cpu_before = cpu_seconds(server.pid)
        metrics_before = await scrape(server.admin_port)
        started = time.perf_counter()
        quota = [args.runs]
        with trio.fail_after(args.max_seconds):
            async with trio.open_nursery() as nursery:
                for i in range(args.clients):
                    nursery.start_soon(client, server.url, i, quota, args.request, stats)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(server.pid) - cpu_before
        metrics_after = await scrape(server.admin_port)
    runs = stats["runs"]
    sent = metrics_after["chat_events_sent_total"] - metrics_before["chat_events_sent_total"]
    report = {
        "runs": runs,
        "clients": args.clients,
        "request": args.request,
        "elapsed_s": round(elapsed, 2),
        "runs_per_s": round(runs / elapsed, 1),
        "server_cpu_s": round(cpu, 3),
        "server_cpu_ms_per_run": round(cpu / runs * 1000, 3),
        "events_per_run": round(stats["events"] / runs, 2),
        "server_events_sent": int(sent),
        "server_cpu_us_per_event": round(cpu / sent * 1e6, 1) if sent else None,
        "outcomes": {k: v for k, v in stats.items() if k not in ("runs", "events")},
    }
    lines = [
        "# Per-run cost",
        "",
        f"- {runs} runs from {args.clients} clients in {elapsed:.1f} s "
        f"({runs / elapsed:.0f} runs/s)",
        f"- server CPU: {cpu:.2f} s = {report['server_cpu_ms_per_run']} ms per run, "
        f"{report['server_cpu_us_per_event']} µs per event",
        f"- events per run: {report['events_per_run']}",
        f"- outcomes: {report['outcomes']}",
    ]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    print(f"report: {write_report(args.report_dir, args.report_name, report, markdown)}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--request", default=FULL_PIPELINE_REQUEST)
    parser.add_argument("--max-seconds", type=float, default=300)
    add_report_arguments(parser, "run_cost")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(trio.run(main, parse_args()))
