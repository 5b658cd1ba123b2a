"""Server settings: one frozen value, built from defaults, environment and options."""

from __future__ import annotations

from typing import Any

import attrs

from agents import FaultSpec


@attrs.frozen
class Settings:
    """Everything a server needs to know at start-up. Immutable; safe to share."""

    host: str = "127.0.0.1"
    port: int = 8765
    admin_host: str | None = None  # None: same as host
    admin_port: int = 8766
    max_message_size: int = 65536
    max_runs_per_connection: int = 5
    agent_timeout: float = 30.0
    run_timeout: float = 300.0
    drain_timeout: float = 10.0
    faults: tuple[FaultSpec, ...] = ()
    #: Modules whose register(agents, tools) adds agents and tools at start-up.
    plugins: tuple[str, ...] = ()
    fault_seed: int | None = None
    outbound_queue: int = 256
    slow_consumer_timeout: float = 5.0
    rate_limit: float = 20.0
    rate_burst: int = 40
    max_consecutive_errors: int = 5  # 0: no limit
    max_connections_per_user: int = 10  # 0: no limit
    max_connections: int = 10000
    heartbeat_interval: float = 25.0  # 0: no pings
    heartbeat_timeout: float = 20.0
    handshake_timeout: float = 10.0
    auth: str = "none"  # or "jwt"
    jwt_secret: str | None = attrs.field(default=None, repr=False)
    jwt_public_key: str | None = None  # path of a PEM file (RS256)
    #: Clock skew (seconds) tolerated for exp, nbf and iat; also extends a connection's life.
    jwt_leeway: float = 5.0
    jwt_audience: str | None = None  # checked (aud) when set
    jwt_issuer: str | None = None  # checked (iss) when set
    #: Browser origins allowed besides the admin page's own (``*``: all; ``*`` globs).
    allowed_origins: tuple[str, ...] = ()
    #: Largest encoded run event: bigger ones have their data cut, with a marker.
    max_event_size: int = 65536
    #: Bytes of events one run may send; past it the run ends (failed, AGENT_ERROR).
    max_run_output: int = 1024 * 1024
    #: How long closing a connection may wait for the peer's close frame.
    close_timeout: float = 2.0
    log_level: str = "INFO"
    log_format: str = "text"  # or "json"
    #: ``python -m server`` only (a process setting, not the library's): the
    #: garbage collector's first threshold (0 leaves Python's 700 alone).
    gc_threshold: int = 10_000
    #: The language model agents call: "offline" (deterministic, no network) or "openai"
    #: (any OpenAI-compatible chat completions API; the model_* fields below).
    model_provider: str = "offline"
    model_base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    model_api_key: str | None = attrs.field(default=None, repr=False)
    model_connect_timeout: float = 5.0
    model_read_timeout: float = 30.0  # longest silence while streaming
    model_retries: int = 3  # after the first attempt, on 429, 5xx and connection errors
    #: Where threads and run history are kept: ``sqlite:///PATH``, ``postgresql://...``
    #: or ``memory:`` (nothing survives the process).
    store: str = "sqlite:///./data/chat.db"
    #: Earlier turns of a thread a run's agents see.
    history_turns: int = 20
    #: Threads not updated for this many days are deleted (0: keep forever).
    history_days: float = 0.0
    #: Seconds a connection whose socket went away (no close frame, or 1001) waits
    #: to be taken over with its resume_token (0: a disconnect ends it at once).
    resume_grace: float = 0.0
    #: Threads one connection may follow with subscribe_thread.
    max_subscriptions: int = 100
    #: Worker processes serving the same port (``python -m server`` only).
    workers: int = 1
    #: ``redis://...``: what crosses processes and machines (None: one process).
    broker: str | None = None
    #: How soon the slots and runs of a process that died are freed (with a broker).
    lease_seconds: float = 15.0
    #: Prefix of every broker key (servers sharing a Redis keep apart by prefix).
    broker_prefix: str = "chat:"
    #: Set only on the worker processes that the parent of ``--workers N`` starts
    #: (``CHAT_WORKER_INDEX``), never by users: the worker joins the port its
    #: parent holds instead of claiming it, serves its admin endpoints on
    #: 127.0.0.1 for the parent alone, and puts ``worker=i`` on its log lines.
    worker_index: int | None = None

    @property
    def effective_admin_host(self) -> str:
        return self.admin_host if self.admin_host is not None else self.host

    def client_config(self) -> dict[str, Any]:
        """The ``config`` object of the ``connection_established`` frame."""
        return {
            "max_message_size": self.max_message_size,
            "heartbeat_interval": _number(self.heartbeat_interval),
            "max_runs_per_connection": self.max_runs_per_connection,
        }


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value
