"""Structured logs: the formatters, the ids on connection and run lines, and
that what users type stays out of the logs unless the level is DEBUG."""

from __future__ import annotations

import io
import json
import logging
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio
from _procs import server_env

from agents import AgentClassRegistry, BaseAgent, FaultSpec
from agents.builtin import default_registry
from benchmarks._load_client import LeanClient
from server._logging import (
    ID_FIELDS,
    JsonFormatter,
    LogWriter,
    QueueLineHandler,
    TextFormatter,
    configure_logging,
    ids,
    log_lines_dropped,
    open_log_writer,
)
from server.testing import ChatClient, open_chat_client, start_test_server

if TYPE_CHECKING:
    from _typeshed import OptExcInfo

ROOT = Path(__file__).resolve().parent.parent
WAIT = 10.0
#: Start-up of a fresh interpreter can be slow on a loaded machine.
PROCESS_WAIT = 20.0
LOGGER = "trio_agent_server"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def make_record(
    message: str = "run ended: %s",
    *args: object,
    level: int = logging.INFO,
    exc_info: OptExcInfo | None = None,
    **extra: str,
) -> logging.LogRecord:
    """A record as ``logger.log(level, message, *args, extra=extra)`` would make it,
    created at 2026-11-21T10:00:00.123Z."""
    record = logging.getLogger(f"{LOGGER}.test").makeRecord(
        f"{LOGGER}.test", level, __file__, 1, message, args, exc_info, extra=extra
    )
    record.created = 1795255200.123
    record.msecs = 123.0
    return record


def exc_info_of(exc: BaseException) -> OptExcInfo:
    try:
        raise exc
    except BaseException:
        return sys.exc_info()


# -- the formatters (pure) -----------------------------------------------------------


def test_ids_keeps_only_the_ids_that_are_given() -> None:
    assert ids(connection_id="c-1", user_id=None, run_id="r-1") == {
        "connection_id": "c-1",
        "run_id": "r-1",
    }
    assert ids() == {}


def test_text_line_has_timestamp_level_logger_message_then_the_ids_in_a_fixed_order() -> None:
    record = make_record("run ended: %s", "failed", run_id="r-9", user_id="u1", connection_id="c-3")
    line = TextFormatter().format(record)
    assert line == (
        "2026-11-21T10:00:00.123Z INFO trio_agent_server.test run ended: failed "
        "connection_id=c-3 user_id=u1 run_id=r-9"
    )


def test_text_line_without_ids_ends_with_the_message() -> None:
    line = TextFormatter().format(make_record("draining: %d connection(s) open", 2))
    assert (
        line
        == "2026-11-21T10:00:00.123Z INFO trio_agent_server.test draining: 2 connection(s) open"
    )


def test_text_line_of_an_exception_carries_the_traceback() -> None:
    record = make_record(
        "connection failed",
        level=logging.ERROR,
        exc_info=exc_info_of(RuntimeError("writer exploded")),
        connection_id="c-1",
    )
    first, *rest = TextFormatter().format(record).split("\n")
    assert first.endswith("ERROR trio_agent_server.test connection failed connection_id=c-1")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "RuntimeError: writer exploded"


def test_json_line_parses_and_carries_every_id_given() -> None:
    all_ids = {name: f"{name}-value" for name in ID_FIELDS}
    # level and exc_info named, so that **all_ids can only be the extra fields.
    record = make_record("run ended: %s", "timeout", level=logging.INFO, exc_info=None, **all_ids)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert json.loads(line) == {
        "ts": "2026-11-21T10:00:00.123Z",
        "level": "INFO",
        "logger": "trio_agent_server.test",
        "message": "run ended: timeout",
        **all_ids,
    }


def test_json_line_leaves_out_absent_ids() -> None:
    entry = json.loads(JsonFormatter().format(make_record("x", connection_id="c-1")))
    assert set(entry) == {"ts", "level", "logger", "message", "connection_id"}


