"""Profile a loaded server with py-spy: where its CPU goes, by function and by package.

    python -m benchmarks.profile --agent stream --clients 50 --runs 40 --native

Starts ``python -m server`` (with the ``stream`` agent of
benchmarks/_stream_agent.py), attaches ``py-spy record`` to it, drives
``--clients`` lean clients through ``--runs`` runs each (``--agent stream``:
``--events`` thinking events of ``--size`` bytes; ``--agent supervisor``: the
full pipeline), then stops py-spy and reads its samples (collapsed stacks; the
file is kept, and speedscope or flamegraph.pl open it). Prints the share of
the server's busy samples (py-spy leaves out samples where the server waits
in ``epoll_wait``) spent in each package (by the innermost frame) and in each
function (innermost, "self"; anywhere on the stack, "total"), and writes them
as a report to ``--report-dir``.

py-spy needs to be allowed to read the server's memory (root, or
``ptrace_scope`` 0); ``--native`` adds C frames (orjson, the ``send`` system
call) where py-spy can unwind them.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import trio

from ._common import add_report_arguments, cpu_seconds, open_server_process, write_report
from ._stores import open_bench_store
from .compare import STREAM_PLUGIN, Load, chat_message, our_client, stream_message
from .run_cost import FULL_PIPELINE_REQUEST

#: Package names for the innermost frame's file, first match wins.
PACKAGES = (
    ("/trio_websocket/", "trio_websocket"),
    ("/wsproto/", "wsproto"),
    ("/h11/", "h11"),
    ("/trio/_core/", "trio core (scheduler, cancel scopes)"),
    ("/trio/", "trio (sockets, streams, sync)"),
    ("/outcome/", "outcome"),
    ("/attr/", "attrs"),
    ("/agents/builtin/", "agents.builtin (agents' own work)"),
    ("/agents/", "agents (framework, lifecycle)"),
    ("benchmarks/", "benchmarks (stream agent)"),
    ("/server/", "server"),
    ("orjson", "orjson"),
    ("/python3.", "python standard library"),
    ("/lib/python", "python standard library"),
)


def package_of(frame: str) -> str:
    for needle, name in PACKAGES:
        if needle in frame:
            return name
    if "(" in frame and ".py:" not in frame:
        return "native (interpreter, libc, kernel calls)"
    return "other"


def short(frame: str) -> str:
    """``name (path:line)`` with the path cut after site-packages or at the repository."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    else:
        root = str(Path(__file__).resolve().parent.parent) + "/"
        where = where.replace(root, "")
    return f"{name} ({where})" if where else name


def parse_collapsed(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """py-spy's raw output: ``frame;frame;...;frame COUNT`` per line, outermost first."""
    stacks = []
    for line in lines:
        line = line.rstrip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        stacks.append((stack.split(";"), int(count)))
    return stacks


def summarize(stacks: list[tuple[list[str], int]], top: int) -> dict[str, Any]:
    total = sum(count for _, count in stacks)
    by_package: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        if not frames:
            continue
        by_package[package_of(frames[-1])] += count
        self_time[short(frames[-1])] += count
        for frame in set(frames):
            inclusive[short(frame)] += count

    def shares(counter: collections.Counter[str], n: int | None) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in counter.most_common(n)]

    # The entry points (runpy, the CLI, trio's run loop) are on nearly every stack.
    below = collections.Counter({k: v for k, v in inclusive.items() if v < 0.9 * total})
    return {
        "samples": total,
        "by_package": shares(by_package, None),
        "self": shares(self_time, top),
        "total": shares(below, top),
    }


def render(report: dict[str, Any]) -> str:
    params, summary = report["parameters"], report["summary"]
    lines = [
        f"# Profile: {params['agent']}",
        "",
        f"`{params['command']}`",
        "",
        f"{report['runs']} runs, {report['frames']} frames, server CPU "
        f"{report['server_cpu_s']} s ({report['server_cpu_us_per_frame']} µs per frame, "
        f"py-spy attached), {summary['samples']} busy samples.",
        "",
        "| package (innermost frame) | % of busy samples |",
        "|---|---:|",
        *(f"| {name} | {share} |" for name, share in summary["by_package"]),
        "",
        "| function, self | % |",
        "|---|---:|",
        *(f"| `{name}` | {share} |" for name, share in summary["self"]),
        "",
        "| function, total (anywhere on the stack; those on 90% or more left out) | % |",
        "|---|---:|",
        *(f"| `{name}` | {share} |" for name, share in summary["total"]),
        "",
        f"Samples (collapsed stacks): {report['samples_file']}",
    ]
    return "\n".join(lines) + "\n"


