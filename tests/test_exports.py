"""The public surface of each package, pinned (as websockets' tests/test_exports.py does).

A name added to or removed from an ``__all__`` must be a decision: this test
makes it one. Every exported name must resolve, and every exception the
project exports must sit under the one root, ``ChatServerError``.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

from server.protocol import ChatServerError

EXPORTS: dict[str, set[str]] = {
    "server": {
        "AgentNotFoundError", "ChatServer", "ChatServerError", "CloseConnection",
        "ConfigurationError", "ConnectionClosed", "FormatError", "HandlerContext",
        "HandlerRouter", "HandshakeRejected", "InternalError", "MessageHandler", "Metrics",
        "MetricsSnapshot", "ProtocolError", "RateLimitedError", "RunNotFoundError", "Settings",
        "ShuttingDownError", "StoreUnavailableError", "ThreadBusyError", "ThreadNotFoundError",
        "TooManyRunsError", "TooManySubscriptionsError", "UnknownTypeError", "default_router",
        "serve_chat",
    },
    "agents": {
        "AgentClassRegistry", "AgentError", "AgentFailed", "AgentObserver", "AgentRuntime",
        "AgentStep", "AgentTimeout", "BaseAgent", "ChatMessage", "ChatResult",
        "ChatServerError", "ConfigurationError", "EndCause", "FaultKind", "FaultPlan",
        "FaultSpec", "InjectedFault", "ModelProvider", "OfflineProvider", "ProviderError",
        "RunEmitter", "RunScope", "ThoughtStream", "Tool", "ToolParameterError", "ToolRegistry",
        "ToolResult", "Turn", "UserExecutionContext", "describe_exception", "execute_run",
    },
    "server.protocol": {
        "AgentError", "AgentFailed", "AgentNotFoundError", "AgentTimeout",
        "BrokerUnavailableError", "ChatServerError", "ClientMessage", "CloseConnection",
        "ConfigurationError", "ConnectionClosed", "EventEncoder",
        "DEFAULT_AGENT", "ERROR_CODES", "ErrorStreak", "FormatError", "HandshakeRejected",
        "Heartbeat", "InjectedFault", "InternalError", "InvariantViolation", "MESSAGE_TYPES",
        "PROTOCOL_VERSION", "Ping", "ProtocolError", "ProviderError", "RUN_EVENT_TYPES",
        "RateLimitedError", "RunNotFoundError", "Session", "SessionState", "ShuttingDownError",
        "StartRun", "StopRun", "StoreUnavailableError", "ThreadBusyError", "ThreadNotFoundError",
        "TokenBucket", "TooManyRunsError", "TooManySubscriptionsError", "ToolParameterError",
        "UnknownTypeError", "check_run_invariants", "decode_client_message", "ListThreads",
        "GetThread", "RenameThread", "DeleteThread", "ResumeRun", "SubscribeThread", "MAX_TITLE",
        "as_replay", "encode_reply", "shrink_data",
        "encode_connection_established", "encode_error", "encode_heartbeat_ack", "encode_json",
        "encode_pong", "encode_run_event", "is_valid_id", "new_id", "peek_message_id",
        "utc_timestamp",
    },
    "server.transport": {
        "HandshakeAnswer", "HandshakeRequest", "MemoryPeer", "MemoryTransport", "Transport",
        "WebSocketClient", "WebSocketTransport", "accept_websocket", "connect_websocket",
        "frame_text", "memory_transport_pair", "open_websocket_client",
    },
    "server.broker": {
        "MAX_BLOCK", "Broker", "BrokerStatistics", "BrokerUnavailableError", "CommandHandler",
        "Keys", "Observer", "PublishOutcome", "Publisher", "PublisherStatistics", "RunStream",
        "StreamEntry", "open_broker", "open_publisher", "seq_of", "stream_id",
    },
    "server.testing": {
        "ChatClient", "ClientConnection", "InvariantViolation", "RUN_EVENT_TYPES",
        "RunTranscript", "check_resumed_events", "check_run_invariants", "open_chat_client",
        "open_memory_client",
        "start_test_server",
    },
    "server.client": {
        "ClientOptions", "Target", "build_parser", "main", "parse_target", "run_client",
    },
    "server.workers": {
        "MetricFamily", "RestartDecision", "RestartPolicy", "Sample", "Supervisor",
        "SupervisorStatistics", "WORKER_INDEX_ENV", "WorkerCommand", "WorkerStatistics",
        "aggregate_expositions", "check_worker_settings", "parse_exposition",
        "render_exposition", "serve_workers", "sum_cumulative", "unshared_store",
        "worker_command",
    },
}  # fmt: skip


@pytest.mark.parametrize("module_name", sorted(EXPORTS))
def test_all_is_exactly_the_public_surface(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert set(module.__all__) == EXPORTS[module_name]
    assert len(module.__all__) == len(set(module.__all__)), "a name is listed twice"
    for name in module.__all__:
        assert getattr(module, name) is not None


@pytest.mark.parametrize("module_name", sorted(EXPORTS))
def test_every_exported_exception_is_under_the_one_root(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) and issubclass(value, BaseException):
            assert issubclass(value, ChatServerError), name


def test_the_error_codes_are_read_off_the_classes() -> None:
    from server.protocol import ERROR_CODES, ProtocolError

    def subclasses(cls: type[ProtocolError]) -> list[type[ProtocolError]]:
        found = list(cls.__subclasses__())
        for sub in cls.__subclasses__():
            found.extend(subclasses(sub))
        return found

    assert set(ERROR_CODES) == {cls.error_code for cls in subclasses(ProtocolError)}
    assert len(ERROR_CODES) == len(set(ERROR_CODES))


def test_importing_the_server_package_loads_only_the_protocol() -> None:
    # The lazy surface: `import server` must not drag in the server, the agents or
    # the transports (the terminal client and the protocol depend on that).
    import subprocess
    import sys

    code = (
        "import sys, server, server.protocol\n"
        "heavy = [m for m in sys.modules if m.startswith(('agents', 'server.session',"
        " 'server.runs', 'server.transport', 'server._server', 'trio_websocket', 'wsproto',"
        " 'httpx', 'jwt'))]\n"
        "print(','.join(sorted(heavy)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == ""
