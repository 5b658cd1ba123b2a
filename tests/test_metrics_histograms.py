"""The /metrics histograms (latency, run and step durations, queue depth) and process series."""

from __future__ import annotations

import itertools
import math
import re
import resource
import time
from collections import Counter

import attrs
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import FaultSpec
from server import ChatServer
from server._lag import LAG_TICK_INTERVAL, serve_lag_ticks
from server._metrics import DURATION_BUCKETS, KNOWN_CLOSE_CODES, Histogram, Metrics
from server.testing import open_chat_client, start_test_server

HTTP_TIMEOUT = 10.0
HISTOGRAMS = (
    "chat_time_to_first_event_seconds",
    "chat_run_duration_seconds",
    "chat_agent_step_duration_seconds",
    "chat_outbound_queue_depth",
    "chat_event_loop_lag_seconds",
)

_SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)")
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>[^"]*)"')


@attrs.define
class Series:
    """One labelled histogram: its buckets in exposition order, sum and count."""

    buckets: list[tuple[float, float]] = attrs.field(factory=list)
    sum: float | None = None
    count: float | None = None

    def le(self, bound: float) -> float:
        return dict(self.buckets)[bound]


@attrs.define
class Exposition:
    kinds: dict[str, str]
    plain: dict[tuple[str, frozenset[tuple[str, str]]], float]
    histograms: dict[tuple[str, frozenset[tuple[str, str]]], Series]

    def histogram(self, name: str, **labels: str) -> Series:
        return self.histograms[(name, frozenset(labels.items()))]

    def value(self, name: str) -> float:
        return self.plain[(name, frozenset())]


def parse(text: str) -> Exposition:
    """Parse Prometheus text, grouping histogram samples; fails on malformed lines."""
    kinds: dict[str, str] = {}
    plain: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    histograms: dict[tuple[str, frozenset[tuple[str, str]]], Series] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in kinds, f"two TYPE lines for {name}"
            kinds[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.fullmatch(line)
        assert match is not None, f"malformed sample line {line!r}"
        labels = {m["key"]: m["value"] for m in _LABEL.finditer(match["labels"] or "")}
        value = math.inf if match["value"] == "+Inf" else float(match["value"])
        name = match["name"]
        family, _, suffix = name.rpartition("_")
        if kinds.get(family) == "histogram" and suffix in ("bucket", "sum", "count"):
            le = labels.pop("le", None)
            series = histograms.setdefault((family, frozenset(labels.items())), Series())
            if suffix == "bucket":
                assert le is not None, f"bucket without le: {line!r}"
                assert series.sum is None, f"bucket after _sum: {line!r}"
                series.buckets.append((math.inf if le == "+Inf" else float(le), value))
            elif suffix == "sum":
                series.sum = value
            else:
                series.count = value
            continue
        assert name in kinds, f"sample {line!r} before its TYPE line"
        plain[(name, frozenset(labels.items()))] = value
    return Exposition(kinds, plain, histograms)


def assert_well_formed(exposition: Exposition) -> None:
    """Every histogram: ascending le ending at +Inf, monotone counts, +Inf == _count."""
    for name in HISTOGRAMS:
        assert exposition.kinds.get(name) == "histogram", name
    for (name, labels), series in exposition.histograms.items():
        bounds = [le for le, _ in series.buckets]
        counts = [n for _, n in series.buckets]
        assert bounds == sorted(set(bounds)), (name, labels, bounds)
        assert bounds[-1] == math.inf, (name, labels)
        assert all(a <= b for a, b in itertools.pairwise(counts)), (name, counts)
        assert series.count == counts[-1], (name, labels)
        assert series.sum is not None
        assert series.sum >= 0


async def scrape(server: ChatServer) -> Exposition:
    assert server.admin_port is not None
    request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with trio.fail_after(HTTP_TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", server.admin_port)
        async with stream:
            await stream.send_all(request)
            received = bytearray()
            while chunk := await stream.receive_some(65536):
                received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    exposition = parse(body.decode("utf-8"))
    assert_well_formed(exposition)
    return exposition


# -- the histogram itself --------------------------------------------------------


@settings(deadline=None, max_examples=60)
@given(
    values=st.lists(
        st.one_of(
            st.sampled_from(DURATION_BUCKETS),  # exactly on a bound: counted in that bucket
            st.floats(min_value=0, max_value=1000, allow_nan=False),
        ),
        max_size=40,
    )
)
def test_histogram_buckets_count_values_at_or_below_each_bound(values: list[float]) -> None:
    histogram = Histogram(DURATION_BUCKETS)
    for value in values:
        histogram.observe(value)
    snapshot = histogram.snapshot()
    assert snapshot.count == len(values)
    assert snapshot.sum == sum(values)
    for bound, total in snapshot.cumulative():
        assert total == sum(1 for v in values if v <= bound)


# -- end to end ------------------------------------------------------------------


async def test_a_fresh_server_exposes_every_histogram_empty(server: ChatServer) -> None:
    exposition = await scrape(server)
    first = exposition.histogram("chat_time_to_first_event_seconds")
    assert first.count == 0
    assert first.sum == 0
    for status in ("completed", "failed", "cancelled", "timeout"):
        assert exposition.histogram("chat_run_duration_seconds", status=status).count == 0
    # No connection was open during the scrape: nothing sampled.
    assert exposition.histogram("chat_outbound_queue_depth").count == 0


async def test_counts_match_the_runs_and_agent_steps_that_happened(server: ChatServer) -> None:
    runs = 3
    started: Counter[str] = Counter()
    async with open_chat_client(server) as client:
        for n in range(runs):
            transcript = await client.run(f"Analyse our GPU costs, request {n}")
            assert transcript.status == "completed"
            started.update(
                e["agent_name"] for e in transcript.events if e["type"] == "agent_started"
            )
    with trio.fail_after(HTTP_TIMEOUT):
        await server.wait_idle()
    exposition = await scrape(server)
    assert exposition.histogram("chat_time_to_first_event_seconds").count == runs
    assert exposition.histogram("chat_run_duration_seconds", status="completed").count == runs
    assert exposition.histogram("chat_run_duration_seconds", status="failed").count == 0
    steps = {
        dict(labels)["agent"]: series.count
        for (name, labels), series in exposition.histograms.items()
        if name == "chat_agent_step_duration_seconds"
    }
    assert steps == dict(started)
    assert {"supervisor", "triage"} <= set(steps)
    assert server.statistics().agent_step_duration["supervisor"].count == runs


async def test_a_slow_triage_step_takes_exactly_one_virtual_second(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_test_server(nursery, faults=(FaultSpec.parse("triage:slow:1"),))
    async with open_chat_client(server) as client:
        transcript = await client.run("Why did our inference latency spike?")
    assert transcript.status == "completed"
    with trio.fail_after(HTTP_TIMEOUT):
        await server.wait_idle()
    exposition = await scrape(server)
    triage = exposition.histogram("chat_agent_step_duration_seconds", agent="triage")
    assert triage.count == 1
    assert triage.sum == 1.0
    assert triage.le(0.5) == 0
    assert triage.le(1.0) == 1  # le is inclusive: exactly 1 s lands in the 1 s bucket
    # Only virtual time passes in the slow fault: the run and its top step take 1 s too,
    # and the first event goes out without any time passing.
    run = exposition.histogram("chat_run_duration_seconds", status="completed")
    assert (run.count, run.sum, run.le(0.5), run.le(1.0)) == (1, 1.0, 0, 1)
    supervisor = exposition.histogram("chat_agent_step_duration_seconds", agent="supervisor")
    assert (supervisor.count, supervisor.sum) == (1, 1.0)
    first = exposition.histogram("chat_time_to_first_event_seconds")
    assert (first.count, first.sum, first.le(0.0001)) == (1, 0.0, 1)


async def test_a_stopped_run_is_timed_until_its_cancelled_final_event(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_test_server(nursery, faults=(FaultSpec.parse("supervisor:hang:1"),))
    async with open_chat_client(server) as client:
        run_id = await client.start("Hang, please")
        await client.wait_event(run_id, "agent_started")
        started_at = trio.current_time()
        await trio.sleep(7)  # virtual: the run has been hanging for exactly 7 s
        await client.stop(run_id)
        transcript = await client.collect(run_id)
    assert transcript.status == "cancelled"
    assert started_at == 0.0
    with trio.fail_after(HTTP_TIMEOUT):
        await server.wait_idle()
    exposition = await scrape(server)
    cancelled = exposition.histogram("chat_run_duration_seconds", status="cancelled")
    assert (cancelled.count, cancelled.sum, cancelled.le(5.0), cancelled.le(10.0)) == (1, 7.0, 0, 1)
    assert exposition.histogram("chat_run_duration_seconds", status="completed").count == 0
    supervisor = exposition.histogram("chat_agent_step_duration_seconds", agent="supervisor")
    assert (supervisor.count, supervisor.sum) == (1, 7.0)


async def test_queue_depth_is_sampled_once_per_open_connection_at_each_scrape(
    server: ChatServer,
) -> None:
    async with open_chat_client(server) as first, open_chat_client(server) as second:
        assert first.connection_id != second.connection_id
        with trio.fail_after(HTTP_TIMEOUT):
            await trio.testing.wait_all_tasks_blocked()
        once = (await scrape(server)).histogram("chat_outbound_queue_depth")
        twice = (await scrape(server)).histogram("chat_outbound_queue_depth")
    # Idle connections whose connection_established has been written: empty queues.
    assert (once.count, once.sum, once.le(0.0)) == (2, 0.0, 2)
    assert (twice.count, twice.le(0.0)) == (4, 4)
    with trio.fail_after(HTTP_TIMEOUT):
        while server.statistics().connections_active:
            await trio.testing.wait_all_tasks_blocked()
    closed = (await scrape(server)).histogram("chat_outbound_queue_depth")
    assert closed.count == 4  # closed connections are no longer sampled


async def test_process_cpu_and_resident_memory_are_exposed_and_plausible(
    server: ChatServer,
) -> None:
    exposition = await scrape(server)
    assert exposition.kinds["process_cpu_seconds_total"] == "counter"
    assert exposition.kinds["process_resident_memory_bytes"] == "gauge"
    cpu = exposition.value("process_cpu_seconds_total")
    resident = exposition.value("process_resident_memory_bytes")
    # The server runs in this process: its figures are this process's.
    assert 0 < cpu <= time.process_time()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    # statm and rusage count a few shared pages differently: never much above the peak.
    assert 1 << 20 < resident <= 1.1 * peak


# -- event loop lag ---------------------------------------------------------------


async def test_a_tick_held_up_by_a_blocking_task_observes_exactly_how_late_it_ran(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    lags: list[float] = []
    nursery.start_soon(serve_lag_ticks, lags.append)
    await trio.testing.wait_all_tasks_blocked()  # the tick sleeps until 0.25

    def blocking_work() -> None:
        mock_clock.jump(1.0)  # a computation that held the loop for a second

    blocking_work()
    await trio.testing.wait_all_tasks_blocked()
    assert lags == [0.75]  # due at 0.25, ran at 1.0
    mock_clock.jump(LAG_TICK_INTERVAL)  # next due at 1.25: on time
    await trio.testing.wait_all_tasks_blocked()
    assert lags == [0.75, 0.0]


async def test_a_blocked_event_loop_shows_in_the_lag_histogram(server: ChatServer) -> None:
    before = (await scrape(server)).histogram("chat_event_loop_lag_seconds")
    assert before.count is not None
    late_before = before.count - before.le(0.25)
    time.sleep(0.6)  # blocks the whole event loop, the server's tick included  # noqa: ASYNC251
    # The tick due during the block ran at least 0.6 - 0.25 s late.
    after = (await scrape(server)).histogram("chat_event_loop_lag_seconds")
    assert after.count is not None
    assert after.count - after.le(0.25) >= late_before + 1
    assert server.statistics().event_loop_lag.count == after.count


# -- close codes ------------------------------------------------------------------


def test_400_distinct_peer_close_codes_make_a_bounded_set_of_series() -> None:
    metrics = Metrics()
    series_before = set(metrics.connections_closed_total)
    for code in range(3000, 3400):  # a peer chooses its close code freely
        metrics.connection_closed(code)
    metrics.connection_closed(1000)
    metrics.connection_closed(1002)
    closed = metrics.statistics().connections_closed_total
    assert closed["other"] == 400
    assert (closed[1000], closed[1002]) == (1, 1)
    assert set(closed) <= series_before | KNOWN_CLOSE_CODES
    rendered = [
        line for line in metrics.render().splitlines() if line.startswith("chat_connections_closed")
    ]
    assert len(rendered) <= len(KNOWN_CLOSE_CODES) + 1
    assert 'chat_connections_closed_total{code="other"} 400' in rendered


async def test_a_peer_close_code_outside_the_known_set_is_counted_as_other(
    server: ChatServer,
) -> None:
    for code in (4000, 3999):
        async with open_chat_client(server, user_id=f"closer{code}") as client:
            await client.ws.aclose(code)
    with trio.fail_after(HTTP_TIMEOUT):
        await server.wait_idle()
    assert (await scrape(server)).plain[
        ("chat_connections_closed_total", frozenset({("code", "other")}))
    ] == 2
