"""The admin HTTP listener (h11 over trio): /healthz, /readyz, /metrics and the chat page.

The chat page is static: ``/`` serves ``server/static/index.html``,
``/static/<name>`` the files beside it, and ``/config.json`` tells the page
where the WebSocket listener is (it is on another port than this one).

Two guards: a request whose ``Host`` is not one of the listener's own names
is answered 421 (a DNS-rebinding page cannot read /metrics or the page's
config), and at most :data:`ADMIN_MAX_CONNECTIONS` connections are served at
once: the next ones are closed as soon as they are accepted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from functools import partial
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import h11
import trio

from agents import ConfigurationError

from ._accept import serve_listeners
from ._descriptors import SocketSlots
from ._origins import HostNames, host_name

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._metrics import Metrics, MetricsSnapshot
    from ._settings import Settings


class AdminTarget(Protocol):
    """What the admin listener reads of the server it reports on."""

    @property
    def settings(self) -> Settings: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def draining(self) -> bool: ...

    def readiness(self) -> dict[str, bool]:
        """What /readyz checks, each True when fine (all True: ready)."""

    @property
    def port(self) -> int: ...

    @property
    def url(self) -> str: ...

    def statistics(self) -> MetricsSnapshot: ...


log = logging.getLogger("trio_agent_server.admin")

REQUEST_TIMEOUT = 10.0
MAX_REQUEST_BYTES = 16384
#: Admin connections served at once; descriptors for them are kept in reserve.
ADMIN_MAX_CONNECTIONS = 64
_PATHS = ("/healthz", "/readyz", "/metrics")
_PAGE_PATHS = ("/", "/config.json", "/static/<name>")
_JSON = "application/json"
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"

#: Content types of the files the page may ship; any other suffix is not served.
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
#: One path segment, no dot-segments, no encoded characters: nothing can leave the folder.
_STATIC_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")
_STATIC_PREFIX = "/static/"
_INDEX = "index.html"
#: The page runs only its own script and style; agent text can never become code.
PAGE_SECURITY_HEADERS = (
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
)


@attrs.frozen
class AdminResponse:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def admin_response(
    server: AdminTarget,
    method: str,
    target: str,
    request_headers: Iterable[tuple[str, str]] = (),
    *,
    host_names: HostNames | None = None,
) -> AdminResponse:
    """The response to one admin request (pure: no I/O beyond reading packaged files).

    With ``host_names``, a ``Host`` header naming anything else gets 421.
    """
    request_headers = list(request_headers)
    if host_names is not None:
        refused = refuse_unknown_host(request_headers, host_names)
        if refused is not None:
            return refused
    path = target.partition("?")[0]
    known = path in _PATHS or path in ("/", "/config.json") or path.startswith(_STATIC_PREFIX)
    if not known:
        return _not_found()
    if method not in ("GET", "HEAD"):
        return AdminResponse(405, _JSON, _json({"error": "method not allowed"}))
    if path == "/healthz":
        stats = server.statistics()
        body = {
            "status": "ok",
            "draining": server.draining,
            "connections": stats.connections_active,
            "runs": stats.runs_active,
        }
        return AdminResponse(200, _JSON, _json(body))
    if path == "/readyz":
        checks = server.readiness()
        if server.draining:
            return AdminResponse(503, _JSON, _json({"status": "draining", "checks": checks}))
        if not all(checks.values()):
            return AdminResponse(503, _JSON, _json({"status": "not ready", "checks": checks}))
        return AdminResponse(200, _JSON, _json({"status": "ready", "checks": checks}))
    if path == "/metrics":
        return AdminResponse(200, _PROMETHEUS, server.metrics.render().encode())
    if path == "/config.json":
        return AdminResponse(
            200, _JSON, _json(page_config(server)), (("cache-control", "no-store"),)
        )
    name = _INDEX if path == "/" else path[len(_STATIC_PREFIX) :]
    if_none_match = next((v for k, v in request_headers if k == "if-none-match"), None)
    return static_response(name, if_none_match)


def refuse_unknown_host(
    request_headers: Iterable[tuple[str, str]], host_names: HostNames
) -> AdminResponse | None:
    """421 for a request whose ``Host`` names none of ``host_names``; None to go on."""
    host = next((v for k, v in request_headers if k == "host"), None)
    if host is not None and host_name(host) not in host_names:
        return AdminResponse(421, _JSON, _json({"error": "unknown host"}))
    return None


def page_config(server: AdminTarget) -> dict[str, Any]:
    """What the page needs to connect: the WebSocket port and path, and the auth mode.

    The page builds ``ws://<its own host>:<ws_port><ws_path>``, so it works
    whatever name the browser used to reach this listener.
    """
    return {
        "ws_port": server.port,
        "ws_path": "/ws",
        "ws_url": server.url,
        "auth": server.settings.auth,
        "protocol_version": 1,
    }


def static_response(name: str, if_none_match: str | None = None) -> AdminResponse:
    """A packaged page file by name, with its content type, an ETag and revalidation."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if not _STATIC_NAME.fullmatch(name) or ".." in name or suffix not in STATIC_TYPES:
        return _not_found()
    found = _load_static(name)
    if found is None:
        return _not_found()
    body, etag = found
    headers = [("cache-control", "no-cache"), ("etag", etag)]
    if suffix == ".html":
        headers.extend(PAGE_SECURITY_HEADERS)
    else:
        headers.append(("x-content-type-options", "nosniff"))
    if if_none_match is not None and etag in (t.strip() for t in if_none_match.split(",")):
        return AdminResponse(304, STATIC_TYPES[suffix], b"", tuple(headers))
    return AdminResponse(200, STATIC_TYPES[suffix], body, tuple(headers))