async def wait_sampling(spy: trio.Process) -> None:
    """Until py-spy says it samples (it prints ``py-spy> Sampling process ...``)."""
    assert spy.stdout is not None
    said = b""
    with trio.fail_after(20):
        while b"Sampling" not in said:
            chunk = await spy.stdout.receive_some(4096)
            if not chunk:
                raise SystemExit(f"py-spy exited before sampling: {said.decode()[-500:]}")
            said += chunk


def find_py_spy() -> str:
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed (pip install -e '.[bench]')")
    return found


async def main(args: argparse.Namespace) -> int:
    if args.agent == "stream":
        message = stream_message(args.events, args.size)
        server_args = [f"--plugin={STREAM_PLUGIN}"]
    else:
        message = chat_message(FULL_PIPELINE_REQUEST)
        server_args = []
    server_args += ["--max-connections-per-user=0", "--rate-limit=0"]
    args.report_dir.mkdir(parents=True, exist_ok=True)
    samples = args.report_dir / f"{args.report_name}.collapsed.txt"
    async with (
        open_bench_store(args.store) as store,
        open_server_process([*server_args, *store.server_args()]) as server,
    ):
        await our_client(server.port, 0, 3, message, Load())  # warm-up
        command = [
            find_py_spy(), "record", "--pid", str(server.pid), "--rate", str(args.rate),
            "--format", "raw", "--full-filenames", "--output", str(samples),
        ]  # fmt: skip
        if args.native:
            command.append("--native")
        if not args.all_samples:
            command.append("--gil")  # samples in a GIL-releasing system call are not CPU
        spy = await trio.lowlevel.open_process(command, stdout=-1, stderr=-1)
        try:
            await wait_sampling(spy)
            load = Load()
            cpu = cpu_seconds(server.pid)
            started = time.perf_counter()
            with trio.fail_after(args.max_seconds):
                async with trio.open_nursery() as nursery:
                    for index in range(args.clients):
                        nursery.start_soon(our_client, server.port, index, args.runs, message, load)
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(server.pid) - cpu
        finally:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output and exits
            with trio.move_on_after(30):
                await spy.wait()
            if spy.returncode is None:
                spy.kill()
                await spy.wait()
    if spy.returncode != 0 or not samples.exists():
        raise SystemExit(f"py-spy failed (exit {spy.returncode}); is ptrace allowed?")
    summary = summarize(parse_collapsed(samples.read_text().splitlines()), args.top)
    report = {
        "parameters": {
            "agent": args.agent,
            "events": args.events,
            "size": args.size,
            "clients": args.clients,
            "runs": args.runs,
            "rate": args.rate,
            "native": args.native,
            "gil_only": not args.all_samples,
            "command": " ".join(["python -m benchmarks.profile", *sys.argv[1:]]),
        },
        "runs": load.requests,
        "frames": load.frames,
        "elapsed_s": round(elapsed, 3),
        "server_cpu_s": round(cpu, 3),
        "server_cpu_us_per_frame": round(cpu / max(load.frames, 1) * 1e6, 2),
        "samples_file": str(samples),
        "summary": summary,
    }
    markdown = render(report)
    print(markdown)
    print(f"report: {write_report(args.report_dir, args.report_name, report, markdown)}")
    print(json.dumps(summary["by_package"]))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--agent",
        choices=("stream", "supervisor"),
        default="stream",
        help="stream: the event path alone; supervisor: the full pipeline [stream]",
    )
    parser.add_argument("--events", type=int, default=41, help="stream: thinking events [41]")
    parser.add_argument("--size", type=int, default=450, help="stream: bytes per event [450]")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients [50]")
    parser.add_argument("--runs", type=int, default=40, help="runs per client [40]")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second [250]")
    parser.add_argument("--native", action="store_true", help="C frames too (py-spy --native)")
    parser.add_argument(
        "--all-samples",
        action="store_true",
        help="keep samples taken inside system calls that release the GIL (wall time, not CPU)",
    )
    parser.add_argument("--top", type=int, default=25, help="functions listed [25]")
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument(
        "--store",
        default="memory:",
        help="history store of the server: memory:, sqlite (a temporary file), "
        "postgresql[://URL] (a fresh schema) [memory:]",
    )
    add_report_arguments(parser, "profile")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(trio.run(main, parse_args()))
