"""The load generator's clients: a lean WebSocket client (trio stream + wsproto) and its stats.

Kept lean on purpose: one task per connection, no per-frame task switches, and
JSON is parsed only for the frames that need it (the run's final event and
``error_message``); every other frame is classified by a prefix check.
"""

from __future__ import annotations

import contextlib
import json
import random
import resource
import time
from collections import Counter, deque
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio
import wsproto
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    TextMessage,
)

REQUEST = (
    "We send 40M input tokens and 10M output tokens a month to gpt-4o and our p95 latency "
    "is 1200 ms. How much would switching to gpt-4o-mini save? Target: cut cost by 30%."
)
_STARTED = '{"type":"agent_started"'
_RUN_EVENT = '{"type":"agent_'
_TOOL_EVENT = '{"type":"tool_'
_FINAL = '"final":true'
_ERROR = '{"type":"error_message"'


class Closed(Exception):
    """The server closed the connection (code None: the TCP stream ended without a close)."""

    def __init__(self, code: int | None) -> None:
        super().__init__(code)
        self.code = code


@attrs.define
class Plan:
    """What the clients of one process do (the same for every worker process)."""

    url: str
    clients: int
    runs_per_client: int
    think_time: float
    churn: float
    ramp: float
    arrival_rate: float | None
    seed: int
    t0: float  # time.time() at which client 0 starts
    deadline: float  # time.time() at which everything stops
    agent: str = "supervisor"
    request: str = REQUEST

    def start_offset(self, index: int) -> float:
        if self.arrival_rate:
            return index / self.arrival_rate
        return self.ramp * index / max(self.clients, 1)


@attrs.define
class Stats:
    connected: int = 0
    connecting: int = 0  # TCP connect + handshake under way (left over at the end: never got in)
    connects: int = 0
    frames: int = 0
    events: int = 0
    runs_sent: int = 0
    runs_final: int = 0
    runs_lost: int = 0
    runs_abandoned: int = 0  # churn: the client left mid-run on purpose
    runs_cut: int = 0  # the server closed the connection mid-run
    runs_refused: int = 0  # answered by an error_message instead of a run
    statuses: Counter[str] = attrs.Factory(Counter)
    errors: Counter[str] = attrs.Factory(Counter)
    close_codes: Counter[str] = attrs.Factory(Counter)
    connect_failures: Counter[str] = attrs.Factory(Counter)
    to_connected_ms: list[float] = attrs.Factory(list)
    to_started_ms: list[float] = attrs.Factory(list)
    to_final_ms: list[float] = attrs.Factory(list)

    def progress(self) -> dict[str, int]:
        return {
            "connected": self.connected,
            "connects": self.connects,
            "frames": self.frames,
            "runs_sent": self.runs_sent,
            "runs_final": self.runs_final,
            "errors": sum(self.errors.values()),
        }

    def result(self, cpu_s: float) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["to_connected_ms"] = [round(x, 2) for x in self.to_connected_ms]
        out["to_started_ms"] = [round(x, 2) for x in self.to_started_ms]
        out["to_final_ms"] = [round(x, 2) for x in self.to_final_ms]
        out["cpu_s"] = cpu_s
        return out