def test_json_line_of_an_exception_is_still_one_line_with_the_traceback() -> None:
    record = make_record(
        "message handler failed",
        level=logging.ERROR,
        exc_info=exc_info_of(ValueError("bad\nvalue")),
        connection_id="c-2",
        user_id="u2",
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["connection_id"] == "c-2"
    assert entry["user_id"] == "u2"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ValueError: bad\nvalue")


def test_json_line_keeps_non_ascii_text_readable() -> None:
    line = JsonFormatter().format(make_record("user %s", "Zoë 😀", user_id="zoë"))
    assert "Zoë 😀" in line
    assert json.loads(line)["user_id"] == "zoë"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    websocket = logging.getLogger("trio-websocket")
    websocket_level = websocket.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    websocket.setLevel(websocket_level)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_configure_logging_writes_the_chosen_format_to_stderr_at_the_chosen_level(
    capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    configure_logging("INFO", log_format)
    log = logging.getLogger(f"{LOGGER}.connection")
    log.debug("run started: %r", "hidden", extra=ids(connection_id="c-7"))
    log.info("connection opened", extra=ids(connection_id="c-7", user_id="u7"))
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    if log_format == "json":
        entry = json.loads(line)
        assert entry["message"] == "connection opened"
        assert (entry["connection_id"], entry["user_id"]) == ("c-7", "u7")
    else:
        assert line.endswith(
            "INFO trio_agent_server.connection connection opened connection_id=c-7 user_id=u7"
        )
    assert len(logging.getLogger().handlers) == 1


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_keeps_trio_websocket_frame_logs_out_even_at_debug() -> None:
    configure_logging("DEBUG", "text")
    assert logging.getLogger().level == logging.DEBUG
    assert not logging.getLogger("trio-websocket").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("trio-websocket").isEnabledFor(logging.INFO)


# -- end to end, in process --------------------------------------------------------


def record_ids(record: logging.LogRecord) -> dict[str, Any]:
    """The ids a record carries (what the formatters put on its line)."""
    return {name: getattr(record, name) for name in ID_FIELDS if hasattr(record, name)}


def project_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(LOGGER)]


def record_text(record: logging.LogRecord) -> str:
    """Everything a record could put on a line: both formats, args and attributes."""
    return "\n".join(
        [
            TextFormatter().format(record),
            JsonFormatter().format(record),
            repr(record.args),
            repr(vars(record)),
        ]
    )


async def test_connection_open_and_close_lines_carry_the_connection_and_user_ids(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    server = await start_test_server(nursery, admin_port=None)
    async with open_chat_client(server, user_id="log-user") as client:
        connection_id = client.connection_id
    with trio.fail_after(WAIT):
        await server.wait_idle()

    lines = [
        r for r in project_records(caplog) if getattr(r, "connection_id", None) == connection_id
    ]
    messages = [r.getMessage() for r in lines]
    assert messages[0] == "connection opened"
    assert messages[-1] == "connection closed (1000)"
    for record in (lines[0], lines[-1]):
        assert record.levelno == logging.INFO
        assert record.name == f"{LOGGER}.connection"
        assert record_ids(record) == {"connection_id": connection_id, "user_id": "log-user"}
        entry = json.loads(JsonFormatter().format(record))
        assert (entry["connection_id"], entry["user_id"]) == (connection_id, "log-user")


async def test_close_line_names_the_code_the_server_closed_with(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    server = await start_test_server(nursery, admin_port=None)
    async with open_chat_client(server, user_id="binary-user") as client:
        await client.send(b"\x00binary")
        code, _ = await client.wait_closed()
    assert code == 1003
    with trio.fail_after(WAIT):
        await server.wait_idle()

    (line,) = [
        r
        for r in project_records(caplog)
        if r.getMessage().startswith("connection closed")
        and getattr(r, "connection_id", None) == client.connection_id
    ]
    assert line.getMessage() == "connection closed (1003)"
    assert record_ids(line) == {"connection_id": client.connection_id, "user_id": "binary-user"}


async def test_a_failed_run_is_logged_at_info_with_its_run_id(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    server = await start_test_server(
        nursery, admin_port=None, faults=(FaultSpec.parse("supervisor:raise:1"),)
    )
    async with open_chat_client(server, user_id="unlucky") as client:
        run = await client.run("this one fails")
    assert run.status == "failed"

    (line,) = [r for r in project_records(caplog) if getattr(r, "run_id", None) == run.run_id]
    assert line.levelno == logging.INFO
    assert line.getMessage() == "run ended: failed"
    assert record_ids(line) == {
        "connection_id": client.connection_id,
        "user_id": "unlucky",
        "run_id": run.run_id,
    }
    entry = json.loads(JsonFormatter().format(line))
    assert entry["run_id"] == run.run_id


class BlurtingAgent(BaseAgent):
    """A top-level agent whose exception repeats what the user typed."""

    name = "blurting"
    top_level = True

    async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        raise RuntimeError(f"cannot handle {self.context.request!r}")


def registry_with_blurting_agent() -> AgentClassRegistry:
    registry = default_registry()
    registry.register(BlurtingAgent)
    return registry


async def run_with_a_server_minted_id(client: ChatClient, frame: Mapping[str, Any]) -> str:
    """Send a user_message/chat frame and read its run to the end, on the raw
    WebSocket (ChatClient only files runs whose id it chose); return the status."""
    await client.send(frame)
    with trio.fail_after(WAIT):
        while True:
            event = json.loads(await client.ws.get_message())
            assert event["type"] != "error_message", event
            if event.get("final"):
                return str(event["data"]["status"])


async def send_user_text_every_way(client: ChatClient, marker: str) -> None:
    """Put ``marker`` in every place a user types text, good frames and bad."""
    for kind, key in (("user_message", "content"), ("user_message", "message"), ("chat", "text")):
        frame = {"type": kind, "payload": {key: f"hi {marker}"}}
        assert await run_with_a_server_minted_id(client, frame) == "completed"
    for agent, status in (("supervisor", "completed"), ("blurting", "failed")):
        run_id = await client.start(f"please {marker}", agent_name=agent)
        assert (await client.collect(run_id)).status == status
    bad_frames: list[tuple[Mapping[str, Any] | str, str]] = [
        (f'{{"type": "user_message", "payload": {{"content": "{marker}"', "FORMAT_ERROR"),
        ({"type": marker, "payload": {"content": marker}}, "UNKNOWN_TYPE"),
        (
            {"type": "start_agent", "payload": {"user_request": marker, "agent_name": marker}},
            "AGENT_NOT_FOUND",
        ),
        (
            {"type": "user_message", "payload": {"content": marker, "thread_id": "not valid!"}},
            "FORMAT_ERROR",
        ),
    ]
    for bad_frame, code in bad_frames:
        await client.send(bad_frame)
        reply = await client.receive_frame("error_message")
        assert reply["error_code"] == code


async def test_user_text_never_reaches_a_log_record_at_info(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # every logger, the server's and its libraries'
    marker = f"zebra-{uuid.uuid4().hex}"
    server = await start_test_server(
        nursery, admin_port=None, registry=registry_with_blurting_agent()
    )
    async with open_chat_client(server, user_id="private") as client:
        await send_user_text_every_way(client, marker)
    with trio.fail_after(WAIT):
        await server.wait_idle()

    records = caplog.records
    assert any(r.getMessage() == "run ended: failed" for r in records)  # logging works
    assert any(r.getMessage() == "connection opened" for r in records)
    leaks = [r for r in records if marker in record_text(r)]
    assert leaks == []


async def test_user_text_is_logged_at_debug_with_the_run_id(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    marker = f"zebra-{uuid.uuid4().hex}"
    server = await start_test_server(nursery, admin_port=None)
    async with open_chat_client(server, user_id="verbose") as client:
        run = await client.run(f"please look at {marker}")
    assert run.status == "completed"
    with trio.fail_after(WAIT):
        await server.wait_idle()

    records = project_records(caplog)
    with_text = [r for r in records if marker in r.getMessage()]
    assert with_text, [r.getMessage() for r in records]
    for record in with_text:
        assert record.levelno == logging.DEBUG
        assert record_ids(record) == {
            "connection_id": client.connection_id,
            "user_id": "verbose",
            "run_id": run.run_id,
        }
    assert [r for r in records if r.levelno >= logging.INFO and marker in record_text(r)] == []


# -- end to end, as a process ------------------------------------------------------


def clean_env() -> dict[str, str]:
    return server_env()


async def read_line(stream: trio.abc.ReceiveStream, buffer: bytearray) -> str | None:
    while b"\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.decode()


async def read_all(stream: trio.abc.ReceiveStream) -> str:
    data = bytearray()
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data.decode()


async def test_json_log_format_writes_only_json_objects_with_ids_to_stderr() -> None:
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "server",
            "--log-format",
            "json",
            "--port",
            "0",
            "--admin-port",
            "0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=clean_env(),
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        with trio.fail_after(PROCESS_WAIT):
            listening = await read_line(process.stdout, bytearray())
        assert listening is not None
        match = re.fullmatch(r"listening on (ws://127\.0\.0\.1:\d+/ws)", listening)
        assert match, listening
        async with open_chat_client(match[1], user_id="json-user") as client:
            run = await client.run("Our p99 latency is 900 ms, what should we do?")
            connection_id = client.connection_id
        assert run.status == "completed"
        process.send_signal(signal.SIGINT)
        with trio.fail_after(PROCESS_WAIT):
            stderr = await read_all(process.stderr)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(PROCESS_WAIT) as cleanup:
            cleanup.shield = True
            await process.wait()
        await process.stdout.aclose()
        await process.stderr.aclose()

    lines = stderr.splitlines()
    assert lines, "no log lines at all"
    entries = []
    for line in lines:
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        for key in ("ts", "level", "logger", "message"):
            assert isinstance(entry.get(key), str), line
        assert TIMESTAMP.fullmatch(entry["ts"]), line
        assert entry["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), line
        entries.append(entry)
    mine = [e for e in entries if e.get("connection_id") == connection_id]
    assert mine[0]["message"] == "connection opened"
    assert mine[-1]["message"].startswith("connection closed")
    assert all(e["user_id"] == "json-user" for e in mine)
    assert any(e["message"] == "received SIGINT: draining" for e in entries)
    assert entries[-1]["message"] == "stopped"


# -- the log queue and its writer thread (issue 10, section 2) ------------------------


def queue_logger(name: str, capacity: int) -> tuple[logging.Logger, queue.Queue[str | None]]:
    """A logger of its own whose only handler queues lines (capacity ``capacity``)."""
    lines: queue.Queue[str | None] = queue.Queue(maxsize=capacity)
    handler = QueueLineHandler(lines)
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger(f"{LOGGER}.queue-test.{name}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, lines


def test_a_full_log_queue_drops_and_counts_lines_instead_of_waiting() -> None:
    logger, lines = queue_logger("full", capacity=3)
    before = log_lines_dropped()
    for i in range(10):
        logger.info("line %d", i)  # nothing drains the queue: a blocking put would hang here
    assert log_lines_dropped() - before == 7
    queued = [lines.get_nowait() for _ in range(3)]
    assert [line.rsplit(" ", 1)[-1] if line else None for line in queued] == ["0", "1", "2"]


def test_a_record_that_cannot_be_formatted_is_queued_as_an_error_line() -> None:
    logger, lines = queue_logger("broken", capacity=3)
    logger.info("two args %s %s", "only one")
    line = lines.get_nowait()
    assert line is not None
    assert line.startswith(f"logging error in {LOGGER}.queue-test.broken: 'two args %s %s'")
    assert "TypeError" in line


def test_the_writer_writes_queued_lines_in_order_and_stops_once_drained() -> None:
    lines: queue.Queue[str | None] = queue.Queue(maxsize=100)
    written: list[bytes] = []
    writer = LogWriter(lines, written.append)
    for i in range(5):
        lines.put_nowait(f"line {i}")
    writer.start()
    assert writer.stop(timeout=WAIT)
    assert b"".join(written).decode().splitlines() == [f"line {i}" for i in range(5)]


def test_a_blocked_sink_blocks_only_the_writer_and_the_exit_drain_is_bounded() -> None:
    lines: queue.Queue[str | None] = queue.Queue(maxsize=4)
    release = threading.Event()
    entered = threading.Event()

    def blocked_write(data: bytes) -> None:  # a pipe nobody reads
        entered.set()
        release.wait(WAIT)

    writer = LogWriter(lines, blocked_write)
    writer.start()
    try:
        lines.put_nowait("first")
        assert entered.wait(WAIT)  # the writer is now stuck in the sink
        before = log_lines_dropped()
        handler = QueueLineHandler(lines)
        for i in range(10):
            handler.emit(make_record("more %d", i))  # returns at once every time
        assert log_lines_dropped() - before == 6  # 4 fitted in the queue
        assert writer.stop(timeout=0.05) is False  # gave up waiting for the sink
    finally:
        release.set()
    assert writer.stop(timeout=WAIT)


@pytest.mark.usefixtures("restore_logging")
def test_open_log_writer_sends_the_server_logs_through_the_queue_to_the_stream() -> None:
    stream = io.StringIO()
    with open_log_writer("INFO", "json", stream=stream) as writer:
        (handler,) = logging.getLogger().handlers
        assert isinstance(handler, QueueLineHandler)
        logging.getLogger(f"{LOGGER}.connection").info(
            "connection opened", extra=ids(connection_id="c-1")
        )
        assert isinstance(writer, LogWriter)
    entry = json.loads(stream.getvalue())
    assert (entry["message"], entry["connection_id"]) == ("connection opened", "c-1")
    logging.captureWarnings(False)


def test_a_write_limit_splits_a_batch_into_whole_lines_of_at_most_that_many_bytes() -> None:
    lines: queue.Queue[str | None] = queue.Queue(maxsize=100)
    written: list[bytes] = []
    writer = LogWriter(lines, written.append, write_limit=32)
    sent = [f"line {i:02d} " + "x" * (i % 9) for i in range(20)] + ["y" * 50]
    for line in sent:
        lines.put_nowait(line)
    writer.start()
    assert writer.stop(timeout=WAIT)
    assert b"".join(written).decode().splitlines() == sent
    assert len(written) > 1
    for chunk in written:
        assert chunk.endswith(b"\n")  # whole lines only
        assert len(chunk) <= 32 or chunk.count(b"\n") == 1  # a longer line goes alone


@pytest.mark.usefixtures("restore_logging")
def test_process_fields_go_on_every_line_unless_the_call_gives_its_own() -> None:
    stream = io.StringIO()
    with open_log_writer("INFO", "text", stream=stream, fields={"worker": "3"}):
        logger = logging.getLogger(f"{LOGGER}.workers")
        logger.info("listening")
        logger.info("about another", extra={"worker": "1"})
    first, second = stream.getvalue().splitlines()
    assert first.endswith(" listening worker=3")
    assert second.endswith(" about another worker=1")
    logging.captureWarnings(False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def http_get(port: int, path: str) -> str:
    """The whole response (head and body) to GET ``path`` on 127.0.0.1:``port``."""
    with trio.fail_after(WAIT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
            await stream.send_all(request.encode())
            received = bytearray()
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received.decode()


async def test_a_server_whose_stderr_nobody_reads_still_serves_1000_cycles() -> None:
    # The unread pipe fills after about 64 KiB of log lines (some 200 cycles of
    # "connection opened"/"connection closed"); writing them on the event loop's
    # thread froze the whole server at that point.
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "server", "--port", "0", "--admin-port", str(free_port())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # never read until the process has exited
        cwd=ROOT,
        env=clean_env(),
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        buffer = bytearray()
        with trio.fail_after(PROCESS_WAIT):
            listening = await read_line(process.stdout, buffer)
            admin = await read_line(process.stdout, buffer)
        assert listening is not None
        assert admin is not None
        port = int(listening.rsplit(":", 1)[1].removesuffix("/ws"))
        admin_port = int(admin.rsplit(":", 1)[1])
        completed = 0

        async def cycles(worker: int, count: int) -> None:
            nonlocal completed
            for i in range(count):
                client = await LeanClient.connect("127.0.0.1", port, f"/ws?user_id=w{worker}")
                try:
                    await client.receive_message()  # connection_established
                    await client.send_text(
                        json.dumps({"type": "start_agent", "payload": {"user_request": f"hi {i}"}})
                    )
                    while b'"final":true' not in await client.receive_message():
                        pass
                finally:
                    await client.aclose()
                completed += 1

        with trio.fail_after(45):
            async with trio.open_nursery() as workers:
                for worker in range(8):
                    workers.start_soon(cycles, worker, 125)
            assert completed == 1000
            assert '"status": "ok"' in await http_get(admin_port, "/healthz")
            metrics = await http_get(admin_port, "/metrics")
        # Counted (the queue holds these 2,000 lines, so none was dropped yet).
        assert re.search(r"^chat_log_lines_dropped_total \d+$", metrics, re.M)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(PROCESS_WAIT):  # the exit drain gives up on the sink
            assert await process.wait() == 0
        logged = (await read_all(process.stderr)).splitlines()
        assert logged[0].endswith("INFO trio_agent_server.server model provider: offline")
        # The sink really was blocked: most lines never got out.
        assert 0 < sum(" connection opened " in line for line in logged) < 1000
    finally:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(PROCESS_WAIT) as cleanup:
            cleanup.shield = True
            await process.wait()
        await process.stdout.aclose()
        await process.stderr.aclose()
