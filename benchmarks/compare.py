"""Side by side: this server against bare trio-websocket, websockets and FastAPI servers.

    python -m benchmarks.compare --clients 100 --runs 20 --connections 5000 --repeat 5

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
   ``benchmarks._bare_websockets``, ``benchmarks._bare_fastapi``: FastAPI on
   uvicorn[standard], i.e. uvloop, httptools and websockets; each its own
   process) is asked by the same clients for the same total number of frames,
   in the same number of requests, of the same mean size; its CPU per delivered
   frame (from /proc as well) is compared with both of ours.
2. Idle memory per connection. For each server (fresh processes): RSS, then
   ``--connections`` idle WebSocket connections (the lean client, no reader
   task per connection), wait until the server has accepted all of them, RSS
   again; reported as (after - before) / connections in KiB.

``--workers N`` (N > 1) adds our server with N worker processes (both rows
again, same load; CPU summed over the workers and their parent) and the ratios
of its CPU per frame and frames/s to the one-process server's.
``--broker-rows`` adds our server as one process on a SQLite file, without
and with ``--broker`` (Redis; nobody follows its runs from another process,
so what the broker costs here is per connection and per run, not per event),
and the ratio of their CPU per frame.
``--only-ours`` leaves out the bare servers and the idle memory.

``--store SPEC`` (repeatable: ``memory:``, ``sqlite``, ``postgresql[://URL]``;
see benchmarks/_stores.py) runs both rows of our server again with each
history store that is not ``memory:`` (a SQLite file in a temporary directory,
a fresh PostgreSQL schema), measures its idle memory too, and reports the
ratios of CPU per frame to the ``memory:`` rows (issue 12's target: SQLite
<= 1.15). ``--idle-memory`` keeps our idle memory with ``--only-ours``.
``--subscribers`` adds two rows of the event path with every client's runs
on one thread of its own: without and with a second connection of the same
user subscribed to that thread (issue 13: the cost per event of a subscriber).

``--repeat N`` does all of it N times (each time every server afresh) and
reports each figure and each ratio as the median and the min-max over the N.
Clients use the load generator's lean client (benchmarks/_load_client.py) so the
client process costs little; server CPU is measured for the server process
alone. Prints a Markdown table and writes a JSON and a Markdown report to
``--report-dir`` (benchmarks/reports/ by default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from ._common import (
    DEFAULT_BROKER,
    add_report_arguments,
    cpu_seconds,
    open_listening_process,
    open_server_process,
    rss_kib,
    scrape,
    tree_cpu_seconds,
    worker_arguments,
    write_report,
)
from ._load_client import LeanClient
from ._stores import BenchStore, check_specs, label_of, open_bench_store, postgres_backends
from .run_cost import FULL_PIPELINE_REQUEST

HOST = "127.0.0.1"

OURS = "trio-agent-server"
OURS_DELIVERY = "trio-agent-server, event path only"
OURS_FILE = "trio-agent-server, SQLite file"
OURS_BROKER = "trio-agent-server, SQLite file + broker"
STREAM_PLUGIN = "benchmarks._stream_agent"
BARE_TRIO = "bare trio-websocket"
BARE_WEBSOCKETS = "bare websockets (asyncio)"
BARE_FASTAPI = "bare FastAPI + uvicorn[standard]"
BARE_MODULES = {
    BARE_TRIO: "benchmarks._bare_trio_websocket",
    BARE_WEBSOCKETS: "benchmarks._bare_websockets",
    BARE_FASTAPI: "benchmarks._bare_fastapi",
}
#: Every row of the CPU table, and of the memory table (the event path runs on
#: the same server as the full pipeline: one idle-memory figure for both).
SERVERS = (OURS, OURS_DELIVERY, *BARE_MODULES)
MEMORY_SERVERS = (OURS, *BARE_MODULES)


def with_workers(name: str, workers: int) -> str:
    """The row of our server ``name`` run with ``workers`` worker processes."""
    return name if workers <= 1 else f"{name}, {workers} workers"


#: The rows of ``--subscribers``: the event path, each client's runs on one thread.
ON_THREAD = "trio-agent-server, event path, runs on a thread"
WITH_SUBSCRIBER = "trio-agent-server, event path, runs on a thread, 1 subscriber"


def with_store(name: str, label: str) -> str:
    """Our row ``name`` with the history store ``label`` (``memory``: the plain row)."""
    return name if label == "memory" else f"{name}, {label} store"


def store_labels(args: argparse.Namespace) -> list[str]:
    """The stores other than ``memory:`` that ``--store`` adds rows for, in order."""
    return [label_of(spec) for spec in args.store if label_of(spec) != "memory"]


def servers_of(args: argparse.Namespace) -> tuple[str, ...]:
    """The rows of the CPU table for these options."""
    ours = [OURS, OURS_DELIVERY]
    for label in store_labels(args):
        ours += [with_store(OURS, label), with_store(OURS_DELIVERY, label)]
    if args.workers > 1:
        ours += [with_workers(OURS, args.workers), with_workers(OURS_DELIVERY, args.workers)]
    if args.broker_rows:
        ours += [OURS_FILE, OURS_BROKER]
    if args.subscribers:
        ours += [ON_THREAD, WITH_SUBSCRIBER]
    return (*ours, *(() if args.only_ours else BARE_MODULES))


def memory_servers_of(args: argparse.Namespace) -> tuple[str, ...]:
    ours = [OURS, *(with_store(OURS, label) for label in store_labels(args))]
    if args.only_ours:
        return tuple(ours) if args.idle_memory else ()
    return (*ours, *BARE_MODULES)


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


class DatabaseCpu:
    """CPU of the PostgreSQL backends serving the server (another process, not in its CPU)."""

    def __init__(self, store: BenchStore | None, server_pids: list[int]) -> None:
        self._pids = server_pids
        self._active = store is not None and store.label == "postgresql"
        self._start = self._sample() if self._active else {}

    def _sample(self) -> dict[int, float]:
        return {pid: tree_cpu_seconds([pid]) for pid in postgres_backends(self._pids)}

    def used(self) -> float | None:
        if not self._active:
            return None
        now = self._sample()
        return sum(cpu - self._start.get(pid, 0.0) for pid, cpu in now.items())


def database_figures(database_cpu: float | None, cpu: float, frames: int) -> dict[str, Any]:
    if database_cpu is None:
        return {}
    return {
        "database_cpu_s": round(database_cpu, 3),
        "database_cpu_us_per_frame": round(database_cpu / frames * 1e6, 2),
        "server_and_database_cpu_us_per_frame": round((cpu + database_cpu) / frames * 1e6, 2),
    }


@asynccontextmanager
async def maybe_store(spec: str | None) -> AsyncIterator[BenchStore | None]:
    """The store ``spec`` names, fresh (None: the server's default for benchmarks, memory:)."""
    if spec is None:
        yield None
        return
    async with open_bench_store(spec) as store:
        yield store


async def measure_ours_cpu(
    args: argparse.Namespace,
    message: str,
    *,
    plugin: str | None = None,
    workers: int = 1,
    store_file: bool = False,
    broker: str | None = None,
    store: str | None = None,
) -> dict[str, Any]:
    """``store_file``: one process on a SQLite file (with ``broker``: and that broker),
    with a per-user limit high enough never to refuse (so a broker keeps its leases)."""
    server_args = ["--max-connections-per-user=0", "--rate-limit=0"]
    if plugin is not None:
        server_args.append(f"--plugin={plugin}")
    async with AsyncExitStack() as stack:
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="compare-"))
        bench_store = await stack.enter_async_context(maybe_store(store))
        if bench_store is not None:
            server_args += bench_store.server_args()
        server_args += worker_arguments(workers, args.broker, Path(directory))
        if store_file:
            server_args += [f"--store=sqlite:///{Path(directory) / 'chat.db'}",
                            "--max-connections-per-user=100000"]  # fmt: skip
            if broker is not None:
                server_args.append(f"--broker={broker}")
        async with open_server_process(server_args) as server:
            port = server.port
            # Warm-up: on every worker (the kernel picks one per connection).
            for i in range(2 * workers):
                await our_client(port, i, 5 if i == 0 else 1, message, Load())
            load = Load()
            database = DatabaseCpu(bench_store, server.pids)
            cpu_before = server.cpu_seconds()
            metrics_before = await scrape(server.admin_port)
            started, client_cpu = time.perf_counter(), time.process_time()
            with trio.fail_after(args.max_seconds):
                async with trio.open_nursery() as nursery:
                    for i in range(args.clients):
                        nursery.start_soon(our_client, port, i, args.runs, message, load)
            elapsed = time.perf_counter() - started
            client_cpu = time.process_time() - client_cpu
            cpu = server.cpu_seconds() - cpu_before
            database_cpu = database.used()
            metrics_after = await scrape(server.admin_port)
            await wait_no_connections(server.admin_port)
    sent = int(metrics_after["chat_events_sent_total"] - metrics_before["chat_events_sent_total"])
    return database_figures(database_cpu, cpu, load.frames) | {
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
        "server_processes": len(server.pids),
        "server_startup_s": server.startup_s,
        "client_cpu_s": round(client_cpu, 3),
        "client_machine_share": machine_share(client_cpu, elapsed),
        "server_machine_share": machine_share(cpu, elapsed),
    }


