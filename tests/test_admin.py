"""The admin HTTP listener: /healthz, /readyz, /metrics over a raw loopback HTTP client."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping

import attrs
import pytest
import trio
import trio.testing

from agents import FaultSpec
from server import ChatServer, MetricsSnapshot, default_router
from server._admin import ADMIN_MAX_CONNECTIONS
from server.testing import open_chat_client, start_test_server

HTTP_TIMEOUT = 10.0

RUN_STATUSES = ("completed", "failed", "cancelled", "timeout")
ERROR_CODES = (
    "FORMAT_ERROR",
    "UNKNOWN_TYPE",
    "AGENT_NOT_FOUND",
    "RUN_NOT_FOUND",
    "RATE_LIMITED",
    "TOO_MANY_RUNS",
    "SHUTTING_DOWN",
    "INTERNAL_ERROR",
)
SERIES_KINDS = {
    "chat_connections_active": "gauge",
    "chat_handlers_active": "gauge",
    "chat_agents_active": "gauge",
    "chat_runs_active": "gauge",
    "chat_connections_total": "counter",
    "chat_runs_total": "counter",
    "chat_events_sent_total": "counter",
    "chat_protocol_errors_total": "counter",
}


# -- a tiny raw HTTP/1.1 client ---------------------------------------------------


@attrs.frozen
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        value: dict[str, object] = json.loads(self.body)
        return value


async def http_exchange(port: int, raw_request: bytes) -> HttpResponse:
    """Send ``raw_request`` to 127.0.0.1:``port``, read until the server closes, parse."""
    with trio.fail_after(HTTP_TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(raw_request)
            received = bytearray()
            while chunk := await stream.receive_some(65536):
                received += chunk
    head, separator, body = bytes(received).partition(b"\r\n\r\n")
    assert separator, f"no end of headers in {bytes(received)!r}"
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, status, _reason = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert int(headers["content-length"]) == len(body)
    return HttpResponse(int(status), headers, body)


async def http_request(port: int, method: str, path: str) -> HttpResponse:
    request = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    if method == "POST":
        request += "Content-Length: 0\r\n"
    return await http_exchange(port, (request + "\r\n").encode("ascii"))


def admin_port(server: ChatServer) -> int:
    assert server.admin_port is not None
    return server.admin_port


# -- Prometheus text -------------------------------------------------------------

_SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)")
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>[^"]*)"')

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_prometheus(text: str) -> tuple[dict[str, str], Samples]:
    """({series: kind} from TYPE lines, {(name, labels): value}); fails on malformed lines."""
    kinds: dict[str, str] = {}
    samples: Samples = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in kinds, f"two TYPE lines for {name}"
            kinds[name] = kind
            continue
        if line.startswith("#"):
            continue
        match = _SAMPLE.fullmatch(line)
        assert match is not None, f"malformed sample line {line!r}"
        labels = frozenset((m["key"], m["value"]) for m in _LABEL.finditer(match["labels"] or ""))
        key = (match["name"], labels)
        assert key not in samples, f"duplicate sample {line!r}"
        family = re.sub(r"_(bucket|sum|count)$", "", match["name"])
        if kinds.get(family) != "histogram":
            family = match["name"]
        assert family in kinds, f"sample {line!r} before its TYPE line"
        samples[key] = float(match["value"])
    return kinds, samples


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def labelled(samples: Samples, name: str, label: str, value: str) -> float:
    """A labelled sample, 0 when it has not been exposed (yet)."""
    return samples.get((name, frozenset({(label, value)})), 0.0)


def assert_metrics_match(samples: Samples, stats: MetricsSnapshot) -> None:
    assert sample(samples, "chat_connections_active") == stats.connections_active
    assert sample(samples, "chat_handlers_active") == stats.handlers_active
    assert sample(samples, "chat_agents_active") == stats.agents_active
    assert sample(samples, "chat_runs_active") == stats.runs_active
    assert sample(samples, "chat_connections_total") == stats.connections_total
    assert sample(samples, "chat_events_sent_total") == stats.events_sent_total
    # Labelled series may be pre-set to 0 or appear on first use.
    for status in RUN_STATUSES:
        assert labelled(samples, "chat_runs_total", "status", status) == stats.runs_total.get(
            status, 0
        )
    for code in ERROR_CODES:
        assert labelled(
            samples, "chat_protocol_errors_total", "code", code
        ) == stats.protocol_errors_total.get(code, 0)


async def scrape(server: ChatServer) -> Samples:
    response = await http_request(admin_port(server), "GET", "/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    kinds, samples = parse_prometheus(response.body.decode("utf-8"))
    for name, kind in SERIES_KINDS.items():
        assert kinds.get(name) == kind, f"{name} should be a {kind}"
    return samples


# -- tests -----------------------------------------------------------------------


async def test_healthz_answers_200_with_status_ok(server: ChatServer) -> None:
    response = await http_request(admin_port(server), "GET", "/healthz")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["status"] == "ok"


async def test_readyz_answers_200_while_accepting(server: ChatServer) -> None:
    response = await http_request(admin_port(server), "GET", "/readyz")
    assert response.status == 200


async def test_readyz_turns_503_during_drain_while_healthz_stays_200(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_test_server(
        nursery, faults=(FaultSpec.parse("supervisor:hang:1"),), drain_timeout=7
    )
    port = admin_port(server)
    async with open_chat_client(server, user_id="u1") as client:
        run_id = await client.start("hang on")
        await client.wait_event(run_id, "agent_started")
        assert (await http_request(port, "GET", "/readyz")).status == 200

        drain_started = trio.current_time()
        server.begin_drain()
        ready = await http_request(port, "GET", "/readyz")
        health = await http_request(port, "GET", "/healthz")
        # The hanging run keeps the server draining, and no virtual time has passed.
        assert trio.current_time() == drain_started
        assert ready.status == 503
        assert health.status == 200
        assert health.json()["status"] == "ok"

        run = await client.collect(run_id)
        assert trio.current_time() == drain_started + 7
        assert run.status == "cancelled"
        assert run.final["data"]["error"]["code"] == "SHUTTING_DOWN"
        code, _ = await client.wait_closed()
    assert code == 1001
    with trio.fail_after(HTTP_TIMEOUT):
        await server.wait_stopped()


async def test_metrics_expose_all_eight_series_at_zero_on_a_fresh_server(
    server: ChatServer,
) -> None:
    samples = await scrape(server)
    assert_metrics_match(samples, server.statistics())
    # process_* series describe the process, not the chat server: never 0. Nor
    # are two chat_ ones about this server's clients: log lines dropped (the
    # process's logging), the event loop lag (a tick every 0.25 s, clients or not)
    # and the store's operations (its start-up sweep and health checks).
    not_about_clients = (
        "chat_log_lines_dropped_total",
        "chat_event_loop_lag_seconds",
        "chat_store_operations_total",
        "chat_store_latency_seconds",
    )
    assert all(
        value == 0
        for (name, _), value in samples.items()
        if name.startswith("chat_") and not name.startswith(not_about_clients)
    )


async def test_metrics_match_statistics_after_a_run_and_a_protocol_error(
    server: ChatServer,
) -> None:
    async with open_chat_client(server, user_id="u1") as client:
        run = await client.run("How do I cut my latency below 200 ms?")
        await client.send("this is not json")
        error = await client.receive_frame("error_message")
        assert error["error_code"] == "FORMAT_ERROR"
        with trio.fail_after(HTTP_TIMEOUT):
            await trio.testing.wait_all_tasks_blocked()

        samples = await scrape(server)
        stats = server.statistics()
        assert_metrics_match(samples, stats)
        assert stats.gauges == (1, len(default_router()), 0, 0)
        assert sample(samples, "chat_connections_total") == 1
        assert sample(samples, "chat_runs_total", status="completed") == 1
        assert sample(samples, "chat_events_sent_total") == len(run.events)
        assert sample(samples, "chat_protocol_errors_total", code="FORMAT_ERROR") == 1
        assert sample(samples, "chat_protocol_errors_total", code="UNKNOWN_TYPE") == 0

    with trio.fail_after(HTTP_TIMEOUT):
        await server.wait_idle()
    samples = await scrape(server)
    assert_metrics_match(samples, server.statistics())
    for gauge in ("connections", "handlers", "agents", "runs"):
        assert sample(samples, f"chat_{gauge}_active") == 0
    assert sample(samples, "chat_events_sent_total") == len(run.events)


async def test_metrics_gauges_count_a_run_in_progress(nursery: trio.Nursery) -> None:
    server = await start_test_server(nursery, faults=(FaultSpec.parse("supervisor:hang:1"),))
    async with open_chat_client(server, user_id="u1") as client:
        run_id = await client.start("hang on")
        await client.wait_event(run_id, "agent_started")
        samples = await scrape(server)
        assert_metrics_match(samples, server.statistics())
        assert sample(samples, "chat_connections_active") == 1
        assert sample(samples, "chat_handlers_active") == len(default_router())
        assert sample(samples, "chat_agents_active") == 1
        assert sample(samples, "chat_runs_active") == 1
        await client.stop(run_id)
        run = await client.collect(run_id)
        assert run.status == "cancelled"
        samples = await scrape(server)
        assert sample(samples, "chat_agents_active") == 0
        assert sample(samples, "chat_runs_active") == 0
        assert sample(samples, "chat_runs_total", status="cancelled") == 1


@pytest.mark.parametrize("path", ["/static", "/metricsx", "/health", "/ws", "/healthz/"])
async def test_unknown_paths_answer_404(server: ChatServer, path: str) -> None:
    response = await http_request(admin_port(server), "GET", path)
    assert response.status == 404


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_post_answers_405(server: ChatServer, path: str) -> None:
    response = await http_request(admin_port(server), "POST", path)
    assert response.status == 405


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01\x02 not http at all\r\n\r\n",
        b"GET /healthz\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nbad header line\r\n\r\n",
    ],
)
async def test_garbage_bytes_answer_400(server: ChatServer, garbage: bytes) -> None:
    response = await http_exchange(admin_port(server), garbage)
    assert response.status == 400
    # The listener survives a bad request.
    assert (await http_request(admin_port(server), "GET", "/healthz")).status == 200


async def test_the_admin_listener_serves_64_connections_at_once_and_closes_the_next_at_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_test_server(nursery)
    port = admin_port(server)
    idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(ADMIN_MAX_CONNECTIONS)]
    try:
        started = trio.current_time()
        async with await trio.open_tcp_stream("127.0.0.1", port) as excess:
            # EOF, or a reset: closed without reading anything.
            with trio.fail_after(HTTP_TIMEOUT), contextlib.suppress(trio.BrokenResourceError):
                assert await excess.receive_some(1) == b""
        # Closed at once, not held until the idle request timeout.
        assert trio.current_time() == started
        # One of the held connections asks for something and leaves: its slot is free again.
        request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        await idle[0].send_all(request)
        with trio.fail_after(HTTP_TIMEOUT):
            while await idle[0].receive_some(65536):
                pass
        response = await http_request(port, "GET", "/healthz")
        assert response.status == 200
        assert trio.current_time() == started
    finally:
        for stream in idle:
            await stream.aclose()