def _load_static(name: str) -> tuple[bytes, str] | None:
    """(body, ETag) of ``server/static/<name>``, None if there is no such file.

    Read on every request (the files are small), so an edited page shows at once.
    """
    entry = resources.files("server").joinpath("static").joinpath(name)
    if not entry.is_file():
        return None
    body = entry.read_bytes()
    return body, f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def _not_found() -> AdminResponse:
    paths = [*_PATHS, *_PAGE_PATHS]
    return AdminResponse(404, _JSON, _json({"error": "not found", "paths": paths}))


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


#: Answers one admin request (method, target, headers) instead of :func:`admin_response`;
#: the ``Host`` check has been passed.
AdminResponder = Callable[[str, str, list[tuple[str, str]]], Awaitable[AdminResponse]]


async def _handle(
    server: AdminTarget,
    host_names: HostNames,
    respond: AdminResponder | None,
    stream: trio.SocketStream,
) -> None:
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
                    headers = [
                        (k.decode("ascii", "replace"), v.decode("latin-1"))
                        for k, v in event.headers
                    ]
                    if respond is None:
                        response = admin_response(
                            server, method, target, headers, host_names=host_names
                        )
                    else:
                        refused = refuse_unknown_host(headers, host_names)
                        response = refused or await respond(method, target, headers)
                    await _respond(stream, conn, response, head_only=method == "HEAD")
                return
    except h11.RemoteProtocolError:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            bad = AdminResponse(400, _JSON, b'{"error": "bad request"}')
            await _respond(stream, conn, bad, head_only=False)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def _respond(
    stream: trio.SocketStream,
    conn: h11.Connection,
    response: AdminResponse,
    *,
    head_only: bool,
) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        *response.headers,
        ("connection", "close"),
    ]
    if response.status == 304:
        headers = [(k, v) for k, v in headers if k not in ("content-type", "content-length")]
    events: list[h11.Event] = [h11.Response(status_code=response.status, headers=headers)]
    if response.body and not head_only:
        events.append(h11.Data(data=response.body))
    events.append(h11.EndOfMessage())
    data = b"".join(conn.send(event) or b"" for event in events)
    with trio.move_on_after(REQUEST_TIMEOUT):
        await stream.send_all(data)


async def serve_admin(
    server: AdminTarget,
    *,
    host: str | None = None,
    port: int | None = None,
    respond: AdminResponder | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the admin endpoints until cancelled; ``started`` with the bound port.

    ``host`` and ``port`` default to the settings' admin address; ``respond``
    answers the requests that pass the ``Host`` check instead of
    :func:`admin_response` (the parent of ``--workers N`` does, for its workers).
    """
    settings = server.settings
    host = host if host is not None else settings.effective_admin_host
    port = port if port is not None else settings.admin_port
    assert port is not None
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise ConfigurationError(
            f"admin port {port} on {host} is already "
            "in use (another server running?): stop it or choose another --admin-port"
        ) from None
    host_names = HostNames.of(host)
    slots = SocketSlots(ADMIN_MAX_CONNECTIONS)
    async with trio.open_nursery() as handlers:

        async def handle(stream: trio.SocketStream) -> None:
            try:
                await _handle(server, host_names, respond, stream)
            finally:
                slots.release()

        def on_accept(stream: trio.SocketStream) -> None:
            if not slots.room():
                stream.socket.close()  # refused at once: nothing is read or held
                return
            slots.take()
            handlers.start_soon(handle, stream)

        await handlers.start(
            partial(serve_listeners, listeners, on_accept, what="admin connections")
        )
        task_status.started(listeners[0].socket.getsockname()[1])
