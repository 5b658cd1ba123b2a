"""The durability rule, end to end: ``python -m server`` SIGKILLed mid-runs, then restarted.

A few rounds: start the server on one SQLite file, let clients run many
runs (the built-in agents; several users, runs on new threads and
follow-ups), kill the process with SIGKILL at a random moment, and start
again. Every frame each client received is kept as raw text. At the end,
on a last restart, every run a client saw is read back with ``resume_run``:

- a run whose final event the client received is in history, complete,
  byte for byte what the client got (each frame with ``"replay":true``
  added, nothing else);
- every other run is no longer ``running``: the start-up sweep ended it
  (``failed``/``NODE_LOST``, or its own final if that was committed before
  the kill), what the client got is a prefix of its history, and invariants
  1-5 hold on the stored run (open agents and tool calls closed).

Bounded: three kills within a fraction of a second to two seconds of work each.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from _procs import LineReader, reap
from _store import start
from _v11 import REPLAY_TAIL, strip_replay
from hypothesis import given, settings
from hypothesis import strategies as st

from server._history_tasks import end_lost_runs
from server.protocol import ConnectionClosed, check_run_invariants, encode_run_event
from server.runs import History, lost_run_ending
from server.store import EventRecord, HistoryWriter, MemoryStore, RunInfo
from server.transport import open_websocket_client

ROOT = Path(__file__).resolve().parent.parent
KILLS = 3
USERS = 4
LISTENING = re.compile(r"listening on (?P<url>ws://\S+)")
REQUESTS = (
    "We send 40M input and 10M output tokens a month to gpt-4o. How much would gpt-4o-mini save?",
    "And with batching?",
    "Our p95 latency is 900 ms on llama-3 70b; how do we get it under 500 ms?",
    "hello",
)


@attrs.define
class Seen:
    """What one client received of one run (raw text, in order)."""

    user_id: str
    texts: list[str] = attrs.field(factory=list)

    @property
    def final(self) -> bool:
        return bool(self.texts) and json.loads(self.texts[-1]).get("final") is True


def server_command(db: Path) -> list[str]:
    """``python -m server`` on ``db``, free ports, no heartbeats, no rate limit in the way."""
    options = (
        "--port 0 --admin-port 0 --heartbeat-interval 0 --rate-limit 100000 --rate-burst 100000"
    )
    return [sys.executable, "-m", "server", *options.split(), "--store", f"sqlite:///{db}"]


async def start_server(db: Path, log: Path) -> tuple[trio.Process, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    with log.open("ab") as stderr:
        process = await trio.lowlevel.open_process(
            server_command(db), stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT, env=env
        )
    assert process.stdout is not None
    lines = LineReader(process.stdout, errors="replace")
    with trio.fail_after(30):
        while (line := await lines.readline()) is not None:
            if match := LISTENING.match(line):
                return process, match["url"]
    logged = await trio.Path(log).read_text()
    raise AssertionError(f"the server exited before listening: {logged[-2000:]}")


async def client(url: str, user_id: str, prefix: str, seen: dict[str, Seen], seed: int) -> None:
    """Runs one after another until the server dies."""
    try:
        await _runs(url, user_id, prefix, seen, random.Random(seed))
    except* (ConnectionClosed, trio.BrokenResourceError, OSError):
        pass  # the server was killed


async def _runs(
    url: str, user_id: str, prefix: str, seen: dict[str, Seen], rng: random.Random
) -> None:
    thread = f"{prefix}-t0"
    async with open_websocket_client(f"{url}?user_id={user_id}") as ws:
        await ws.get_message()  # connection_established
        for number in range(1_000):
            if rng.random() < 0.4:
                thread = f"{prefix}-t{number}"
            run_id = f"{prefix}-r{number}"
            seen[run_id] = Seen(user_id)
            payload = {"user_request": rng.choice(REQUESTS), "run_id": run_id, "thread_id": thread}
            await ws.send_message(json.dumps({"type": "start_agent", "payload": payload}))
            while not seen[run_id].final:
                text = await ws.get_message()
                assert isinstance(text, str)
                frame = json.loads(text)
                if frame.get("run_id") == run_id:
                    seen[run_id].texts.append(text)
                elif frame.get("type") == "error_message":
                    # One run at a time per client and thread: no THREAD_BUSY, no error.
                    raise AssertionError(f"unexpected error: {frame}")


async def round_until_killed(db: Path, log: Path, number: int, rng: random.Random,
                             seen: dict[str, Seen]) -> None:  # fmt: skip
    process, url = await start_server(db, log)
    try:
        async with trio.open_nursery() as clients:
            for user in range(USERS):
                clients.start_soon(
                    client, url, f"user{user}", f"k{number}u{user}", seen, rng.randrange(1 << 30)
                )
            await trio.sleep(rng.uniform(0.2, 2.0))  # the random moment of the kill
            process.send_signal(signal.SIGKILL)
            with trio.fail_after(20):
                await process.wait()
    finally:
        await reap([process], 10)
    assert process.returncode == -signal.SIGKILL


async def read_back(url: str, seen: dict[str, Seen]) -> dict[str, tuple[dict[str, Any], list[str]]]:
    """Every seen run as history has it: (run_resumed data, frames as replayed)."""
    found: dict[str, tuple[dict[str, Any], list[str]]] = {}
    users = sorted({s.user_id for s in seen.values()})
    for user_id in users:
        async with open_websocket_client(f"{url}?user_id={user_id}") as ws:
            await ws.get_message()
            for run_id, run in seen.items():
                if run.user_id != user_id:
                    continue
                await ws.send_message(json.dumps({"type": "resume_run",
                                                  "payload": {"run_id": run_id}}))  # fmt: skip
                reply = json.loads(await ws.get_message())
                if reply["type"] == "error_message":
                    assert reply["error_code"] == "RUN_NOT_FOUND", reply
                    continue
                assert reply["type"] == "run_resumed", reply
                texts = []
                for _ in range(reply["data"]["last_seq"]):
                    text = await ws.get_message()
                    assert isinstance(text, str)
                    texts.append(text)
                found[run_id] = (reply["data"], texts)
    return found


def node_lost(event: dict[str, Any]) -> bool:
    data = event.get("data") or {}
    error = data.get("error") or data.get("result") or {}
    return isinstance(error, dict) and "NODE_LOST" in (error.get("code"), error.get("error"))


async def test_sigkill_at_random_moments_loses_no_run_a_client_saw_end(tmp_path: Path) -> None:
    db, log = tmp_path / "chat.db", tmp_path / "server.log"
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    seen: dict[str, Seen] = {}
    with trio.fail_after(90):
        for number in range(KILLS):
            await round_until_killed(db, log, number, rng, seen)
        process, url = await start_server(db, log)
        try:
            history = await read_back(url, seen)
        finally:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(20):
                await process.wait()
            await reap([process], 10)

    finals = lost = 0
    for run_id, run in seen.items():
        if not run.texts:
            continue  # refused or never begun: nothing was promised
        assert run_id in history, f"{run_id}: the client saw events, history has no run"
        data, stored = history[run_id]
        assert all(text.endswith(REPLAY_TAIL) for text in stored)
        originals = [strip_replay(text) for text in stored]
        events = [json.loads(text) for text in originals]
        assert data["live"] is False
        assert data["status"] != "running"
        assert data["status"] == events[-1]["data"]["status"]
        check_run_invariants(events, run_id=run_id, user_id=run.user_id)
        if run.final:
            finals += 1
            assert originals == run.texts  # byte for byte
            continue
        # What the sweep added begins at the first NODE_LOST closing event (or at
        # the start, when not even agent_started was committed); what came before
        # it is what the run sent, and the client saw a prefix of the same run.
        swept = next((i for i, e in enumerate(events) if node_lost(e)), len(events))
        if swept == 1 and originals[0] != run.texts[0]:
            swept = 0  # a synthesized agent_started: nothing was committed
        shared = min(swept, len(run.texts))
        assert originals[:shared] == run.texts[:shared]
        if swept < len(events):
            lost += 1
            assert data["status"] == "failed"
            assert node_lost(events[-1])
    print(f"{len(seen)} runs started, {finals} seen to their end, {lost} ended NODE_LOST")
    assert finals > 0, "no run ended before a kill: the test proved nothing"


# -- the sweep's closing events, over any committed prefix (pure) -------------------

OPS = st.lists(st.integers(0, 4), max_size=40)


def whole_run(ops: list[int]) -> list[bytes]:
    """A run that keeps invariants 1-5, shaped by ``ops``: think, open an agent, close
    one, open a tool call, close it; whatever is open at the end closes in order."""
    frames: list[bytes] = []
    agents = ["supervisor"]
    tools: dict[str, str] = {}  # agent -> its open call

    def emit(agent: str, kind: str, data: dict[str, Any], final: bool = False) -> None:
        frames.append(encode_run_event(
            event_type=kind, run_id="r1", thread_id="t1", user_id="u1", agent_name=agent,
            seq=len(frames) + 1, final=final, data=data,
        ))  # fmt: skip

    def close(agent: str) -> None:
        if agent in tools:
            call = tools.pop(agent)
            emit(agent, "tool_completed", {"tool_call_id": call, "tool_name": "x",
                                           "status": "completed", "result": {}})  # fmt: skip
        emit(agent, "agent_completed", {"status": "completed", "result": {}},
             final=agent == "supervisor")  # fmt: skip

    emit("supervisor", "agent_started", {"status": "started", "user_request": "q"})
    for number, op in enumerate(ops):
        agent = agents[-1]
        if op == 0:
            emit(agent, "agent_thinking", {"reasoning": "r", "step_number": number})
        elif op == 1 and len(agents) < 4 and agent not in tools:
            agents.append(f"inner{len(agents)}")
            emit(agents[-1], "agent_started", {"status": "started"})
        elif op == 2 and len(agents) > 1:
            close(agents.pop())
        elif op == 3 and agent not in tools:
            tools[agent] = f"tc-{number}"
            emit(agent, "tool_executing", {"tool_call_id": tools[agent], "tool_name": "x",
                                           "parameters": {}})  # fmt: skip
        elif op == 4 and agent in tools:
            call = tools.pop(agent)
            emit(agent, "tool_completed", {"tool_call_id": call, "tool_name": "x",
                                           "status": "completed", "result": {}})  # fmt: skip
    while agents:
        close(agents.pop())
    return frames


@settings(max_examples=300, deadline=None)
@given(ops=OPS, cut=st.floats(0, 1, exclude_max=True))
def test_a_swept_run_keeps_invariants_1_to_5_whatever_was_committed(
    ops: list[int], cut: float
) -> None:
    frames = whole_run(ops)
    check_run_invariants([json.loads(f) for f in frames])  # the generator is sound
    committed = frames[: int(cut * len(frames))]  # never the final: the run was running
    info = RunInfo(
        run_key="k1", run_id="r1", user_id="u1", thread_id="t1", agent_name="supervisor",
        request="q", status="running", error_code=None, answer=None, result=None,
        started_at="2026-01-01T00:00:00.000Z", ended_at=None, last_seq=len(committed),
        node_id="dead",
    )  # fmt: skip
    end, records = lost_run_ending(info, committed)
    stored = [*committed, *(r.frame for r in records)]
    assert [r.seq for r in records] == list(range(len(committed) + 1, len(stored) + 1))
    assert (end.status, end.error_code, end.last_seq) == ("failed", "NODE_LOST", len(stored))
    events = [json.loads(f) for f in stored]
    check_run_invariants(events, run_id="r1", user_id="u1")
    assert node_lost(events[-1])
    assert events[-1]["data"]["status"] == "failed"


@pytest.mark.timeout(30)
async def test_the_sweep_reads_every_committed_event_of_a_run_longer_than_a_page() -> None:
    """The sweep pages through a run's committed events: a tool call opened after
    the first page is still closed, so the swept run keeps its invariants."""
    store = MemoryStore(node_id="dead")
    begin = start("u1", "t1", run_id="r1", agent_name="supervisor")
    await store.begin_run(begin, history_turns=0)
    frames = whole_run([0] * 700 + [3])[:-2]  # the tool call and its agent still open
    await store.append_events(
        [EventRecord(begin.run_key, seq, frame) for seq, frame in enumerate(frames, start=1)]
    )
    history = History(store, HistoryWriter(store), node_id="alive")
    [(run, records)] = await end_lost_runs(history, node_id=None)
    assert run.run_key == begin.run_key
    assert [r.seq for r in records] == [len(frames) + 1, len(frames) + 2]
    events = [json.loads(e.frame) for e in await store.read_events(begin.run_key, 0, 10_000)]
    assert len(events) == len(frames) + 2
    check_run_invariants(events, run_id="r1", user_id="u1")
    assert [(e["type"], e["data"].get("tool_call_id")) for e in events[-2:]] == [
        ("tool_completed", "tc-700"),
        ("agent_error", None),
    ]
