"""Runs: a connection's run table, each run's emitter, and where its events go."""

from ._run import Run as Run
from ._sinks import EventSink as EventSink
from ._sinks import RunOwner as RunOwner
from ._table import RunTable as RunTable

__all__ = ["EventSink", "Run", "RunOwner", "RunTable"]