class LeanClient:
    """One WebSocket connection: masked text frames out, frames parsed by wsproto in."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.pending: deque[Any] = deque()
        self.partial: list[str] = []

    @classmethod
    async def connect(cls, host: str, port: int, target: str) -> LeanClient:
        stream = await trio.open_tcp_stream(host, port)
        client = cls(stream)
        try:
            await stream.send_all(client.ws.send(wsproto.events.Request(host=host, target=target)))
            while True:
                event = await client._next_event()
                if isinstance(event, AcceptConnection):
                    return client
                if isinstance(event, RejectConnection):
                    raise ConnectionRefusedError(f"handshake rejected: HTTP {event.status_code}")
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise

    async def _next_event(self) -> Any:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            if not data:
                raise Closed(None)
            self.ws.receive_data(data)
            self.pending.extend(self.ws.events())
        return self.pending.popleft()

    async def receive_text(self) -> str:
        while True:
            event = await self._next_event()
            if type(event) is TextMessage:
                if event.message_finished and not self.partial:
                    return event.data
                self.partial.append(event.data)
                if event.message_finished:
                    text = "".join(self.partial)
                    self.partial.clear()
                    return text
            elif isinstance(event, Ping):
                await self.stream.send_all(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                with contextlib.suppress(
                    trio.BrokenResourceError,
                    trio.ClosedResourceError,
                    wsproto.utilities.LocalProtocolError,
                ):
                    await self.stream.send_all(self.ws.send(event.response()))
                raise Closed(event.code)

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    async def aclose(self) -> None:
        """Leave: a close frame if we still can, then drop the TCP stream."""
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                if self.ws.state is wsproto.connection.ConnectionState.OPEN:
                    await self.stream.send_all(self.ws.send(CloseConnection(code=1000)))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        await trio.aclose_forcefully(self.stream)


async def one_run(
    client: LeanClient, plan: Plan, run_id: str, leave_mid_run: bool, stats: Stats
) -> str:
    """Start one run and read to its final event; "final", "left" (churn) or "no-start"."""
    payload = {
        "type": "start_agent",
        "message_id": run_id,
        "payload": {"user_request": plan.request, "run_id": run_id, "agent_name": plan.agent},
    }
    sent = time.perf_counter()
    await client.send_text(json.dumps(payload))
    stats.runs_sent += 1
    started = False
    while True:
        text = await client.receive_text()
        stats.frames += 1
        if text.startswith(_RUN_EVENT) or text.startswith(_TOOL_EVENT):
            stats.events += 1
            if not started and text.startswith(_STARTED):
                started = True
                stats.to_started_ms.append((time.perf_counter() - sent) * 1000)
                if leave_mid_run:
                    return "left"
            if _FINAL in text:
                frame = json.loads(text)
                if frame.get("final") is True and frame.get("run_id") == run_id:
                    stats.to_final_ms.append((time.perf_counter() - sent) * 1000)
                    stats.statuses[frame["data"]["status"]] += 1
                    stats.runs_final += 1
                    return "final"
        elif text.startswith(_ERROR):
            frame = json.loads(text)
            stats.errors[frame.get("error_code", "?")] += 1
            if frame.get("message_id") == run_id:
                # A refusal of our start (TOO_MANY_RUNS, RATE_LIMITED, SHUTTING_DOWN...).
                stats.runs_refused += 1
                return "refused"


async def one_client(plan: Plan, index: int, stats: Stats) -> None:
    parts = urlsplit(plan.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = f"{parts.path or '/ws'}?user_id=load{index}"
    rng = random.Random(plan.seed * 1_000_003 + index)
    churn_at = rng.randrange(plan.runs_per_client) if rng.random() < plan.churn else -1
    await trio.sleep_until(
        trio.current_time() + max(0.0, plan.t0 + plan.start_offset(index) - time.time())
    )
    n = 0
    while n < plan.runs_per_client:
        stats.connecting += 1
        began = time.perf_counter()
        try:
            client = await LeanClient.connect(host, port, target)
        except (OSError, Closed, trio.BrokenResourceError) as exc:
            stats.connect_failures[type(exc).__name__] += 1
            stats.connecting -= 1
            return
        stats.connecting -= 1
        stats.to_connected_ms.append((time.perf_counter() - began) * 1000)
        stats.connects += 1
        stats.connected += 1
        in_run = False
        try:
            await client.receive_text()  # connection_established
            stats.frames += 1
            while n < plan.runs_per_client:
                leave = n == churn_at
                n += 1
                in_run = True
                outcome = await one_run(client, plan, f"l{index}-{n}", leave, stats)
                in_run = False
                if outcome == "left":
                    stats.runs_abandoned += 1
                    break  # reconnect for the remaining runs
                if plan.think_time:
                    await trio.sleep(plan.think_time)
        except trio.Cancelled:
            if in_run:
                stats.runs_lost += 1  # live connection, no final event by the deadline
            raise
        except Closed as exc:
            stats.close_codes[str(exc.code) if exc.code is not None else "tcp-eof"] += 1
            if in_run:
                stats.runs_cut += 1
            return
        except (OSError, trio.BrokenResourceError) as exc:
            stats.close_codes[type(exc).__name__] += 1
            if in_run:
                stats.runs_cut += 1
            return
        finally:
            stats.connected -= 1
            await client.aclose()


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_clients(plan: Plan, indices: range, stats: Stats) -> None:
    """Run the given clients until all are done or the plan's deadline passes."""
    with trio.move_on_after(max(0.0, plan.deadline - time.time())):
        async with trio.open_nursery() as nursery:
            for index in indices:
                nursery.start_soon(one_client, plan, index, stats)
