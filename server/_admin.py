"""The admin HTTP listener: /healthz, /readyz, /metrics (h11 over trio)."""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import h11
import trio

if TYPE_CHECKING:
    from ._server import ChatServer

log = logging.getLogger("trio_agent_server.admin")

REQUEST_TIMEOUT = 10.0
MAX_REQUEST_BYTES = 16384
_PATHS = ("/healthz", "/readyz", "/metrics")
_JSON = "application/json"
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


def admin_response(server: ChatServer, method: str, target: str) -> tuple[int, str, bytes]:
    """(status, content type, body) for one admin request (pure)."""
    path = target.partition("?")[0]
    if path not in _PATHS:
        return 404, _JSON, _json({"error": "not found", "paths": list(_PATHS)})
    if method not in ("GET", "HEAD"):
        return 405, _JSON, _json({"error": "method not allowed"})
    if path == "/healthz":
        stats = server.statistics()
        return (
            200,
            _JSON,
            _json(
                {
                    "status": "ok",
                    "draining": server.draining,
                    "connections": stats.connections_active,
                    "runs": stats.runs_active,
                }
            ),
        )
    if path == "/readyz":
        if server.draining:
            return 503, _JSON, _json({"status": "draining"})
        return 200, _JSON, _json({"status": "ready"})
    return 200, _PROMETHEUS, server.metrics.render().encode()


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


async def _handle(server: ChatServer, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
    try:
        with trio.move_on_after(REQUEST_TIMEOUT):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(MAX_REQUEST_BYTES))
                    continue
                if isinstance(event, h11.Request):
                    method = event.method.decode("ascii", "replace")
                    target = event.target.decode("ascii", "replace")
                    status, content_type, body = admin_response(server, method, target)
                    sent = b"" if method == "HEAD" else body
                    await _respond(stream, conn, status, content_type, sent, len(body))
                return
    except h11.RemoteProtocolError:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = b'{"error": "bad request"}'
            await _respond(stream, conn, 400, _JSON, body, len(body))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def _respond(
    stream: trio.SocketStream,
    conn: h11.Connection,
    status: int,
    content_type: str,
    body: bytes,
    length: int,
) -> None:
    headers = [
        ("content-type", content_type),
        ("content-length", str(length)),
        ("connection", "close"),
    ]
    events: list[h11.Event] = [h11.Response(status_code=status, headers=headers)]
    if body:
        events.append(h11.Data(data=body))
    events.append(h11.EndOfMessage())
    data = b"".join(conn.send(event) or b"" for event in events)
    with trio.move_on_after(REQUEST_TIMEOUT):
        await stream.send_all(data)


async def serve_admin(
    server: ChatServer, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the admin endpoints until cancelled; ``started`` with the bound port."""
    settings = server.settings
    assert settings.admin_port is not None
    listeners = await trio.open_tcp_listeners(
        settings.admin_port, host=settings.effective_admin_host
    )
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(partial(_handle, server), listeners)
