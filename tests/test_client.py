"""The terminal client: its pure view, and ``python -m server.client`` against a real server."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import jwt
import pytest
import trio
from _asking import ask, newest_run, recorded_events
from _gate import AT_GATE, GATE_EVENTS, GATES, open_gate, start_gate_server
from _procs import LineReader, reap
from _redis import TcpProxy
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import BaseAgent, FaultSpec
from agents.builtin import default_registry
from server import ChatServer
from server.client import build_parser, parse_target
from server.client._view import ChatView, clean, exit_code_for, format_duration, shorten
from server.testing import (
    RUN_EVENT_TYPES,
    check_run_invariants,
    open_chat_client,
    start_test_server,
)

ROOT = Path(__file__).resolve().parent.parent
#: A fresh interpreter per client; generous for a loaded CI machine.
PROCESS_TIMEOUT = 20.0
REQUEST = (
    "We send 40M input and 10M output tokens a month to gpt-4o and p95 latency is "
    "1200 ms. How much would switching to gpt-4o-mini save?"
)
SECRET = "client-test-hs256-secret-" + "0123456789abcdef" * 2


# -- a real client process ---------------------------------------------------------


@attrs.frozen
class Finished:
    code: int
    stdout: list[str]
    stderr: str


class ClientProcess:
    """A ``python -m server.client`` child; stdout read line by line."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdout is not None
        assert process.stderr is not None
        self.process = process
        self.stdout = LineReader(process.stdout)
        self.stderr = LineReader(process.stderr)
        self.lines: list[str] = []
        self.err_lines: list[str] = []

    async def wait_line(self, fragment: str) -> str:
        """Read stdout until a line containing ``fragment``; return it."""
        with trio.fail_after(PROCESS_TIMEOUT):
            while (line := await self.stdout.readline()) is not None:
                self.lines.append(line)
                if fragment in line:
                    return line
        stderr = "\n".join(await self.stderr.read_rest())
        raise AssertionError(f"stdout ended without {fragment!r}: {self.lines}\n{stderr}")

    async def wait_err(self, fragment: str) -> str:
        """Read stderr until a line containing ``fragment``; return it."""
        with trio.fail_after(PROCESS_TIMEOUT):
            while (line := await self.stderr.readline()) is not None:
                self.err_lines.append(line)
                if fragment in line:
                    return line
        raise AssertionError(f"stderr ended without {fragment!r}: {self.err_lines}")

    async def send_line(self, text: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(f"{text}\n".encode())

    async def finish(self) -> Finished:
        """Wait for the exit; the exit code, all stdout lines, stderr."""
        with trio.fail_after(PROCESS_TIMEOUT):
            self.lines += await self.stdout.read_rest()
            stderr = "\n".join(self.err_lines + await self.stderr.read_rest())
            code = await self.process.wait()
        return Finished(code, self.lines, stderr)


class SpawnClient(Protocol):
    async def __call__(self, *args: str, stdin: bool = False) -> ClientProcess: ...


def client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env["PYTHONIOENCODING"] = "utf-8"
    return env


@pytest.fixture
async def spawn() -> AsyncIterator[SpawnClient]:
    """Start client processes; any still running at teardown are killed."""
    processes: list[trio.Process] = []

    async def start(*args: str, stdin: bool = False) -> ClientProcess:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "server.client", *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=client_env(),
        )
        processes.append(process)
        return ClientProcess(process)

    yield start
    await reap(processes, PROCESS_TIMEOUT)


@pytest.fixture(autouse=True)
def fresh_gates() -> None:
    GATES.clear()


class EchoAgent(BaseAgent):
    """Answers with the request; a request containing "hang" waits to be stopped."""

    name = "echo"
    top_level = True

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        text = self.context.request
        if "hang" in text:
            await self.think("waiting to be stopped")
            await trio.sleep_forever()
        return {"answer": f"echo: {text}"}


async def start_echo_server(nursery: trio.Nursery) -> ChatServer:
    registry = default_registry()
    registry.register(EchoAgent)
    return await start_test_server(nursery, registry=registry)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- one-shot mode -------------------------------------------------------------------


