"""``python -m server --workers N`` as real processes on loopback.

The parent holds the port and runs N worker servers on it: clients land on
every worker, a worker killed with SIGKILL is replaced while the others'
clients notice nothing, SIGTERM drains them all, /metrics sums what each
worker reports, workers that keep dying make the parent give up, and unsafe
settings or a port already taken are start-up errors.

The workers need ``--broker`` to start; the check is on the settings, so the
tests pass the real Redis URL (``CHAT_TEST_REDIS_URL``) and skip, with the
reason, where Redis is not running (never when ``CI`` is set).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from _procs import LineReader, reap, server_env

from server import default_router
from server._listeners import open_listeners, reserve_port
from server.protocol import ConfigurationError
from server.testing import ChatClient, open_chat_client
from server.workers import parse_exposition
from server.workers._scrape import http_get

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("CHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: Three fresh interpreters at once on a loaded 2-core machine can take a while.
STARTUP_TIMEOUT = 45.0
WAIT = 30.0
REQUEST = "We send 40M input and 10M output tokens a month to gpt-4o; what would gpt-4o-mini save?"

LISTENING = re.compile(r"listening on ws://127\.0\.0\.1:(?P<port>\d+)/ws")
ADMIN = re.compile(r"admin on http://127\.0\.0\.1:(?P<port>\d+)")

Key = tuple[str, tuple[tuple[str, str], ...]]


def clean_env() -> dict[str, str]:
    return server_env()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def broker() -> str:
    """The Redis URL for ``--broker``; skips the test where Redis is not running (unless CI)."""
    parts = urlsplit(REDIS_URL)
    try:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 6379)
            await stream.aclose()
    except (OSError, trio.TooSlowError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is not reachable and CI is set: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is not reachable (set CHAT_TEST_REDIS_URL): {exc}")
    return REDIS_URL


def by_key(text: str) -> dict[Key, float]:
    return {(s.name, s.labels): s.value for f in parse_exposition(text) for s in f.samples}


class Parent:
    """A ``python -m server --workers N`` process: its stdout read on demand, its stderr
    (the workers' too) read all along by :meth:`pump_stderr`."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdout is not None
        self.process = process
        self.stdout = LineReader(process.stdout, errors="replace")
        self.stderr_lines: list[str] = []
        #: Every worker write end of stderr is closed: the parent and all workers are gone.
        self.stderr_closed = trio.Event()
        self._more = trio.Event()
        self.port = 0
        self.admin_port = 0
        self.worker_pids: set[int] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def pump_stderr(self) -> None:
        assert self.process.stderr is not None
        reader = LineReader(self.process.stderr, errors="replace")
        try:
            while (line := await reader.readline()) is not None:
                self.stderr_lines.append(line)
                self._more.set()
                self._more = trio.Event()
        except trio.ClosedResourceError:
            pass  # the clean-up closed the pipe: the test is over
        self.stderr_closed.set()
        self._more.set()

    async def wait_stderr(self, pattern: str, *, after: int = 0) -> re.Match[str]:
        """The first stderr line from index ``after`` on that ``pattern`` matches (re.search)."""
        compiled = re.compile(pattern)
        with trio.fail_after(WAIT):
            while True:
                for line in self.stderr_lines[after:]:
                    if match := compiled.search(line):
                        return match
                after = len(self.stderr_lines)
                if self.stderr_closed.is_set():
                    raise AssertionError(f"stderr ended without {pattern!r}: {self.stderr_lines}")
                await self._more.wait()

    async def start(self) -> None:
        """Read the two start-up lines (printed once every worker listens)."""
        with trio.fail_after(STARTUP_TIMEOUT):
            listening = await self.stdout.readline()
            admin = await self.stdout.readline()
        assert listening is not None, f"exited before listening: {self.stderr_lines}"
        match = LISTENING.fullmatch(listening)
        assert match is not None, listening
        self.port = int(match["port"])
        assert admin is not None
        match = ADMIN.fullmatch(admin)
        assert match is not None, admin
        self.admin_port = int(match["port"])
        await self.workers()  # their pids, for the clean-up should the parent be killed

    async def get(self, path: str) -> tuple[int, bytes]:
        answer = await http_get("127.0.0.1", self.admin_port, path, within=WAIT)
        assert answer is not None, f"no answer to GET {path}"
        return answer

    async def get_json(self, path: str) -> tuple[int, Any]:
        status, body = await self.get(path)
        return status, json.loads(body)

    async def workers(self) -> list[dict[str, Any]]:
        _, health = await self.get_json("/healthz")
        workers: list[dict[str, Any]] = health["workers"]
        self.worker_pids |= {w["pid"] for w in workers if w["pid"] is not None}
        return workers

    async def metrics(self) -> dict[Key, float]:
        status, body = await self.get("/metrics")
        assert status == 200
        return by_key(body.decode())

    async def connections_accepted(self) -> dict[int, int]:
        """``chat_connections_total`` of each worker, from the worker's own /metrics.

        A counter: a connection closing meanwhile cannot hide one that opened.
        """
        out = {}
        for worker in await self.workers():
            port = int(worker["admin_url"].rsplit(":", 1)[1])
            answer = await http_get("127.0.0.1", port, "/metrics", within=WAIT)
            assert answer is not None
            assert answer[0] == 200
            out[worker["index"]] = int(by_key(answer[1].decode())[("chat_connections_total", ())])
        return out

    async def wait_exit(self) -> tuple[int, list[str]]:
        with trio.fail_after(WAIT):
            rest = await self.stdout.read_rest()
            code = await self.process.wait()
        return code, rest


SpawnParent = Callable[..., Awaitable[Parent]]


@pytest.fixture
async def spawn_parent(
    nursery: trio.Nursery, broker: str, tmp_path: Path
) -> AsyncIterator[SpawnParent]:
    """Start ``python -m server --workers N`` parents; whatever is left is killed at the end."""
    parents: list[Parent] = []

    async def spawn(*args: str, workers: int = 2) -> Parent:
        command = [
            sys.executable, "-m", "server", "--workers", str(workers), "--broker", broker,
            "--store", f"sqlite:///{tmp_path}/chat.db", "--port", "0",
            "--admin-port", str(free_port()), *args,
        ]  # fmt: skip
        process = await trio.lowlevel.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=clean_env(),
        )
        parent = Parent(process)
        parents.append(parent)
        nursery.start_soon(parent.pump_stderr)
        return parent

    yield spawn
    await reap([parent.process for parent in parents], WAIT)
    for parent in parents:  # workers outlive a killed parent only until they have drained
        for pid in parent.worker_pids:
            kill_if_ours(pid)


