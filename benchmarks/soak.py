"""Soak: steady clients, churn, every kind of fault and never-reading clients, for a bounded time.

    python -m benchmarks.soak --seconds 60 --clients 200 --churners 50 --slow 10

Against a real ``python -m server`` process started with faults of every kind
(raise, hang, slow on every agent), short time limits and a small outbound
queue. Reports:

- lost runs: a run whose connection stayed open but whose final event never
  came within run-timeout + 5 s (must be 0);
- the gauges once every client has gone (must all be 0);
- server resident memory after warm-up and at the end;
- runs by status, close codes the server sent (1013 for the slow consumers).

``--resumers N`` adds clients that, run after run, drop the socket without a
close frame after a few events and resume the run (``resume_run``; with
``--resume-grace`` > 0 over a session take-over), every other run with a second
connection subscribed to the thread (benchmarks/_follow.py): no event may be
lost or repeated on any of them, and ``chat_sessions_lingering`` and
``chat_subscriptions_active`` must read 0 at the end. ``--store`` picks the
history store (benchmarks/_stores.py).

Writes benchmarks/reports/soak.{json,md}; exits 1 if a check fails.

With ``--nodes N`` (N > 1), N server processes share a Redis broker and a
PostgreSQL store, watchers follow threads across them, and one is killed
with SIGKILL and restarted mid-run (see ``benchmarks/_soak_nodes.py``):

    python -m benchmarks.soak --nodes 2 --seconds 60 --clients 100 --churners 20 \\
        --broker redis://127.0.0.1:6379/0 --store postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
import uuid
from collections import Counter
from typing import Any

import trio
import wsproto
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url
from wsproto.events import AcceptConnection, Request, TextMessage

from ._common import (
    DEFAULT_BROKER,
    GAUGES,
    add_report_arguments,
    cpu_seconds,
    open_server_process,
    rss_kib,
    write_report,
)
from ._follow import FollowStats, UserState, follow_cycle
from ._soak_nodes import run_nodes
from ._stores import BenchStore, label_of, open_bench_store
from .churn import FOLLOW_GAUGES, settle
from .load import percentiles

DEFAULT_POSTGRES = os.environ.get(
    "CHAT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
FAULTS = ("triage:raise:0.1", "triage:hang:0.05", "triage:slow:0.1", "reporting:raise:0.05",
          "reporting:slow:0.1", "supervisor:raise:0.02", "supervisor:hang:0.01")  # fmt: skip
REQUESTS = (
    "We spend $12k a month on gpt-4o, how do we cut it?",
    "p99 latency of our claude-3-haiku calls is 2.5 s, help",
    "Which model should replace llama-3 70b for summaries?",
    "What should we alert on for our LLM gateway?",
)


class Stats:
    def __init__(self) -> None:
        self.outcome: Counter[str] = Counter()
        self.lost: list[str] = []


async def steady_client(url: str, index: int, until: float, run_deadline: float,
                        stats: Stats, rng: random.Random) -> None:  # fmt: skip
    """Runs one request after another, each to its final event."""
    try:
        async with open_websocket_url(f"{url}?user_id=steady{index}") as ws:
            await ws.get_message()
            n = 0
            while trio.current_time() < until:
                n += 1
                run_id = f"s{index}-{n}"
                await ws.send_message(json.dumps({"type": "start_agent", "payload": {
                    "user_request": rng.choice(REQUESTS), "run_id": run_id}}))  # fmt: skip
                with trio.move_on_after(run_deadline) as waiting:
                    while True:
                        frame = json.loads(await ws.get_message())
                        if frame.get("run_id") == run_id and frame.get("final"):
                            stats.outcome[f"final_{frame['data']['status']}"] += 1
                            break
                if waiting.cancelled_caught:
                    stats.lost.append(run_id)  # connection open, no final event
                await trio.sleep(rng.uniform(0, 0.2))
    except (ConnectionClosed, HandshakeError, OSError) as exc:
        stats.outcome[f"steady_closed_{type(exc).__name__}"] += 1


async def churner(url: str, index: int, until: float, stats: Stats, rng: random.Random) -> None:
    """Connects, starts a run, leaves at a random moment; again and again."""
    n = 0
    while trio.current_time() < until:
        n += 1
        try:
            async with open_websocket_url(f"{url}?user_id=churn{index}") as ws:
                await ws.get_message()
                await ws.send_message(json.dumps({"type": "chat", "payload": {
                    "content": rng.choice(REQUESTS)}}))  # fmt: skip
                with trio.move_on_after(rng.uniform(0, 0.5)):
                    while not json.loads(await ws.get_message()).get("final"):
                        pass
            stats.outcome["churn_cycles"] += 1
        except (ConnectionClosed, HandshakeError, OSError):
            stats.outcome["churn_errors"] += 1


async def never_reader(host: str, port: int, index: int, until: float, stats: Stats) -> None:
    """Handshakes, then only writes: starts runs at a steady pace and never reads a byte."""
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    # A tiny receive buffer, like a stalled client on a slow link: the server's
    # queue fills in seconds instead of after megabytes of loopback buffering.
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await sock.connect((host, port))
    stream = trio.SocketStream(sock)
    try:
        await stream.send_all(ws.send(Request(host=host, target=f"/ws?user_id=slow{index}")))
        with trio.fail_after(5):
            while True:
                ws.receive_data(await stream.receive_some(65536))
                if any(isinstance(e, AcceptConnection) for e in ws.events()):
                    break
        stats.outcome["slow_connected"] += 1
        n = 0
        while trio.current_time() < until:
            n += 1
            frame = json.dumps({"type": "chat", "payload": {"content": "x" * 2000 + str(n)}})
            with trio.move_on_after(1):
                await stream.send_all(ws.send(TextMessage(data=frame)))
            await trio.sleep(0.1)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        stats.outcome["slow_dropped_by_server"] += 1
    finally:
        await trio.aclose_forcefully(stream)


async def resumer(
    host: str, port: int, index: int, tag: str, until: float, follow: FollowStats,
    rng: random.Random,
) -> None:  # fmt: skip
    """Run after run: drop mid-run and resume; every other run followed by a subscriber."""
    user = UserState(f"resumer{index}", f"t-soak-{tag}-{index}")
    n = 0
    while trio.current_time() < until:
        n += 1
        await follow_cycle(
            host, port, user, request=rng.choice(REQUESTS), drop=True,
            cut=rng.randint(1, 8), use_token=True, subscribe=n % 2 == 0, stats=follow,
        )  # fmt: skip


async def main(args: argparse.Namespace) -> int:
    if args.nodes > 1:
        return await run_nodes(args, soak_arguments(args), FAULTS, REQUESTS, never_reader)
    async with open_bench_store(args.store) as store:
        return await soak(args, store)


def soak_arguments(args: argparse.Namespace) -> list[str]:
    """The servers' options for the faults and limits of the soak."""
    server_args = [f"--fault={f}" for f in FAULTS] + [
        f"--fault-seed={args.seed}", "--agent-timeout=1.5", "--run-timeout=4",
        "--outbound-queue=16", "--slow-consumer-timeout=2", "--heartbeat-interval=5",
        "--heartbeat-timeout=5",
    ]  # fmt: skip
    if args.resume_grace:
        server_args.append(f"--resume-grace={args.resume_grace}")
    return server_args