async def test_one_shot_completed_run_prints_the_nested_view_and_answer_and_exits_0(
    server: ChatServer, spawn: SpawnClient
) -> None:
    async with open_chat_client(server, user_id="ref") as reference:
        expected = await reference.run(REQUEST)
    answer = expected.result["answer"] if expected.result else None
    assert isinstance(answer, str)

    client = await spawn(server.url, "--user-id", "alice", "--message", REQUEST)
    done = await client.finish()

    assert done.code == 0, done
    out = done.stdout
    assert out[0].startswith("connected as alice (c-")
    assert out[1] == "▸ supervisor …"
    assert "  ▸ triage …" in out
    assert any(line.startswith("    → extract_entities {") for line in out)
    assert any(line.startswith("    ← extract_entities ") for line in out)
    assert any(line.startswith("  ✓ triage ") and line.endswith(" ms") for line in out)
    closing = next(i for i, line in enumerate(out) if line.startswith("✓ supervisor "))
    # The answer follows the top-level agent's end, then the run's status closes the view.
    assert out[closing + 1 : closing + 2] == [""]
    assert out[closing + 2 : -2] == answer.rstrip("\n").split("\n")
    assert out[-2] == ""
    assert out[-1].startswith("run completed in ")
    assert not any("\x1b" in line for line in out)  # stdout is a pipe: no colour
    assert done.stderr == ""
    assert server.statistics().runs_total["completed"] == 2


async def test_one_shot_failed_run_shows_the_failed_agent_and_exits_1(
    nursery: trio.Nursery, spawn: SpawnClient
) -> None:
    server = await start_test_server(nursery, faults=(FaultSpec.parse("reporting:raise:1"),))
    client = await spawn(server.url, "--message", REQUEST)
    done = await client.finish()

    assert done.code == 1, done
    assert any(line.startswith("  ✗ reporting failed: ") for line in done.stdout)
    assert done.stdout[-1].startswith("run failed in ")
    assert "[AGENT_ERROR]" in done.stdout[-1]
    assert server.statistics().runs_total["failed"] == 1


async def test_one_shot_to_a_wrong_path_exits_2_and_prints_the_http_status(
    server: ChatServer, spawn: SpawnClient
) -> None:
    url = server.url.removesuffix("/ws") + "/nope"
    done = await (await spawn(url, "--message", "hello")).finish()
    assert done.code == 2
    assert "HTTP 404" in done.stderr
    assert done.stdout == []
    assert server.statistics().runs_total["completed"] == 0


async def test_one_shot_to_an_unreachable_port_exits_2(spawn: SpawnClient) -> None:
    port = free_port()
    done = await (await spawn(f"ws://127.0.0.1:{port}/ws", "--message", "hello")).finish()
    assert done.code == 2
    assert f"cannot connect to 127.0.0.1:{port}" in done.stderr
    assert done.stdout == []


async def test_one_shot_with_a_rejected_token_exits_2_and_a_valid_one_completes(
    nursery: trio.Nursery, spawn: SpawnClient
) -> None:
    server = await start_test_server(nursery, auth="jwt", jwt_secret=SECRET)
    expired = jwt.encode({"sub": "tok-user", "exp": int(time.time()) - 60}, SECRET)
    done = await (await spawn(server.url, "--token", expired, "--message", "hi")).finish()
    assert done.code == 2
    assert "HTTP 401" in done.stderr

    valid = jwt.encode({"sub": "tok-user", "exp": int(time.time()) + 300}, SECRET)
    client = await spawn(server.url, "--token", valid, "--agent", "supervisor", "--message", "hi")
    done = await client.finish()
    assert done.code == 0, done
    assert done.stdout[0].startswith("connected as tok-user (")


async def test_one_shot_for_an_unknown_agent_exits_2_with_the_error_shown(
    server: ChatServer, spawn: SpawnClient
) -> None:
    done = await (await spawn(server.url, "--agent", "nobody", "--message", "hi")).finish()
    assert done.code == 2
    assert done.stdout[-1].startswith("! AGENT_NOT_FOUND: ")


async def test_one_shot_exits_4_when_the_connection_closes_before_the_final_event(
    nursery: trio.Nursery, spawn: SpawnClient
) -> None:
    server = await start_test_server(nursery, max_message_size=200)
    done = await (await spawn(server.url, "--message", "x" * 300)).finish()
    assert done.code == 4
    assert "connection closed: 1009" in done.stderr