@attrs.define
class ThreadLoad(Load):
    subscriber_frames: int = 0
    thread_busy_retries: int = 0


async def thread_runs(client: LeanClient, runs: int, message: dict[str, Any], load: Load) -> None:
    """``runs`` runs on the client's thread, each read to its final event (on ``client``)."""
    text = json.dumps(message)
    for _ in range(runs):
        await client.send_text(text)
        while True:
            payload = await client.receive_message()
            if payload.startswith(b'{"type":"error_message"'):
                if b"THREAD_BUSY" in payload and isinstance(load, ThreadLoad):
                    # The previous run's end is still on its way out: once more.
                    load.thread_busy_retries += 1
                    await trio.sleep(0.001)
                    await client.send_text(text)
                    continue
                raise RuntimeError(payload.decode())
            load.frames += 1
            load.frame_bytes += len(payload)
            if b'"final":true' in payload:
                status = json.loads(payload)["data"]["status"]
                load.finals[status] = load.finals.get(status, 0) + 1
                break
        load.requests += 1


async def follow_runs(client: LeanClient, runs: int, load: ThreadLoad) -> None:
    """A subscriber: reads the thread's runs to ``runs`` final events."""
    for _ in range(runs):
        while True:
            payload = await client.receive_message()
            load.subscriber_frames += 1
            if b'"final":true' in payload:
                break