def kill_if_ours(pid: int) -> None:
    try:
        if b"server" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass


async def open_clients_on_every_worker(
    parent: Parent, stack: AsyncExitStack, workers: int = 2
) -> dict[int, list[ChatClient]]:
    """Connect clients one at a time until each worker has one; {worker: its clients}.

    The kernel spreads connections over the workers' sockets by a hash of the
    client's address and port; which worker took each one is read from the
    workers' connection counters.
    """
    placed: dict[int, list[ChatClient]] = {i: [] for i in range(workers)}
    counts = await parent.connections_accepted()
    for n in range(40):
        client = await stack.enter_async_context(open_chat_client(parent.url, user_id=f"u{n}"))
        now = await parent.connections_accepted()
        (index,) = [i for i in now if now[i] != counts.get(i, 0)]
        assert now[index] == counts.get(index, 0) + 1
        placed[index].append(client)
        counts = now
        if all(placed.values()):
            return placed
    raise AssertionError(f"40 connections did not reach every worker: {counts}")


async def handshake_status(port: int, origin: str) -> int:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws?user_id=o1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
        f"Origin: {origin}\r\n\r\n"
    )
    with trio.fail_after(WAIT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request.encode())
            received = b""
            while b"\r\n" not in received:
                chunk = await stream.receive_some(65536)
                assert chunk, f"closed without a status line: {received!r}"
                received += chunk
    return int(received.split(b" ", 2)[1])