async def test_ctrl_c_in_one_shot_mode_sends_stop_agent_and_exits_3(
    nursery: trio.Nursery, spawn: SpawnClient
) -> None:
    server = await start_test_server(
        nursery, faults=(FaultSpec.parse("triage:hang:1"),), agent_timeout=120
    )
    client = await spawn(server.url, "--message", REQUEST)
    await client.wait_line("  ▸ triage …")
    client.process.send_signal(signal.SIGINT)
    done = await client.finish()

    assert done.code == 3, done
    assert any(line.startswith("  ⊘ triage cancelled: ") for line in done.stdout)
    assert done.stdout[-1].startswith("run cancelled in ")
    assert "stopping the run" in done.stderr
    stats = server.statistics()
    assert stats.runs_total["cancelled"] == 1
    assert sum(stats.runs_total.values()) == 1


async def output_on_a_terminal(*args: str) -> tuple[int, str]:
    """Run a client whose stdout is a pseudo-terminal; (exit code, what it printed)."""
    master, slave = pty.openpty()
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "server.client", *args],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env=client_env(),
        )
    finally:
        os.close(slave)
    chunks = []
    try:
        with trio.fail_after(PROCESS_TIMEOUT):
            async with trio.lowlevel.FdStream(master) as terminal:
                while True:
                    try:
                        chunk = await terminal.receive_some()
                    except (trio.BrokenResourceError, OSError):
                        break  # EIO: the child closed the terminal
                    if not chunk:
                        break
                    chunks.append(chunk)
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    return code, b"".join(chunks).decode("utf-8")


async def test_colour_only_on_a_terminal_and_not_with_no_color(server: ChatServer) -> None:
    code, coloured = await output_on_a_terminal(server.url, "--message", "hello")
    assert code == 0
    assert "\x1b[32m✓\x1b[0m supervisor" in coloured
    assert "run completed in " in coloured

    code, plain = await output_on_a_terminal(server.url, "--no-color", "--message", "hello")
    assert code == 0
    assert "\x1b" not in plain
    assert "✓ supervisor" in plain
    assert strip_ansi(coloured).count("\n") == plain.count("\n")


# -- --json ---------------------------------------------------------------------------


async def test_json_prints_every_frame_as_one_object_per_line_and_the_run_is_valid(
    server: ChatServer, spawn: SpawnClient
) -> None:
    client = await spawn(server.url, "--json", "--user-id", "scripted", "--message", REQUEST)
    done = await client.finish()

    assert done.code == 0, done
    frames = [json.loads(line) for line in done.stdout]
    assert all(isinstance(frame, dict) for frame in frames)
    assert frames[0]["data"]["event"] == "connection_established"
    assert frames[0]["data"]["user_id"] == "scripted"
    events = frames[1:]
    assert all(event["type"] in RUN_EVENT_TYPES for event in events)
    check_run_invariants(events, user_id="scripted")
    assert events[-1]["data"]["status"] == "completed"
    assert events[-1]["data"]["result"]["answer"].startswith("## ")
    assert server.statistics().events_sent_total == len(events)


# -- interactive mode ---------------------------------------------------------------


async def test_interactive_mode_runs_each_input_line_and_stops_at_quit(
    server: ChatServer, spawn: SpawnClient
) -> None:
    requests = [REQUEST, "Which model should we switch to from gpt-4o?"]
    answers = []
    # The lines go to one thread: the second is answered in the light of the first.
    async with open_chat_client(server, user_id="ref") as reference:
        for request in requests:
            run = await reference.run(request, thread_id="t-reference")
            assert run.result is not None
            answers.append(run.result["answer"].rstrip("\n").split("\n"))
    assert "From earlier in this thread" in "\n".join(answers[1])

    client = await spawn(server.url, stdin=True)
    await client.send_line(requests[0])
    await client.send_line(requests[1])
    await client.send_line("/quit")
    await client.send_line("this line is never sent")
    done = await client.finish()

    assert done.code == 0, done
    statuses = [i for i, line in enumerate(done.stdout) if line.startswith("run ")]
    assert len(statuses) == 2
    assert all(done.stdout[i].startswith("run completed in ") for i in statuses)

    # Each run's answer is printed just before its status line (the answer names the
    # earlier run it reused figures from: the run ids differ).
    def same_runs(lines: list[str]) -> list[str]:
        return [re.sub(r"\(run [^)]+\)", "(run …)", line) for line in lines]

    for answer, status in zip(answers, statuses, strict=True):
        assert same_runs(done.stdout[status - 1 - len(answer) : status - 1]) == same_runs(answer)
    assert server.statistics().runs_total["completed"] == 4  # 2 reference + 2 client
    assert server.statistics().connections_total == 2


