"""Load generator: many clients, each running requests to their final event, with figures.

    python -m benchmarks.load --clients 1000 --runs-per-client 5 --duration 60
    python -m benchmarks.load --url ws://127.0.0.1:8765/ws --admin-url http://127.0.0.1:8766 \\
        --clients 9000 --ramp 30 --processes 2 --think-time 1

Without ``--url`` it starts ``python -m server`` itself (``--fault``,
``--fault-seed`` and ``--workers`` are passed through) and also measures the
server's CPU per event, summed over all its processes. Each client
connects, runs ``--runs-per-client`` requests one after another
(``--think-time`` between them); a ``--churn`` fraction of the clients leaves
in the middle of one run and reconnects for the rest. The clients use a lean
client (a trio stream, frames by hand) and can be spread over ``--processes``
load generator processes, each reporting JSON to this one.

Measures time to ``agent_started`` and to the final event, events/s, runs/s,
``error_message`` codes, close codes, lost runs (no final event on a live
connection by the end of ``--duration``), its own CPU (this process and its
workers) per frame received, and samples ``/metrics`` every 250 ms. Prints a
progress line every second and writes benchmarks/reports/<name>.{md,json}
plus PNG plots. Exits 1 if runs were lost or clients could not connect.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from itertools import pairwise
from pathlib import Path
from typing import Any

import trio

from ._common import (
    GAUGES,
    add_report_arguments,
    open_server_process,
    scrape,
    tree_cpu_seconds,
    worker_arguments,
    write_report,
)
from ._load_client import REQUEST, Plan, Stats, own_cpu_seconds, run_clients
from ._stores import label_of, open_bench_store


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by a server we start)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def percentiles(values: list[float], digits: int = 2) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], digits)

    return {
        "n": len(ordered),
        "p50": rank(0.5),
        "p90": rank(0.9),
        "p99": rank(0.99),
        "max": round(ordered[-1], digits),
    }


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for result in results:
        for key, value in result.items():
            if isinstance(value, dict):
                total.setdefault(key, Counter()).update(value)
            elif isinstance(value, list):
                total.setdefault(key, []).extend(value)
            else:
                total[key] = total.get(key, 0) + value
    return {k: dict(v) if isinstance(v, Counter) else v for k, v in total.items()}


# --- worker processes -----------------------------------------------------------------


def make_plan(args: argparse.Namespace, url: str, t0: float) -> Plan:
    return Plan(
        url=url,
        clients=args.clients,
        runs_per_client=args.runs_per_client,
        think_time=args.think_time,
        churn=args.churn,
        ramp=args.ramp,
        arrival_rate=args.arrival_rate,
        seed=args.seed,
        t0=t0,
        deadline=t0 + args.duration,
        agent=args.agent,
        request=args.request,
        resume=args.resume,
    )


async def worker_main(args: argparse.Namespace) -> int:
    """``--worker I``: run clients I, I+N, I+2N...; "P {json}" lines, then "R {json}"."""
    plan = make_plan(args, args.url, args.t0)
    stats = Stats()
    cpu_start = own_cpu_seconds()

    async def report_progress() -> None:
        while True:
            print("P " + json.dumps(stats.progress()), flush=True)
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(report_progress)
        await run_clients(plan, range(args.worker, args.clients, args.processes), stats)
        nursery.cancel_scope.cancel()
    print("R " + json.dumps(stats.result(own_cpu_seconds() - cpu_start)), flush=True)
    return 0


def worker_command(args: argparse.Namespace, url: str, t0: float, index: int) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.load",
        "--url",
        url,
        "--clients",
        str(args.clients),
        "--runs-per-client",
        str(args.runs_per_client),
        "--think-time",
        str(args.think_time),
        "--churn",
        str(args.churn),
        "--duration",
        str(args.duration),
        "--ramp",
        str(args.ramp),
        "--seed",
        str(args.seed),
        "--processes",
        str(args.processes),
        "--worker",
        str(index),
        "--t0",
        repr(t0),
        "--agent",
        args.agent,
        "--request",
        args.request,
    ]
    if args.arrival_rate:
        command += ["--arrival-rate", str(args.arrival_rate)]
    if args.resume:
        command.append("--resume")
    return command


async def run_worker(
    command: list[str], progress: dict[str, int], results: list[dict[str, Any]]
) -> None:
    process = await trio.lowlevel.open_process(command, stdout=-1)
    assert process.stdout is not None
    buffer = b""
    try:
        while chunk := await process.stdout.receive_some(1 << 20):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"P "):
                    progress.update(json.loads(line[2:]))
                elif line.startswith(b"R "):
                    results.append(json.loads(line[2:]))
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"load worker exited {process.returncode}")


# --- the parent -----------------------------------------------------------------------


async def drive(
    args: argparse.Namespace, url: str, admin_port: int | None, server_pids: list[int] | None
) -> dict[str, Any]:
    samples: list[dict[str, float]] = []
    timeline: list[dict[str, float]] = []
    local = Stats()
    worker_progress: list[dict[str, int]] = [{} for _ in range(args.processes)]
    results: list[dict[str, Any]] = []
    total_runs = args.clients * args.runs_per_client
    t0 = time.time() + (1.0 if args.processes > 1 else 0.0)  # workers need time to start
    started = time.perf_counter()
    cpu_start = own_cpu_seconds()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    children_start = children.ru_utime + children.ru_stime
    server_cpu_start = tree_cpu_seconds(server_pids) if server_pids else None

    async def sample_now() -> dict[str, float]:
        assert admin_port is not None
        try:
            metrics = await scrape(admin_port)
        except (OSError, trio.TooSlowError):
            metrics = {}
        sample = {"t": round(time.perf_counter() - started, 3)}
        for key in (*GAUGES, "chat_events_sent_total"):
            if key in metrics:
                sample[key] = metrics[key]
        if server_pids:
            sample["server_cpu_s"] = tree_cpu_seconds(server_pids) - (server_cpu_start or 0)
        return sample

    if admin_port:
        samples.append(await sample_now())

    def current() -> dict[str, int]:
        if args.processes == 1:
            return local.progress()
        return dict(merge([p for p in worker_progress if p]))

    async def sampler() -> None:
        assert admin_port is not None
        while True:
            await trio.sleep(0.25)
            samples.append(await sample_now())

    async def progress() -> None:
        last_frames, last_runs = 0, 0
        while True:
            await trio.sleep(1)
            now = current()
            elapsed = time.perf_counter() - started
            frames, runs = now.get("frames", 0), now.get("runs_final", 0)
            timeline.append({"t": round(elapsed, 3), **now})
            line = (
                f"[{elapsed:5.0f}s] connected {now.get('connected', 0):5d}  "
                f"runs {runs}/{total_runs} ({runs - last_runs}/s)  "
                f"frames/s {frames - last_frames:6d}  errors {now.get('errors', 0)}"
            )
            if samples and "chat_runs_active" in samples[-1]:
                s = samples[-1]
                line += (
                    f"  | server conns {s['chat_connections_active']:.0f} runs "
                    f"{s['chat_runs_active']:.0f} agents {s['chat_agents_active']:.0f}"
                )
            if not args.quiet:
                print(line, flush=True)
            last_frames, last_runs = frames, runs

    async with trio.open_nursery() as background:
        if admin_port:
            background.start_soon(sampler)
        background.start_soon(progress)
        if args.processes == 1:
            await run_clients(make_plan(args, url, t0), range(args.clients), local)
            results.append(local.result(own_cpu_seconds() - cpu_start))
        else:
            with trio.move_on_after(args.duration + 30):
                async with trio.open_nursery() as workers:
                    for index in range(args.processes):
                        workers.start_soon(
                            run_worker,
                            worker_command(args, url, t0, index),
                            worker_progress[index],
                            results,
                        )
        elapsed = time.perf_counter() - started
        background.cancel_scope.cancel()
    if admin_port:
        # The clients are gone: give the server a moment to settle, then a last sample.
        last: dict[str, float] = {}
        with trio.move_on_after(5):
            while True:
                last = await sample_now()
                if last.get("chat_connections_active", 0) == 0:
                    break
                await trio.sleep(0.05)
        if last:
            samples.append(last)

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu_total = own_cpu_seconds() - cpu_start
    client_cpu = client_cpu_total
    if args.processes > 1:
        # incl. children: the workers' whole lives (interpreter start-up too) ...
        client_cpu_total += children.ru_utime + children.ru_stime - children_start
        # ... and what they measured around their clients alone.
        client_cpu += sum(r.get("cpu_s", 0) for r in results)
    server_cpu = tree_cpu_seconds(server_pids) - (server_cpu_start or 0) if server_pids else None
    return {
        "elapsed": elapsed,
        "results": results,
        "samples": samples,
        "timeline": timeline,
        "client_cpu": client_cpu,
        "client_cpu_total": client_cpu_total,
        "server_cpu": server_cpu,
    }


def summarize(
    args: argparse.Namespace, run: dict[str, Any], url: str, server_rss: int | None
) -> tuple[dict[str, Any], str]:
    total = merge(run["results"])
    elapsed = run["elapsed"]
    frames = total.get("frames", 0)
    events = total.get("events", 0)
    runs_final = total.get("runs_final", 0)
    planned = args.clients * args.runs_per_client
    samples = run["samples"]
    events_sent = None
    if samples and "chat_events_sent_total" in samples[-1]:
        events_sent = samples[-1]["chat_events_sent_total"] - samples[0]["chat_events_sent_total"]
    client_cpu, server_cpu = run["client_cpu"], run["server_cpu"]
    started = percentiles(total.get("to_started_ms", []))
    final = percentiles(total.get("to_final_ms", []))
    last_to_final = percentiles(total.get("last_to_final_ms", []), digits=3)
    resume_ms = percentiles(total.get("resume_ms", []), digits=3)
    connect = percentiles(total.get("to_connected_ms", []))
    peaks = {g: max((s.get(g, 0) for s in samples), default=None) for g in GAUGES}
    cores = os.cpu_count() or 1

    def machine_share(cpu: float | None) -> float | None:
        """The fraction of the machine (all its cores over the elapsed time) ``cpu`` is."""
        return None if cpu is None or not elapsed else round(cpu / (elapsed * cores), 3)

    report: dict[str, Any] = {
        "url": url,
        "config": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("worker", "t0")
        },
        "elapsed_s": round(elapsed, 2),
        "clients": args.clients,
        "connects": total.get("connects", 0),
        "connect_failures": total.get("connect_failures", {}),
        "runs": {
            "planned": planned,
            "sent": total.get("runs_sent", 0),
            "final": runs_final,
            "lost": total.get("runs_lost", 0),
            "abandoned_by_churn": total.get("runs_abandoned", 0),
            "cut_by_server_close": total.get("runs_cut", 0),
            "refused": total.get("runs_refused", 0),
            "never_sent": planned - total.get("runs_sent", 0),
            "by_status": total.get("statuses", {}),
        },
        "frames_received": frames,
        "events_received": events,
        "events_per_s": round(events / elapsed, 1),
        "runs_per_s": round(runs_final / elapsed, 1),
        "ms_to_connected": connect,
        "connects_pending_at_end": total.get("connecting", 0),
        "ms_to_agent_started": started,
        "ms_to_final_event": final,
        "ms_last_event_to_final": last_to_final,
        "store": args.store,
        "resume": {
            "enabled": args.resume,
            "resumes": total.get("resumes", 0),
            "sessions_resumed": total.get("sessions_resumed", 0),
            "ms_to_first_missed_event": resume_ms,
            "lost_events": total.get("resume_lost_events", 0),
            "duplicated_events": total.get("resume_duplicated_events", 0),
            "errors": total.get("resume_errors", {}),
        },
        "errors_by_code": total.get("errors", {}),
        "close_codes": total.get("close_codes", {}),
        "client_cpu_s": round(client_cpu, 2),
        "client_cpu_incl_children_s": round(run["client_cpu_total"], 2),
        "client_cpu_us_per_frame": round(client_cpu / frames * 1e6, 1) if frames else None,
        "server_cpu_s": round(server_cpu, 2) if server_cpu is not None else None,
        "server_workers": args.workers,
        "server_startup_s": run.get("server_startup_s"),
        "machine_cores": cores,
        "client_machine_share": machine_share(run["client_cpu_total"]),
        "server_machine_share": machine_share(server_cpu),
        "server_cpu_us_per_event": (
            round(server_cpu / events_sent * 1e6, 1)
            if server_cpu is not None and events_sent
            else None
        ),
        "server_events_sent": events_sent,
        "server_rss_kib_end": server_rss,
        "server_gauge_peaks": peaks if samples else None,
        "server_gauges_end": {g: samples[-1].get(g) for g in GAUGES} if samples else None,
        "metrics_samples": len(samples),
    }
    report["checks"] = {
        "no runs lost": report["runs"]["lost"] == 0,
        "every client connected": not report["connect_failures"],
    }
    if args.resume:
        resume = report["resume"]
        check = "every run left was resumed to its final event, nothing lost or doubled"
        report["checks"][check] = (
            resume["resumes"] == report["runs"]["abandoned_by_churn"]
            and not resume["errors"]
            and resume["lost_events"] == 0
            and resume["duplicated_events"] == 0
        )
    runs = report["runs"]

    def ms(p: dict[str, Any], digits: int = 1) -> str:
        return " / ".join(
            "-" if p[k] is None else f"{p[k]:.{digits}f}" for k in ("p50", "p90", "p99", "max")
        )

    ramp = f"{args.arrival_rate} clients/s" if args.arrival_rate else f"{args.ramp} s"
    failures = report["connect_failures"] or "none"
    lines = [
        f"# Load report: {args.report_name}",
        "",
        f"- target {url}; {args.clients} clients x {args.runs_per_client} runs, "
        f"{args.processes} process(es), ramp {ramp}, "
        f"think {args.think_time} s, churn {args.churn}, faults {args.fault or 'none'}, "
        f"agent {args.agent}"
        + (f" ({args.request!r})" if args.request != REQUEST else "")
        + (f", store {args.store}" if not args.url else ""),
        f"- elapsed {elapsed:.1f} s; runs: {runs['final']}/{planned} final, {runs['lost']} lost, "
        f"{runs['abandoned_by_churn']} abandoned by churn, {runs['cut_by_server_close']} cut by a "
        f"server close, {runs['refused']} refused, {runs['never_sent']} never sent",
        f"- runs by status: {dict(sorted(runs['by_status'].items()))}",
        f"- throughput: {report['events_per_s']:.0f} events/s, {report['runs_per_s']:.1f} runs/s "
        f"({events} events, {frames} frames received)",
        "",
        "| latency (ms) | n | p50 / p90 / p99 / max |",
        "|---|---|---|",
        f"| TCP connect -> handshake done | {connect['n']} | {ms(connect)} |",
        f"| send -> agent_started | {started['n']} | {ms(started)} |",
        f"| send -> final event | {final['n']} | {ms(final)} |",
        f"| last event before the final -> final event (arrivals) | {last_to_final['n']} "
        f"| {ms(last_to_final, 2)} |",
    ]
    if args.resume:
        resume = report["resume"]
        lines += [
            f"| resume_run sent -> first missed event | {resume_ms['n']} | {ms(resume_ms, 2)} |",
            "",
            f"- resumes: {resume['resumes']} runs left mid-run (socket dropped without a close "
            f"frame after agent_started) and resumed, {resume['sessions_resumed']} by a session "
            f"take-over; events lost {resume['lost_events']}, duplicated "
            f"{resume['duplicated_events']}; errors {resume['errors'] or 'none'}",
        ]
    lines += [
        "",
        f"- errors by code: {report['errors_by_code'] or 'none'}; close codes: "
        f"{report['close_codes'] or 'none'}; connect failures: {failures}; "
        f"connects still pending at the end: {report['connects_pending_at_end']}",
        f"- load generator CPU: {client_cpu:.2f} s = "
        f"{report['client_cpu_us_per_frame']} µs per frame received"
        + (
            f" ({run['client_cpu_total']:.2f} s incl. worker start-up)"
            if args.processes > 1
            else ""
        ),
    ]
    lines.append(
        f"- the load generator used {report['client_machine_share']:.0%} of the machine "
        f"({cores} cores over {elapsed:.1f} s)"
    )
    if server_cpu is not None:
        processes = f"{args.workers} workers and their parent" if args.workers > 1 else "1 process"
        lines.append(
            f"- server ({processes}) CPU: {server_cpu:.2f} s = "
            f"{report['server_cpu_us_per_event']} µs per event sent ({events_sent:.0f} events), "
            f"{report['server_machine_share']:.0%} of the machine; RSS at end {server_rss} KiB; "
            f"listening {report['server_startup_s']} s after it was started"
        )
        if report["client_cpu_us_per_frame"] and report["server_cpu_us_per_event"]:
            ratio = report["client_cpu_us_per_frame"] / report["server_cpu_us_per_event"]
            report["client_to_server_cpu_per_frame"] = round(ratio, 2)
            lines.append(f"- load generator CPU per frame / server CPU per event: {ratio:.2f}")
    if samples:
        lines.append(f"- server gauge peaks: {peaks}; at end: {report['server_gauges_end']}")
    lines += [
        "",
        *[f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in report["checks"].items()],
    ]
    return report, "\n".join(lines) + "\n"


def plot(directory: Path, name: str, run: dict[str, Any], results: dict[str, Any]) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install -e '.[dev]')")
        return []
    paths = []
    samples, timeline = run["samples"], run["timeline"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    if samples:
        t = [s["t"] for s in samples]
        for gauge in GAUGES:
            top.plot(t, [s.get(gauge, 0) for s in samples], label=f"server {gauge}")
        sent = [s.get("chat_events_sent_total", 0) for s in samples]
        rates = [
            (b - a) / max(tb - ta, 1e-6)
            for (a, b), (ta, tb) in zip(pairwise(sent), pairwise(t), strict=True)
        ]
        bottom.plot(t[1:], rates, label="server events sent/s")
    top.plot(
        [p["t"] for p in timeline],
        [p.get("connected", 0) for p in timeline],
        "k--",
        label="client connections",
    )
    frames = [p.get("frames", 0) for p in timeline]
    bottom.plot(
        [p["t"] for p in timeline[1:]],
        [b - a for a, b in pairwise(frames)],
        label="client frames received/s",
    )
    top.set_ylabel("count")
    top.legend(fontsize=8)
    top.set_title(f"{name}: gauges and connections")
    bottom.set_ylabel("per second")
    bottom.set_xlabel("seconds")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    paths.append(directory / f"{name}-timeline.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    for key, label in (
        ("to_started_ms", "send -> agent_started"),
        ("to_final_ms", "send -> final event"),
    ):
        values = sorted(results.get(key, []))
        if values:
            ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("ms")
    ax.set_ylabel("fraction of runs")
    ax.set_title(f"{name}: latency CDF")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(directory / f"{name}-latency-cdf.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


async def main(args: argparse.Namespace) -> int:
    fd_limit = raise_fd_limit()
    if args.worker is not None:
        return await worker_main(args)
    if args.clients + 64 > fd_limit * max(args.processes, 1):
        print(f"warning: {args.clients} clients with a file limit of {fd_limit}", flush=True)
    server_rss = None
    if args.url:
        admin_port = int(args.admin_url.rsplit(":", 1)[1].strip("/")) if args.admin_url else None
        run = await drive(args, args.url, admin_port, None)
        url = args.url
    else:
        server_args = [f"--fault={f}" for f in args.fault] + [
            "--max-connections-per-user=0",
            f"--max-connections={max(10000, args.clients + 100)}",
        ]
        if args.fault_seed is not None:
            server_args.append(f"--fault-seed={args.fault_seed}")
        with tempfile.TemporaryDirectory(prefix="load-") as directory:
            workers = worker_arguments(args.workers, args.broker, Path(directory))
            async with AsyncExitStack() as stack:
                if args.store is not None:
                    store = await stack.enter_async_context(open_bench_store(args.store))
                    workers = [a for a in workers if not a.startswith("--store=")]
                    server_args += store.server_args()
                server = await stack.enter_async_context(
                    open_server_process(server_args + workers + args.server_arg)
                )
                url = server.url
                print(
                    f"server pids {server.pids} at {url}, admin port {server.admin_port}",
                    flush=True,
                )
                run = await drive(args, url, server.admin_port, server.pids)
                server_rss = server.rss_kib()
                run["server_startup_s"] = server.startup_s
    report, markdown = summarize(args, run, url, server_rss)
    report["timeline"] = run["timeline"]
    report["metrics"] = run["samples"]
    path = write_report(args.report_dir, args.report_name, report, markdown)
    print(markdown)
    print(f"report: {path} and {path.with_suffix('.json')}")
    if not args.no_plots:
        for png in plot(args.report_dir, args.report_name, run, merge(run["results"])):
            print(f"plot: {png}")
    return 0 if all(report["checks"].values()) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", help="ws://HOST:PORT/ws of a running server (default: start one)")
    parser.add_argument("--admin-url", help="http://HOST:PORT of its admin listener, for /metrics")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds to start all clients")
    parser.add_argument(
        "--arrival-rate",
        type=float,
        default=None,
        help="clients started per second (instead of --ramp)",
    )
    parser.add_argument("--runs-per-client", type=int, default=5)
    parser.add_argument("--think-time", type=float, default=0.0, help="seconds between runs")
    parser.add_argument(
        "--churn",
        type=float,
        default=0.0,
        help="fraction of clients that leave mid-run once and reconnect",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="hard bound, seconds")
    parser.add_argument("--processes", type=int, default=1, help="worker processes for clients")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="AGENT:KIND:RATE",
        help="passed to the server this script starts",
    )
    parser.add_argument("--fault-seed", type=int, default=None)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes of the server this script starts (its --workers) [1]",
    )
    parser.add_argument(
        "--broker",
        default=None,
        help="--broker for that server when --workers > 1 [CHAT_TEST_REDIS_URL or local Redis]",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="any other option for the server this script starts",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the clients' choices")
    parser.add_argument(
        "--agent", default="supervisor", help="top-level agent each run starts [supervisor]"
    )
    parser.add_argument(
        "--request", default=REQUEST, help="the user_request of every run [a full-pipeline one]"
    )
    parser.add_argument(
        "--store",
        default=None,
        metavar="SPEC",
        help="history store of the server this script starts: memory:, sqlite (a temporary "
        "file), sqlite:///PATH, postgresql[://URL] (a fresh schema) [memory:]",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="churning clients drop the socket without a close frame and resume the run they "
        "left (with the resume token when the server offers one: --server-arg=--resume-grace=S)",
    )
    add_report_arguments(parser, "load")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.store is not None:
        try:
            label_of(args.store)
        except ValueError as error:
            parser.error(str(error))
    return args


if __name__ == "__main__":
    raise SystemExit(trio.run(main, parse_args()))