async def measure_thread_cpu(
    args: argparse.Namespace, request: str, subscribers: int, store: str | None
) -> dict[str, Any]:
    """The event path with each client's runs on one thread, with ``subscribers`` followers.

    Setting up (connections, each thread's first run, the subscriptions) is
    not measured; then every client runs ``--runs`` runs on its thread and
    each subscriber reads them all.
    """
    server_args = [
        "--max-connections-per-user=0", "--rate-limit=0", f"--plugin={STREAM_PLUGIN}",
    ]  # fmt: skip
    tag = uuid.uuid4().hex[:8]
    async with maybe_store(store) as bench_store:
        if bench_store is not None:
            server_args += bench_store.server_args()
        async with open_server_process(server_args) as server:
            port = server.port
            starters: list[tuple[LeanClient, dict[str, Any]]] = []
            followers: list[LeanClient] = []
            try:
                for i in range(args.clients):
                    user = f"/ws?user_id=thr{i}"
                    client = await LeanClient.connect(HOST, port, user)
                    starters.append((client, {}))
                    await client.receive_message()  # connection_established
                    message = {
                        "type": "start_agent",
                        "payload": {
                            "agent_name": "stream",
                            "user_request": request,
                            "thread_id": f"t-{tag}-{i}",
                        },
                    }
                    starters[-1] = (client, message)
                    await thread_runs(client, 1, message, ThreadLoad())  # creates the thread
                    for _ in range(subscribers):
                        follower = await LeanClient.connect(HOST, port, user)
                        followers.append(follower)
                        await follower.receive_message()
                        subscribe = {"thread_id": f"t-{tag}-{i}"}
                        await follower.send_text(
                            json.dumps({"type": "subscribe_thread", "payload": subscribe})
                        )
                        reply = await follower.receive_message()
                        if not reply.startswith(b'{"type":"thread_subscribed"'):
                            raise RuntimeError(reply.decode())
                load = ThreadLoad()
                cpu_before = server.cpu_seconds()
                metrics_before = await scrape(server.admin_port)
                started, client_cpu = time.perf_counter(), time.process_time()
                with trio.fail_after(args.max_seconds):
                    async with trio.open_nursery() as nursery:
                        for client, message in starters:
                            nursery.start_soon(thread_runs, client, args.runs, message, load)
                        for follower in followers:
                            nursery.start_soon(follow_runs, follower, args.runs, load)
                elapsed = time.perf_counter() - started
                client_cpu = time.process_time() - client_cpu
                cpu = server.cpu_seconds() - cpu_before
                metrics_after = await scrape(server.admin_port)
            finally:
                await close_all([client for client, _ in starters] + followers)
            await wait_no_connections(server.admin_port)
    sent = int(metrics_after["chat_events_sent_total"] - metrics_before["chat_events_sent_total"])
    delivered = load.frames + load.subscriber_frames
    return {
        "requests": load.requests,
        "subscribers_per_thread": subscribers,
        "frames_delivered": load.frames,
        "subscriber_frames_delivered": load.subscriber_frames,
        "frames_server_metric": sent,
        "frame_bytes_total": load.frame_bytes,
        "mean_frame_bytes": round(load.frame_bytes / load.frames, 1),
        "frames_per_request": round(load.frames / load.requests, 2),
        "run_outcomes": load.finals,
        "thread_busy_retries": load.thread_busy_retries,
        "elapsed_s": round(elapsed, 3),
        "frames_per_s": round(load.frames / elapsed),
        "server_cpu_s": round(cpu, 3),
        # Per event of the runs (what the starters received): the table's figure.
        "server_cpu_us_per_frame": round(cpu / load.frames * 1e6, 2),
        # Per frame written to any connection, subscribers' included.
        "server_cpu_us_per_delivered_frame": round(cpu / delivered * 1e6, 2),
        "server_processes": len(server.pids),
        "server_startup_s": server.startup_s,
        "client_cpu_s": round(client_cpu, 3),
        "client_machine_share": machine_share(client_cpu, elapsed),
        "server_machine_share": machine_share(cpu, elapsed),
    }