async def test_ctrl_c_in_interactive_mode_cancels_the_run_and_the_client_stays_connected(
    nursery: trio.Nursery, spawn: SpawnClient
) -> None:
    server = await start_echo_server(nursery)
    client = await spawn(server.url, "--agent", "echo", stdin=True)
    await client.send_line("please hang")
    await client.wait_line("· waiting to be stopped")
    client.process.send_signal(signal.SIGINT)
    assert (await client.wait_line("run ")).startswith("run cancelled in ")
    stats = server.statistics()
    assert stats.runs_total["cancelled"] == 1
    assert stats.connections_active == 1

    await client.send_line("hello again")
    assert await client.wait_line("echo: ") == "echo: hello again"
    assert (await client.wait_line("run ")).startswith("run completed in ")
    await client.send_line("/quit")
    done = await client.finish()

    assert done.code == 0, done
    stats = server.statistics()
    assert stats.runs_total == {"completed": 1, "failed": 0, "cancelled": 1, "timeout": 0}
    assert stats.connections_total == 1  # the same connection all along


async def test_ctrl_c_while_idle_exits_130(server: ChatServer, spawn: SpawnClient) -> None:
    client = await spawn(server.url, stdin=True)
    await client.wait_line("connected as ")
    client.process.send_signal(signal.SIGINT)
    done = await client.finish()
    assert done.code == 130
    assert "interrupted" in done.stderr
    assert sum(server.statistics().runs_total.values()) == 0


# -- threads ------------------------------------------------------------------------


async def test_thread_commands_list_open_and_start_threads_and_lines_stay_in_the_thread(
    nursery: trio.Nursery, spawn: SpawnClient
) -> None:
    server = await start_echo_server(nursery)
    async with open_chat_client(server, user_id="alice") as alice:
        for text in ("first", "second"):
            await alice.run(text, agent_name="echo", thread_id="t-old")

        client = await spawn(
            server.url, "--user-id", "alice", "--agent", "echo", "--thread", "t-old", stdin=True
        )
        # --thread shows the thread's runs and answers, oldest first, then continues in it.
        header = await client.wait_line("thread t-old")
        assert header == "thread t-old: first"
        shown = [await client.wait_line("") for _ in range(8)]
        assert [line for line in shown if not line.startswith("✓ run completed  ")] == [
            "",
            "> first",
            "echo: first",
            "",
            "> second",
            "echo: second",
        ]
        await client.send_line("third")
        assert await client.wait_line("echo: ") == "echo: third"
        await client.wait_line("run completed in ")

        await client.send_line("/threads")
        assert await client.wait_line("   1  ") == "   1  first"
        assert (await client.wait_line("t-old")).startswith("      3 runs, completed, 20")
        await client.send_line("/new")
        await client.send_line("fresh start")
        assert await client.wait_line("echo: ") == "echo: fresh start"
        await client.send_line("/threads")
        assert await client.wait_line("   1  ") == "   1  fresh start"
        assert (await client.wait_line("      ")).startswith("      1 run, completed, ")
        assert await client.wait_line("   2  ") == "   2  first"
        assert (await client.wait_line("      ")).endswith(", t-old")

        # /open by number (from the last listing) shows the thread; lines go to it again.
        await client.send_line("/open 2")
        assert await client.wait_line("thread ") == "thread t-old: first"
        await client.send_line("fourth")
        assert await client.wait_line("echo: fourth") == "echo: fourth"
        await client.send_line("/open t-nowhere")
        assert (await client.wait_line("! ")).startswith("! THREAD_NOT_FOUND: ")
        await client.send_line("/quit")
        done = await client.finish()
        assert done.code == 0, done
        assert "the next message starts a new thread" in done.stderr

        record = await ask(alice, "get_thread", thread_id="t-old")
        requests = [r["user_request"] for r in reversed(record["data"]["runs"])]
        assert requests == ["first", "second", "third", "fourth"]
        threads = (await ask(alice, "list_threads"))["data"]["threads"]
        assert [(t["title"], t["run_count"]) for t in threads] == [
            ("first", 4),
            ("fresh start", 1),
        ]


