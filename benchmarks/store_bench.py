"""History store throughput with group commit, per backend.

    python -m benchmarks.store_bench --runs 2000 --concurrency 50 --events 40

For each backend, ``--concurrency`` tasks run back to back until ``--runs``
runs are done, each as a server run would: ``begin_run``, then ``--events``-1
events through ``HistoryWriter.append`` (a scheduling point after every
``--burst`` of them, as agents interleave), then ``commit_final`` with the final event; or, with
``--rate R``, a new run starts every 1/R seconds however many are running
(an open loop: latencies at a given load rather than at saturation). Reported:
commits (write_batch transactions) per second and events per commit, CPU and
wall microseconds per event (the process's CPU, worker threads included),
runs per second, and how long ``commit_final`` took (p50/p99): what the
durability rule adds before a final event is sent.

``--baseline-runs`` more runs write each event in its own transaction
(``append_events`` per event), for comparison with group commit.

Backends: ``memory``, ``sqlite`` (synchronous=FULL, the default),
``sqlite-normal`` (synchronous=NORMAL), ``postgresql`` (a fresh schema in
``--postgres-url``, dropped afterwards; skipped if unreachable).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import trio

from server.store import (
    EventRecord,
    HistoryWriter,
    RunEnd,
    RunStart,
    Store,
    StoreUnavailableError,
    open_store,
)

from ._common import add_report_arguments, write_report

BACKENDS = ("memory", "sqlite", "sqlite-normal", "postgresql")
DEFAULT_POSTGRES = os.environ.get(
    "CHAT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@asynccontextmanager
async def backend_url(name: str, args: argparse.Namespace) -> AsyncIterator[str | None]:
    if name == "memory":
        yield "memory:"
        return
    if name.startswith("sqlite"):
        with tempfile.TemporaryDirectory(dir=args.sqlite_dir) as directory:
            mode = "normal" if name == "sqlite-normal" else "full"
            yield f"sqlite:///{directory}/bench.db?synchronous={mode}"
        return
    import psycopg

    schema = f"store_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(args.postgres_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.Error as error:
        print(f"postgresql: skipped ({error})")
        yield None
        return
    separator = "&" if "?" in args.postgres_url else "?"
    try:
        yield f"{args.postgres_url}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(args.postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def frame(run_key: str, seq: int, size: int) -> bytes:
    head = f'{{"type":"agent_thinking","run_id":"{run_key}","seq":{seq},"data":"'
    return (head + "x" * max(size - len(head) - 2, 0) + '"}').encode()


async def one_run(
    store: Store, writer: HistoryWriter, args: argparse.Namespace, final_times: list[float]
) -> None:
    run_key = f"rk-{uuid.uuid4().hex}"
    await store.begin_run(
        RunStart(
            run_key=run_key,
            user_id=f"u-{run_key[-4:]}",
            run_id=run_key,
            thread_id=f"t-{run_key}",
            agent_name="supervisor",
            request="benchmark",
        ),
        history_turns=20,
    )
    body = frame(run_key, 0, args.size)
    for seq in range(1, args.events):
        writer.append(EventRecord(run_key=run_key, seq=seq, frame=body))
        if seq % args.burst == 0:
            await trio.lowlevel.checkpoint()
    final = EventRecord(run_key=run_key, seq=args.events, frame=frame(run_key, args.events, 200))
    end = RunEnd(run_key=run_key, status="completed", last_seq=args.events, result={"answer": "x"})
    asked = time.perf_counter()
    try:
        committed = await writer.commit_final(end, final)
    except StoreUnavailableError:  # not committed within its time limit: overloaded
        final_times.append(float("inf"))
        return
    assert committed
    final_times.append(time.perf_counter() - asked)


async def group_commit(url: str, args: argparse.Namespace) -> dict[str, float]:
    async with open_store(url, node_id="bench") as store:
        writer = HistoryWriter(store)
        final_times: list[float] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            for _ in range(10):  # warm-up: connections, caches
                await one_run(store, writer, args, [])
            before = writer.statistics()
            quota = [args.runs]

            async def worker() -> None:
                while quota[0] > 0:
                    quota[0] -= 1
                    await one_run(store, writer, args, final_times)

            cpu, wall = time.process_time(), time.perf_counter()
            async with trio.open_nursery() as workers:
                if args.rate:  # open loop: a new run every 1/rate s, however many are running
                    next_start = trio.current_time()
                    for _ in range(args.runs):
                        workers.start_soon(one_run, store, writer, args, final_times)
                        next_start += 1 / args.rate
                        await trio.sleep_until(next_start)
                else:
                    for _ in range(args.concurrency):
                        workers.start_soon(worker)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            after = writer.statistics()
            nursery.cancel_scope.cancel()
    events = args.runs * args.events
    commits = after.batches - before.batches
    final_times.sort()
    return {
        "runs": args.runs,
        "events": events,
        "seconds": round(wall, 3),
        "commits": commits,
        "commits_per_s": round(commits / wall, 1),
        "events_per_commit": round((after.events_committed - before.events_committed) / commits, 1),
        "runs_per_s": round(args.runs / wall, 1),
        "cpu_us_per_event": round(cpu / events * 1e6, 2),
        "wall_us_per_event": round(wall / events * 1e6, 2),
        "commit_final_p50_ms": round(statistics.median(final_times) * 1000, 3),
        "commit_final_p99_ms": round(final_times[int(len(final_times) * 0.99)] * 1000, 3),
        "commit_final_timeouts": sum(t == float("inf") for t in final_times),
    }


async def one_commit_per_event(url: str, args: argparse.Namespace) -> dict[str, float]:
    async with open_store(url, node_id="bench") as store:
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(args.baseline_runs):
            run_key = f"rk-{uuid.uuid4().hex}"
            await store.begin_run(
                RunStart(
                    run_key=run_key,
                    user_id="base",
                    run_id=run_key,
                    thread_id=f"t-{run_key}",
                    agent_name="supervisor",
                    request="baseline",
                ),
                history_turns=20,
            )
            for seq in range(1, args.events + 1):
                record = EventRecord(run_key=run_key, seq=seq, frame=frame(run_key, seq, args.size))
                await store.append_events([record])
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    events = args.baseline_runs * args.events
    return {
        "events": events,
        "commits_per_s": round(events / wall, 1),
        "cpu_us_per_event": round(cpu / events * 1e6, 2),
        "wall_us_per_event": round(wall / events * 1e6, 2),
    }


async def main(args: argparse.Namespace) -> int:
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    report: dict[str, object] = {
        "runs": args.runs,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "switch_interval": sys.getswitchinterval(),
        "events_per_run": args.events,
        "frame_bytes": args.size,
        "backends": {},
    }
    lines = [
        "# History store benchmark",
        "",
        f"`python -m benchmarks.store_bench --runs {args.runs}"
        + (f" --rate {args.rate:g}" if args.rate else f" --concurrency {args.concurrency}")
        + f" --events {args.events} --size {args.size} --backends {','.join(args.backends)}"
        + (f" --switch-interval {args.switch_interval:g}" if args.switch_interval else "")
        + "`",
        "",
        "| backend | commits/s | events/commit | CPU µs/event | wall µs/event | runs/s"
        " | commit_final p50 / p99 ms | one commit per event: commits/s, CPU µs/event |",
        "|---|---|---|---|---|---|---|---|",
    ]
    results: dict[str, object] = {}
    for name in args.backends:
        async with backend_url(name, args) as url:
            if url is None:
                continue
            grouped = await group_commit(url, args)
            baseline = await one_commit_per_event(url, args) if args.baseline_runs else None
        results[name] = {"group_commit": grouped, "one_commit_per_event": baseline}
        base = f"{baseline['commits_per_s']}, {baseline['cpu_us_per_event']}" if baseline else "-"
        line = (
            f"| {name} | {grouped['commits_per_s']} | {grouped['events_per_commit']}"
            f" | {grouped['cpu_us_per_event']} | {grouped['wall_us_per_event']}"
            f" | {grouped['runs_per_s']} | {grouped['commit_final_p50_ms']} /"
            f" {grouped['commit_final_p99_ms']} | {base} |"
        )
        lines.append(line)
        print(
            f"{name:14} {grouped['commits_per_s']:>9} commits/s"
            f" {grouped['events_per_commit']:>7} events/commit"
            f" {grouped['cpu_us_per_event']:>7} µs CPU/event"
            f" {grouped['wall_us_per_event']:>7} µs wall/event"
            f" {grouped['runs_per_s']:>8} runs/s"
            f"  commit_final p50 {grouped['commit_final_p50_ms']} ms"
            f" p99 {grouped['commit_final_p99_ms']} ms"
            + (
                f" ({grouped['commit_final_timeouts']} timed out)"
                if grouped["commit_final_timeouts"]
                else ""
            )
            + (
                f"  | one commit per event: {baseline['commits_per_s']} commits/s,"
                f" {baseline['cpu_us_per_event']} µs CPU/event"
                if baseline
                else ""
            ),
            flush=True,
        )
    report["backends"] = results
    markdown = chr(10).join(lines) + chr(10)
    print(f"report: {write_report(args.report_dir, args.report_name, report, markdown)}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.store_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument(
        "--concurrency", type=int, default=50, help="runs at once (closed loop, without --rate)"
    )
    parser.add_argument(
        "--rate", type=float, default=0, help="start this many runs per second (open loop)"
    )
    parser.add_argument("--events", type=int, default=40, help="events per run, final included")
    parser.add_argument("--size", type=int, default=400, help="bytes per event frame")
    parser.add_argument(
        "--burst", type=int, default=8, help="events a run emits between two scheduling points"
    )
    parser.add_argument(
        "--backends",
        type=lambda text: [b for b in text.split(",") if b],
        default=list(BACKENDS),
        help=f"comma-separated, from {','.join(BACKENDS)}",
    )
    parser.add_argument("--baseline-runs", type=int, default=10)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    parser.add_argument(
        "--sqlite-dir", type=Path, default=None, help="where the SQLite file goes (default: /tmp)"
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval (s): how long a busy event loop may keep the GIL"
        " from the store's threads (Python's default: 0.005)",
    )
    add_report_arguments(parser, "store_bench")
    args = parser.parse_args(argv)
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends: {sorted(unknown)}")
    return args


if __name__ == "__main__":
    raise SystemExit(trio.run(main, parse_args()))
