"""Churn: many connect / start a run / disconnect cycles against a real server process.

    python -m benchmarks.churn --cycles 1000 --concurrency 50 --fault triage:raise:0.3

Each cycle connects, starts a run and either waits for its final event or
disconnects in the middle of it (``--mid-run``). ``/metrics`` is sampled
every 250 ms: handlers must always equal 4 x connections (exact, from one
scrape), and once the clients are gone all four gauges must read 0. The server's
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
    settled_metrics,
    write_report,
)

HANDLERS_PER_CONNECTION = len(default_router())  # one instance of each handler class


async def one_cycle(url: str, index: int, mid_run: bool, outcome: Counter[str]) -> None:
    try:
        with trio.fail_after(30):
            async with open_websocket_url(f"{url}?user_id=churn{index % 97}") as ws:
                await ws.get_message()  # connection_established
                await ws.send_message(json.dumps({
                    "type": "start_agent",
                    "payload": {"user_request": f"cycle {index}: cut gpt-4o cost by 20%"},
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
    server_args = [f"--fault={f}" for f in args.fault] + args.server_option
    if args.fault_seed is not None:
        server_args.append(f"--fault-seed={args.fault_seed}")
    rng = random.Random(args.seed)
    outcome: Counter[str] = Counter()
    violations: list[dict[str, Any]] = []
    samples: list[dict[str, float]] = []
    async with open_server_process(server_args) as server:
        rss_start = rss_kib(server.pid)
        warmup = args.warmup if args.warmup is not None else args.cycles // 10
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
                if handlers != HANDLERS_PER_CONNECTION * connections:
                    violations.append({"handlers": handlers, "connections": connections})
                await trio.sleep(0.25)

        async def progress() -> None:
            while True:
                await trio.sleep(1)
                print(f"  {done}/{args.cycles} cycles, {dict(outcome)}", flush=True)

        with trio.fail_after(args.max_seconds):
            async with trio.open_nursery() as background:
                background.start_soon(sampler)
                if not args.quiet:
                    background.start_soon(progress)
                plan = iter([(i, rng.random() < args.mid_run) for i in range(args.cycles)])

                async def worker() -> None:
                    nonlocal done, rss_warm
                    for i, mid_run in plan:  # workers share one iterator of cycles
                        await one_cycle(server.url, i, mid_run, outcome)
                        done += 1
                        if done == warmup:
                            rss_warm = rss_kib(server.pid)

                async with trio.open_nursery() as clients:
                    for _ in range(args.concurrency):
                        clients.start_soon(worker)
                background.cancel_scope.cancel()
        elapsed = time.perf_counter() - started
        # Clients are gone: the server must settle to zero on its own.
        final = await settled_metrics(server.admin_port, within=10)
        rss_end = rss_kib(server.pid)
        cpu_used = cpu_seconds(server.pid) - cpu_start

    checks = {
        f"handlers == {HANDLERS_PER_CONNECTION} x connections at every sample": not violations,
        "all four gauges 0 at the end": all(final[g] == 0 for g in GAUGES),
        "no lost runs": outcome["lost_run"] == 0,
        f"RSS at the end within {args.rss_tolerance:.0%} of the post-warm-up level": (
            rss_warm is not None and rss_end <= rss_warm * (1 + args.rss_tolerance)
        ),
        "every cycle accounted for": sum(
            n for key, n in outcome.items() if key != "answered_without_triage"
        )
        == args.cycles,
    }
    runs_total = {k: int(v) for k, v in final.items() if k.startswith("chat_runs_total")}
    report = {
        "cycles": args.cycles,
        "concurrency": args.concurrency,
        "faults": args.fault,
        "elapsed_s": round(elapsed, 2),
        "cycles_per_s": round(args.cycles / elapsed, 1),
        "server_cpu_s": round(cpu_used, 2),
        "server_rss_kib": {"start": rss_start, "after_warmup": rss_warm, "end": rss_end},
        "warmup_cycles": warmup,
        "rss_samples": rss_samples[:: max(1, len(rss_samples) // 200)],
        "samples": len(samples),
        "violations": violations[:20],
        "outcome": dict(outcome),
        "final_gauges": {g: final[g] for g in GAUGES},
        "runs_total": runs_total,
        "checks": checks,
    }
    lines = [
        "# Churn report", "",
        f"- cycles: {args.cycles}, concurrency {args.concurrency}, faults {args.fault or 'none'}",
        f"- elapsed {elapsed:.1f} s ({args.cycles / elapsed:.0f} cycles/s), "
        f"server CPU {cpu_used:.1f} s",
        f"- server RSS: {rss_start} KiB at start, {rss_warm} KiB after {warmup} warm-up cycles, "
        f"{rss_end} KiB at end"
        + (f" ({(rss_end - rss_warm) / rss_warm:+.1%})" if rss_warm else ""),
        f"- /metrics samples: {len(samples)}",
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.churn", description=__doc__)
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
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(trio.run(main, parse_args()))
