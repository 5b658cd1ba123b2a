"""The server's metrics: exact gauges, counters, and their Prometheus text form."""

from __future__ import annotations

import os
import resource
from bisect import bisect_left
from collections.abc import Iterable, Sized
from typing import Final

import attrs

from server.protocol import ERROR_CODES

from ._logging import log_lines_dropped
from .store._base import STORE_OPERATIONS

RUN_STATUSES: tuple[str, ...] = ("completed", "failed", "cancelled", "timeout")
#: Close codes the server sends; pre-set to 0 in chat_connections_closed_total.
CLOSE_CODES: tuple[int, ...] = (1000, 1001, 1003, 1006, 1008, 1009, 1011, 1013)
#: Close codes counted under their own label: those RFC 6455 defines (1004 is
#: reserved). A peer chooses its close code, so any other (3000-4999, say)
#: counts as ``other``: the number of series stays bounded whatever peers send.
KNOWN_CLOSE_CODES: frozenset[int] = frozenset(range(1000, 1016)) - {1004}
OTHER_CLOSE_CODE: Final = "other"

#: Upper bounds (seconds) of chat_time_to_first_event_seconds: a loopback run's
#: first event is queued within a millisecond; the top buckets catch a loaded server.
FIRST_EVENT_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5
)  # fmt: skip
#: Upper bounds (seconds) of run and agent-step durations: from an offline
#: provider's milliseconds to the default run time limit (300 s).
DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0
)  # fmt: skip
#: Upper bounds (seconds) of chat_event_loop_lag_seconds: how late a tick every
#: 0.25 s runs, from an idle loop's fraction of a millisecond to a stall.
LAG_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip
#: Directions of chat_broker_messages_total: run events and commands published to
#: the broker (``out``) and read from it (``in``).
BROKER_DIRECTIONS: tuple[str, ...] = ("in", "out")
#: Upper bounds (frames) of chat_outbound_queue_depth; the default bound is 256.
QUEUE_DEPTH_BUCKETS: tuple[float, ...] = (
    0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0
)  # fmt: skip

#: Upper bounds (seconds) of chat_store_latency_seconds: an SQLite read takes
#: tens of microseconds, a synced commit milliseconds, a failing store its time limit (5 s).
STORE_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
)  # fmt: skip
STORE_RESULTS: tuple[str, ...] = ("ok", "error")

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Histogram:
    """A Prometheus histogram kept as plain numbers.

    ``observe`` is one C bisection over the bounds and two additions: no
    lock (only the server's trio thread touches it) and no allocation.
    ``counts[i]`` counts values in (bounds[i-1], bounds[i]]; the last slot
    is the +Inf bucket. Cumulated only when rendered.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(bounds=self.bounds, counts=tuple(self.counts), sum=self.sum)


@attrs.frozen
class HistogramSnapshot:
    """A frozen copy of a :class:`Histogram` (per-bucket, not cumulative, counts)."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """[(le, observations <= le)], ending with (inf, count), as exposed."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


@attrs.frozen
class MetricsSnapshot:
    """A frozen copy of :class:`Metrics`, from ``Metrics.statistics()``."""

    connections_active: int
    handlers_active: int
    agents_active: int
    runs_active: int
    #: Thread subscriptions of open connections (exact).
    subscriptions_active: int
    #: Sessions within their resume grace, their socket gone (exact).
    sessions_lingering: int
    connections_total: int
    runs_total: dict[str, int]
    events_sent_total: int
    protocol_errors_total: dict[str, int]
    #: By close code; codes outside KNOWN_CLOSE_CODES under "other".
    connections_closed_total: dict[int | str, int]
    time_to_first_event: HistogramSnapshot
    #: By the run's status; only runs whose final event was queued.
    run_duration: dict[str, HistogramSnapshot]
    #: By agent name; every agent instance, from creation to its closing event.
    agent_step_duration: dict[str, HistogramSnapshot]
    #: Observed at each scrape, once per open connection.
    outbound_queue_depth: HistogramSnapshot
    #: How late the server's periodic tick ran.
    event_loop_lag: HistogramSnapshot
    #: Process-wide: log lines dropped because the log queue was full.
    log_lines_dropped_total: int
    #: By (operation, "ok" or "error").
    store_operations_total: dict[tuple[str, str], int]
    #: By operation.
    store_latency: dict[str, HistogramSnapshot]
    #: Messages through the broker, by direction (``in``, ``out``).
    broker_messages_total: dict[str, int] = attrs.field(
        factory=lambda: dict.fromkeys(BROKER_DIRECTIONS, 0)
    )

    @property
    def gauges(self) -> tuple[int, int, int, int]:
        """(connections, handlers, agents, runs) currently alive."""
        return (
            self.connections_active,
            self.handlers_active,
            self.agents_active,
            self.runs_active,
        )


