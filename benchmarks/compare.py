"""Side by side: this server against a bare trio-websocket and a bare websockets server.

    python -m benchmarks.compare --clients 100 --runs 20 --connections 5000

All in one invocation, on the same machine and the same load:

1. CPU per delivered frame. ``python -m server`` (offline model provider) serves
   ``--clients`` connections, each running ``--runs`` full-pipeline runs back to
   back; the server process's CPU seconds (from /proc), the events it delivered
   (``chat_events_sent_total`` and counted client-side) and their mean frame size
   are recorded. The same again with the ``stream`` agent
   (``--plugin benchmarks._stream_agent``): runs with the same frames per run and
   mean frame size but no agent work, i.e. only what the server adds between an
   agent and the socket (run, lifecycle, envelope, JSON, queue, writer). Then
   each bare server (``benchmarks._bare_trio_websocket``,
   ``benchmarks._bare_websockets``, each its own process) is asked by the same
   clients for the same total number of frames, in the same number of requests,
   of the same mean size; its CPU per delivered frame is compared with both.
2. Idle memory per connection. For each of the three servers (fresh processes):
   RSS, then ``--connections`` idle WebSocket connections (the lean client, no
   reader task per connection), wait until the server has accepted all
   of them, RSS again; reported as (after - before) / connections in KiB.

Clients use the load generator's lean client (benchmarks/_load_client.py) so the
client process costs little; server CPU is measured for the server process
alone. Prints a Markdown table and writes a JSON and a Markdown report to
benchmarks/reports/.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ._common import (
    cpu_seconds,
    open_listening_process,
    open_server_process,
    rss_kib,
    scrape,
    write_report,
)
from ._load_client import LeanClient
from .run_cost import FULL_PIPELINE_REQUEST

HOST = "127.0.0.1"

OURS = "trio-agent-server"
OURS_DELIVERY = "trio-agent-server, event path only"
STREAM_PLUGIN = "benchmarks._stream_agent"
BARE_TRIO = "bare trio-websocket"
BARE_WEBSOCKETS = "bare websockets (asyncio)"
BARE_MODULES = {
    BARE_TRIO: "benchmarks._bare_trio_websocket",
    BARE_WEBSOCKETS: "benchmarks._bare_websockets",
}


@attrs.define
class Load:
    frames: int = 0
    frame_bytes: int = 0
    requests: int = 0
    finals: dict[str, int] = attrs.Factory(dict)


@asynccontextmanager
async def open_bare_server(module: str) -> AsyncIterator[tuple[trio.Process, int]]:
    async with open_listening_process([sys.executable, "-m", module], stop_timeout=10) as (
        process,
        address,
    ):
        yield process, int(address)


async def wait_for(condition: Callable[[], Awaitable[bool]], seconds: float) -> None:
    """Poll another process (no event to wait on across processes) until ``condition``."""
    with trio.fail_after(seconds):
        while True:
            if await condition():
                return
            await trio.sleep(0.05)


async def wait_no_connections(admin_port: int) -> None:
    """Until our server has closed every connection (so SIGTERM finds none closing)."""

    async def none_open() -> bool:
        return (await scrape(admin_port))["chat_connections_active"] == 0

    await wait_for(none_open, 30)


# -- CPU per delivered frame ------------------------------------------------------------


async def our_client(port: int, index: int, runs: int, message: str, load: Load) -> None:
    client = await LeanClient.connect(HOST, port, f"/ws?user_id=cmp{index}")
    try:
        await client.receive_message()  # connection_established
        for _ in range(runs):
            await client.send_text(message)
            while True:
                payload = await client.receive_message()
                load.frames += 1
                load.frame_bytes += len(payload)
                if b'"final":true' in payload:  # our server writes compact JSON
                    status = json.loads(payload)["data"]["status"]
                    load.finals[status] = load.finals.get(status, 0) + 1
                    break
            load.requests += 1
    finally:
        await client.aclose()


async def bare_client(port: int, plan: Sequence[int], size: int, load: Load) -> None:
    client = await LeanClient.connect(HOST, port, "/")
    try:
        for frames in plan:
            await client.send_text(f"send {frames - 1} {size}")
            while True:
                payload = await client.receive_message()
                load.frames += 1
                load.frame_bytes += len(payload)
                if payload == b"done":
                    break
            load.requests += 1
    finally:
        await client.aclose()


def split_frames(total: int, clients: int, runs: int) -> list[list[int]]:
    """``total`` frames as ``clients`` x ``runs`` requests, as even as integers allow."""
    requests = clients * runs
    base, extra = divmod(total, requests)
    sizes = [base + (1 if i < extra else 0) for i in range(requests)]
    return [sizes[c * runs : (c + 1) * runs] for c in range(clients)]


def chat_message(request: str) -> str:
    return json.dumps({"type": "chat", "payload": {"content": request}})


def stream_message(count: int, size: int) -> str:
    request = f"{count} {size}"
    return json.dumps(
        {"type": "start_agent", "payload": {"agent_name": "stream", "user_request": request}}
    )


async def measure_ours_cpu(
    args: argparse.Namespace, message: str, *, plugin: str | None = None
) -> dict[str, Any]:
    server_args = ["--max-connections-per-user=0", "--rate-limit=0"]
    if plugin is not None:
        server_args.append(f"--plugin={plugin}")
    async with open_server_process(server_args) as server:
        port = server.port
        await our_client(port, 0, 5, message, Load())  # warm-up
        load = Load()
        cpu_before = cpu_seconds(server.pid)
        metrics_before = await scrape(server.admin_port)
        started, client_cpu = time.perf_counter(), time.process_time()
        with trio.fail_after(args.max_seconds):
            async with trio.open_nursery() as nursery:
                for i in range(args.clients):
                    nursery.start_soon(our_client, port, i, args.runs, message, load)
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        cpu = cpu_seconds(server.pid) - cpu_before
        metrics_after = await scrape(server.admin_port)
        await wait_no_connections(server.admin_port)
    sent = int(metrics_after["chat_events_sent_total"] - metrics_before["chat_events_sent_total"])
    return {
        "requests": load.requests,
        "frames_delivered": load.frames,
        "frames_server_metric": sent,
        "frame_bytes_total": load.frame_bytes,
        "mean_frame_bytes": round(load.frame_bytes / load.frames, 1),
        "frames_per_request": round(load.frames / load.requests, 2),
        "run_outcomes": load.finals,
        "elapsed_s": round(elapsed, 3),
        "frames_per_s": round(load.frames / elapsed),
        "server_cpu_s": round(cpu, 3),
        "server_cpu_us_per_frame": round(cpu / load.frames * 1e6, 2),
        "client_cpu_s": round(client_cpu, 3),
    }


async def measure_bare_cpu(
    module: str, args: argparse.Namespace, total: int, size: int
) -> dict[str, Any]:
    plans = split_frames(total, args.clients, args.runs)
    async with open_bare_server(module) as (process, port):
        await bare_client(port, [50] * 5, size, Load())  # warm-up
        load = Load()
        cpu_before = cpu_seconds(process.pid)
        started, client_cpu = time.perf_counter(), time.process_time()
        with trio.fail_after(args.max_seconds):
            async with trio.open_nursery() as nursery:
                for plan in plans:
                    nursery.start_soon(bare_client, port, plan, size, load)
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        cpu = cpu_seconds(process.pid) - cpu_before
    return {
        "requests": load.requests,
        "frames_delivered": load.frames,
        "mean_frame_bytes": round(load.frame_bytes / load.frames, 1),
        "frames_per_request": round(load.frames / load.requests, 2),
        "elapsed_s": round(elapsed, 3),
        "frames_per_s": round(load.frames / elapsed),
        "server_cpu_s": round(cpu, 3),
        "server_cpu_us_per_frame": round(cpu / load.frames * 1e6, 2),
        "client_cpu_s": round(client_cpu, 3),
    }


# -- idle memory per connection -----------------------------------------------------------


async def open_idle(
    port: int, count: int, target: Callable[[int], str], concurrency: int
) -> list[LeanClient]:
    clients: list[LeanClient] = []
    limit = trio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with limit:
            clients.append(await LeanClient.connect(HOST, port, target(i)))

    try:
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(one, i)
    except BaseException:
        await close_all(clients)
        raise
    return clients


async def close_all(clients: list[LeanClient]) -> None:
    for client in clients:
        await client.aclose()


async def settle_rss(pid: int, seconds: float = 0.5, bound_kib: int = 64) -> int:
    """RSS once two readings ``seconds`` apart differ by at most ``bound_kib`` (max 10 tries)."""
    previous = rss_kib(pid)
    for _ in range(10):
        await trio.sleep(seconds)
        current = rss_kib(pid)
        if abs(current - previous) <= bound_kib:
            return current
        previous = current
    return previous


def memory_result(before: int, after: int, count: int, elapsed: float) -> dict[str, Any]:
    return {
        "connections": count,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round((after - before) / count, 2),
        "open_s": round(elapsed, 2),
    }


async def measure_ours_memory(args: argparse.Namespace) -> dict[str, Any]:
    connections: int = args.connections
    async with open_server_process(["--max-connections-per-user=0"]) as server:
        port = server.port
        # Warm-up: a few connections opened and closed, so lazy imports are done.
        await close_all(await open_idle(port, 20, lambda i: f"/ws?user_id=warm{i}", 20))
        await wait_no_connections(server.admin_port)
        before = await settle_rss(server.pid)
        started = time.perf_counter()
        with trio.fail_after(args.max_seconds):
            clients = await open_idle(
                port, args.connections, lambda i: f"/ws?user_id=idle{i}", args.connect_concurrency
            )
        try:

            async def all_open() -> bool:
                metrics = await scrape(server.admin_port)
                return metrics["chat_connections_active"] >= connections

            await wait_for(all_open, 60)
            elapsed = time.perf_counter() - started
            after = await settle_rss(server.pid)
        finally:
            await close_all(clients)
        await wait_no_connections(server.admin_port)
    return memory_result(before, after, args.connections, elapsed)


async def bare_count(port: int) -> int:
    client = await LeanClient.connect(HOST, port, "/")
    try:
        await client.send_text("count")
        return int(await client.receive_message()) - 1  # not counting this control connection
    finally:
        await client.aclose()


async def bare_count_is(port: int, count: int) -> bool:
    return await bare_count(port) == count


async def measure_bare_memory(module: str, args: argparse.Namespace) -> dict[str, Any]:
    async with open_bare_server(module) as (process, port):
        await close_all(await open_idle(port, 20, lambda i: "/", 20))
        await wait_for(lambda: bare_count_is(port, 0), 30)
        before = await settle_rss(process.pid)
        started = time.perf_counter()
        with trio.fail_after(args.max_seconds):
            clients = await open_idle(
                port, args.connections, lambda i: "/", args.connect_concurrency
            )
        try:
            await wait_for(lambda: bare_count_is(port, args.connections), 60)
            elapsed = time.perf_counter() - started
            after = await settle_rss(process.pid)
        finally:
            await close_all(clients)
    return memory_result(before, after, args.connections, elapsed)


# -- report -------------------------------------------------------------------------------------


def raise_nofile_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def render(report: dict[str, Any]) -> str:
    cpu, memory = report["cpu"], report["memory"]
    params = report["parameters"]
    lines = [
        "# Side-by-side comparison",
        "",
        f"Load: {params['clients']} clients x {params['runs']} runs of the full pipeline "
        f"({cpu[OURS]['frames_delivered']} event frames, mean "
        f"{cpu[OURS]['mean_frame_bytes']} B), then as many runs of the `stream` agent "
        "(benchmarks/_stream_agent.py: the same frames per run and mean size, no agent "
        "work); the bare servers were asked for the same number of frames of the same "
        "mean size in the same number of requests. "
        f"Idle memory at {params['connections']} connections.",
        "",
        "| server | frames delivered | mean frame (B) | frames/s | server CPU (s) "
        "| CPU per frame (µs) | client CPU (s) | idle KiB per connection |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in (OURS, OURS_DELIVERY, BARE_TRIO, BARE_WEBSOCKETS):
        row = cpu[name]
        idle = memory[name]["kib_per_connection"] if name in memory else "(same server)"
        lines.append(
            f"| {name} | {row['frames_delivered']} | {row['mean_frame_bytes']} "
            f"| {row['frames_per_s']} | {row['server_cpu_s']} "
            f"| {row['server_cpu_us_per_frame']} | {row['client_cpu_s']} | {idle} |"
        )
    ratios = report["ratios"]
    lines += [
        "",
        "- CPU per frame, event path only / bare trio-websocket: "
        f"**{ratios['event_path_cpu_vs_trio_websocket']}** (target <= 1.3); "
        f"/ bare websockets: {ratios['event_path_cpu_vs_websockets']}",
        "- CPU per frame, full pipeline (agent work included) / bare trio-websocket: "
        f"**{ratios['cpu_vs_trio_websocket']}**; / bare websockets: "
        f"{ratios['cpu_vs_websockets']}",
        f"- idle memory, ours: **{memory[OURS]['kib_per_connection']} KiB** per connection "
        f"at {params['connections']} (target <= 24)",
        f"- our server's chat_events_sent_total: {cpu[OURS]['frames_server_metric']} "
        f"(client-side count {cpu[OURS]['frames_delivered']}); run outcomes: "
        f"{cpu[OURS]['run_outcomes']}",
    ]
    return "\n".join(lines) + "\n"


async def main(args: argparse.Namespace) -> int:
    nofile = raise_nofile_limit()
    if nofile[0] != resource.RLIM_INFINITY and nofile[0] < 2 * args.connections + 200:
        print(f"warning: RLIMIT_NOFILE {nofile[0]} may be too low for {args.connections}")
    cpu: dict[str, dict[str, Any]] = {}
    print(f"CPU: {OURS}, {args.clients} clients x {args.runs} runs ...", flush=True)
    cpu[OURS] = await measure_ours_cpu(args, chat_message(args.request))
    total = cpu[OURS]["frames_delivered"]
    per_run = round(cpu[OURS]["frames_per_request"])
    target_mean = cpu[OURS]["mean_frame_bytes"]
    # The stream agent's runs: the same frames per run (agent_started, COUNT
    # thinking events, agent_completed) of the same mean size, found from one
    # calibration run with empty thinking text.
    count = max(1, per_run - 2)
    calibration = await measure_ours_cpu(
        argparse.Namespace(**{**vars(args), "clients": 1, "runs": 1}),
        stream_message(count, 0),
        plugin=STREAM_PLUGIN,
    )
    empty_bytes = calibration["frame_bytes_total"]
    text_size = max(0, round((target_mean * (count + 2) - empty_bytes) / count))
    print(f"CPU: {OURS_DELIVERY}, {args.clients} clients x {args.runs} runs ...", flush=True)
    cpu[OURS_DELIVERY] = await measure_ours_cpu(
        args, stream_message(count, text_size), plugin=STREAM_PLUGIN
    )
    # Each bare request ends with a 4-byte "done" frame; size the other frames so the
    # mean over all frames matches ours.
    requests = cpu[OURS]["requests"]
    size = round((cpu[OURS]["frame_bytes_total"] - 4 * requests) / (total - requests))
    for name, module in BARE_MODULES.items():
        print(f"CPU: {name}, {total} frames of {size} B ...", flush=True)
        cpu[name] = await measure_bare_cpu(module, args, total, size)
    memory: dict[str, dict[str, Any]] = {}
    print(f"memory: {OURS}, {args.connections} idle connections ...", flush=True)
    memory[OURS] = await measure_ours_memory(args)
    for name, module in BARE_MODULES.items():
        print(f"memory: {name}, {args.connections} idle connections ...", flush=True)
        memory[name] = await measure_bare_memory(module, args)

    def ratio(name: str, ours: str = OURS) -> float | None:
        base = cpu[name]["server_cpu_us_per_frame"]
        return round(cpu[ours]["server_cpu_us_per_frame"] / base, 2) if base else None

    report: dict[str, Any] = {
        "parameters": {
            "clients": args.clients,
            "runs": args.runs,
            "connections": args.connections,
            "request": args.request,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "nofile_limit": nofile[0],
        },
        "cpu": cpu,
        "memory": memory,
        "ratios": {
            "cpu_vs_trio_websocket": ratio(BARE_TRIO),
            "cpu_vs_websockets": ratio(BARE_WEBSOCKETS),
            "event_path_cpu_vs_trio_websocket": ratio(BARE_TRIO, OURS_DELIVERY),
            "event_path_cpu_vs_websockets": ratio(BARE_WEBSOCKETS, OURS_DELIVERY),
        },
        "targets": {
            "cpu_vs_trio_websocket_max": 1.3,
            "idle_kib_per_connection_max": 24,
        },
    }
    markdown = render(report)
    print(markdown)
    print(json.dumps(report, indent=2))
    print(f"report: {write_report(args.report_name, report, markdown)}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients [100]")
    parser.add_argument("--runs", type=int, default=20, help="runs per client [20]")
    parser.add_argument(
        "--connections", type=int, default=5000, help="idle connections per server [5000]"
    )
    parser.add_argument(
        "--connect-concurrency", type=int, default=100, help="handshakes in flight [100]"
    )
    parser.add_argument("--request", default=FULL_PIPELINE_REQUEST)
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--report-name", default="compare")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(trio.run(main, parse_args()))
