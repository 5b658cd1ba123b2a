"""``python -m server``: options (each also a CHAT_* variable), start-up, signals."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import select
import signal
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import attrs
import trio

from agents import FaultSpec
from server.protocol import ConfigurationError

from ._assembly import build_provider_config, build_runtime, build_verifier
from ._descriptors import (
    RESERVED_DESCRIPTORS,
    open_descriptor_count,
    plan_max_connections,
    raise_open_file_limit,
)
from ._logging import open_log_writer
from ._server import ChatServer, serve_chat
from ._settings import Settings
from .workers import WORKER_INDEX_ENV, Supervisor, check_worker_settings, serve_workers

log = logging.getLogger("trio_agent_server")


def _env_name(option: str) -> str:
    return "CHAT_" + option.lstrip("-").replace("-", "_").upper()


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {text}")
    return value


def _fault(text: str) -> FaultSpec:
    try:
        return FaultSpec.parse(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_negative(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


_OPTIONS: tuple[tuple[str, Callable[[str], Any], str], ...] = (
    ("--host", str, "interface to listen on"),
    ("--port", _port, "WebSocket port (0 picks a free port)"),
    ("--admin-host", str, "admin interface (default: same as --host)"),
    ("--admin-port", _port, "admin HTTP port (0 disables)"),
    ("--max-message-size", _positive(int), "largest client message, in UTF-8 bytes"),
    ("--max-runs-per-connection", _positive(int), "runs one connection may have at once"),
    ("--max-event-size", _positive(int), "largest run event in bytes (bigger: data cut, marked)"),
    ("--max-run-output", _positive(int), "bytes of events one run may send (more: it fails)"),
    ("--agent-timeout", _positive(float), "seconds per agent below the top level"),
    ("--run-timeout", _positive(float), "seconds per run"),
    ("--drain-timeout", _positive(float), "seconds running runs get on SIGINT/SIGTERM"),
    ("--outbound-queue", _positive(int), "frames queued per connection"),
    ("--slow-consumer-timeout", _positive(float), "seconds a full queue may stay full (1013)"),
    ("--rate-limit", _non_negative(float), "messages per second per connection (0: no limit)"),
    ("--rate-burst", _positive(int), "messages a connection may send at once"),
    ("--max-consecutive-errors", _non_negative(int), "bad messages in a row before 1008"),
    ("--max-connections-per-user", _non_negative(int), "connections per user (0: no limit)"),
    ("--max-connections", _positive(int), "connections in all (more: HTTP 503)"),
    ("--heartbeat-interval", _non_negative(float), "seconds between pings (0: none)"),
    ("--heartbeat-timeout", _positive(float), "seconds a ping may wait for its pong"),
    ("--handshake-timeout", _positive(float), "seconds to complete the WebSocket handshake"),
    (
        "--gc-threshold",
        _non_negative(int),
        "allocations between young-generation collections (0: Python's default)",
    ),
    ("--jwt-secret", str, "HS256 secret for --auth jwt"),
    ("--jwt-public-key", str, "PEM file of the RS256 public key for --auth jwt"),
    (
        "--jwt-leeway",
        _non_negative(float),
        "seconds of clock skew allowed for a token's exp, nbf and iat",
    ),
    ("--jwt-audience", str, "the aud a token must name (not checked when unset)"),
    ("--jwt-issuer", str, "the iss a token must have (not checked when unset)"),
)

_HISTORY_OPTIONS: tuple[tuple[str, Callable[[str], Any], str], ...] = (
    ("--store", str, "sqlite:///PATH, postgresql://... or memory:"),
    ("--history-turns", _non_negative(int), "earlier turns of a thread its runs see"),
    ("--history-days", _non_negative(float), "delete threads not updated for N days (0: keep)"),
    (
        "--resume-grace",
        _non_negative(float),
        "seconds a dropped connection may be taken over with its resume_token (0: off)",
    ),
    ("--max-subscriptions", _positive(int), "threads one connection may subscribe to"),
)

_SCALE_OPTIONS: tuple[tuple[str, Callable[[str], Any], str], ...] = (
    ("--workers", _positive(int), "worker processes serving the same port"),
    ("--broker", str, "redis://... shared by every process and machine (none: one process)"),
    ("--lease-seconds", _positive(float), "how soon a dead process's slots and runs are freed"),
    ("--broker-prefix", str, "prefix of the broker's keys (servers sharing a Redis)"),
)

_MODEL_OPTIONS: tuple[tuple[str, Callable[[str], Any], str], ...] = (
    ("--model-base-url", str, "base URL of the OpenAI-compatible API"),
    ("--model", str, "model name sent with each request"),
    (
        "--model-api-key",
        str,
        "API key, sent as a Bearer token (also CHAT_MODEL_API_KEY or OPENAI_API_KEY; "
        "optional for a loopback base URL)",
    ),
    ("--model-connect-timeout", _positive(float), "seconds to connect to the model API"),
    ("--model-read-timeout", _positive(float), "longest silence, in seconds, while streaming"),
    ("--model-retries", _non_negative(int), "retries on 429, 5xx and connection errors"),
)


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="trio-agent-server: a WebSocket chat server that runs agents per request. "
        "Every option can also be set as CHAT_<OPTION> (e.g. CHAT_PORT=9000).",
    )
    _add_options(parser, parser, _OPTIONS, defaults, environ)
    parser.add_argument(
        "--auth",
        choices=["none", "jwt"],
        default=environ.get("CHAT_AUTH", "none"),
        help="none: user id from ?user_id=; jwt: from a token's sub [none]",
    )
    parser.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[_fault(f) for f in environ.get("CHAT_FAULT", "").replace(",", " ").split()],
        metavar="AGENT:KIND:RATE",
        help="inject faults (kind: raise, hang, slow; rate 0-1); repeatable; tests only",
    )
    parser.add_argument(
        "--allowed-origin",
        action="append",
        default=environ.get("CHAT_ALLOWED_ORIGIN", "").replace(",", " ").split(),
        metavar="PATTERN",
        help="a browser origin allowed to connect, besides the admin page's own "
        "(* matches any characters; '*' alone allows every origin); repeatable",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=environ.get("CHAT_PLUGIN", "").replace(",", " ").split(),
        metavar="MODULE",
        help="import MODULE and call its register(agents, tools) at start-up; repeatable",
    )
    seed = environ.get("CHAT_FAULT_SEED")
    parser.add_argument(
        "--fault-seed",
        type=int,
        default=int(seed) if seed else None,
        help="seed the fault draws so they repeat [random]",
    )
    parser.add_argument(
        "--log-level",
        default=environ.get("CHAT_LOG_LEVEL", "INFO").upper(),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="log level; message content is only logged at DEBUG [INFO]",
    )
    parser.add_argument(
        "--log-format",
        default=environ.get("CHAT_LOG_FORMAT", "text"),
        choices=["text", "json"],
        help="text lines, or one JSON object a line [text]",
    )
    model = parser.add_argument_group("language model")
    model.add_argument(
        "--model-provider",
        choices=["offline", "openai"],
        default=environ.get("CHAT_MODEL_PROVIDER", defaults.model_provider),
        help="offline: deterministic, no network; openai: an OpenAI-compatible "
        f"chat completions API [{defaults.model_provider}]",
    )
    _add_options(parser, model, _MODEL_OPTIONS, defaults, environ)
    history = parser.add_argument_group("threads, history and resume")
    _add_options(parser, history, _HISTORY_OPTIONS, defaults, environ)
    scale = parser.add_argument_group("several processes and machines")
    _add_options(parser, scale, _SCALE_OPTIONS, defaults, environ)
    # Set by the parent of --workers N on each worker it starts; not for users.
    index = environ.get(WORKER_INDEX_ENV)
    try:
        worker_index = _non_negative(int)(index) if index else None
    except (ValueError, argparse.ArgumentTypeError) as exc:
        parser.error(f"{WORKER_INDEX_ENV}={index!r}: {exc}")
    parser.add_argument(
        "--worker-index", type=_non_negative(int), default=worker_index, help=argparse.SUPPRESS
    )
    return parser


#: Options whose value is never printed (``--help`` shows only whether they are set).
_SECRETS = frozenset({"jwt_secret", "model_api_key"})
#: Further environment variables read when an option's CHAT_* variable is not set.
_ENV_FALLBACKS = {"model_api_key": "OPENAI_API_KEY"}


def _add_options(
    parser: argparse.ArgumentParser,
    target: argparse._ActionsContainer,
    options: Sequence[tuple[str, Callable[[str], Any], str]],
    defaults: Settings,
    environ: Mapping[str, str],
) -> None:
    for option, kind, help_text in options:
        dest = option.lstrip("-").replace("-", "_")
        default = getattr(defaults, dest)
        name = _env_name(option)
        env = environ.get(name)
        if env is None and dest in _ENV_FALLBACKS:
            name = _ENV_FALLBACKS[dest]
            env = environ.get(name)
        if env is not None:
            try:
                default = kind(env)
            except (ValueError, argparse.ArgumentTypeError) as exc:
                shown_env = "(set)" if dest in _SECRETS else repr(env)
                parser.error(f"{name}={shown_env}: {exc}")
        shown = {"admin_host": "same as --host"}.get(dest, default)
        if dest in _SECRETS:
            shown = "none" if default is None else "set"  # never print a secret
        target.add_argument(option, type=kind, default=default, help=f"{help_text} [{shown}]")


def settings_from_args(argv: Sequence[str] | None, environ: Mapping[str, str]) -> Settings:
    args = build_parser(environ).parse_args(argv)
    values = vars(args)
    values["faults"] = tuple(values.pop("fault"))
    values["plugins"] = tuple(values.pop("plugin"))
    values["allowed_origins"] = tuple(values.pop("allowed_origin"))
    # On the command line 0 disables the admin listener; in Settings that is None.
    if values["admin_port"] == 0:
        values["admin_port"] = None
    return Settings(**values)


async def _watch_signals(signals: Any, server: ChatServer, cancel_scope: trio.CancelScope) -> None:
    async for signum in signals:
        if not server.draining:
            log.info("received %s: draining", signal.Signals(signum).name)
            server.begin_drain()
        else:
            log.warning("received %s again: stopping now", signal.Signals(signum).name)
            cancel_scope.cancel()


async def _watch_parent(server: ChatServer) -> None:
    """In a worker: drain when the parent has gone (its end of our stdin closes).

    The parent of ``--workers N`` gives each worker a pipe as stdin and never
    writes to it; the kernel closes it when the parent exits, however it
    exits (SIGKILL included), and a worker must not serve on without it.
    """
    try:
        if not stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):
            return  # not started by a parent (someone set CHAT_WORKER_INDEX by hand)
        stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    except (OSError, ValueError):
        return
    async with stream:
        while await stream.receive_some(4096):
            pass
    if not server.draining:
        log.warning("the parent process has gone: draining")
        server.begin_drain()


async def run_server(settings: Settings) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server: ChatServer = await nursery.start(serve_chat, settings)
            print(f"listening on {server.url}", flush=True)
            if server.admin_url is not None:
                print(f"admin on {server.admin_url}", flush=True)
            nursery.start_soon(_watch_signals, signals, server, nursery.cancel_scope)
            if settings.worker_index is not None:
                nursery.start_soon(_watch_parent, server)
            await server.wait_stopped()
            nursery.cancel_scope.cancel()
    log.info("stopped")


def tune_gc(threshold: int) -> None:
    """Fewer, cheaper garbage collections for a long-running server process.

    Everything alive after start-up (modules, the registries, the catalogue) is
    moved out of the collector's reach (``gc.freeze``), and young objects are
    collected every ``threshold`` allocations instead of 700. With 1,000
    clients, full collections otherwise stopped the server for 90-160 ms every
    few seconds, which was the whole p99 of time to ``agent_started``
    (benchmarks/README.md). 0 leaves the collector as it is.
    """
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)


#: How long the event loop may hold the GIL while another thread waits for it
#: (Python's default: 0.005 s). The history store's writer and readers, and
#: CPU-bound tools, run in threads; each statement they run hands the GIL
#: back and forth, and a busy loop made every hand-over wait the whole
#: interval: a commit of a few statements took tens of milliseconds, which a
#: final event waits for (docs/store.md, "Performance"). Nothing changes while
#: no thread waits.
SWITCH_INTERVAL = 0.001


def tune_threads() -> None:
    """Let the store's threads take the GIL from a busy event loop sooner."""
    sys.setswitchinterval(SWITCH_INTERVAL)


