"""Shared pieces of the benchmark scripts: a server subprocess, /metrics, memory."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
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


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live process descended from it (the workers of ``--workers N``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def tree_cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds of the processes ``pids`` (those still running)."""
    total = 0.0
    for pid in pids:
        with suppress(OSError, IndexError, ValueError):
            total += cpu_seconds(pid)
    return total


def tree_rss_kib(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        with suppress(OSError):
            total += rss_kib(pid)
    return total


#: The broker ``--workers`` > 1 needs to start (until the broker is used, only its URL is).
DEFAULT_BROKER = os.environ.get("CHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def worker_arguments(workers: int, broker: str | None, directory: Path) -> list[str]:
    """Server options for ``workers`` worker processes (none for 1): a broker and a shared store."""
    if workers <= 1:
        return []
    return [
        f"--workers={workers}",
        f"--broker={broker or DEFAULT_BROKER}",
        f"--store=sqlite:///{directory / 'chat.db'}",
    ]


@attrs.define
class ServerProcess:
    process: trio.Process
    url: str
    admin_port: int
    #: The server's processes: the parent and, with ``--workers N``, its workers.
    pids: list[int] = attrs.Factory(list)
    #: Seconds from starting the process to its "listening on" line (every worker listening).
    startup_s: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """CPU seconds of every process of the server (the workers' summed)."""
        return tree_cpu_seconds(self.pids)

    def rss_kib(self) -> int:
        return tree_rss_kib(self.pids)

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
    started = time.perf_counter()
    async with open_listening_process(command) as (process, url):
        # "listening on" comes once every worker listens: the tree is complete.
        yield ServerProcess(
            process=process,
            url=url,
            admin_port=admin_port,
            pids=process_tree(process.pid),
            startup_s=round(time.perf_counter() - started, 3),
        )


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