def machine_share(cpu: float, elapsed: float) -> float:
    """The fraction of the machine (every core, over ``elapsed`` s) that ``cpu`` s is."""
    return round(cpu / (elapsed * (os.cpu_count() or 1)), 3)


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
        "server_processes": 1,
        "client_cpu_s": round(client_cpu, 3),
        "client_machine_share": machine_share(client_cpu, elapsed),
        "server_machine_share": machine_share(cpu, elapsed),
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


async def measure_ours_memory(args: argparse.Namespace, store: str | None = None) -> dict[str, Any]:
    connections: int = args.connections
    async with (
        maybe_store(store) as bench_store,
        open_server_process(
            ["--max-connections-per-user=0", *(bench_store.server_args() if bench_store else ())]
        ) as server,
    ):
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


#: The ratios reported, as (key, ours, baseline, label).
RATIOS = (
    ("event_path_vs_fastapi", OURS_DELIVERY, BARE_FASTAPI, "event path / FastAPI+uvicorn"),
    ("full_pipeline_vs_fastapi", OURS, BARE_FASTAPI, "full pipeline / FastAPI+uvicorn"),
    ("event_path_vs_trio_websocket", OURS_DELIVERY, BARE_TRIO, "event path / trio-websocket"),
    ("full_pipeline_vs_trio_websocket", OURS, BARE_TRIO, "full pipeline / trio-websocket"),
    ("event_path_vs_websockets", OURS_DELIVERY, BARE_WEBSOCKETS, "event path / websockets"),
    ("full_pipeline_vs_websockets", OURS, BARE_WEBSOCKETS, "full pipeline / websockets"),
    ("trio_websocket_vs_fastapi", BARE_TRIO, BARE_FASTAPI, "trio-websocket / FastAPI+uvicorn"),
)
#: Issue 16's goals: ratio key (or idle memory) -> the most it may be; issue 14's
#: for the workers (they add no cost per frame).
TARGETS = {
    "event_path_vs_fastapi": 1.0,
    "full_pipeline_vs_fastapi": 2.0,
    "idle_kib_per_connection": 24.0,
    "full_pipeline_workers_vs_one": 1.1,
    "event_path_workers_vs_one": 1.1,
    "full_pipeline_broker_vs_none": 1.3,
    # Issue 12: the default SQLite store costs at most 15% more per event than none.
    "full_pipeline_sqlite_vs_memory": 1.15,
    "event_path_sqlite_vs_memory": 1.15,
}


def ratio_specs(
    servers: Sequence[str], workers: int, stores: Sequence[str] = ()
) -> list[tuple[str, str, str, str]]:
    """The ratios that these rows allow, as (key, ours, baseline, label)."""
    specs = [spec for spec in RATIOS if spec[1] in servers and spec[2] in servers]
    if OURS_BROKER in servers:
        specs.append(
            ("full_pipeline_broker_vs_none", OURS_BROKER, OURS_FILE,
             "full pipeline, one process, with / without the broker")
        )  # fmt: skip
    for label in stores:
        specs += [
            (
                f"full_pipeline_{label}_vs_memory",
                with_store(OURS, label),
                OURS,
                f"full pipeline, {label} store / memory: store",
            ),
            (
                f"event_path_{label}_vs_memory",
                with_store(OURS_DELIVERY, label),
                OURS_DELIVERY,
                f"event path, {label} store / memory: store",
            ),
        ]
    if ON_THREAD in servers and WITH_SUBSCRIBER in servers:
        specs.append(
            (
                "event_path_one_subscriber_vs_none",
                WITH_SUBSCRIBER,
                ON_THREAD,
                "event path on a thread, 1 subscriber / none (per event of the runs)",
            )
        )
    if workers > 1:
        specs += [
            (
                "full_pipeline_workers_vs_one",
                with_workers(OURS, workers),
                OURS,
                f"full pipeline, {workers} workers / 1 process",
            ),
            (
                "event_path_workers_vs_one",
                with_workers(OURS_DELIVERY, workers),
                OURS_DELIVERY,
                f"event path, {workers} workers / 1 process",
            ),
        ]
    return specs


