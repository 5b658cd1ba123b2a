"""Churn: many connect / start a run / disconnect cycles against a real server process.

    python -m benchmarks.churn --cycles 1000 --concurrency 50 --fault triage:raise:0.3

Each cycle connects, starts a run and either waits for its final event or
disconnects in the middle of it (``--mid-run``). ``--store`` picks the
history store (``memory:``, ``sqlite`` in a temporary directory, ``postgresql``
in a fresh schema); the store's size on disk is reported at the start, after
the warm-up, half-way and at the end, and its growth per cycle must not rise
from the first half to the second (``--db-growth-tolerance``).

Issue 13's cycles (``benchmarks/_follow.py``): a ``--resume`` fraction drops
the socket without a close frame after a few events (``--cut-max``),
reconnects (with ``?resume=<token>`` when ``--resume-grace`` > 0, except a
``--without-token`` share) and resumes the run with ``resume_run``; a
``--subscribe`` fraction has a second connection of the same user subscribed
to the thread the run is on. Every event must reach each of them exactly
once (lost and duplicated events counted), ``chat_sessions_lingering`` and
``chat_subscriptions_active`` must read 0 at the end, and the resume latency
(``resume_run`` sent -> first missed event) is reported. ``/metrics`` is sampled
every 250 ms: handlers must always equal one of each handler class (six by
default) x (connections + lingering sessions), exact, from one scrape; and once
the clients are gone every gauge must read 0. The server's
resident memory is taken once ``--warmup`` cycles are done (default: a tenth of
them) and again at the end; the end must be within ``--rss-tolerance`` (10%) of
the warm-up level. Prints PASS/FAIL per check and writes
benchmarks/reports/churn.{json,md}. ``--server-option`` passes an option to the
server (``--server-option=--agent-timeout=2`` makes ``hang`` faults end).
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from collections import Counter
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from server import default_router

from ._common import (
    GAUGES,
    add_report_arguments,
    cpu_seconds,
    open_server_process,
    rss_kib,
    scrape,
    write_report,
)
from ._follow import FollowStats, UserState, follow_cycle
from ._stores import BenchStore, label_of, open_bench_store
from .load import percentiles

HANDLERS_PER_CONNECTION = len(default_router())  # one instance of each handler class
#: Exact gauges of issue 13, 0 once no client is connected and no session lingers.
FOLLOW_GAUGES = ("chat_sessions_lingering", "chat_subscriptions_active")
REQUEST = "cut gpt-4o cost by 20%"


async def settle(port: int, gauges: tuple[str, ...], *, within: float) -> dict[str, float]:
    """/metrics once every gauge of ``gauges`` reads 0, or the last scrape after ``within`` s."""
    metrics = await scrape(port)
    with trio.move_on_after(within):
        while any(metrics.get(g, 0) != 0 for g in gauges):
            await trio.sleep(0.05)
            metrics = await scrape(port)
    return metrics


async def store_size(store: BenchStore) -> int | None:
    sizes = await trio.to_thread.run_sync(store.size_bytes)
    return None if sizes is None else sizes["total"]


async def one_cycle(url: str, index: int, mid_run: bool, outcome: Counter[str]) -> None:
    try:
        with trio.fail_after(30):
            async with open_websocket_url(f"{url}?user_id=churn{index % 97}") as ws:
                await ws.get_message()  # connection_established
                await ws.send_message(json.dumps({
                    "type": "start_agent",
                    "payload": {"user_request": f"cycle {index}: {REQUEST}"},
                }))  # fmt: skip
                while True:
                    event = json.loads(await ws.get_message())
                    if mid_run and event.get("type") == "agent_started":
                        outcome["disconnected_mid_run"] += 1
                        return
                    if event.get("final"):
                        data = event["data"]
                        outcome[f"final_{data['status']}"] += 1
                        if (data.get("result") or {}).get("degraded"):
                            outcome["answered_without_triage"] += 1
                        return
    except (ConnectionClosed, HandshakeError, OSError) as exc:
        outcome[f"client_error_{type(exc).__name__}"] += 1
    except trio.TooSlowError:
        outcome["lost_run"] += 1


async def main(args: argparse.Namespace) -> int:
    async with open_bench_store(args.store) as store:
        return await churn(args, store)


async def churn(args: argparse.Namespace, store: BenchStore) -> int:
    server_args = [f"--fault={f}" for f in args.fault] + store.server_args()
    if args.fault_seed is not None:
        server_args.append(f"--fault-seed={args.fault_seed}")
    following = args.resume > 0 or args.subscribe > 0
    if following:
        server_args.append("--max-connections-per-user=0")  # a user's two tabs and lingerers
    if args.resume_grace:
        server_args.append(f"--resume-grace={args.resume_grace}")
    server_args += args.server_option
    rng = random.Random(args.seed)
    outcome: Counter[str] = Counter()
    follow = FollowStats()
    violations: list[dict[str, Any]] = []
    samples: list[dict[str, float]] = []
    peaks: Counter[str] = Counter()
    tag = uuid.uuid4().hex[:8]  # thread ids are global names: fresh ones per run
    async with open_server_process(server_args) as server:
        host, port = server.host, server.port
        rss_start = rss_kib(server.pid)
        db: dict[str, int | None] = {"start": await store_size(store)}
        db_cycles: dict[str, int] = {"start": 0}
        db_samples: list[tuple[float, int]] = []
        warmup = args.warmup if args.warmup is not None else args.cycles // 10
        half = max(warmup + 1, (warmup + args.cycles) // 2)
        rss_warm: int | None = None
        rss_samples: list[tuple[float, int]] = []
        cpu_start = cpu_seconds(server.pid)
        started = time.perf_counter()
        done = 0

        async def sampler() -> None:
            while True:
                metrics = await scrape(server.admin_port)
                samples.append(metrics)
                rss_samples.append((round(time.perf_counter() - started, 2), rss_kib(server.pid)))
                handlers = metrics["chat_handlers_active"]
                connections = metrics["chat_connections_active"]
                lingering = metrics.get("chat_sessions_lingering", 0)
                for gauge in (*GAUGES, *FOLLOW_GAUGES):
                    peaks[gauge] = max(peaks[gauge], int(metrics.get(gauge, 0)))
                # A session in its resume grace keeps its handlers (it is still a connection).
                if handlers != HANDLERS_PER_CONNECTION * (connections + lingering):
                    violations.append(
                        {"handlers": handlers, "connections": connections, "lingering": lingering}
                    )
                await trio.sleep(0.25)

        async def db_sampler() -> None:
            while True:
                sizes = await trio.to_thread.run_sync(store.size_bytes)
                if sizes is not None:
                    db_samples.append((round(time.perf_counter() - started, 2), sizes["total"]))
                    peaks["sqlite_wal_bytes"] = max(peaks["sqlite_wal_bytes"], sizes.get("wal", 0))
                await trio.sleep(2 if store.sqlite_path is not None else 5)

        async def progress() -> None:
            while True:
                await trio.sleep(1)
                line = f"  {done}/{args.cycles} cycles, {dict(outcome)}"
                if following:
                    line += f" follow {dict(follow.outcome)}"
                print(line, flush=True)

        async def mark(point: str) -> None:
            db[point] = await store_size(store)
            db_cycles[point] = done

        # --max-seconds stops the clients where they are (the cycles done are
        # reported); the server still has to settle.
        with trio.fail_after(args.max_seconds + 120):
            async with trio.open_nursery() as background:
                background.start_soon(sampler)
                if store.label != "memory":
                    background.start_soon(db_sampler)
                if not args.quiet:
                    background.start_soon(progress)
                plan = iter(
                    [
                        (
                            i,
                            rng.random() < args.mid_run,
                            rng.random() < args.resume,
                            rng.random() < args.subscribe,
                            rng.randint(1, args.cut_max),
                            rng.random() >= args.without_token,
                        )
                        for i in range(args.cycles)
                    ]
                )

                async def worker(number: int) -> None:
                    nonlocal done, rss_warm
                    user = UserState(f"churnw{number}", f"t-churn-{tag}-{number}")
                    # workers share one iterator of cycles
                    for i, mid_run, resume, subscribe, cut, use_token in plan:
                        if resume or subscribe:
                            if await follow_cycle(
                                host, port, user, request=f"cycle {i}: {REQUEST}", drop=resume,
                                cut=cut, use_token=use_token, subscribe=subscribe, stats=follow,
                            ):  # fmt: skip
                                outcome["follow_cycle"] += 1
                        else:
                            await one_cycle(server.url, i, mid_run, outcome)
                        done += 1
                        if done == warmup:
                            rss_warm = rss_kib(server.pid)
                            await mark("after_warmup")
                        elif done == half:
                            await mark("half")

                with trio.move_on_after(args.max_seconds) as bounded:
                    async with trio.open_nursery() as clients:
                        for number in range(args.concurrency):
                            clients.start_soon(worker, number)
                background.cancel_scope.cancel()
        stopped = bounded.cancelled_caught
        elapsed = time.perf_counter() - started
        # Clients are gone: the server must settle to zero on its own (lingering
        # sessions whose client never came back end with their grace).
        final = await settle(
            server.admin_port, (*GAUGES, *FOLLOW_GAUGES), within=10 + args.resume_grace
        )
        rss_end = rss_kib(server.pid)
        cpu_used = cpu_seconds(server.pid) - cpu_start
        await mark("end")

    follow_failed = sum(
        n for key, n in follow.outcome.items() if key.startswith(("error_", "client_error_"))
    )
    db_check = db_growth(db, db_cycles)
    checks = {
        f"handlers == {HANDLERS_PER_CONNECTION} x (connections + lingering sessions) "
        "at every sample": not violations,
        "all four gauges 0 at the end": all(final[g] == 0 for g in GAUGES),
        "no lost runs": outcome["lost_run"] == 0 and follow.outcome["lost_run"] == 0,
        f"RSS at the end within {args.rss_tolerance:.0%} of the post-warm-up level": (
            rss_warm is not None and rss_end <= rss_warm * (1 + args.rss_tolerance)
        ),
        # Stopped at --max-seconds, a cycle cut while closing has its outcome but was not done.
        "every cycle accounted for": done
        <= sum(n for key, n in outcome.items() if key != "answered_without_triage")
        + follow_failed
        + follow.outcome["lost_run"]
        <= done + (args.concurrency if stopped else 0),
    }
    if following:
        checks["no event lost or duplicated, by any resumed or subscribed connection"] = (
            follow.lost_events == 0 and follow.duplicated_events == 0 and not follow.bad_runs
        )
        checks["chat_sessions_lingering and chat_subscriptions_active 0 at the end"] = all(
            final.get(g, 0) == 0 for g in FOLLOW_GAUGES
        )
        checks["no follow cycle refused or cut"] = follow_failed == 0
    if db_check is not None:
        checks[
            f"store growth per cycle in the second half within {args.db_growth_tolerance:.0%} "
            "of the first half's"
        ] = db_check <= 1 + args.db_growth_tolerance
    runs_total = {k: int(v) for k, v in final.items() if k.startswith("chat_runs_total")}
    resume = percentiles(follow.resume_ms)
    report = {
        "cycles": done,
        "cycles_planned": args.cycles,
        "stopped_at_max_seconds": stopped,
        "concurrency": args.concurrency,
        "faults": args.fault,
        "store": store.label,
        "resume_fraction": args.resume,
        "subscribe_fraction": args.subscribe,
        "resume_grace_s": args.resume_grace,
        "elapsed_s": round(elapsed, 2),
        "cycles_per_s": round(done / elapsed, 1),
        "server_cpu_s": round(cpu_used, 2),
        "server_rss_kib": {"start": rss_start, "after_warmup": rss_warm, "end": rss_end},
        "warmup_cycles": warmup,
        "rss_samples": rss_samples[:: max(1, len(rss_samples) // 200)],
        "store_bytes": db,
        "store_bytes_at_cycles": db_cycles,
        "store_growth_second_half_vs_first": db_check,
        "store_samples": db_samples[:: max(1, len(db_samples) // 200)],
        "samples": len(samples),
        "violations": violations[:20],
        "outcome": dict(outcome),
        "follow": {
            "outcome": dict(follow.outcome),
            "lost_events": follow.lost_events,
            "duplicated_events": follow.duplicated_events,
            "bad_runs": follow.bad_runs,
            "errors": follow.errors,
            "resume_ms": resume,
        },
        "gauge_peaks": dict(peaks),
        "final_gauges": {g: final.get(g) for g in (*GAUGES, *FOLLOW_GAUGES)},
        "runs_total": runs_total,
        "checks": checks,
    }
    lines = [
        "# Churn report", "",
        f"- cycles: {done}"
        + (f" of {args.cycles} (stopped at --max-seconds {args.max_seconds:g})" if stopped else "")
        + f", concurrency {args.concurrency}, faults {args.fault or 'none'}, store {store.label}",
        f"- elapsed {elapsed:.1f} s ({done / elapsed:.0f} cycles/s), "
        f"server CPU {cpu_used:.1f} s",
        f"- server RSS: {rss_start} KiB at start, {rss_warm} KiB after {warmup} warm-up cycles, "
        f"{rss_end} KiB at end"
        + (f" ({(rss_end - rss_warm) / rss_warm:+.1%})" if rss_warm else ""),
    ]  # fmt: skip
    if db["start"] is not None:
        lines.append(
            "- store on disk: " + ", ".join(
                f"{_kib(db.get(point))} after {db_cycles.get(point, 0)} cycles"
                for point in ("start", "after_warmup", "half", "end") if point in db
            ) + (f"; growth per cycle, second half / first half: {db_check}"
                 if db_check is not None else "")
            + (f"; peak sample {_kib(max(s for _, s in db_samples))}" if db_samples else "")
            + (f"; WAL file at most {_kib(peaks['sqlite_wal_bytes'])}"
               if store.sqlite_path is not None else "")
        )  # fmt: skip
    if following:
        lines += [
            f"- follow cycles: {args.resume:.0%} drop mid-run and resume "
            f"(resume grace {args.resume_grace:g} s"
            + (f", {args.without_token:.0%} of them without the token" if args.resume_grace
               else "")
            + f"), {args.subscribe:.0%} with a second connection subscribed to the thread",
            f"- follow outcomes: {dict(sorted(follow.outcome.items()))}",
            f"- events lost: {follow.lost_events}, duplicated: {follow.duplicated_events}",
            f"- resume latency (resume_run sent -> first missed event), ms: n {resume['n']}, "
            f"p50 {resume['p50']}, p90 {resume['p90']}, p99 {resume['p99']}, max {resume['max']}",
        ]  # fmt: skip
    lines += [
        f"- /metrics samples: {len(samples)}; gauge peaks: {dict(peaks)}",
        f"- client outcomes: {dict(sorted(outcome.items()))}",
        f"- final gauges: {report['final_gauges']}",
        f"- runs_total: {runs_total}", "",
        *[f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in checks.items()],
    ]  # fmt: skip
    markdown = "\n".join(lines) + "\n"
    path = write_report(args.report_dir, args.report_name, report, markdown)
    print(markdown)
    print(f"report: {path}")
    return 0 if all(checks.values()) else 1


def _kib(size: int | None) -> str:
    return "n/a" if size is None else f"{size / 1024:.0f} KiB"


def db_growth(db: dict[str, int | None], cycles: dict[str, int]) -> float | None:
    """Store bytes per cycle from half-way to the end over those from warm-up to half-way."""
    points = ("after_warmup", "half", "end")
    sizes = [db.get(p) for p in points]
    if any(size is None for size in sizes) or not all(p in cycles for p in points):
        return None
    warm, half, end = (int(size or 0) for size in sizes)
    first = (half - warm) / max(1, cycles["half"] - cycles["after_warmup"])
    second = (end - half) / max(1, cycles["end"] - cycles["half"])
    if first <= 0:
        return None if second <= 0 else float("inf")
    return round(second / first, 3)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.churn",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--mid-run", type=float, default=0.2, help="fraction that leave mid-run")
    parser.add_argument("--fault", action="append", default=[], metavar="AGENT:KIND:RATE")
    parser.add_argument("--fault-seed", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1, help="seed of the client's choices")
    parser.add_argument("--max-seconds", type=float, default=600)
    add_report_arguments(parser, "churn")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--warmup", type=int, default=None, help="cycles before the RSS baseline [cycles/10]"
    )
    parser.add_argument("--rss-tolerance", type=float, default=0.10)
    parser.add_argument(
        "--server-option", action="append", default=[], metavar="OPTION",
        help="an option for the server, e.g. --server-option=--agent-timeout=2",
    )  # fmt: skip
    parser.add_argument(
        "--store", default="memory:",
        help="memory:, sqlite (a temporary file), sqlite:///PATH, postgresql[://URL] [memory:]",
    )  # fmt: skip
    parser.add_argument(
        "--db-growth-tolerance", type=float, default=0.25,
        help="how much more the store may grow per cycle in the second half [0.25]",
    )  # fmt: skip
    parser.add_argument(
        "--resume", type=float, default=0.0,
        help="fraction of cycles that drop the socket mid-run and resume the run [0]",
    )  # fmt: skip
    parser.add_argument(
        "--subscribe", type=float, default=0.0,
        help="fraction of cycles with a second connection subscribed to the run's thread [0]",
    )  # fmt: skip
    parser.add_argument(
        "--resume-grace", type=float, default=0.0,
        help="the server's --resume-grace; > 0: reconnect with the resume token [0]",
    )  # fmt: skip
    parser.add_argument(
        "--without-token", type=float, default=0.25,
        help="with a grace, the share of resumes that reconnect without the token [0.25]",
    )  # fmt: skip
    parser.add_argument(
        "--cut-max", type=int, default=8,
        help="a dropping client leaves after 1..N events of its run [8]",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        label_of(args.store)
    except ValueError as error:
        parser.error(str(error))
    return args


if __name__ == "__main__":
    raise SystemExit(trio.run(main, parse_args()))
