"""Runs and the history store: recording a run, beginning it, ending lost ones.

:class:`History` is what a server's run tables share (the store, its
group-commit writer, this process's node id); :class:`RunRecorder` is one
run's link to it. Non-final events are appended to the writer without
waiting; the final event waits until the run's record and all its events are
committed (the durability rule), and a run someone else already ended gets
False (exactly one final event per run).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import orjson

from server.protocol import encode_json, encode_run_event
from server.store import EventRecord, HistoryWriter, RunBegun, RunEnd, RunInfo, RunStart, Store


@attrs.frozen
class History:
    """The history store as a server's runs use it (shared, immutable references)."""

    store: Store
    writer: HistoryWriter
    #: This process, recorded on the runs it owns (for the NODE_LOST sweep).
    node_id: str
    #: Earlier turns of a thread a run's agents see (``--history-turns``).
    turns: int = 20

    async def begin(self, start: RunStart) -> RunBegun:
        """Record the run as running (THREAD_NOT_FOUND, THREAD_BUSY, STORE_UNAVAILABLE)."""
        return await self.store.begin_run(start, history_turns=self.turns)

    def recorder(self, run_key: str) -> RunRecorder:
        return RunRecorder(self.writer, run_key)

    def unsaved(self, run_key: str) -> tuple[RunEnd, list[EventRecord]] | None:
        """A run that ended here but whose end the store does not have yet.

        Its end and the events still on their way (a final sent with
        ``history_saved: false`` waits in the writer until the store is back).
        """
        end = self.writer.unsaved_end(run_key)
        if end is None:
            return None
        return end, self.writer.pending_events(run_key)


@attrs.define(eq=False)
class RunRecorder:
    """One run's events on their way to the store."""

    writer: HistoryWriter
    run_key: str

    def append(self, seq: int, payload: bytes) -> None:
        self.writer.append(EventRecord(self.run_key, seq, payload))

    async def commit_final(self, seq: int, payload: bytes, data: Mapping[str, Any]) -> bool:
        """Commit the final event and the run's end; False if the run had already ended."""
        return await self.writer.commit_final(
            run_end(self.run_key, seq, data), EventRecord(self.run_key, seq, payload)
        )


def run_end(run_key: str, seq: int, data: Mapping[str, Any]) -> RunEnd:
    """The store's record of how a run ended, from its final event's ``data``."""
    status = str(data.get("status", "failed"))
    if status not in ("completed", "failed", "cancelled", "timeout"):
        status = "failed"
    error = data.get("error")
    code = error.get("code") if isinstance(error, Mapping) else None
    result = data.get("result")
    if isinstance(result, Mapping):
        # As it was sent: whatever the agent returned, made JSON the way events are.
        result = orjson.loads(encode_json(result))
    return RunEnd(
        run_key=run_key,
        status=status,
        last_seq=seq,
        error_code=str(code) if code else None,
        result=result if isinstance(result, Mapping) else None,
    )


#: The message of the closing events a sweep writes for a run whose process is gone.
LOST_MESSAGE = "the server process running it stopped before the run ended"


def lost_run_ending(run: RunInfo, committed: Sequence[bytes]) -> tuple[RunEnd, list[EventRecord]]:
    """How a sweep ends a run whose process died: the closing events and the end.

    ``committed`` are the run's committed events (seq 1..``run.last_seq``).
    Every tool call and agent still open in them is closed, innermost first
    (``tool_completed`` failed, ``agent_error`` failed), so the recorded run
    keeps the protocol's nesting (a run with nothing committed gets its
    top-level ``agent_started`` first); the last is the top-level agent's
    ``agent_error``, status ``failed``, code ``NODE_LOST``, ``final: true``.
    """
    agents: list[str] = []
    tools: dict[str, tuple[str, str]] = {}  # call id -> (agent, tool name)
    for frame in committed:
        event = orjson.loads(frame)
        kind, agent = event.get("type"), str(event.get("agent_name"))
        data = event.get("data") or {}
        if kind == "agent_started":
            agents.append(agent)
        elif kind in ("agent_completed", "agent_error") and agents:
            agents.pop()
        elif kind == "tool_executing":
            tools[str(data.get("tool_call_id"))] = (agent, str(data.get("tool_name")))
        elif kind == "tool_completed":
            tools.pop(str(data.get("tool_call_id")), None)
    error = {"code": "NODE_LOST", "message": LOST_MESSAGE}
    seq = run.last_seq
    records: list[EventRecord] = []

    def add(agent: str, kind: str, data: dict[str, Any], *, final: bool = False) -> None:
        nonlocal seq
        seq += 1
        payload = encode_run_event(
            event_type=kind,
            run_id=run.run_id,
            thread_id=run.thread_id,
            user_id=run.user_id,
            agent_name=agent,
            seq=seq,
            final=final,
            data=data,
        )
        records.append(EventRecord(run.run_key, seq, payload))

    if not committed:
        # Nothing of the run was committed, not even its first event: the
        # recorded run still opens with its top-level agent (invariant 2).
        agents = [run.agent_name]
        add(run.agent_name, "agent_started", {
            "status": "started", "message": f"{run.agent_name} started",
            "user_request": run.request,
        })  # fmt: skip
    while agents:
        agent = agents.pop()
        for call_id, (owner, tool) in list(tools.items()):
            if owner == agent:
                del tools[call_id]
                add(agent, "tool_completed", {
                    "tool_call_id": call_id, "tool_name": tool, "status": "failed",
                    "result": {"error": "NODE_LOST", "message": LOST_MESSAGE},
                    "execution_time_ms": 0,
                })  # fmt: skip
        closing = {"status": "failed", "error": error, "execution_time_ms": 0}
        add(agent, "agent_error", closing, final=not agents)
    end = RunEnd(run_key=run.run_key, status="failed", last_seq=seq, error_code="NODE_LOST")
    return end, records