async def test_one_shot_with_thread_continues_that_thread_and_prints_only_the_run(
    server: ChatServer, spawn: SpawnClient
) -> None:
    async with open_chat_client(server, user_id="alice") as alice:
        await alice.run(REQUEST, thread_id="t-costs")
        done = await (
            await spawn(
                server.url,
                "--user-id",
                "alice",
                "--thread",
                "t-costs",
                "--message",
                "And what if we switched to claude 3.5 haiku?",
            )
        ).finish()
        assert done.code == 0, done
        assert done.stdout[1] == "▸ supervisor …"  # no history printed in one-shot mode
        assert "### From earlier in this thread" in done.stdout
        record = await ask(alice, "get_thread", thread_id="t-costs")
        assert [r["status"] for r in record["data"]["runs"]] == ["completed", "completed"]


async def test_open_follows_a_run_in_progress_from_its_start_to_its_end(
    nursery: trio.Nursery, spawn: SpawnClient
) -> None:
    server = await start_gate_server(nursery)
    async with open_chat_client(server, user_id="alice") as alice:
        run_id = await alice.start("slow gate:open", agent_name="gate", thread_id="t-live")
        while len(alice.events(run_id)) < AT_GATE:
            await alice.receive()
        client = await spawn(server.url, "--user-id", "alice", stdin=True)
        await client.send_line("/open t-live")
        await client.wait_line("· waiting at gate open")
        open_gate("open")
        await client.wait_line("run completed in ")
        await client.send_line("/quit")
        done = await client.finish()
        transcript = await alice.collect(run_id)

    assert done.code == 0, done
    view = ChatView().render_all(transcript.events)
    start = done.stdout.index(view[0])
    assert done.stdout[start:] == view  # the whole run, each event once
    assert done.stdout[1:start] == ["thread t-live: slow gate:open", "", "> slow gate:open"] + [
        line for line in done.stdout[4:start] if line.startswith("… run running  ")
    ]
    assert "following it" in done.stderr


# -- a dropped connection --------------------------------------------------------------


@pytest.mark.parametrize("grace", [0, 30])
async def test_a_connection_dropped_mid_run_is_resumed_and_the_run_shown_whole_once(
    nursery: trio.Nursery, spawn: SpawnClient, grace: int
) -> None:
    """The test cuts the client's TCP connection (through a proxy) while the run waits.

    With session resume (grace 30) the client takes its session over, asks for the
    events after the last one it printed, and the run completes. Without (grace 0)
    the server cancelled the run when the socket went: the client shows the rest
    from history, to its recorded end (cancelled, DISCONNECTED). Either way the
    printed view is exactly the view of the recorded events: nothing missing or doubled.
    """
    server = await start_gate_server(nursery, resume_grace=grace)
    proxy = TcpProxy(server.url)
    await nursery.start(proxy.serve)
    client = await spawn(
        proxy.url, "--user-id", "alice", "--agent", "gate", "--message", "blip gate:cut"
    )
    await client.wait_line("· waiting at gate cut")
    proxy.cut()
    await client.wait_err("reconnecting in ")
    proxy.restore()
    how = "the session resumed" if grace else "a new session"
    await client.wait_err(f"reconnected as alice ({how})")
    await client.wait_err(f"resuming the run after event {AT_GATE}")
    if grace:
        open_gate("cut")
    done = await client.finish()

    async with open_chat_client(server, user_id="alice") as alice:
        run = await newest_run(alice)
        events = await recorded_events(alice, run["run_id"])
    assert done.stdout[0].startswith("connected as alice (")
    assert done.stdout[1:] == ChatView().render_all(events)
    if grace:
        assert (done.code, len(events), run["status"]) == (0, GATE_EVENTS, "completed")
    else:
        assert (done.code, run["status"]) == (3, "cancelled")
        assert events[-1]["data"]["error"]["code"] == "DISCONNECTED"
    assert "connection closed: 1006" in done.stderr


async def test_the_client_gives_up_after_its_reconnection_attempts_and_exits_4(
    nursery: trio.Nursery, spawn: SpawnClient
) -> None:
    server = await start_gate_server(nursery)
    proxy = TcpProxy(server.url)
    await nursery.start(proxy.serve)
    client = await spawn(proxy.url, "--agent", "gate", "--retries", "2", "--message", "gate:never")
    await client.wait_line("· waiting at gate never")
    proxy.cut()  # and the server stays unreachable
    done = await client.finish()

    assert done.code == 4, done
    assert done.stderr.count("reconnecting in ") == 2
    assert "(attempt 2 of 2)" in done.stderr
    assert "giving up after 2 reconnection attempts" in done.stderr


# -- the pure view -------------------------------------------------------------------


