"""File descriptors (issue 10, section 5): the limit, the connection plan, the accept loops.

A server with fewer descriptors than ``--max-connections`` used to accept
until EMFILE, after which nothing could be accepted, the admin listener's
liveness probe included, and trio logged every failed accept with a
traceback (1,303 times in 15 s).
"""

from __future__ import annotations

import errno
import logging
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import trio
import trio.testing
from _procs import server_env
from hypothesis import given
from hypothesis import strategies as st

from benchmarks._load_client import LeanClient
from server._accept import ACCEPT_PAUSE, EveryInterval, serve_accepts
from server._descriptors import SocketSlots, plan_max_connections, socket_limit
from server._listeners import open_listeners
from server.testing import start_test_server

ROOT = Path(__file__).resolve().parent.parent
WAIT = 10.0
PROCESS_WAIT = 30.0


# -- the plan (pure) ---------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=200_000), st.integers(min_value=-100, max_value=300_000))
def test_the_planned_connections_are_the_most_whose_sockets_fit(
    requested: int, available: int
) -> None:
    planned = plan_max_connections(requested, available)
    assert 1 <= planned <= requested
    if socket_limit(1) <= available:
        assert socket_limit(planned) <= available
    assert planned == requested or socket_limit(planned + 1) > available


def test_the_socket_limit_leaves_room_to_answer_handshakes_past_the_connection_limit() -> None:
    assert socket_limit(3) == 11
    assert socket_limit(10_000) == 11_250


# -- the failed-accept log (pure) -----------------------------------------------------------


def test_every_interval_reports_the_first_event_at_once_then_one_sum_per_interval() -> None:
    reports = EveryInterval(10.0)
    times = [0.0, 0.1, 5.0, 9.99, 10.0, 10.5, 25.0]
    assert [reports.record(t) for t in times] == [1, None, None, None, 4, None, 2]


