"""Can one request stall the server? Worst-case inputs against /healthz and a normal client.

    python -m benchmarks.stall --attackers 5 --seconds 20

A ``python -m server`` (offline provider) gets ``--attackers`` connections that
each send ``--repeat`` times in turn a 64 KB worst-case message (``--input``: by
default ``"9%" * 32000``, the figure-role reproduction of issue 10; ``digits``,
``money``, ``models`` and ``mixed`` are other pathological inputs). Meanwhile:

- a probe asks ``/healthz`` every 20 ms and records how long each answer took;
- a normal client runs an ordinary request back to back and records the time to
  its ``agent_started`` and to its final event.

Printed (and written to benchmarks/reports/stall.{json,md}): the server CPU
spent per worst-case run, the bytes each worst-case run sent back, /healthz
latency (max, p99) and the normal client's latencies (max, p99) during the
attack. Targets (issue 10): /healthz and the normal run answer within 100 ms,
and a worst case costs < 100 ms of CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from ._common import add_report_arguments, cpu_seconds, http_get, open_server_process, write_report
from ._load_client import Closed, LeanClient

INPUTS: dict[str, str] = {
    "percent": "9%" * 32000,
    "digits": " ".join(["1234567"] * 8000),
    "money": "$1,234.56 " * 6500,
    "models": "gpt-4o claude-3-5-sonnet gemini-1.5-pro " * 1600,
    "mixed": ("we spend $5k/month on 2M tokens, p99 900 ms, 40% " * 1300),
}
NORMAL = (
    "We send 40M input and 10M output tokens a month to gpt-4o and p95 latency is 1200 ms. "
    "How much would switching to gpt-4o-mini save?"
)


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


@attrs.define
class Observed:
    worst_runs: int = 0
    worst_bytes: list[int] = attrs.field(factory=list)
    healthz_ms: list[float] = attrs.field(factory=list)
    normal_started_ms: list[float] = attrs.field(factory=list)
    normal_final_ms: list[float] = attrs.field(factory=list)


async def run_once(client: LeanClient, text: str, run_id: str) -> tuple[float, float, int]:
    """Send one request; (ms to agent_started, ms to final, bytes received for the run)."""
    sent = time.perf_counter()
    await client.send_text(
        json.dumps({"type": "user_message", "payload": {"content": text, "run_id": run_id}})
    )
    started = math.nan
    received = 0
    while True:
        payload = await client.receive_message()
        received += len(payload)
        if math.isnan(started) and b'"agent_started"' in payload:
            started = (time.perf_counter() - sent) * 1000
        if b'"final":true' in payload and run_id.encode() in payload:
            return started, (time.perf_counter() - sent) * 1000, received


async def attacker(
    url: tuple[str, int], text: str, index: int, repeat: int, until: float, seen: Observed
) -> None:
    client = await LeanClient.connect(url[0], url[1], f"/ws?user_id=attacker{index}")
    try:
        await client.receive_message()  # connection_established
        for n in range(1, repeat + 1):
            if trio.current_time() >= until:
                break
            _, _, received = await run_once(client, text, f"w{index}-{n}")
            seen.worst_runs += 1
            seen.worst_bytes.append(received)
    except Closed:
        pass
    finally:
        await client.aclose()


async def normal_client(url: tuple[str, int], until: float, seen: Observed) -> None:
    client = await LeanClient.connect(url[0], url[1], "/ws?user_id=normal")
    try:
        await client.receive_message()
        n = 0
        while trio.current_time() < until:
            n += 1
            started, final, _ = await run_once(client, NORMAL, f"n-{n}")
            seen.normal_started_ms.append(started)
            seen.normal_final_ms.append(final)
    finally:
        await client.aclose()


async def probe(admin_port: int, until: float, seen: Observed) -> None:
    while trio.current_time() < until:
        asked = time.perf_counter()
        status, _ = await http_get(admin_port, "/healthz", within=600)
        assert status == 200
        seen.healthz_ms.append((time.perf_counter() - asked) * 1000)
        await trio.sleep(0.02)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    text = INPUTS[args.input]
    seen = Observed()
    async with open_server_process(["--rate-limit", "0", *args.server_arg]) as server:
        url = (server.host, server.port)
        # 1. The worst case alone: its own CPU cost, nothing else running.
        alone = Observed()
        cpu_alone = cpu_seconds(server.pid)
        await attacker(url, text, 99, args.alone, trio.current_time() + args.seconds, alone)
        cpu_alone = cpu_seconds(server.pid) - cpu_alone
        # 2. The attack, with the probe and a normal client.
        cpu_before = cpu_seconds(server.pid)
        until = trio.current_time() + args.seconds
        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe, server.admin_port, until, seen)
            nursery.start_soon(normal_client, url, until, seen)
            for index in range(args.attackers):
                nursery.start_soon(attacker, url, text, index, args.repeat, until, seen)
        cpu = cpu_seconds(server.pid) - cpu_before
    # The normal client's and the probe's share of the CPU is small; attribute it all
    # to the worst cases (an upper bound on their cost).
    return {
        "parameters": {
            "input": args.input,
            "input_bytes": len(text.encode()),
            "attackers": args.attackers,
            "repeat": args.repeat,
            "seconds": args.seconds,
            "server_args": args.server_arg,
        },
        "worst_case_alone": {
            "runs": alone.worst_runs,
            "cpu_ms_per_run": round(cpu_alone * 1000 / max(1, alone.worst_runs), 1),
        },
        "worst_case_runs": seen.worst_runs,
        "server_cpu_s": round(cpu, 3),
        "cpu_ms_per_worst_case_at_most": round(cpu * 1000 / max(1, seen.worst_runs), 1),
        "bytes_per_worst_case_max": max(seen.worst_bytes, default=0),
        "healthz_ms": {
            "count": len(seen.healthz_ms),
            "p50": round(percentile(seen.healthz_ms, 50), 2),
            "p99": round(percentile(seen.healthz_ms, 99), 2),
            "max": round(max(seen.healthz_ms, default=math.nan), 2),
        },
        "normal_run": {
            "runs": len(seen.normal_final_ms),
            "to_started_ms_p99": round(percentile(seen.normal_started_ms, 99), 2),
            "to_started_ms_max": round(max(seen.normal_started_ms, default=math.nan), 2),
            "to_final_ms_p99": round(percentile(seen.normal_final_ms, 99), 2),
            "to_final_ms_max": round(max(seen.normal_final_ms, default=math.nan), 2),
        },
    }


def markdown(report: dict[str, Any]) -> str:
    p = report["parameters"]
    h = report["healthz_ms"]
    n = report["normal_run"]
    return "\n".join(
        [
            "# Worst-case input against the event loop",
            "",
            f"{p['attackers']} connections each sending the `{p['input']}` input "
            f"({p['input_bytes']} B) {p['repeat']} time(s) in turn within {p['seconds']} s; "
            "a /healthz probe every 20 ms and a normal client running an ordinary request "
            "back to back.",
            "",
            "| figure | value | target |",
            "|---|---:|---:|",
            f"| server CPU per worst case, alone ({report['worst_case_alone']['runs']} runs) | "
            f"{report['worst_case_alone']['cpu_ms_per_run']} ms | < 100 ms |",
            f"| worst-case runs completed during the attack | {report['worst_case_runs']} | |",
            f"| server CPU during the attack per worst case (all clients' work included) | "
            f"{report['cpu_ms_per_worst_case_at_most']} ms | |",
            f"| bytes sent back per worst case (max) | {report['bytes_per_worst_case_max']} | |",
            f"| /healthz latency p50 / p99 / max | {h['p50']} / {h['p99']} / {h['max']} ms | "
            "< 100 ms |",
            f"| normal run: to agent_started p99 / max | {n['to_started_ms_p99']} / "
            f"{n['to_started_ms_max']} ms | < 100 ms |",
            f"| normal run: to final p99 / max | {n['to_final_ms_p99']} / "
            f"{n['to_final_ms_max']} ms | |",
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stall", description=__doc__)
    parser.add_argument("--attackers", type=int, default=5, help="worst-case connections [5]")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long [20]")
    parser.add_argument("--input", choices=sorted(INPUTS), default="percent", help="[percent]")
    parser.add_argument(
        "--repeat", type=int, default=1, help="worst cases each attacker sends in turn [1]"
    )
    parser.add_argument(
        "--alone", type=int, default=10, help="worst cases timed alone first, for their CPU [10]"
    )
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra option for python -m server"
    )
    add_report_arguments(parser, "stall")
    args = parser.parse_args(argv)
    report = trio.run(measure, args)
    text = markdown(report)
    print(text)
    print(f"report: {write_report(args.report_dir, args.report_name, report, text)}")


if __name__ == "__main__":
    main()