def event(
    seq: int, kind: str, agent: str, data: Mapping[str, Any], *, final: bool = False
) -> dict[str, Any]:
    return {
        "type": kind,
        "run_id": "r-1",
        "thread_id": "t-1",
        "user_id": "u1",
        "agent_name": agent,
        "seq": seq,
        "final": final,
        "timestamp": "2026-11-21T10:00:00.000Z",
        "data": dict(data),
    }


def failing_run(status: str, code: str, message: str) -> list[dict[str, Any]]:
    """supervisor > triage, which ends with ``status``, and so does the supervisor."""
    error = {"status": status, "error": {"code": code, "message": message}}
    return [
        event(1, "agent_started", "supervisor", {"status": "started"}),
        event(2, "agent_started", "triage", {"status": "started"}),
        event(3, "agent_error", "triage", {**error, "execution_time_ms": 12.4}),
        event(4, "agent_error", "supervisor", {**error, "execution_time_ms": 15}, final=True),
    ]


def test_view_indents_by_nesting_and_shows_tools_thinking_timings_and_answer() -> None:
    events = [
        event(1, "agent_started", "supervisor", {"status": "started", "user_request": "q"}),
        event(2, "agent_thinking", "supervisor", {"reasoning": "Plan", "step_number": 1}),
        event(3, "agent_started", "triage", {"status": "started"}),
        event(
            4,
            "tool_executing",
            "triage",
            {"tool_call_id": "tc-1", "tool_name": "lookup", "parameters": {"model": "gpt-4o"}},
        ),
        event(
            5,
            "tool_completed",
            "triage",
            {
                "tool_call_id": "tc-1",
                "tool_name": "lookup",
                "status": "completed",
                "result": {},
                "execution_time_ms": 0.25,
            },
        ),
        event(
            6,
            "agent_thinking",
            "triage",
            {"reasoning": "Done", "step_number": 1, "progress_percentage": 90},
        ),
        event(7, "agent_completed", "triage", {"status": "completed", "execution_time_ms": 12}),
        event(
            8,
            "agent_completed",
            "supervisor",
            {
                "status": "completed",
                "result": {"answer": "## Title\n\nBody line\n"},
                "execution_time_ms": 1234.5,
            },
            final=True,
        ),
    ]
    check_run_invariants(events)
    assert ChatView().render_all(events) == [
        "▸ supervisor …",
        "  · Plan",
        "  ▸ triage …",
        '    → lookup {"model": "gpt-4o"}',
        "    ← lookup 0.2 ms",
        "    · Done (90%)",
        "  ✓ triage 12 ms",
        "✓ supervisor 1.23 s",
        "",
        "## Title",
        "",
        "Body line",
        "",
        "run completed in 1.23 s",
    ]


def test_view_marks_failed_agents_with_their_error_code_and_message() -> None:
    lines = ChatView().render_all(failing_run("failed", "AGENT_ERROR", "RuntimeError: boom"))
    assert lines == [
        "▸ supervisor …",
        "  ▸ triage …",
        "  ✗ triage failed: RuntimeError: boom [AGENT_ERROR] 12 ms",
        "✗ supervisor failed: RuntimeError: boom [AGENT_ERROR] 15 ms",
        "",
        "run failed in 15 ms: RuntimeError: boom [AGENT_ERROR]",
    ]


def test_view_marks_cancelled_and_timed_out_runs_differently() -> None:
    cancelled = ChatView().render_all(failing_run("cancelled", "CANCELLED", "stopped"))
    assert cancelled[2:] == [
        "  ⊘ triage cancelled: stopped 12 ms",
        "⊘ supervisor cancelled: stopped 15 ms",
        "",
        "run cancelled in 15 ms: stopped",
    ]
    drained = ChatView().render_all(failing_run("cancelled", "SHUTTING_DOWN", "draining"))
    assert drained[-1] == "run cancelled in 15 ms: draining [SHUTTING_DOWN]"
    timeout = ChatView().render_all(failing_run("timeout", "TIMEOUT", "too slow"))
    assert timeout[2] == "  ✗ triage timeout: too slow 12 ms"
    assert timeout[-1] == "run timeout in 15 ms: too slow"


