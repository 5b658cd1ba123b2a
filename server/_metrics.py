"""The server's metrics: exact gauges, counters, and their Prometheus text form."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from ._errors import ERROR_CODES

RUN_STATUSES: tuple[str, ...] = ("completed", "failed", "cancelled", "timeout")
#: Close codes the server sends; pre-set to 0 in chat_connections_closed_total.
CLOSE_CODES: tuple[int, ...] = (1000, 1001, 1003, 1006, 1008, 1009, 1011, 1013)


@attrs.frozen
class MetricsSnapshot:
    """A frozen copy of :class:`Metrics`, from ``Metrics.statistics()``."""

    connections_active: int
    handlers_active: int
    agents_active: int
    runs_active: int
    connections_total: int
    runs_total: dict[str, int]
    events_sent_total: int
    protocol_errors_total: dict[str, int]
    connections_closed_total: dict[int, int]

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
    connections_total: int = 0
    events_sent_total: int = 0
    runs_total: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(RUN_STATUSES, 0))
    protocol_errors_total: dict[str, int] = attrs.field(
        factory=lambda: dict.fromkeys(ERROR_CODES, 0)
    )
    #: By close code: the server's, else the peer's, else 1006 (TCP dropped).
    connections_closed_total: dict[int, int] = attrs.field(
        factory=lambda: dict.fromkeys(CLOSE_CODES, 0)
    )

    def connection_closed(self, code: int) -> None:
        self.connections_closed_total[code] = self.connections_closed_total.get(code, 0) + 1

    # AgentObserver, for the agent factory
    def agent_opened(self, name: str) -> None:
        self.agents_active += 1

    def agent_closed(self, name: str) -> None:
        self.agents_active -= 1

    def statistics(self) -> MetricsSnapshot:
        return MetricsSnapshot(
            connections_active=self.connections_active,
            handlers_active=self.handlers_active,
            agents_active=self.agents_active,
            runs_active=self.runs_active,
            connections_total=self.connections_total,
            runs_total=dict(self.runs_total),
            events_sent_total=self.events_sent_total,
            protocol_errors_total=dict(self.protocol_errors_total),
            connections_closed_total=dict(self.connections_closed_total),
        )

    def render(self) -> str:
        """Prometheus text exposition format (version 0.0.4)."""
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
            [(f'code="{k}"', v) for k, v in sorted(self.connections_closed_total.items())],
        )
        return "\n".join(out) + "\n"


def _series(
    out: list[str], name: str, kind: str, help_text: str, samples: Iterable[tuple[str, int]]
) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        out.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")