def ratios(
    cpu: dict[str, dict[str, Any]], specs: Sequence[tuple[str, str, str, str]]
) -> dict[str, float | None]:
    """Server CPU per delivered frame of one server over another's, for every pair reported."""
    out: dict[str, float | None] = {}
    for key, ours, base, _ in specs:
        divisor = cpu[base]["server_cpu_us_per_frame"]
        out[key] = round(cpu[ours]["server_cpu_us_per_frame"] / divisor, 2) if divisor else None
    return out


def summary_keys(specs: Sequence[tuple[str, str, str, str]]) -> set[str]:
    return {key for key, *_ in specs}


def throughput_ratios(cpu: dict[str, dict[str, Any]], workers: int) -> dict[str, float]:
    """Frames/s with ``workers`` workers over frames/s of one process, both rows."""
    if workers <= 1:
        return {}
    return {
        "full_pipeline_workers_vs_one": round(
            cpu[with_workers(OURS, workers)]["frames_per_s"] / cpu[OURS]["frames_per_s"], 2
        ),
        "event_path_workers_vs_one": round(
            cpu[with_workers(OURS_DELIVERY, workers)]["frames_per_s"]
            / cpu[OURS_DELIVERY]["frames_per_s"],
            2,
        ),
    }


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Median, minimum and maximum of one figure over the repetitions."""
    known = [v for v in values if v is not None]
    if not known:
        return {"median": None, "min": None, "max": None, "values": list(values)}
    return {
        "median": round(statistics.median(known), 2),
        "min": min(known),
        "max": max(known),
        "values": list(values),
    }


def summarize(
    runs: Sequence[dict[str, Any]],
    servers: Sequence[str] = SERVERS,
    memory_servers: Sequence[str] = MEMORY_SERVERS,
    specs: Sequence[tuple[str, str, str, str]] = RATIOS,
) -> dict[str, Any]:
    return {
        "cpu_us_per_frame": {
            name: spread([run["cpu"][name]["server_cpu_us_per_frame"] for run in runs])
            for name in servers
        },
        "idle_kib_per_connection": {
            name: spread([run["memory"][name]["kib_per_connection"] for run in runs])
            for name in memory_servers
        },
        "ratios": {key: spread([run["ratios"][key] for run in runs]) for key, *_ in specs},
        "throughput_ratios": {
            key: spread([run["throughput_ratios"][key] for run in runs])
            for key in runs[0]["throughput_ratios"]
        },
        "client_machine_share": {
            name: spread([run["cpu"][name]["client_machine_share"] for run in runs])
            for name in servers
        },
    } | (subscriber_costs(runs) if WITH_SUBSCRIBER in servers else {})


def subscriber_costs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What one subscriber adds per event of the runs, and CPU per frame written to anyone."""
    return {
        "subscriber_us_per_event": spread(
            [
                round(
                    run["cpu"][WITH_SUBSCRIBER]["server_cpu_us_per_frame"]
                    - run["cpu"][ON_THREAD]["server_cpu_us_per_frame"],
                    2,
                )
                for run in runs
            ]
        ),
        "subscriber_us_per_delivered_frame": spread(
            [run["cpu"][WITH_SUBSCRIBER]["server_cpu_us_per_delivered_frame"] for run in runs]
        ),
    }


def _spread_text(figure: dict[str, Any]) -> str:
    if figure["median"] is None:
        return "n/a"
    if len(figure["values"]) == 1:
        return f"{figure['median']}"
    return f"{figure['median']} ({figure['min']}-{figure['max']})"