class ExhaustedListener(trio.abc.Listener[trio.SocketStream]):
    """A listener whose process is out of descriptors ``failures`` times, then idle."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.closed = False

    async def accept(self) -> trio.SocketStream:
        await trio.lowlevel.checkpoint()
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        self.closed = True


async def test_an_accept_loop_out_of_descriptors_logs_one_line_per_interval_with_a_count(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    listener = ExhaustedListener(failures=250)  # 25 s of failed accepts, one per pause
    with trio.move_on_after(60):
        await serve_accepts(listener, lambda stream: None, EveryInterval(10.0))
    assert listener.failures == 0
    assert listener.closed  # the loop owns its listener
    lines = [r for r in caplog.records if "accepting" in r.getMessage()]
    counts = [int(re.search(r"failed (\d+) time", r.getMessage())[1]) for r in lines]  # type: ignore[index]
    # At 0 s, 10 s and 20 s (100 pauses of 0.1 s apart, give or take float
    # rounding); the last ~49 wait for the next line.
    assert counts[0] == 1
    assert len(counts) == 3
    assert all(abs(count - 100) <= 1 for count in counts[1:]), counts
    assert all(r.exc_info is None and r.levelno == logging.ERROR for r in lines)
    assert ACCEPT_PAUSE == 0.1
    # Everything else logged (by trio, say) is not about accepts either.
    assert len(caplog.records) == len(lines)


class BrokenListener(trio.abc.Listener[trio.SocketStream]):
    """A listener whose accept fails with an error that is not about resources."""

    def __init__(self) -> None:
        self.closed = False

    async def accept(self) -> trio.SocketStream:
        await trio.lowlevel.checkpoint()
        raise OSError(errno.EBADF, "Bad file descriptor")

    async def aclose(self) -> None:
        self.closed = True


async def test_an_accept_error_not_about_resources_ends_the_loop_instead_of_a_pause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = BrokenListener()
    with trio.fail_after(60), pytest.raises(OSError, match="Bad file descriptor") as raised:
        await serve_accepts(listener, lambda stream: None, EveryInterval(10.0))
    assert raised.value.errno == errno.EBADF
    assert listener.closed
    assert trio.current_time() == 0  # at once: no pause, no retry


# -- socket slots ------------------------------------------------------------------------------


async def test_a_listener_accepts_only_while_a_socket_slot_is_free() -> None:
    slots = SocketSlots(2)
    (listener,) = await open_listeners("127.0.0.1", 0, count=1, slots=slots)
    port = listener.socket.getsockname()[1]
    clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(4)]
    try:
        with trio.fail_after(WAIT):
            first = await listener.accept()
            second = await listener.accept()
        assert slots.in_use == 2
        with trio.move_on_after(0.2) as waited:
            await listener.accept()  # two more are waiting in the backlog, but no slot
        assert waited.cancelled_caught
        await first.aclose()
        slots.release()
        with trio.fail_after(WAIT):
            third = await listener.accept()
        assert slots.in_use == 2
        for stream in (second, third):
            await stream.aclose()
            slots.release()
        with trio.fail_after(WAIT):
            await slots.wait_empty()
    finally:
        for client in clients:
            await client.aclose()
        await listener.aclose()
    assert slots.in_use == 0  # the fourth, taken but never handed out, was given back


# -- a real process with few descriptors ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def read_line(stream: trio.abc.ReceiveStream, buffer: bytearray) -> str:
    while b"\n" not in buffer:
        chunk = await stream.receive_some(65536)
        assert chunk, f"the process closed its output: {bytes(buffer)!r}"
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.decode()


async def healthz(port: int) -> bytes:
    with trio.fail_after(WAIT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
            )
            received = bytearray()
            while chunk := await stream.receive_some(65536):
                received += chunk
    return bytes(received)


async def test_with_256_descriptors_400_clients_get_101_or_503_and_healthz_answers() -> None:
    admin = free_port()
    command = f'ulimit -n 256 && exec "$0" -m server --port 0 --admin-port {admin}'
    process = await trio.lowlevel.open_process(
        ["sh", "-c", command, sys.executable],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=server_env(),  # the history in memory, never ./data/ of the checkout
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stderr_lines: list[str] = []
    clients: list[LeanClient] = []
    try:
        out, err = bytearray(), bytearray()
        with trio.fail_after(PROCESS_WAIT):
            port = int((await read_line(process.stdout, out)).rsplit(":", 1)[1][: -len("/ws")])
            while "--max-connections" not in (line := await read_line(process.stderr, err)):
                stderr_lines.append(line)
        lowered = re.search(r"--max-connections 10000 lowered to (\d+)", line)
        assert lowered is not None, line
        allowed = int(lowered[1])
        assert 50 < allowed < 256 - 64

        async def drain_stderr() -> None:
            while chunk := await process.stderr.receive_some(65536):  # type: ignore[union-attr]
                err.extend(chunk)

        statuses: Counter[int] = Counter()

        async def connect(i: int) -> None:
            try:
                client = await LeanClient.connect("127.0.0.1", port, f"/ws?user_id=fd{i}")
            except ConnectionRefusedError as exc:
                statuses[int(str(exc).rsplit(" ", 1)[1])] += 1
                return
            clients.append(client)
            statuses[101] += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_stderr)
            with trio.fail_after(PROCESS_WAIT):
                async with trio.open_nursery() as connecting:
                    for i in range(400):
                        connecting.start_soon(connect, i)
                # Every client got an answer: the connections that fit, then 503s.
                assert statuses == {101: allowed, 503: 400 - allowed}
                assert b'"status": "ok"' in await healthz(admin)
                assert f'"connections": {allowed}'.encode() in await healthz(admin)
            for client in clients:
                await client.aclose()
            clients.clear()
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(PROCESS_WAIT):
                assert await process.wait() == 0
        stderr_lines += err.decode().splitlines()
        assert not [line for line in stderr_lines if "Traceback" in line or "EMFILE" in line]
        assert not [line for line in stderr_lines if "accepting connections failed" in line]
    finally:
        for client in clients:
            await client.aclose()
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(PROCESS_WAIT) as cleanup:
            cleanup.shield = True
            await process.wait()
        await process.stdout.aclose()
        await process.stderr.aclose()


async def test_simultaneous_handshakes_cannot_push_connections_past_the_limit(
    nursery: trio.Nursery,
) -> None:
    # Each handshake used to check the limit before any of them had become a
    # connection, so a burst got in whole (157 connections under a limit of 140).
    server = await start_test_server(nursery, max_connections=3, admin_port=None)
    statuses: Counter[int] = Counter()
    clients: list[LeanClient] = []

    async def connect(i: int) -> None:
        try:
            clients.append(await LeanClient.connect("127.0.0.1", server.port, f"/ws?user_id=b{i}"))
        except ConnectionRefusedError as exc:
            statuses[int(str(exc).rsplit(" ", 1)[1])] += 1
        else:
            statuses[101] += 1

    try:
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as burst:
                for i in range(20):
                    burst.start_soon(connect, i)
        assert statuses == {101: 3, 503: 17}
        assert server.statistics().connections_active == 3
    finally:
        for client in clients:
            await client.aclose()
