"""The load generator's clients: a lean WebSocket client (a trio stream) and its stats.

Kept lean on purpose: one task per connection, no per-frame task switches,
frames cut out of the byte stream by hand, and JSON parsed only for the frames
that need it (the run's final event and ``error_message``); every other frame
is classified by a prefix check on its bytes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import resource
import time
from collections import Counter, deque
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio

REQUEST = (
    "We send 40M input tokens and 10M output tokens a month to gpt-4o and our p95 latency "
    "is 1200 ms. How much would switching to gpt-4o-mini save? Target: cut cost by 30%."
)
_STARTED = b'{"type":"agent_started"'
_RUN_EVENT = b'{"type":"agent_'
_TOOL_EVENT = b'{"type":"tool_'
_FINAL = b'"final":true'
_ERROR = b'{"type":"error_message"'


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
    #: Churning clients drop the socket without a close frame and resume the run they
    #: left (``resume_run``, with the session's resume token when the server offers one).
    resume: bool = False

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
    #: Arrival of a run's last event before its final one -> arrival of the final one.
    last_to_final_ms: list[float] = attrs.Factory(list)
    resumes: int = 0
    sessions_resumed: int = 0
    #: resume_run sent -> the first missed event received.
    resume_ms: list[float] = attrs.Factory(list)
    resume_lost_events: int = 0
    resume_duplicated_events: int = 0
    resume_errors: Counter[str] = attrs.Factory(Counter)

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
        out["last_to_final_ms"] = [round(x, 3) for x in self.last_to_final_ms]
        out["resume_ms"] = [round(x, 3) for x in self.resume_ms]
        out["cpu_s"] = cpu_s
        return out


_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final client-to-server frame: header, a fresh mask key, the masked payload."""
    length = len(payload)
    first = 0x80 | opcode
    if length < 126:
        header = bytes((first, 0x80 | length))
    elif length < 65536:
        header = bytes((first, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + length.to_bytes(8, "big")
    mask = os.urandom(4)
    key = int.from_bytes((mask * (length // 4 + 1))[:length], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big")
    return header + mask + masked


class LeanClient:
    """One WebSocket connection, with the protocol done by hand where it is hot.

    The handshake is a plain HTTP/1.1 upgrade (the accept key is checked);
    frames from the server (never masked) are cut out of a byte buffer by
    :meth:`_parse`, and payloads stay bytes: the caller classifies them by
    prefix and parses JSON only where it must. wsproto did all of this before,
    at about 16 us per frame: as much as the server's own event path, so the
    load generator, not the server, would have set the pace.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self.pending: deque[tuple[int, bytes]] = deque()
        self.partial: list[bytes] = []
        self._closing = False

    @classmethod
    async def connect(cls, host: str, port: int, target: str) -> LeanClient:
        stream = await trio.open_tcp_stream(host, port)
        client = cls(stream)
        try:
            await client._handshake(f"{host}:{port}", target)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return client

    async def _handshake(self, host: str, target: str) -> None:
        key = base64.b64encode(os.urandom(16))
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\n\r\n"
        )
        await self.stream.send_all(request.encode())
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                raise Closed(None)
            buffer += data
        head, _, rest = buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        if status != 101:
            raise ConnectionRefusedError(f"handshake rejected: HTTP {status}")
        headers = dict(line.split(b":", 1) for line in lines[1:] if b":" in line)
        expected = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        accept = {k.strip().lower(): v.strip() for k, v in headers.items()}.get(
            b"sec-websocket-accept"
        )
        if accept != expected:
            raise ConnectionRefusedError("handshake: wrong Sec-WebSocket-Accept")
        self._buffer += rest
        self._parse()

    def _parse(self) -> None:
        """Move every complete frame in the buffer to ``pending`` as (first byte, payload)."""
        buffer = self._buffer
        size = len(buffer)
        at = 0
        while size - at >= 2:
            length = buffer[at + 1]
            if length & 0x80:
                raise Closed(1002)  # a server must not mask its frames
            header = 2
            if length == 126:
                if size - at < 4:
                    break
                length, header = int.from_bytes(buffer[at + 2 : at + 4], "big"), 4
            elif length == 127:
                if size - at < 10:
                    break
                length, header = int.from_bytes(buffer[at + 2 : at + 10], "big"), 10
            end = at + header + length
            if end > size:
                break
            self.pending.append((buffer[at], bytes(buffer[at + header : end])))
            at = end
        del buffer[:at]

    async def receive_message(self) -> bytes:
        """The next text message's UTF-8 payload; answers pings; Closed on a close frame."""
        while True:
            while not self.pending:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise Closed(None)
                self._buffer += data
                self._parse()
            first, payload = self.pending.popleft()
            opcode = first & 0x0F
            if opcode in (0x0, 0x1, 0x2):  # continuation, text, binary
                if first & 0x80 and not self.partial:
                    return payload
                self.partial.append(payload)
                if first & 0x80:
                    message = b"".join(self.partial)
                    self.partial.clear()
                    return message
            elif opcode == 0x9:  # ping
                await self.stream.send_all(client_frame(0xA, payload))
            elif opcode == 0x8:  # close: answer with its code, then stop
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                if not self._closing:
                    self._closing = True
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await self.stream.send_all(client_frame(0x8, payload[:2]))
                raise Closed(code)

    def drop(self) -> None:
        """Lose the connection without a close frame (:meth:`aclose` then only drops TCP)."""
        self._closing = True

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(client_frame(0x1, text.encode()))

    async def aclose(self) -> None:
        """Leave: a close frame if we still can, then drop the TCP stream."""
        with trio.move_on_after(1) as scope:
            scope.shield = True
            if not self._closing:
                self._closing = True
                with contextlib.suppress(
                    trio.BrokenResourceError, trio.ClosedResourceError, OSError
                ):
                    await self.stream.send_all(client_frame(0x8, (1000).to_bytes(2, "big")))
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
    last_at = 0.0
    while True:
        text = await client.receive_message()
        stats.frames += 1
        if text.startswith(_RUN_EVENT) or text.startswith(_TOOL_EVENT):
            stats.events += 1
            now = time.perf_counter()
            if not started and text.startswith(_STARTED):
                started = True
                stats.to_started_ms.append((now - sent) * 1000)
                if leave_mid_run:
                    return "left"
            if _FINAL in text:
                frame = json.loads(text)
                if frame.get("final") is True and frame.get("run_id") == run_id:
                    stats.to_final_ms.append((now - sent) * 1000)
                    if last_at:
                        stats.last_to_final_ms.append((now - last_at) * 1000)
                    stats.statuses[frame["data"]["status"]] += 1
                    stats.runs_final += 1
                    return "final"
            last_at = now
        elif text.startswith(_ERROR):
            frame = json.loads(text)
            stats.errors[frame.get("error_code", "?")] += 1
            if frame.get("message_id") == run_id:
                # A refusal of our start (TOO_MANY_RUNS, RATE_LIMITED, SHUTTING_DOWN...).
                stats.runs_refused += 1
                return "refused"


async def resume_left_run(client: LeanClient, run_id: str, after_seq: int, stats: Stats) -> None:
    """``resume_run`` for the run left after ``after_seq``; read it to its final event.

    Every event after ``after_seq`` must come exactly once: what is missing or
    repeated is counted. The time from the message to the first missed event
    is the resume latency.
    """
    stats.resumes += 1
    sent = time.perf_counter()
    await client.send_text(
        json.dumps(
            {
                "type": "resume_run",
                "message_id": f"resume-{run_id}",
                "payload": {"run_id": run_id, "after_seq": after_seq},
            }
        )
    )
    seqs: list[int] = []
    last_seq = 0  # run_resumed's: the run's last event when it was resumed
    while True:
        text = await client.receive_message()
        stats.frames += 1
        frame = json.loads(text)
        if frame.get("type") == "error_message":
            stats.resume_errors[frame.get("error_code", "?")] += 1
            return
        if frame.get("type") == "run_resumed":
            last_seq = frame["data"]["last_seq"]
            continue
        if frame.get("run_id") != run_id or "seq" not in frame:
            continue
        stats.events += 1
        # Timed when the first missed event existed at the resume (else the wait
        # would include the run's own time to make it).
        if not seqs and frame["seq"] == after_seq + 1 and last_seq > after_seq:
            stats.resume_ms.append((time.perf_counter() - sent) * 1000)
        seqs.append(frame["seq"])
        if frame.get("final") is True:
            break
    last = seqs[-1]
    seen = Counter(seqs)
    stats.resume_lost_events += sum(1 for seq in range(after_seq + 1, last + 1) if seq not in seen)
    stats.resume_duplicated_events += sum(n - 1 for n in seen.values() if n > 1)


async def one_client(plan: Plan, index: int, stats: Stats) -> None:
    parts = urlsplit(plan.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    base_target = f"{parts.path or '/ws'}?user_id=load{index}"
    target = base_target
    left: str | None = None  # the run this client left mid-run, to resume
    rng = random.Random(plan.seed * 1_000_003 + index)
    churn_at = rng.randrange(plan.runs_per_client) if rng.random() < plan.churn else -1
    await trio.sleep_until(
        trio.current_time() + max(0.0, plan.t0 + plan.start_offset(index) - time.time())
    )
    n = 0
    while n < plan.runs_per_client or left is not None:
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
            established = await client.receive_message()  # connection_established
            stats.frames += 1
            if plan.resume:
                data = json.loads(established)["data"]
                if data.get("resumed"):
                    stats.sessions_resumed += 1
                token = data.get("resume_token")
                target = base_target + (f"&resume={token}" if token else "")
                if left is not None:
                    in_run = True
                    await resume_left_run(client, left, 1, stats)  # left after agent_started
                    in_run, left = False, None
            while n < plan.runs_per_client:
                leave = n == churn_at
                n += 1
                in_run = True
                outcome = await one_run(client, plan, f"l{index}-{n}", leave, stats)
                in_run = False
                if outcome == "left":
                    stats.runs_abandoned += 1
                    if plan.resume:
                        # A network blip: the socket goes without a close frame.
                        left = f"l{index}-{n}"
                        client.drop()
                    break  # reconnect for the remaining runs (and the one left)
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