def test_view_shows_a_failed_tool_with_its_error() -> None:
    view = ChatView()
    view.render(event(1, "agent_started", "data", {"status": "started"}))
    failed = {
        "tool_call_id": "tc-1",
        "tool_name": "calc",
        "status": "failed",
        "result": {"error": "ValueError: x"},
        "execution_time_ms": 3,
    }
    assert view.render(event(2, "tool_completed", "data", failed)) == [
        '  ← calc failed 3.0 ms: {"error": "ValueError: x"}'
    ]


@pytest.mark.parametrize("width", [40, 80, 120])
def test_view_shortens_thinking_and_parameters_to_the_width(width: int) -> None:
    view = ChatView(width=width)
    view.render(event(1, "agent_started", "supervisor", {"status": "started"}))
    view.render(event(2, "agent_started", "triage", {"status": "started"}))
    long_text = "word " * 100 + "\n## heading"
    thinking = view.render(
        event(3, "agent_thinking", "triage", {"reasoning": long_text, "step_number": 1})
    )
    tool = view.render(
        event(
            4,
            "tool_executing",
            "triage",
            {"tool_call_id": "tc-1", "tool_name": "t", "parameters": {"text": long_text}},
        )
    )
    for line in thinking + tool:
        assert len(line) <= width
        assert line.endswith("…")
        assert "\n" not in line
    assert thinking[0].startswith("    · word word")
    assert tool[0].startswith('    → t {"text": "word word')


def test_view_writes_ansi_only_when_colour_is_on() -> None:
    events = failing_run("failed", "AGENT_ERROR", "boom")
    plain = ChatView(color=False).render_all(events)
    coloured = ChatView(color=True).render_all(events)
    assert not any("\x1b" in line for line in plain)
    assert any("\x1b[31m" in line for line in coloured)  # red failure marks
    assert [strip_ansi(line) for line in coloured] == plain