def fit_descriptors(settings: Settings) -> Settings:
    """Raise the soft descriptor limit, and lower --max-connections to what fits under it.

    Past the limit every accept fails, the admin listener's too: a server
    asked for more connections than it has descriptors for would stop
    answering its own liveness probe. What is left after the descriptors
    open now and a reserve (admin connections, listeners, files) goes to
    client sockets.
    """
    soft = raise_open_file_limit()
    available = soft - open_descriptor_count() - RESERVED_DESCRIPTORS
    allowed = plan_max_connections(settings.max_connections, available)
    if allowed == settings.max_connections:
        return settings
    log.warning(
        "--max-connections %d lowered to %d: the process may open %d files (RLIMIT_NOFILE; "
        "raise it with ulimit -n), %d of them kept for the rest of the server",
        settings.max_connections,
        allowed,
        soft,
        soft - available,
    )
    return attrs.evolve(settings, max_connections=allowed)


def main(argv: Sequence[str] | None = None) -> int:
    options = list(sys.argv[1:] if argv is None else argv)
    settings = settings_from_args(options, os.environ)
    worker = settings.worker_index
    supervising = worker is None and settings.workers > 1
    # A writer thread owns stderr for the process's life: the event loop only
    # queues lines (and drops them when the queue is full), so a log sink that
    # blocks cannot stall the server. At exit it gets a bounded time to drain.
    # The parent and the workers of --workers N share one stderr: each write
    # holds whole lines and at most PIPE_BUF bytes, so lines never interleave.
    with open_log_writer(
        settings.log_level,
        settings.log_format,
        fields=None if worker is None else {"worker": str(worker)},
        write_limit=select.PIPE_BUF if supervising or worker is not None else None,
    ):
        if supervising:
            return _supervise_main(settings, options)
        return _serve_main(settings)


