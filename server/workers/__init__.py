"""``--workers N``: a parent process running N worker processes on one port.

The parent (:func:`serve_workers`) holds the port, starts the workers, replaces
one that dies (with a backoff, giving up when they keep dying), forwards
SIGINT/SIGTERM so that all of them drain, and serves the public admin port:
the workers' metrics summed, and readiness only when every worker is ready.
The settings a parent refuses to run with are in :func:`check_worker_settings`.
"""

from __future__ import annotations

from ._exposition import MetricFamily as MetricFamily
from ._exposition import Sample as Sample
from ._exposition import aggregate_expositions as aggregate_expositions
from ._exposition import parse_exposition as parse_exposition
from ._exposition import render_exposition as render_exposition
from ._exposition import sum_cumulative as sum_cumulative
from ._policy import RestartDecision as RestartDecision
from ._policy import RestartPolicy as RestartPolicy
from ._safety import check_worker_settings as check_worker_settings
from ._safety import unshared_store as unshared_store
from ._serve import serve_workers as serve_workers
from ._supervisor import WORKER_INDEX_ENV as WORKER_INDEX_ENV
from ._supervisor import Supervisor as Supervisor
from ._supervisor import SupervisorStatistics as SupervisorStatistics
from ._supervisor import WorkerCommand as WorkerCommand
from ._supervisor import WorkerStatistics as WorkerStatistics
from ._supervisor import worker_command as worker_command

__all__ = [
    "WORKER_INDEX_ENV",
    "MetricFamily",
    "RestartDecision",
    "RestartPolicy",
    "Sample",
    "Supervisor",
    "SupervisorStatistics",
    "WorkerCommand",
    "WorkerStatistics",
    "aggregate_expositions",
    "check_worker_settings",
    "parse_exposition",
    "render_exposition",
    "serve_workers",
    "sum_cumulative",
    "unshared_store",
    "worker_command",
]