def strip_ansi(line: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", line)


def test_view_neutralises_control_characters_in_agent_text() -> None:
    hostile = "\x1b[2J\x1b]0;pwned\x07clear"
    events = [
        event(1, "agent_started", "supervisor", {"status": "started"}),
        event(2, "agent_thinking", "supervisor", {"reasoning": hostile, "step_number": 1}),
        event(
            3,
            "agent_completed",
            "supervisor",
            {"status": "completed", "result": {"answer": f"# {hostile}\nok"}},
            final=True,
        ),
    ]
    for color in (False, True):
        lines = ChatView(color=color).render_all(events)
        for line in lines:
            assert "\x07" not in line
            assert "\x1b[2J" not in line
            assert "\x1b]" not in line
        assert "\N{REPLACEMENT CHARACTER}[2J" in lines[1]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
FRAMES = st.fixed_dictionaries(
    {"type": st.sampled_from([*sorted(RUN_EVENT_TYPES), "error_message", "system_message", "x"])},
    optional={
        "run_id": JSON_VALUES,
        "agent_name": JSON_VALUES,
        "final": JSON_VALUES,
        "error_code": JSON_VALUES,
        "error_message": JSON_VALUES,
        "data": st.fixed_dictionaries(
            {},
            optional={
                key: JSON_VALUES
                for key in (
                    "reasoning",
                    "progress_percentage",
                    "tool_name",
                    "parameters",
                    "status",
                    "result",
                    "error",
                    "execution_time_ms",
                    "event",
                )
            },
        )
        | JSON_VALUES,
    },
)


@settings(deadline=None, max_examples=60)
@given(st.lists(FRAMES, max_size=8))
def test_view_renders_any_frames_without_raising_or_control_characters(
    frames: list[dict[str, Any]],
) -> None:
    for line in ChatView().render_all(frames):
        assert clean(line) == line
        assert "\n" not in line


def test_view_lists_threads_numbered_with_their_runs_status_and_time() -> None:
    data = {
        "threads": [
            {
                "thread_id": "t-2",
                "title": "Budget\x1b[2J talk",
                "created_at": "2026-11-21T10:00:00.000Z",
                "updated_at": "2026-11-21T10:05:09.123Z",
                "run_count": 1,
                "last_status": "running",
            },
            {"thread_id": "t-1", "title": "x" * 200, "run_count": 12, "last_status": None},
        ],
        "next_cursor": "c1",
    }
    lines = ChatView(width=40).threads(data, first=21)
    assert lines == [
        "  21  Budget\N{REPLACEMENT CHARACTER}[2J talk",
        "      1 run, running, 2026-11-21 10:05Z, t-2",
        "  22  " + "x" * 33 + "…",
        "      12 runs, -, t-1",
        "      more: /threads more",
    ]
    assert ChatView().threads({"threads": []}) == ["no threads yet"]
    assert ChatView().threads({"threads": "junk"}, first=3) == ["no more threads"]


def test_view_shows_a_thread_oldest_run_first_with_answers_and_statuses() -> None:
    data = {
        "thread_id": "t-1",
        "title": "Costs",
        "runs": [
            {"run_id": "r-3", "status": "running", "user_request": "and now?", "answer": None},
            {
                "run_id": "r-2",
                "status": "cancelled",
                "user_request": "two\nlines",
                "answer": None,
                "started_at": "2026-11-21T10:00:00.000Z",
            },
            {"run_id": "r-1", "status": "completed", "user_request": "q", "answer": "## A\nok\n"},
        ],
        "next_cursor": "c",
    }
    assert ChatView().thread(data) == [
        "thread t-1: Costs",
        "(earlier runs not shown)",
        "",
        "> q",
        "## A",
        "ok",
        "✓ run completed",
        "",
        "> two",
        "> lines",
        "⊘ run cancelled  2026-11-21 10:00Z",
        "",
        "> and now?",
        "… run running",
    ]
    assert ChatView().thread({"thread_id": "t-9", "runs": []})[1:] == ["(no runs yet)"]


def test_format_duration_and_shorten() -> None:
    assert format_duration(0.25) == "0.2 ms"
    assert format_duration(9.4) == "9.4 ms"
    assert format_duration(12.4) == "12 ms"
    assert format_duration(999) == "999 ms"
    assert format_duration(1234.5) == "1.23 s"
    assert format_duration(None) == ""
    assert format_duration(True) == ""
    assert format_duration(float("nan")) == ""
    assert shorten("a  b\n\tc", 20) == "a b c"
    assert shorten("abcdef", 4) == "abc…"


def test_exit_codes_by_final_status() -> None:
    assert exit_code_for("completed") == 0
    assert exit_code_for("failed") == 1
    assert exit_code_for("timeout") == 1
    assert exit_code_for("cancelled") == 3
    assert exit_code_for(None) == 4


def test_help_documents_every_exit_code() -> None:
    text = build_parser().format_help()
    assert "exit status:" in text
    exit_lines = text.split("exit status:")[1].splitlines()
    codes = {line.split()[0] for line in exit_lines if line.strip() and line[2:3].isdigit()}
    assert codes == {"0", "1", "2", "3", "4", "130"}


@pytest.mark.parametrize(
    ("url", "user_id", "expected"),
    [
        ("ws://127.0.0.1:8765/ws", None, ("127.0.0.1", 8765, "/ws", False, "127.0.0.1:8765")),
        ("ws://localhost:8765", "al ice", ("localhost", 8765, "/ws?user_id=al+ice", False, None)),
        ("ws://h/ws?x=1", "u1", ("h", 80, "/ws?x=1&user_id=u1", False, "h")),
        ("wss://example.org/ws", None, ("example.org", 443, "/ws", True, "example.org")),
        ("ws://[::1]:9000/ws", None, ("::1", 9000, "/ws", False, "[::1]:9000")),
    ],
)
def test_parse_target(url: str, user_id: str | None, expected: Sequence[Any]) -> None:
    target = parse_target(url, user_id)
    host, port, resource, secure, host_header = expected
    assert (target.host, target.port, target.resource, target.secure) == (
        host,
        port,
        resource,
        secure,
    )
    if host_header is not None:
        assert target.host_header == host_header


@pytest.mark.parametrize("url", ["http://h/ws", "h:80/ws", "ws:///ws", "ws://h:99999/ws"])
def test_parse_target_refuses_what_is_not_a_ws_url(url: str) -> None:
    with pytest.raises(ValueError, match=r"URL|port"):
        parse_target(url)


async def test_view_of_a_real_run_closes_every_agent_at_its_opening_indent(
    server: ChatServer,
) -> None:
    async with open_chat_client(server, user_id="viewer") as client:
        run = await client.run(REQUEST)
    lines = ChatView().render_all(run.events)
    opened = [line.index("▸") for line in lines if line.lstrip().startswith("▸ ")]
    closed = [line.index("✓") for line in lines if line.lstrip().startswith("✓ ")]
    assert len(opened) == len(run.agents()) == len(closed)
    assert sorted(opened) == sorted(closed)
    assert [line.strip().split()[1] for line in lines if "▸ " in line] == run.agents()
