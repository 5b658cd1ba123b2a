"""Shared pieces of the benchmark scripts: a server subprocess, /metrics, memory."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

REPORTS = Path(__file__).parent / "reports"
#: The server's four gauges; each must read 0 once no client is connected.
GAUGES = (
    "chat_connections_active",
    "chat_handlers_active",
    "chat_agents_active",
    "chat_runs_active",
)
_SAMPLE = re.compile(r"^([a-z_]+)(?:\{([^}]*)\})? ([0-9.eE+-]+)$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text to {"name" or "name{labels}": value}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            name, labels, value = match.groups()
            out[f"{name}{{{labels}}}" if labels else name] = float(value)
    return out


async def http_get(port: int, path: str, *, within: float = 5.0) -> tuple[int, str]:
    """A minimal HTTP/1.1 GET against 127.0.0.1 (admin listener), answered ``within`` seconds."""
    with trio.fail_after(within):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n".encode())
            chunks = []
            while data := await stream.receive_some(65536):
                chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def scrape(port: int) -> dict[str, float]:
    _, body = await http_get(port, "/metrics")
    return parse_metrics(body)


async def settled_metrics(port: int, *, within: float, poll: float = 0.05) -> dict[str, float]:
    """/metrics once all four gauges read 0, or the last scrape after ``within`` seconds."""
    metrics = await scrape(port)
    with trio.move_on_after(within):
        while any(metrics[g] != 0 for g in GAUGES):
            await trio.sleep(poll)
            metrics = await scrape(port)
    return metrics


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@attrs.define
class ServerProcess:
    process: trio.Process
    url: str
    admin_port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


@asynccontextmanager
async def open_listening_process(
    command: Sequence[str], *, stop_timeout: float = 15
) -> AsyncIterator[tuple[trio.Process, str]]:
    """Run ``command`` until it prints ``listening on ADDRESS``; yield (process, ADDRESS).

    On exit: SIGTERM, up to ``stop_timeout`` seconds to exit, then SIGKILL.
    """
    process = await trio.lowlevel.open_process(list(command), stdout=-1)
    try:
        assert process.stdout is not None
        buffer = b""
        with trio.fail_after(20):
            while b"listening on " not in buffer or not buffer.endswith(b"\n"):
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError(f"{command[-1]!r} exited before listening")
                buffer += chunk
        yield process, buffer.decode().split("listening on ", 1)[1].split()[0]
    finally:
        process.terminate()
        with trio.move_on_after(stop_timeout):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


@asynccontextmanager
async def open_server_process(args: Sequence[str]) -> AsyncIterator[ServerProcess]:
    """Run ``python -m server`` on free loopback ports; SIGTERM and wait on exit."""
    admin_port = free_port()
    # The history store is in memory unless ``args`` name one (``--store``).
    store = [] if any(a == "--store" or a.startswith("--store=") for a in args) else [
        "--store", "memory:",
    ]  # fmt: skip
    command = [
        sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", "0",
        "--admin-port", str(admin_port), "--log-level", "WARNING", *store, *args,
    ]  # fmt: skip
    async with open_listening_process(command) as (process, url):
        yield ServerProcess(process=process, url=url, admin_port=admin_port)


def add_report_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """``--report-name`` (default ``name``) and ``--report-dir`` (default REPORTS)."""
    parser.add_argument("--report-name", default=name, help=f"report file names [{name}]")
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=REPORTS,
        help="where the reports go [benchmarks/reports]",
    )


def write_report(directory: Path, name: str, report: dict[str, object], markdown: str) -> Path:
    """``directory/name.json`` and ``directory/name.md``; returns the Markdown's path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    path = directory / f"{name}.md"
    path.write_text(markdown)
    return path