def render(report: dict[str, Any]) -> str:
    params, summary, runs = report["parameters"], report["summary"], report["runs"]
    servers, memory_servers = report["servers"], report["memory_servers"]
    specs = [tuple(spec) for spec in report["ratio_specs"]]
    workers = params["workers"]
    first = runs[0]["cpu"]
    repeat = len(runs)
    load = (
        f"Load: {params['clients']} clients x {params['runs']} runs of the full pipeline "
        f"({first[OURS]['frames_delivered']} event frames, mean "
        f"{first[OURS]['mean_frame_bytes']} B), then as many runs of the `stream` agent "
        "(benchmarks/_stream_agent.py: the same frames per run and mean size, no agent work)"
    )
    if workers > 1:
        load += (
            f"; both again on `--workers {workers}` (CPU summed over the workers and their parent)"
        )
    if BARE_FASTAPI in servers:
        load += (
            "; the bare servers were asked for the same number of frames of the same "
            "mean size in the same number of requests"
        )
    stores = [label_of(spec) for spec in params.get("stores", []) if label_of(spec) != "memory"]
    if stores:
        load += (
            "; both again with the history store "
            + " and ".join(f"`{store}`" for store in stores)
            + " (SQLite: a file in a temporary directory; PostgreSQL: a fresh schema); "
            "the plain rows run with `--store memory:`"
        )
    if params.get("subscribers"):
        load += (
            "; the event path again with each client's runs on a thread of its own, "
            "without and with a second connection subscribed to it (CPU per event of the runs)"
        )
    if memory_servers:
        load += f". Idle memory at {params['connections']} connections"
    lines = [
        "# Side-by-side comparison",
        "",
        f"{load}. {repeat} run(s); figures are the median (min-max) over them. The load "
        "generator shares the machine: its column is its CPU over all cores and the "
        "elapsed time.",
        "",
        "| server | frames delivered | mean frame (B) | frames/s | CPU per frame (µs) "
        "| / FastAPI+uvicorn | idle KiB per connection | load generator, share of machine |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    fastapi = summary["cpu_us_per_frame"].get(BARE_FASTAPI, {}).get("median")
    for name in servers:
        cpu = summary["cpu_us_per_frame"][name]
        memory = summary["idle_kib_per_connection"].get(name)
        per_s = statistics.median(run["cpu"][name]["frames_per_s"] for run in runs)
        vs = round(cpu["median"] / fastapi, 2) if fastapi else "n/a"
        if memory:
            idle = _spread_text(memory)
        else:
            same = [OURS_DELIVERY, *(with_store(OURS_DELIVERY, store) for store in stores)]
            full = name.replace(OURS_DELIVERY, OURS, 1)
            idle = "(same server)" if name in same and full in memory_servers else "-"
        share = summary["client_machine_share"][name]["median"]
        lines.append(
            f"| {name} | {first[name]['frames_delivered']} | {first[name]['mean_frame_bytes']} "
            f"| {round(per_s)} | {_spread_text(cpu)} | {vs} | {idle} | {share:.0%} |"
        )
    lines += ["", "Ratios of server CPU per delivered frame, median (min-max) over the runs:", ""]
    for key, _, _, label in specs:
        target = TARGETS.get(key)
        goal = f" (target <= {target})" if target is not None else ""
        lines.append(f"- {label}: **{_spread_text(summary['ratios'][key])}**{goal}")
    for key, figure in summary["throughput_ratios"].items():
        what = "full pipeline" if key.startswith("full") else "event path"
        lines.append(
            f"- frames/s, {what}, {workers} workers / 1 process: **{_spread_text(figure)}**"
        )
    for store in ["memory", *stores] if stores else ["memory"]:
        row = with_store(OURS, store)
        if row in memory_servers:
            idle = summary["idle_kib_per_connection"][row]
            which = f", {store} store" if stores else ""
            lines.append(
                f"- idle memory, ours{which}: **{_spread_text(idle)} KiB** per connection "
                f"(target <= {TARGETS['idle_kib_per_connection']})"
            )
    for store in stores:
        if store != "postgresql":
            continue
        for name in (OURS, OURS_DELIVERY):
            row = with_store(name, store)
            both = [run["cpu"][row].get("server_and_database_cpu_us_per_frame") for run in runs]
            plain = [run["cpu"][name]["server_cpu_us_per_frame"] for run in runs]
            if None in both:
                continue
            ratio = [round(b / p, 2) if p else None for b, p in zip(both, plain, strict=True)]
            lines.append(
                f"- {row}, with the PostgreSQL backends' own CPU: "
                f"**{_spread_text(spread(both))} µs** per frame, "
                f"{_spread_text(spread(ratio))} x the memory: row"
            )
    if "subscriber_us_per_event" in summary:
        lines.append(
            "- cost of one subscriber per event of the runs (1 subscriber - none): "
            f"**{_spread_text(summary['subscriber_us_per_event'])} µs**; per frame written to "
            "any connection with 1 subscriber: "
            f"{_spread_text(summary['subscriber_us_per_delivered_frame'])} µs"
        )
    columns = [
        (key, label)
        for key, label in (
            ("event_path_vs_fastapi", "event path / FastAPI"),
            ("full_pipeline_vs_fastapi", "full / FastAPI"),
            ("event_path_workers_vs_one", f"event path, {workers} workers / 1"),
            ("full_pipeline_workers_vs_one", f"full, {workers} workers / 1"),
            *(
                pair
                for store in stores
                for pair in (
                    (f"full_pipeline_{store}_vs_memory", f"full, {store} / memory"),
                    (f"event_path_{store}_vs_memory", f"event path, {store} / memory"),
                )
            ),
            ("event_path_one_subscriber_vs_none", "1 subscriber / none"),
        )
        if key in summary["ratios"]
    ]
    lines += [
        "",
        "| run | " + " | ".join([*servers, *(label for _, label in columns)]) + " |",
        "|---:|" + "---:|" * (len(servers) + len(columns)),
    ]
    for index, run in enumerate(runs, 1):
        figures = [run["cpu"][name]["server_cpu_us_per_frame"] for name in servers]
        figures += [run["ratios"][key] for key, _ in columns]
        cells = ["n/a" if figure is None else str(figure) for figure in figures]
        lines.append(f"| {index} | " + " | ".join(cells) + " |")
    outcomes = [run["cpu"][OURS]["run_outcomes"] for run in runs]
    lines += [
        "",
        f"- our server's chat_events_sent_total in run 1: {first[OURS]['frames_server_metric']} "
        f"(client-side count {first[OURS]['frames_delivered']}); run outcomes: {outcomes}",
    ]
    return "\n".join(lines) + "\n"


async def measure_once(args: argparse.Namespace, label: str) -> dict[str, Any]:
    """One repetition: every server's CPU per frame, then every server's idle memory."""
    cpu: dict[str, dict[str, Any]] = {}
    print(f"{label}CPU: {OURS}, {args.clients} clients x {args.runs} runs ...", flush=True)
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
    stream = stream_message(count, text_size)
    print(f"{label}CPU: {OURS_DELIVERY}, {args.clients} clients x {args.runs} runs ...", flush=True)
    cpu[OURS_DELIVERY] = await measure_ours_cpu(args, stream, plugin=STREAM_PLUGIN)
    for spec in args.store:
        store = label_of(spec)
        if store == "memory":
            continue  # the rows above
        for name, message, plugin in (
            (OURS, chat_message(args.request), None),
            (OURS_DELIVERY, stream, STREAM_PLUGIN),
        ):
            row = with_store(name, store)
            print(f"{label}CPU: {row}, {args.clients} clients x {args.runs} runs ...", flush=True)
            cpu[row] = await measure_ours_cpu(args, message, plugin=plugin, store=spec)
    if args.subscribers:
        request = f"{count} {text_size}"
        first_store = next((spec for spec in args.store if label_of(spec) != "memory"), None)
        for row, subscribers in ((ON_THREAD, 0), (WITH_SUBSCRIBER, 1)):
            print(f"{label}CPU: {row}, {args.clients} clients x {args.runs} runs ...", flush=True)
            cpu[row] = await measure_thread_cpu(args, request, subscribers, first_store)
    if args.workers > 1:
        for name, message, plugin in (
            (OURS, chat_message(args.request), None),
            (OURS_DELIVERY, stream, STREAM_PLUGIN),
        ):
            row = with_workers(name, args.workers)
            print(f"{label}CPU: {row}, {args.clients} clients x {args.runs} runs ...", flush=True)
            cpu[row] = await measure_ours_cpu(args, message, plugin=plugin, workers=args.workers)
    if args.broker_rows:
        message = chat_message(args.request)
        for row, broker in ((OURS_FILE, None), (OURS_BROKER, args.broker or DEFAULT_BROKER)):
            print(f"{label}CPU: {row}, {args.clients} clients x {args.runs} runs ...", flush=True)
            cpu[row] = await measure_ours_cpu(args, message, store_file=True, broker=broker)
    memory: dict[str, dict[str, Any]] = {}
    if args.only_ours and args.idle_memory:
        for spec in ["memory:", *(s for s in args.store if label_of(s) != "memory")]:
            row = with_store(OURS, label_of(spec))
            print(f"{label}memory: {row}, {args.connections} idle connections ...", flush=True)
            memory[row] = await measure_ours_memory(args, spec)
    if not args.only_ours:
        # Each bare request ends with a 4-byte "done" frame; size the other frames so the
        # mean over all frames matches ours.
        requests = cpu[OURS]["requests"]
        size = round((cpu[OURS]["frame_bytes_total"] - 4 * requests) / (total - requests))
        for name, module in BARE_MODULES.items():
            print(f"{label}CPU: {name}, {total} frames of {size} B ...", flush=True)
            cpu[name] = await measure_bare_cpu(module, args, total, size)
        print(f"{label}memory: {OURS}, {args.connections} idle connections ...", flush=True)
        memory[OURS] = await measure_ours_memory(args)
        for spec in args.store:
            if label_of(spec) != "memory":
                row = with_store(OURS, label_of(spec))
                print(f"{label}memory: {row}, {args.connections} idle connections ...", flush=True)
                memory[row] = await measure_ours_memory(args, spec)
        for name, module in BARE_MODULES.items():
            print(f"{label}memory: {name}, {args.connections} idle connections ...", flush=True)
            memory[name] = await measure_bare_memory(module, args)
    specs = ratio_specs(servers_of(args), args.workers, store_labels(args))
    return {
        "cpu": cpu,
        "memory": memory,
        "ratios": ratios(cpu, specs),
        "throughput_ratios": throughput_ratios(cpu, args.workers),
    }


async def main(args: argparse.Namespace) -> int:
    nofile = raise_nofile_limit()
    if nofile[0] != resource.RLIM_INFINITY and nofile[0] < 2 * args.connections + 200:
        print(f"warning: RLIMIT_NOFILE {nofile[0]} may be too low for {args.connections}")
    runs = []
    for index in range(args.repeat):
        label = f"[{index + 1}/{args.repeat}] " if args.repeat > 1 else ""
        runs.append(await measure_once(args, label))
    servers = servers_of(args)
    memory_servers = memory_servers_of(args)
    specs = ratio_specs(servers, args.workers, store_labels(args))
    report: dict[str, Any] = {
        "parameters": {
            "clients": args.clients,
            "runs": args.runs,
            "connections": args.connections,
            "repeat": args.repeat,
            "request": args.request,
            "workers": args.workers,
            "only_ours": args.only_ours,
            "stores": args.store,
            "subscribers": args.subscribers,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cores": os.cpu_count(),
            "nofile_limit": nofile[0],
        },
        "servers": list(servers),
        "memory_servers": list(memory_servers),
        "ratio_specs": [list(spec) for spec in specs],
        "runs": runs,
        "summary": summarize(runs, servers, memory_servers, specs),
        "targets": {
            key: target
            for key, target in TARGETS.items()
            if key in summary_keys(specs) or (key == "idle_kib_per_connection" and memory_servers)
        }
        | {
            # The same bound on idle memory with every store.
            f"idle_kib_per_connection_{label_of(spec)}": TARGETS["idle_kib_per_connection"]
            for spec in args.store
            if label_of(spec) != "memory" and with_store(OURS, label_of(spec)) in memory_servers
        },
    }
    markdown = render(report)
    print(markdown)
    print(json.dumps(report["summary"], indent=2))
    print(f"report: {write_report(args.report_dir, args.report_name, report, markdown)}")
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
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="repeat every measurement N times; report the median and min-max [1]",
    )
    parser.add_argument("--request", default=FULL_PIPELINE_REQUEST)
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="also run our server with N worker processes (N > 1), same load [1: not]",
    )
    parser.add_argument(
        "--broker",
        default=None,
        help="--broker of our server with --workers [CHAT_TEST_REDIS_URL or local Redis]",
    )
    parser.add_argument(
        "--broker-rows",
        action="store_true",
        help="also one process on a SQLite file without and with --broker (the full "
        "pipeline), and the ratio",
    )
    parser.add_argument(
        "--only-ours",
        action="store_true",
        help="leave out the bare servers and the idle memory",
    )
    parser.add_argument(
        "--store",
        action="append",
        default=[],
        metavar="SPEC",
        help="also run our server with this history store (memory:, sqlite: a temporary file, "
        "postgresql[://URL]: a fresh schema); repeatable; ratios to memory: [none]",
    )
    parser.add_argument(
        "--idle-memory",
        action="store_true",
        help="with --only-ours: still measure our idle memory (with each --store)",
    )
    parser.add_argument(
        "--subscribers",
        action="store_true",
        help="add the event path with runs on a thread, without and with 1 subscriber",
    )
    add_report_arguments(parser, "compare")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    try:
        check_specs(args.store)
    except ValueError as error:
        parser.error(str(error))
    return args


if __name__ == "__main__":
    raise SystemExit(trio.run(main, parse_args()))