def _check(settings: Settings) -> bool:
    """Whether ``settings`` can work; if not, says why on stderr."""
    try:
        build_runtime(settings, None)  # validates --fault against the registry
        build_verifier(settings)  # and --auth against its key options
        build_provider_config(settings)  # and --model-provider against the model options
        if settings.worker_index is None:
            check_worker_settings(settings)  # and --workers against --broker and --store
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    return True


def _supervise_main(settings: Settings, options: list[str]) -> int:
    """The parent of ``--workers N``: exit 0 once drained, 1 if the workers kept dying."""
    if not _check(settings):
        return 2

    def announce(supervisor: Supervisor) -> None:
        print(f"listening on {supervisor.url}", flush=True)
        if supervisor.admin_port is not None:
            host = settings.effective_admin_host
            print(f"admin on http://{host}:{supervisor.admin_port}", flush=True)

    try:
        supervisor = trio.run(
            partial(serve_workers, settings, options, os.environ, on_listening=announce)
        )
    except (ConfigurationError, BaseExceptionGroup) as exc:
        error = _configuration_error(exc)  # the port or the admin port in use, say
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    if supervisor.failure is not None:
        print(f"error: {supervisor.failure}; stopped", file=sys.stderr)
        return 1
    log.info("stopped")
    return 0


def _serve_main(settings: Settings) -> int:
    if not _check(settings):
        return 2
    if settings.faults:
        specs = ", ".join(f"{f.agent}:{f.kind.value}:{f.rate:g}" for f in settings.faults)
        log.warning("FAULT INJECTION ENABLED (%s): for tests and load tests only", specs)
    settings = fit_descriptors(settings)
    tune_gc(settings.gc_threshold)
    tune_threads()
    try:
        trio.run(run_server, settings)
    except (ConfigurationError, BaseExceptionGroup) as exc:
        error = _configuration_error(exc)  # a port already in use, say
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _configuration_error(exc: BaseException) -> ConfigurationError | None:
    """The ConfigurationError that ``exc`` is, or is the only leaf of (through nurseries)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, ConfigurationError) else None