@attrs.define
class Metrics:
    """Counters of one server. Every gauge moves exactly when its object's scope does.

    Plain integer attributes, updated inline on the hot path; only the
    server's own tasks touch them (one trio thread), so no locking.
    """

    connections_active: int = 0
    handlers_active: int = 0
    agents_active: int = 0
    runs_active: int = 0
    subscriptions_active: int = 0
    sessions_lingering: int = 0
    connections_total: int = 0
    events_sent_total: int = 0
    runs_total: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(RUN_STATUSES, 0))
    protocol_errors_total: dict[str, int] = attrs.field(
        factory=lambda: dict.fromkeys(ERROR_CODES, 0)
    )
    #: By close code: the server's, else the peer's, else 1006 (TCP dropped);
    #: a code outside KNOWN_CLOSE_CODES counts as "other".
    connections_closed_total: dict[int | str, int] = attrs.field(
        factory=lambda: dict.fromkeys((*CLOSE_CODES, OTHER_CLOSE_CODE), 0)
    )
    #: Accepted start_agent to the run's first event queued (seconds, trio clock).
    time_to_first_event: Histogram = attrs.field(factory=lambda: Histogram(FIRST_EVENT_BUCKETS))
    #: Accepted start_agent to the final event queued, by status (seconds, trio clock).
    run_duration: dict[str, Histogram] = attrs.field(
        factory=lambda: {status: Histogram(DURATION_BUCKETS) for status in RUN_STATUSES}
    )
    #: One per agent name, made on the first step of that agent.
    agent_step_duration: dict[str, Histogram] = attrs.field(factory=dict)
    #: Filled at scrape time from ``outbound_queues`` (nothing on the hot path).
    outbound_queue_depth: Histogram = attrs.field(factory=lambda: Histogram(QUEUE_DEPTH_BUCKETS))
    #: How late the server's periodic tick ran (seconds, trio clock).
    event_loop_lag: Histogram = attrs.field(factory=lambda: Histogram(LAG_BUCKETS))
    #: History store operations by (op, result); a StoreObserver feeds them.
    store_operations_total: dict[tuple[str, str], int] = attrs.field(
        factory=lambda: {(op, r): 0 for op in STORE_OPERATIONS for r in STORE_RESULTS}
    )
    store_latency: dict[str, Histogram] = attrs.field(
        factory=lambda: {op: Histogram(STORE_BUCKETS) for op in STORE_OPERATIONS}
    )
    #: The outbound channel of every open connection (added and removed by Connection.serve).
    outbound_queues: set[Sized] = attrs.field(factory=set)
    #: Messages through the broker, by direction (fed by ``broker_messages``).
    broker_messages_total: dict[str, int] = attrs.field(
        factory=lambda: dict.fromkeys(BROKER_DIRECTIONS, 0)
    )

    def broker_messages(self, direction: str, count: int) -> None:
        """The broker's observer: ``count`` messages went ``direction`` (``in``/``out``)."""
        self.broker_messages_total[direction] = self.broker_messages_total.get(direction, 0) + count

    def connection_closed(self, code: int) -> None:
        key: int | str = code if code in KNOWN_CLOSE_CODES else OTHER_CLOSE_CODE
        self.connections_closed_total[key] = self.connections_closed_total.get(key, 0) + 1

    def run_finished(self, status: str, seconds: float) -> None:
        """A run's final event was queued ``seconds`` after its start was accepted."""
        histogram = self.run_duration.get(status)
        if histogram is None:
            histogram = self.run_duration["failed"]  # as chat_runs_total counts it
        histogram.observe(seconds)

    # AgentObserver, for the agent factory
    def agent_opened(self, name: str) -> None:
        self.agents_active += 1

    def agent_closed(self, name: str, seconds: float) -> None:
        self.agents_active -= 1
        histogram = self.agent_step_duration.get(name)
        if histogram is None:
            histogram = self.agent_step_duration[name] = Histogram(DURATION_BUCKETS)
        histogram.observe(seconds)

    def store_operation(self, op: str, ok: bool, seconds: float) -> None:
        """A store operation ended (the store's ``observer``)."""
        key = (op, "ok" if ok else "error")
        self.store_operations_total[key] = self.store_operations_total.get(key, 0) + 1
        histogram = self.store_latency.get(op)
        if histogram is None:
            histogram = self.store_latency[op] = Histogram(STORE_BUCKETS)
        histogram.observe(seconds)

    def observe_outbound_queues(self) -> None:
        """Observe the depth of every open connection's outbound queue (at scrape time)."""
        observe = self.outbound_queue_depth.observe
        for queue in self.outbound_queues:
            observe(len(queue))

    def statistics(self) -> MetricsSnapshot:
        return MetricsSnapshot(
            connections_active=self.connections_active,
            handlers_active=self.handlers_active,
            agents_active=self.agents_active,
            runs_active=self.runs_active,
            subscriptions_active=self.subscriptions_active,
            sessions_lingering=self.sessions_lingering,
            connections_total=self.connections_total,
            runs_total=dict(self.runs_total),
            events_sent_total=self.events_sent_total,
            protocol_errors_total=dict(self.protocol_errors_total),
            connections_closed_total=dict(self.connections_closed_total),
            time_to_first_event=self.time_to_first_event.snapshot(),
            run_duration={k: h.snapshot() for k, h in self.run_duration.items()},
            agent_step_duration={k: h.snapshot() for k, h in self.agent_step_duration.items()},
            outbound_queue_depth=self.outbound_queue_depth.snapshot(),
            event_loop_lag=self.event_loop_lag.snapshot(),
            log_lines_dropped_total=log_lines_dropped(),
            store_operations_total=dict(self.store_operations_total),
            store_latency={k: h.snapshot() for k, h in self.store_latency.items()},
            broker_messages_total=dict(self.broker_messages_total),
        )

    def render(self) -> str:
        """Prometheus text exposition format (version 0.0.4).

        Observes the outbound queues first (one sample per open connection
        per scrape), so the depth histogram is part of what is rendered.
        """
        self.observe_outbound_queues()
        out: list[str] = []
        _series(
            out,
            "chat_connections_active",
            "gauge",
            "Open WebSocket connections.",
            [("", self.connections_active)],
        )
        _series(
            out,
            "chat_handlers_active",
            "gauge",
            "Message-handler instances alive (one set per connection).",
            [("", self.handlers_active)],
        )
        _series(
            out, "chat_agents_active", "gauge", "Agent instances alive.", [("", self.agents_active)]
        )
        _series(out, "chat_runs_active", "gauge", "Runs in progress.", [("", self.runs_active)])
        _series(
            out,
            "chat_subscriptions_active",
            "gauge",
            "Thread subscriptions of open connections (subscribe_thread).",
            [("", self.subscriptions_active)],
        )
        _series(
            out,
            "chat_sessions_lingering",
            "gauge",
            "Sessions inside their resume grace: socket gone, runs going on.",
            [("", self.sessions_lingering)],
        )
        _series(
            out,
            "chat_connections_total",
            "counter",
            "Connections accepted.",
            [("", self.connections_total)],
        )
        _series(
            out,
            "chat_runs_total",
            "counter",
            "Runs ended, by status.",
            [(f'status="{k}"', v) for k, v in self.runs_total.items()],
        )
        _series(
            out,
            "chat_events_sent_total",
            "counter",
            "Run events written to clients.",
            [("", self.events_sent_total)],
        )
        _series(
            out,
            "chat_protocol_errors_total",
            "counter",
            "error_message frames sent, by code.",
            [(f'code="{k}"', v) for k, v in self.protocol_errors_total.items()],
        )
        _series(
            out,
            "chat_connections_closed_total",
            "counter",
            "Connections ended, by close code (the server's, else the peer's; 1006: dropped).",
            [
                (f'code="{k}"', v)
                for k, v in sorted(self.connections_closed_total.items(), key=_close_code_order)
            ],
        )
        _histogram(
            out,
            "chat_time_to_first_event_seconds",
            "From accepting start_agent to queuing the run's first event.",
            [("", self.time_to_first_event)],
        )
        _histogram(
            out,
            "chat_run_duration_seconds",
            "From accepting start_agent to queuing the run's final event, by status.",
            [(f'status="{k}"', h) for k, h in self.run_duration.items()],
        )
        _histogram(
            out,
            "chat_agent_step_duration_seconds",
            "From an agent step's start (agent_started) to its closing event, by agent.",
            [(f'agent="{_escape(k)}"', h) for k, h in sorted(self.agent_step_duration.items())],
        )
        _histogram(
            out,
            "chat_outbound_queue_depth",
            "Frames waiting in each open connection's outbound queue, sampled at each scrape.",
            [("", self.outbound_queue_depth)],
        )
        _histogram(
            out,
            "chat_event_loop_lag_seconds",
            "How late the event loop ran a tick due every 0.25 s.",
            [("", self.event_loop_lag)],
        )
        _series(
            out,
            "chat_broker_messages_total",
            "counter",
            "Run events and commands through the broker, by direction (out: published, in: read).",
            [(f'direction="{k}"', v) for k, v in self.broker_messages_total.items()],
        )
        _series(
            out,
            "chat_log_lines_dropped_total",
            "counter",
            "Log lines dropped because the log queue was full (the sink did not keep up).",
            [("", log_lines_dropped())],
        )
        _series(
            out,
            "chat_store_operations_total",
            "counter",
            "History store operations, by operation and result (error: the store failed).",
            [
                (f'op="{_escape(op)}",result="{result}"', n)
                for (op, result), n in sorted(self.store_operations_total.items())
            ],
        )
        _histogram(
            out,
            "chat_store_latency_seconds",
            "Duration of history store operations, by operation.",
            [(f'op="{_escape(op)}"', h) for op, h in sorted(self.store_latency.items())],
        )
        usage = resource.getrusage(resource.RUSAGE_SELF)
        _series(
            out,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent by the server process, in seconds.",
            [("", usage.ru_utime + usage.ru_stime)],
        )
        resident = _resident_memory_bytes()
        if resident is not None:
            _series(
                out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory of the server process, in bytes.",
                [("", resident)],
            )
        return "\n".join(out) + "\n"


def _resident_memory_bytes() -> int | None:
    """Current resident set size from /proc/self/statm (Linux); None elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


def _close_code_order(item: tuple[int | str, int]) -> tuple[int, int]:
    """Numeric codes in order, then ``other``."""
    code = item[0]
    return (0, code) if isinstance(code, int) else (1, 0)


def _escape(label_value: str) -> str:
    return label_value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value))


def _series(
    out: list[str],
    name: str,
    kind: str,
    help_text: str,
    samples: Iterable[tuple[str, int | float]],
) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        out.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")


def _histogram(
    out: list[str], name: str, help_text: str, series: Iterable[tuple[str, Histogram]]
) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} histogram")
    for labels, histogram in series:
        snapshot = histogram.snapshot()
        prefix = f"{labels}," if labels else ""
        for bound, total in snapshot.cumulative():
            out.append(f'{name}_bucket{{{prefix}le="{_number(bound)}"}} {total}')
        tail = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{tail} {_number(snapshot.sum)}")
        out.append(f"{name}_count{tail} {snapshot.count}")
