"""Runs: a connection's run table, each run's emitter, and where its events go."""

from ._directory import RunDirectory as RunDirectory
from ._follow import Follower as Follower
from ._follow import Follows as Follows
from ._history import History as History
from ._history import RunRecorder as RunRecorder
from ._history import lost_run_ending as lost_run_ending
from ._history import run_end as run_end
from ._remote import RemoteRun as RemoteRun
from ._remote import RemoteRuns as RemoteRuns
from ._run import Run as Run
from ._sinks import EventSink as EventSink
from ._sinks import RunOwner as RunOwner
from ._table import RunTable as RunTable
from ._table import StopElsewhere as StopElsewhere

__all__ = [
    "EventSink",
    "Follower",
    "Follows",
    "History",
    "RemoteRun",
    "RemoteRuns",
    "Run",
    "RunDirectory",
    "RunOwner",
    "RunRecorder",
    "RunTable",
    "StopElsewhere",
    "lost_run_ending",
    "run_end",
]
