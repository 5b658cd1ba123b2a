"""The public admin listener of the parent of ``--workers N``.

``/healthz``: 200 while the parent serves, with each worker's state.
``/readyz``: 503 unless every worker is listening and answers its own
``/readyz`` with 200 (a worker being replaced is not ready), and 503 while
draining. ``/metrics``: the workers' series summed, with ``worker="i"``
series of each gauge (:mod:`._exposition`). The chat page and its
``config.json`` are served as by a single server, pointing at the shared port.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs

from server._admin import AdminResponder, AdminResponse, admin_response
from server._metrics import Metrics, MetricsSnapshot
from server._settings import Settings

from ._supervisor import Supervisor

log = logging.getLogger("trio_agent_server.workers")

_JSON = "application/json"
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
_OWN_PATHS = ("/healthz", "/readyz", "/metrics")


@attrs.frozen
class PageTarget:
    """What :func:`server._admin.admin_response` reads to serve the chat page and its config.

    The page connects to the shared port; the endpoints that would read this
    object's (empty) metrics are answered by the supervisor instead.
    """

    settings: Settings
    port: int
    url: str
    metrics: Metrics = attrs.field(factory=Metrics)
    draining: bool = False

    def statistics(self) -> MetricsSnapshot:
        return self.metrics.statistics()

    def readiness(self) -> dict[str, bool]:
        return {}  # /readyz is the supervisor's own answer


def supervisor_responder(supervisor: Supervisor) -> AdminResponder:
    """The answers of the parent's admin listener (after its ``Host`` check)."""
    page = PageTarget(supervisor.settings, supervisor.port, supervisor.url)

    async def answer(method: str, target: str, headers: list[tuple[str, str]]) -> AdminResponse:
        path = target.partition("?")[0]
        if path not in _OWN_PATHS or method not in ("GET", "HEAD"):
            return admin_response(page, method, target, headers)
        if path == "/healthz":
            return _json(200, health(supervisor))
        if path == "/readyz":
            return await readiness(supervisor)
        return AdminResponse(200, _PROMETHEUS, (await supervisor.render_metrics()).encode())

    async def respond(method: str, target: str, headers: list[tuple[str, str]]) -> AdminResponse:
        # The boundary: a bug here must cost one request, not the parent and its workers.
        try:
            return await answer(method, target, headers)
        except Exception:
            log.exception("admin request %s %s failed", method, target.partition("?")[0])
            return _json(500, {"error": "internal error"})

    return respond


def health(supervisor: Supervisor) -> dict[str, Any]:
    stats = supervisor.statistics()
    return {
        "status": "ok",
        "draining": stats.draining,
        "workers": [attrs.asdict(worker) for worker in stats.workers],
    }


async def readiness(supervisor: Supervisor) -> AdminResponse:
    if supervisor.draining:
        return _json(503, {"status": "draining"})
    ready = await supervisor.check_ready()
    workers = {str(index): is_ready for index, is_ready in ready.items()}
    if all(ready.values()):
        return _json(200, {"status": "ready", "workers": workers})
    return _json(503, {"status": "not ready", "workers": workers})


def _json(status: int, body: dict[str, Any]) -> AdminResponse:
    return AdminResponse(status, _JSON, json.dumps(body).encode())
