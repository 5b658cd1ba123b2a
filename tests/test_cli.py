"""``python -m server`` as a real process: start-up lines, options, environment, signals."""

from __future__ import annotations

import argparse
import gc
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Protocol

import pytest
import trio
from _procs import LineReader, reap, server_env

from server._cli import settings_from_args, tune_gc
from server.testing import open_chat_client

ROOT = Path(__file__).resolve().parent.parent
#: Start-up of a fresh interpreter can be slow on a loaded CI machine.
STARTUP_TIMEOUT = 20.0
EXIT_TIMEOUT = 20.0

LISTENING = re.compile(r"listening on ws://127\.0\.0\.1:(?P<port>\d+)/ws")
ADMIN = re.compile(r"admin on http://127\.0\.0\.1:(?P<port>\d+)")


clean_env = server_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class ServerProcess:
    """A ``python -m server`` child with its stdout and stderr read line by line."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdout is not None
        assert process.stderr is not None
        self.process = process
        self.stdout = LineReader(process.stdout, errors="replace")
        self.stderr = LineReader(process.stderr, errors="replace")
        self.stderr_lines: list[str] = []

    async def startup_lines(self, count: int) -> list[str]:
        """The first ``count`` lines of stdout (the process must print them in time)."""
        lines = []
        with trio.fail_after(STARTUP_TIMEOUT):
            for _ in range(count):
                line = await self.stdout.readline()
                if line is None:
                    rest = "\n".join(await self.stderr.read_rest())
                    raise AssertionError(f"server exited before printing; stderr:\n{rest}")
                lines.append(line)
        return lines

    async def wait_stderr(self, fragment: str) -> str:
        """Read stderr until a line containing ``fragment`` arrives; return it."""
        with trio.fail_after(EXIT_TIMEOUT):
            while (line := await self.stderr.readline()) is not None:
                self.stderr_lines.append(line)
                if fragment in line:
                    return line
        raise AssertionError(f"stderr ended without {fragment!r}: {self.stderr_lines}")

    async def wait_exit(self) -> tuple[int, list[str]]:
        """Wait for the process to exit; (return code, remaining stdout lines)."""
        with trio.fail_after(EXIT_TIMEOUT):
            rest = await self.stdout.read_rest()
            self.stderr_lines += await self.stderr.read_rest()
            code = await self.process.wait()
        return code, rest


class SpawnServer(Protocol):
    async def __call__(self, *args: str, env: Mapping[str, str] | None = None) -> ServerProcess: ...


@pytest.fixture
async def spawn() -> AsyncIterator[SpawnServer]:
    """Start ``python -m server`` children; any still running at teardown are killed."""
    processes: list[trio.Process] = []

    async def start(*args: str, env: Mapping[str, str] | None = None) -> ServerProcess:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "server", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=dict(env) if env is not None else clean_env(),
        )
        processes.append(process)
        return ServerProcess(process)

    yield start
    await reap(processes, EXIT_TIMEOUT)


def listening_port(line: str) -> int:
    match = LISTENING.fullmatch(line)
    assert match is not None, f"not a listening line: {line!r}"
    port = int(match["port"])
    assert port != 0
    return port


async def run_cli(
    *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(STARTUP_TIMEOUT):
        return await trio.run_process(
            [sys.executable, "-m", "server", *args],
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
            env=dict(env) if env is not None else clean_env(),
        )


# -- start-up lines ---------------------------------------------------------------


async def test_port_0_prints_the_real_port_and_no_admin_line_when_admin_is_disabled(
    spawn: SpawnServer,
) -> None:
    server = await spawn("--port", "0", "--admin-port", "0")
    (line,) = await server.startup_lines(1)
    port = listening_port(line)
    async with open_chat_client(f"ws://127.0.0.1:{port}/ws", user_id="cli") as client:
        run = await client.run("Which model should we switch to from gpt-4o?")
    assert run.status == "completed"
    # A model but no volume: the partial-data pipeline.
    assert run.agents() == ["supervisor", "triage", "data_helper", "data", "reporting"]

    server.process.send_signal(signal.SIGINT)
    code, rest = await server.wait_exit()
    assert code == 0
    assert rest == []  # exactly one line on stdout: no admin line


async def test_admin_port_prints_the_admin_line_and_serves_healthz(spawn: SpawnServer) -> None:
    wanted = free_port()
    server = await spawn("--port", "0", "--admin-port", str(wanted))
    listening, admin = await server.startup_lines(2)
    port = listening_port(listening)
    assert admin == f"admin on http://127.0.0.1:{wanted}"
    assert port != wanted

    with trio.fail_after(EXIT_TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", wanted)
        async with stream:
            request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{wanted}\r\nConnection: close\r\n"
            await stream.send_all(f"{request}\r\n".encode())
            response = bytearray()
            while chunk := await stream.receive_some(65536):
                response += chunk
    assert response.startswith(b"HTTP/1.1 200 ")
    assert b'"status": "ok"' in response or b'"status":"ok"' in response

    server.process.send_signal(signal.SIGTERM)
    code, rest = await server.wait_exit()
    assert code == 0
    assert rest == []


async def test_chat_port_and_chat_admin_port_env_vars_are_honoured(spawn: SpawnServer) -> None:
    server = await spawn(env=clean_env(CHAT_PORT="0", CHAT_ADMIN_PORT="0"))
    (line,) = await server.startup_lines(1)
    port = listening_port(line)
    assert port != 8765  # not the default: CHAT_PORT=0 picked a free port
    async with open_chat_client(f"ws://127.0.0.1:{port}/ws") as client:
        await client.send({"type": "ping", "message_id": "env"})
        pong = await client.receive_frame("pong")
    assert pong["message_id"] == "env"
    server.process.send_signal(signal.SIGINT)
    code, rest = await server.wait_exit()
    assert code == 0
    assert rest == []  # CHAT_ADMIN_PORT=0 disabled the admin listener


async def test_chat_port_env_var_sets_the_exact_port(spawn: SpawnServer) -> None:
    wanted = free_port()
    server = await spawn(env=clean_env(CHAT_PORT=str(wanted), CHAT_ADMIN_PORT="0"))
    (line,) = await server.startup_lines(1)
    assert listening_port(line) == wanted
    server.process.send_signal(signal.SIGINT)
    code, _ = await server.wait_exit()
    assert code == 0


# -- signals ----------------------------------------------------------------------


async def test_sigterm_lets_the_running_run_finish_then_closes_with_1001_and_exits_0(
    spawn: SpawnServer,
) -> None:
    # The run is held by tests/_gate_plugin.py until this test releases it, so
    # the drain surely begins while it runs, and it can only complete if the
    # drain waits for it (a drain that cancelled it would end it SHUTTING_DOWN).
    with trio.fail_after(STARTUP_TIMEOUT):
        (gate,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with gate:
        gate_port = gate.socket.getsockname()[1]
        server = await spawn(
            "--port", "0", "--admin-port", "0", "--plugin", "tests._gate_plugin",
            env=clean_env(GATE_PORT=str(gate_port)),
        )  # fmt: skip
        (line,) = await server.startup_lines(1)
        url = f"ws://127.0.0.1:{listening_port(line)}/ws"
        async with open_chat_client(url, user_id="drained") as client:
            run_id = await client.start("hold on", agent_name="gated")
            with trio.fail_after(STARTUP_TIMEOUT):
                held = await gate.accept()  # the agent is running and waits for us
            async with held:
                server.process.send_signal(signal.SIGTERM)
                await server.wait_stderr("received SIGTERM")
                # The drain has begun on this connection (new runs are refused)...
                await client.send({"type": "start_agent", "message_id": "late",
                                   "payload": {"user_request": "more"}})  # fmt: skip
                refused = await client.receive_frame("error_message")
                assert (refused["error_code"], refused["message_id"]) == ("SHUTTING_DOWN", "late")
                # ...while the run is still going: it ends only once released.
                assert not any(event["final"] for event in client.events(run_id))
                await held.send_all(b"!")
                run = await client.collect(run_id)
            assert run.status == "completed"
            assert run.result == {"released": True}
            code, _ = await client.wait_closed()
    assert code == 1001
    exit_code, rest = await server.wait_exit()
    assert exit_code == 0
    assert rest == []


async def test_sigterm_ends_every_clients_runs_with_a_final_event_then_1001_and_exit_0(
    spawn: SpawnServer,
) -> None:
    # Every run hangs in reporting, so it outlives the 2 s grace and is
    # cancelled by the drain (a run finishing within the grace is the test above).
    server = await spawn(
        "--port", "0", "--admin-port", "0", "--drain-timeout", "2", "--agent-timeout", "60",
        "--fault", "reporting:hang:1",
    )  # fmt: skip
    (line,) = await server.startup_lines(1)
    url = f"ws://127.0.0.1:{listening_port(line)}/ws"
    outcomes: dict[str, list[str]] = {}
    in_flight = 0
    all_in_flight = trio.Event()

    async def client_task(name: str) -> None:
        nonlocal in_flight
        async with open_chat_client(url, user_id=name) as client:
            run_ids = [await client.start(f"{name} request {i}") for i in range(2)]
            for run_id in run_ids:
                await client.wait_event(run_id, "agent_started", agent_name="reporting")
            in_flight += 1
            if in_flight == 4:
                all_in_flight.set()
            runs = [await client.collect(run_id) for run_id in run_ids]
            outcomes[name] = [run.status for run in runs]
            for run in runs:
                assert run.final["final"] is True
                assert run.final["data"]["error"]["code"] == "SHUTTING_DOWN"
            code, _ = await client.wait_closed()
            assert code == 1001

    async with trio.open_nursery() as clients:
        for i in range(4):
            clients.start_soon(client_task, f"c{i}")
        await all_in_flight.wait()
        server.process.send_signal(signal.SIGTERM)
    statuses = [status for runs in outcomes.values() for status in runs]
    assert statuses == ["cancelled"] * 8
    exit_code, _ = await server.wait_exit()
    assert exit_code == 0


async def test_sigterm_refuses_new_runs_and_waits_for_the_running_one(
    spawn: SpawnServer,
) -> None:
    server = await spawn(
        "--port", "0", "--admin-port", "0", "--fault", "supervisor:hang:1", "--drain-timeout", "60"
    )
    (line,) = await server.startup_lines(1)
    url = f"ws://127.0.0.1:{listening_port(line)}/ws"
    async with open_chat_client(url, user_id="drained") as client:
        run_id = await client.start("hang")
        await client.wait_event(run_id, "agent_started")
        server.process.send_signal(signal.SIGTERM)
        await server.wait_stderr("received SIGTERM")  # logged as the drain begins
        await client.send(
            {"type": "start_agent", "payload": {"user_request": "more"}, "message_id": "late"}
        )
        refused = await client.receive_frame("error_message")
        assert refused["error_code"] == "SHUTTING_DOWN"
        assert refused["message_id"] == "late"
        # The drain waits for the hanging run (60 s grace); stopping it ends the drain.
        await client.stop(run_id)
        run = await client.collect(run_id)
        assert run.status == "cancelled"
        assert run.final["data"]["error"]["code"] == "CANCELLED"
        code, _ = await client.wait_closed()
    assert code == 1001
    exit_code, _ = await server.wait_exit()
    assert exit_code == 0


async def test_sigint_on_an_idle_server_exits_0(spawn: SpawnServer) -> None:
    server = await spawn("--port", "0", "--admin-port", "0")
    await server.startup_lines(1)
    server.process.send_signal(signal.SIGINT)
    code, rest = await server.wait_exit()
    assert code == 0
    assert rest == []
    assert not any("Traceback" in line for line in server.stderr_lines)


# -- start-up errors and help -------------------------------------------------------


async def test_plugin_adds_its_agents_and_tools(spawn: SpawnServer) -> None:
    server = await spawn("--port", "0", "--admin-port", "0", "--plugin", "docs.examples.word_count")
    (line,) = await server.startup_lines(1)
    url = f"ws://127.0.0.1:{listening_port(line)}/ws"
    async with open_chat_client(url, user_id="plugin") as client:
        run = await client.run("count these four words", agent_name="word_count")
    assert run.status == "completed"
    assert run.result is not None
    assert run.result["words"] == 4
    server.process.send_signal(signal.SIGINT)
    code, _ = await server.wait_exit()
    assert code == 0


@pytest.mark.parametrize(
    ("plugin", "message"),
    [("no.such.module", "cannot import"), ("json", "no register(agents, tools)")],
)
async def test_a_broken_plugin_is_a_startup_error_with_exit_2(plugin: str, message: str) -> None:
    result = await run_cli("--port", "0", "--admin-port", "0", "--plugin", plugin)
    assert result.returncode == 2
    assert message in result.stderr.decode()


async def test_fault_for_an_unknown_agent_is_a_startup_error_with_exit_2() -> None:
    result = await run_cli("--port", "0", "--admin-port", "0", "--fault", "nosuchagent:raise:1")
    assert result.returncode == 2
    assert result.stdout == b""
    stderr = result.stderr.decode()
    assert "nosuchagent" in stderr
    assert "unknown agent" in stderr
    assert "Traceback" not in stderr


async def test_fault_with_an_unknown_kind_is_an_argparse_error() -> None:
    result = await run_cli("--port", "0", "--admin-port", "0", "--fault", "triage:explode:1")
    assert result.returncode == 2
    assert result.stdout == b""
    stderr = result.stderr.decode()
    assert stderr.startswith("usage:")
    assert "--fault" in stderr
    assert "explode" in stderr
    assert "Traceback" not in stderr


PROTOCOL_OPTIONS = (
    "--host",
    "--port",
    "--admin-port",
    "--admin-host",
    "--max-message-size",
    "--max-runs-per-connection",
    "--agent-timeout",
    "--run-timeout",
    "--drain-timeout",
    "--fault",
    "--fault-seed",
    "--auth",
    "--jwt-secret",
    "--jwt-public-key",
    "--outbound-queue",
    "--slow-consumer-timeout",
    "--rate-limit",
    "--rate-burst",
    "--max-consecutive-errors",
    "--max-connections-per-user",
    "--max-connections",
    "--heartbeat-interval",
    "--heartbeat-timeout",
    "--handshake-timeout",
    "--log-level",
    "--log-format",
)


async def test_help_lists_every_option_of_the_protocol() -> None:
    result = await run_cli("--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    listed = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))
    missing = [option for option in PROTOCOL_OPTIONS if option not in listed]
    assert missing == []


def test_tune_gc_freezes_start_up_objects_and_raises_the_first_threshold() -> None:
    before = gc.get_threshold()
    try:
        tune_gc(0)  # leaves the collector alone
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0
        tune_gc(12_345)
        assert gc.get_threshold() == (12_345, before[1], before[2])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, 10_000),
        (["--gc-threshold", "0"], {}, 0),
        ([], {"CHAT_GC_THRESHOLD": "700"}, 700),
    ],
)
def test_gc_threshold_option(argv: list[str], env: dict[str, str], expected: int) -> None:
    assert settings_from_args(argv, env).gc_threshold == expected


def test_every_option_is_in_the_readme_options_table() -> None:
    # The README is where users look options up; an option added without a row
    # there is an option nobody finds.
    from server._cli import build_parser

    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Options", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(--[a-z-]+)", table))
    options = {
        flag
        for action in build_parser({})._actions
        if action.help != argparse.SUPPRESS
        for flag in action.option_strings
        if flag.startswith("--") and flag != "--help"
    }
    assert options - documented == set()