async def run_server(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(STARTUP_TIMEOUT):
        return await trio.run_process(
            [sys.executable, "-m", "server", *args],
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
            env=clean_env(),
        )


# -- serving ------------------------------------------------------------------------------


async def test_two_workers_share_the_port_and_the_parent_sums_what_each_reports(
    spawn_parent: SpawnParent, broker: str, tmp_path: Path
) -> None:
    parent = await spawn_parent()
    await parent.start()
    workers = await parent.workers()
    assert [w["state"] for w in workers] == ["ready", "ready"]
    assert len({w["pid"] for w in workers}) == 2
    status, ready = await parent.get_json("/readyz")
    assert (status, ready["status"]) == (200, "ready")
    # Each worker's log lines carry its index.
    await parent.wait_stderr(r"model provider: offline worker=0$")
    await parent.wait_stderr(r"model provider: offline worker=1$")

    async with AsyncExitStack() as stack:
        placed = await open_clients_on_every_worker(parent, stack)
        clients = [client for on_worker in placed.values() for client in on_worker]
        for client in clients:
            run = await client.run(REQUEST)
            assert run.status == "completed"
        admins = [w["admin_url"].rsplit(":", 1)[1] for w in workers]

        async def each_worker() -> list[dict[Key, float]]:
            out = []
            for port in admins:
                answer = await http_get("127.0.0.1", int(port), "/metrics", within=WAIT)
                assert answer is not None
                out.append(by_key(answer[1].decode()))
            return out

        before = await each_worker()
        status, body = await parent.get("/metrics")
        after = await each_worker()
    families = parse_exposition(body.decode())
    checked = 0
    for family in families:
        if family.name.startswith("chat_worker") or family.name == "process_resident_memory_bytes":
            continue  # the parent's own series; memory moves between scrapes
        for sample in family.samples:
            labels = dict(sample.labels)
            if "worker" in labels:  # a gauge of one worker, as that worker reports it
                index = int(labels.pop("worker"))
                key = (sample.name, tuple(labels.items()))
                assert before[index][key] == sample.value == after[index][key], key
                continue
            key = (sample.name, sample.labels)
            low = sum(worker.get(key, 0.0) for worker in before)
            high = sum(worker.get(key, 0.0) for worker in after)
            if family.kind == "gauge":  # the clients are idle: nothing moves
                assert low == sample.value == high, key
            else:  # counters and histograms only grow between the scrapes
                assert low <= sample.value <= high, key
            checked += 1
    totals = by_key(body.decode())
    assert totals[("chat_connections_active", ())] == len(clients)
    assert totals[("chat_handlers_active", ())] == len(default_router()) * len(clients)
    assert totals[("chat_runs_total", (("status", "completed"),))] == len(clients)
    assert totals[("chat_events_sent_total", ())] >= 5 * len(clients)
    assert totals[("chat_workers", ())] == 2
    assert totals[("chat_workers_ready", ())] == 2
    assert checked > 100

    # The chat page comes from the parent and points at the shared port; the
    # workers let the page's origin in, and only that one.
    status, config = await parent.get_json("/config.json")
    assert (status, config["ws_port"]) == (200, parent.port)
    assert (await parent.get("/"))[0] == 200
    assert await handshake_status(parent.port, f"http://127.0.0.1:{parent.admin_port}") == 101
    assert await handshake_status(parent.port, "http://evil.example") == 403

    # The port is the workers' alone: another server on it is a start-up error.
    second = await run_server("--port", str(parent.port), "--admin-port", "0")
    assert second.returncode == 2
    assert "already in use" in second.stderr.decode()
    second = await run_server(
        "--workers", "2", "--broker", broker, "--store", f"sqlite:///{tmp_path}/other.db",
        "--port", str(parent.port), "--admin-port", "0",
    )  # fmt: skip
    assert second.returncode == 2
    assert "already in use" in second.stderr.decode()
    assert second.stdout == b""

    parent.process.send_signal(signal.SIGINT)
    code, rest = await parent.wait_exit()
    assert code == 0
    assert rest == []  # "listening on" and "admin on" were printed once, nothing since


async def test_a_killed_worker_is_replaced_and_the_other_workers_clients_notice_nothing(
    spawn_parent: SpawnParent,
) -> None:
    # Every run spends a second in reporting: the kill lands while runs are in flight.
    parent = await spawn_parent("--fault", "reporting:slow:1")
    await parent.start()
    async with AsyncExitStack() as stack:
        placed = await open_clients_on_every_worker(parent, stack)
        victim = (await parent.workers())[0]["pid"]
        connections_before = (await parent.metrics())[("chat_connections_total", ())]
        survivors = placed[1]
        run_ids = [await client.start(REQUEST) for client in survivors]
        for client, run_id in zip(survivors, run_ids, strict=True):
            await client.wait_event(run_id, "agent_started", agent_name="reporting")
        mark = len(parent.stderr_lines)
        os.kill(victim, signal.SIGKILL)
        await parent.wait_stderr(
            rf"worker 0 \(pid {victim}\) was killed by SIGKILL: starting another in", after=mark
        )
        # Until the replacement listens, the server is not ready.
        status, ready = await parent.get_json("/readyz")
        assert status == 503
        assert ready["workers"] == {"0": False, "1": True}

        for client, run_id in zip(survivors, run_ids, strict=True):
            run = await client.collect(run_id)
            assert run.status == "completed"
            await client.send({"type": "ping", "message_id": "still-here"})
            assert (await client.receive_frame("pong"))["message_id"] == "still-here"
        for client in placed[0]:  # the dead worker's clients lost their connection
            code, _ = await client.wait_closed()
            assert code == 1006

        match = await parent.wait_stderr(r"worker 0 \(pid (\d+)\) listening", after=mark)
        replacement = int(match[1])
        assert replacement != victim
        status, ready = await parent.get_json("/readyz")
        assert (status, ready["status"]) == (200, "ready")
        workers = await parent.workers()
        assert [(w["pid"], w["restarts"]) for w in workers[:1]] == [(replacement, 1)]
        metrics = await parent.metrics()
        # What the dead worker had counted stays in the totals.
        assert metrics[("chat_connections_total", ())] >= connections_before
        assert metrics[("chat_worker_restarts_total", ())] == 1
        # The replacement serves.
        async with AsyncExitStack() as more:
            placed = await open_clients_on_every_worker(parent, more)
            run = await placed[0][0].run(REQUEST)
            assert run.status == "completed"
    parent.process.send_signal(signal.SIGTERM)
    code, _ = await parent.wait_exit()
    assert code == 0


async def test_sigterm_drains_every_worker_with_a_final_event_for_every_run_and_exits_0(
    spawn_parent: SpawnParent,
) -> None:
    # Every run hangs in reporting: the 2 s drain ends them all (cancelled, SHUTTING_DOWN).
    parent = await spawn_parent(
        "--drain-timeout", "2", "--agent-timeout", "60", "--fault", "reporting:hang:1"
    )
    await parent.start()
    async with AsyncExitStack() as stack:
        placed = await open_clients_on_every_worker(parent, stack)
        clients = [client for on_worker in placed.values() for client in on_worker]
        runs = {}
        for client in clients:
            runs[client] = [await client.start(f"{REQUEST} ({i})") for i in range(2)]
        for client, run_ids in runs.items():
            for run_id in run_ids:
                await client.wait_event(run_id, "agent_started", agent_name="reporting")
        parent.process.send_signal(signal.SIGTERM)
        await parent.wait_stderr(r"received SIGTERM: draining the workers")
        status, ready = await parent.get_json("/readyz")
        assert (status, ready["status"]) == (503, "draining")
        for client, run_ids in runs.items():
            for run_id in run_ids:
                run = await client.collect(run_id)
                assert run.status == "cancelled"
                assert run.final["data"]["error"]["code"] == "SHUTTING_DOWN"
            code, _ = await client.wait_closed()
            assert code == 1001
    code, rest = await parent.wait_exit()
    assert code == 0
    assert rest == []
    await parent.wait_stderr(r"worker 0 \(pid \d+\) exited with code 0")
    await parent.wait_stderr(r"worker 1 \(pid \d+\) exited with code 0")


async def test_a_second_sigterm_stops_the_workers_without_waiting_for_their_runs(
    spawn_parent: SpawnParent,
) -> None:
    # Runs that hang, and a drain that would wait a minute for them.
    parent = await spawn_parent(
        "--drain-timeout", "60", "--agent-timeout", "120", "--fault", "reporting:hang:1"
    )
    await parent.start()
    async with AsyncExitStack() as stack:
        placed = await open_clients_on_every_worker(parent, stack)
        for on_worker in placed.values():
            run_id = await on_worker[0].start(REQUEST)
            await on_worker[0].wait_event(run_id, "agent_started", agent_name="reporting")
        parent.process.send_signal(signal.SIGTERM)
        # Each worker must have taken the first signal before the second comes
        # (a signal arriving while the same one is pending counts once).
        await parent.wait_stderr(r"received SIGTERM: draining worker=0$")
        await parent.wait_stderr(r"received SIGTERM: draining worker=1$")
        parent.process.send_signal(signal.SIGTERM)
        await parent.wait_stderr(r"received SIGTERM again: the workers stop now")
        code, rest = await parent.wait_exit()  # within WAIT, far below the 60 s drain
    assert code == 0
    assert rest == []
    await parent.wait_stderr(r"received SIGTERM again: stopping now worker=0$")
    await parent.wait_stderr(r"received SIGTERM again: stopping now worker=1$")


async def test_workers_drain_when_their_parent_is_killed(spawn_parent: SpawnParent) -> None:
    parent = await spawn_parent()
    await parent.start()
    await parent.workers()
    async with AsyncExitStack() as stack:
        placed = await open_clients_on_every_worker(parent, stack)
        parent.process.kill()
        for on_worker in placed.values():
            for client in on_worker:
                code, _ = await client.wait_closed()
                assert code == 1001  # a drain, not a crash
    with trio.fail_after(WAIT):
        await parent.stderr_closed.wait()  # every worker has exited
    await parent.wait_stderr(r"the parent process has gone: draining worker=0$")
    await parent.wait_stderr(r"the parent process has gone: draining worker=1$")


# -- giving up and refusing -------------------------------------------------------------------


async def test_workers_that_keep_dying_make_the_parent_give_up_with_exit_1(
    broker: str, tmp_path: Path
) -> None:
    result = await run_server(
        "--workers", "2", "--broker", broker, "--store", f"sqlite:///{tmp_path}/chat.db",
        "--port", "0", "--admin-port", "0", "--plugin", "tests._crash_in_workers",
    )  # fmt: skip
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert result.stdout == b""  # never listening
    assert re.search(
        r"^error: the workers keep dying: 5 exits within 30 s \(the last: worker [01] "
        r"\(pid \d+\) exited with code 3\); stopped$",
        stderr,
        re.MULTILINE,
    ), stderr
    assert len(re.findall(r"exited with code 3: starting another in", stderr)) == 4
    assert "Traceback" not in stderr


async def test_several_workers_without_a_broker_or_with_a_private_store_do_not_start() -> None:
    result = await run_server("--workers", "2", "--port", "0", "--admin-port", "0")
    assert result.returncode == 2
    assert result.stdout == b""
    stderr = result.stderr.decode()
    assert "error: --workers 2 needs --broker redis://HOST:PORT" in stderr
    assert "Traceback" not in stderr

    result = await run_server(
        "--workers", "2", "--broker", REDIS_URL, "--store", "memory:", "--port", "0",
        "--admin-port", "0",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == b""
    stderr = result.stderr.decode()
    assert "needs a store that every worker shares" in stderr
    assert "--store sqlite:///PATH" in stderr


async def test_a_reserved_port_turns_other_servers_away_even_while_no_worker_listens() -> None:
    reservation = await reserve_port("127.0.0.1", 0)
    port = reservation.port
    try:
        with pytest.raises(ConfigurationError, match="already in use"):
            await reserve_port("127.0.0.1", port)  # a second --workers parent
        workers = await open_listeners("127.0.0.1", port, count=2, exclusive=False)
        with pytest.raises(ConfigurationError, match="already in use"):
            await open_listeners("127.0.0.1", port)  # a single server, while workers listen
        with trio.fail_after(WAIT):  # connections reach the workers' sockets
            client = await trio.open_tcp_stream("127.0.0.1", port)
        await client.aclose()
        for listener in workers:
            await listener.aclose()
        with pytest.raises(ConfigurationError, match="already in use"):
            await open_listeners("127.0.0.1", port)  # and while none does
    finally:
        reservation.close()
    for listener in await open_listeners("127.0.0.1", port):  # free again
        await listener.aclose()


# -- the benchmarks, with workers ---------------------------------------------------------------


async def run_benchmark(module: str, *args: str) -> dict[str, Any]:
    """Run ``python -m module args --report-name w``; its JSON report."""
    directory = Path(args[args.index("--report-dir") + 1])
    with trio.fail_after(150):
        result = await trio.run_process(
            [sys.executable, "-m", module, *args, "--report-name", "w"],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**clean_env(), "CHAT_TEST_REDIS_URL": REDIS_URL},
        )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    report: dict[str, Any] = json.loads((directory / "w.json").read_text())
    return report


@pytest.mark.usefixtures("broker")
async def test_the_load_generator_measures_a_server_with_workers(tmp_path: Path) -> None:
    report = await run_benchmark(
        "benchmarks.load", "--clients", "6", "--runs-per-client", "2", "--ramp", "0.5",
        "--workers", "2", "--duration", "30", "--no-plots", "--quiet",
        "--report-dir", str(tmp_path),
    )  # fmt: skip
    assert all(report["checks"].values()), report["checks"]
    assert report["server_workers"] == 2
    assert report["runs"]["by_status"] == {"completed": 12}
    assert report["server_events_sent"] == report["events_received"]
    assert 0 < report["client_machine_share"] < 1


@pytest.mark.usefixtures("broker")
async def test_compare_puts_one_process_and_two_workers_side_by_side(tmp_path: Path) -> None:
    report = await run_benchmark(
        "benchmarks.compare", "--clients", "4", "--runs", "2", "--workers", "2",
        "--only-ours", "--report-dir", str(tmp_path),
    )  # fmt: skip
    workers_rows = ["trio-agent-server, 2 workers", "trio-agent-server, event path only, 2 workers"]
    assert report["servers"] == [
        "trio-agent-server", "trio-agent-server, event path only", *workers_rows
    ]  # fmt: skip
    (run,) = report["runs"]
    assert {row["frames_delivered"] for row in run["cpu"].values()} == {
        run["cpu"]["trio-agent-server"]["frames_delivered"]
    }
    assert [run["cpu"][row]["server_processes"] for row in workers_rows] == [3, 3]
    assert run["cpu"]["trio-agent-server, 2 workers"]["run_outcomes"] == {"completed": 8}
    assert set(run["ratios"]) == {"full_pipeline_workers_vs_one", "event_path_workers_vs_one"}
    assert set(run["throughput_ratios"]) == set(run["ratios"])
    assert report["targets"] == {
        "full_pipeline_workers_vs_one": 1.1,
        "event_path_workers_vs_one": 1.1,
    }