async def soak(args: argparse.Namespace, store: BenchStore) -> int:
    server_args = store.server_args() + soak_arguments(args)
    server_args.append("--max-connections-per-user=0")
    rng = random.Random(args.seed)
    stats = Stats()
    follow = FollowStats()
    tag = uuid.uuid4().hex[:8]
    async with open_server_process(server_args) as server:
        host, port = server.host, server.port
        cpu_start = cpu_seconds(server.pid)
        started = time.perf_counter()
        until = trio.current_time() + args.seconds
        rss_warm = 0

        async def warm_up_probe() -> None:
            nonlocal rss_warm
            await trio.sleep(min(5.0, args.seconds / 4))
            rss_warm = rss_kib(server.pid)

        with trio.fail_after(args.seconds + 60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(warm_up_probe)
                for i in range(args.clients):
                    nursery.start_soon(steady_client, server.url, i, until, 9.0, stats,
                                       random.Random(rng.random()))  # fmt: skip
                for i in range(args.churners):
                    nursery.start_soon(churner, server.url, i, until, stats,
                                       random.Random(rng.random()))  # fmt: skip
                for i in range(args.slow):
                    nursery.start_soon(never_reader, host, port, i, until, stats)
                for i in range(args.resumers):
                    nursery.start_soon(resumer, host, port, i, tag, until, follow,
                                       random.Random(rng.random()))  # fmt: skip
        elapsed = time.perf_counter() - started
        final = await settle(
            server.admin_port, (*GAUGES, *FOLLOW_GAUGES), within=15 + args.resume_grace
        )
        rss_end = rss_kib(server.pid)
        cpu = cpu_seconds(server.pid) - cpu_start

    runs = {k.split('"')[1]: int(v) for k, v in final.items() if k.startswith("chat_runs_total")}
    closes = {k.split('"')[1]: int(v) for k, v in final.items()
              if k.startswith("chat_connections_closed_total") and v}  # fmt: skip
    checks = {
        "lost runs == 0": not stats.lost and follow.outcome["lost_run"] == 0,
        "all four gauges 0 with no clients": all(final[g] == 0 for g in GAUGES),
    }
    if args.resumers:
        checks["no event lost or duplicated by a resumed or subscribed connection"] = (
            follow.lost_events == 0 and follow.duplicated_events == 0 and not follow.bad_runs
        )
        checks["chat_sessions_lingering and chat_subscriptions_active 0 at the end"] = all(
            final.get(g, 0) == 0 for g in FOLLOW_GAUGES
        )
    if args.seconds >= 10:  # shorter runs end before a full queue can time out
        checks["every never-reading client was closed with 1013"] = (
            closes.get("1013", 0) >= args.slow
        )
    report: dict[str, Any] = {
        "seconds": args.seconds, "clients": args.clients, "churners": args.churners,
        "never_readers": args.slow, "faults": list(FAULTS), "elapsed_s": round(elapsed, 1),
        "server_cpu_s": round(cpu, 1), "rss_kib": {"after_warm_up": rss_warm, "end": rss_end},
        "lost_runs": stats.lost, "client_outcomes": dict(stats.outcome), "runs_total": runs,
        "closes_by_code": closes, "final_gauges": {g: final[g] for g in GAUGES},
        "checks": checks, "store": store.label, "resumers": args.resumers,
        "resume_grace_s": args.resume_grace,
        "follow": {
            "outcome": dict(follow.outcome), "lost_events": follow.lost_events,
            "duplicated_events": follow.duplicated_events, "bad_runs": follow.bad_runs,
            "errors": follow.errors[:20], "resume_ms": percentiles(follow.resume_ms),
        },
        "final_follow_gauges": {g: final.get(g) for g in FOLLOW_GAUGES},
    }  # fmt: skip
    lines = [
        "# Soak report", "",
        f"- {args.seconds:g} s: {args.clients} steady clients, {args.churners} churners, "
        f"{args.slow} never-reading clients; faults {', '.join(FAULTS)}",
        f"- server CPU {cpu:.1f} s over {elapsed:.1f} s",
        f"- server RSS: {rss_warm} KiB after warm-up, {rss_end} KiB at the end",
        f"- runs by status: {runs}",
        f"- closes by code: {closes}",
        f"- client outcomes: {dict(sorted(stats.outcome.items()))}",
        f"- lost runs: {len(stats.lost)}",
        f"- gauges at the end: {report['final_gauges']}",
        f"- store: {store.label}",
    ]  # fmt: skip
    if args.resumers:
        resume = report["follow"]["resume_ms"]
        lines += [
            f"- {args.resumers} resuming clients (resume grace {args.resume_grace:g} s): "
            f"{dict(sorted(follow.outcome.items()))}",
            f"- events lost {follow.lost_events}, duplicated {follow.duplicated_events}; "
            f"resume latency ms p50 {resume['p50']}, p99 {resume['p99']} (n {resume['n']}); "
            f"follow gauges at the end: {report['final_follow_gauges']}",
        ]
    lines += [
        "",
        *[f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in checks.items()],
    ]  # fmt: skip
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    print(f"report: {write_report(args.report_dir, args.report_name, report, markdown)}")
    return 0 if all(checks.values()) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--churners", type=int, default=50)
    parser.add_argument("--slow", type=int, default=10, help="never-reading clients")
    parser.add_argument("--seed", type=int, default=1)
    nodes = parser.add_argument_group("several nodes (--nodes > 1)")
    nodes.add_argument(
        "--nodes", type=int, default=1, help="server processes on one broker and one PostgreSQL [1]"
    )
    nodes.add_argument("--broker", default=DEFAULT_BROKER, help=f"Redis URL [{DEFAULT_BROKER}]")
    nodes.add_argument(
        "--lease-seconds", type=float, default=2.0, help="the servers' --lease-seconds [2]"
    )
    nodes.add_argument(
        "--watchers",
        type=int,
        default=50,
        help="steady clients whose thread a connection on another node follows [50]",
    )
    nodes.add_argument(
        "--kill-at",
        type=float,
        default=0.4,
        help="when node 0 is killed, as a fraction of --seconds [0.4]",
    )
    nodes.add_argument(
        "--restart-after",
        type=float,
        default=1.0,
        help="seconds between the kill and the new process [1]",
    )
    parser.add_argument(
        "--resumers",
        type=int,
        default=0,
        help="clients that drop mid-run and resume, with a subscriber [0]",
    )
    parser.add_argument(
        "--resume-grace", type=float, default=0.0, help="the server's --resume-grace [0]"
    )
    parser.add_argument(
        "--store",
        default=None,
        help="memory:, sqlite (a temporary file), postgresql[://URL]; with --nodes > 1 a "
        "PostgreSQL URL, in a schema of the soak's own [memory:; with --nodes: "
        f"{DEFAULT_POSTGRES}]",
    )
    add_report_arguments(parser, "soak")
    args = parser.parse_args(argv)
    if args.nodes > 1:
        args.store = args.store or DEFAULT_POSTGRES
        if not args.store.startswith(("postgresql://", "postgres://")):
            parser.error("--nodes > 1 needs --store postgresql://...")
    else:
        args.store = args.store or "memory:"
        try:
            label_of(args.store)
        except ValueError as error:
            parser.error(str(error))
    return args


if __name__ == "__main__":
    raise SystemExit(trio.run(main, parse_args()))
