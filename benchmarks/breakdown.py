"""Where the microseconds of one event go: our event path, stage by stage.

    python -m benchmarks.breakdown --clients 50 --runs 20 --events 41 --size 450 --passes 3

Two parts, both in this process:

1. **Measured.** A server (``serve_chat`` with the ``stream`` agent of
   benchmarks/_stream_agent.py, tuned as ``python -m server`` tunes itself)
   runs here; ``--clients`` lean clients in a child process
   (``benchmarks._drive``) each start ``--runs`` runs of ``--events`` events
   of ``--size`` bytes of text. This process's CPU time over the runs is the
   server's CPU per delivered event: the total the stages below add up to.
   A second pass, with a trio instrument, counts task steps, task spawns,
   scheduler passes, the writer's batches (``OutboundQueue.take_batch``
   calls) and the writes (``write_nowait`` calls: the batches and the events a
   run writes at once) per event. A third, with runs of no ``agent_thinking`` at all,
   gives the cost of a run itself (decoding ``start_agent``, the run and its
   task, the agent instance, its two lifecycle events).
2. **Each stage alone**, with the server's own functions (found by
   the server's own modules), on one event
   like those of part 1: the agent's ``think`` (data dict and the call to its
   emitter), the run's ``emit`` (numbering; its call to the connection),
   ``encode_run_event`` split into the envelope dict, ``utc_timestamp`` and
   ``encode_json`` (orjson), ``frame_text``, the cancellation check of each
   queueing, ``OutboundQueue`` put and ``take_batch``, joining a batch, trio's
   ``send_all`` of a batch on a TCP loopback socket pair and the bare
   ``send()`` system call under it, and the scheduler: one task step, one task
   spawned, times the counts of part 1. Batch figures are divided by the events
   per batch that part 1 saw (or ``--batch``).

Each stage's figure is the fastest of ``--repeat`` loops of ``--number``
calls (minus the empty loop's cost), so it is a lower bound with warm caches;
the measured total of part 1 is what the stages run at under load. What the
stages do not explain (the connection's own glue, reading, the lifecycle's
cancel scopes, metrics, garbage collection) is the "not attributed" row.
Prints a Markdown table and writes a JSON and a Markdown report to
``--report-dir`` (benchmarks/reports/ by default).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import attrs
import trio

from agents import AgentClassRegistry, AgentRuntime, AgentStep, RunScope, UserExecutionContext
from agents._base import bind_step
from server import Settings, serve_chat
from server.protocol import EventEncoder, decode_client_message, encode_json, utc_timestamp
from server.runs import Run
from server.session._outbound import EVENT, OutboundQueue
from server.transport import WebSocketTransport
from server.transport._framing import frame_batch

from ._common import add_report_arguments, write_report
from ._stream_agent import StreamAgent
from .compare import STREAM_PLUGIN, stream_message

RUN_ID = "r-" + "3f2a" * 8
THREAD_ID = "t-" + "9c1d" * 8
USER_ID = "cmp12"
AGENT = StreamAgent.name


# -- timing ---------------------------------------------------------------------------------


def time_sync(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Nanoseconds per call of ``fn``: the fastest of ``repeat`` loops of ``number`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        best = min(best, time.perf_counter_ns() - start)
    return best / number


async def time_async(fn: Callable[[], Awaitable[object]], number: int, repeat: int) -> float:
    """Nanoseconds per ``await fn()``, as :func:`time_sync`."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(number):
            await fn()
        best = min(best, time.perf_counter_ns() - start)
    return best / number


@contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection inside a timed loop (the measured part keeps it on)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# -- part 1: the measured total and the scheduler's counts -----------------------------------


class SchedulerCounts(trio.abc.Instrument):
    """Task steps, spawns and scheduler passes while installed."""

    def __init__(self) -> None:
        self.steps = 0
        self.spawned = 0
        self.passes = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1


@contextmanager
def counting_batches() -> Iterator[list[int]]:
    """Count the writer's batches and the server's writes while open: ``[batches, writes]``.

    A batch is an ``OutboundQueue.take_batch`` call; a write a
    ``WebSocketTransport.write_nowait`` call: one per batch, plus a run's
    first and final events when the run writes them at once
    (``Connection.send_event_at_once``).
    """
    queue_class: Any = OutboundQueue  # patched for the duration of the block
    transport_class: Any = WebSocketTransport
    take_original = queue_class.take_batch
    write_original = transport_class.write_nowait
    calls = [0, 0]

    def take_batch(self: Any, max_bytes: int) -> Any:
        calls[0] += 1
        return take_original(self, max_bytes)

    def write_nowait(self: Any, messages: Any) -> Any:
        calls[1] += 1
        return write_original(self, messages)

    queue_class.take_batch = take_batch
    transport_class.write_nowait = write_nowait
    try:
        yield calls
    finally:
        queue_class.take_batch = take_original
        transport_class.write_nowait = write_original


async def drive(port: int, clients: int, runs: int, message: str) -> dict[str, Any]:
    """The lean clients of benchmarks.compare, in a child process (see benchmarks._drive)."""
    result = await trio.run_process(
        [sys.executable, "-m", "benchmarks._drive", str(port), str(clients), str(runs), message],
        capture_stdout=True,
    )
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


@attrs.frozen
class Pass:
    """One load pass against the in-process server."""

    events: int
    runs: int
    frame_bytes: int
    cpu_s: float
    #: Of cpu_s, the kernel's share (system calls: send, recv, epoll_wait).
    system_s: float
    counts: dict[str, int]


async def load_pass(
    port: int, server: Any, args: argparse.Namespace, events: int, *, count: bool
) -> Pass:
    message = stream_message(events, args.size)
    sent_before = server.statistics().events_sent_total
    instrument = SchedulerCounts()
    with counting_batches() as batches:
        if count:
            trio.lowlevel.add_instrument(instrument)
        before = resource.getrusage(resource.RUSAGE_SELF)
        try:
            load = await drive(port, args.clients, args.runs, message)
        finally:
            after = resource.getrusage(resource.RUSAGE_SELF)
            if count:
                trio.lowlevel.remove_instrument(instrument)
    sent = server.statistics().events_sent_total - sent_before
    if sent != load["frames"]:
        raise RuntimeError(f"the server sent {sent} events, the clients read {load['frames']}")
    return Pass(
        events=sent,
        runs=load["requests"],
        frame_bytes=load["frame_bytes"],
        cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        system_s=after.ru_stime - before.ru_stime,
        counts={
            "task_steps": instrument.steps,
            "tasks_spawned": instrument.spawned,
            "scheduler_passes": instrument.passes,
            "batches": batches[0],
            "writes": batches[1],
        },
    )


def median_pass(passes: list[Pass]) -> Pass:
    """The median of each figure over repeated passes (the machine may be shared)."""
    first = passes[0]
    return Pass(
        events=first.events,
        runs=first.runs,
        frame_bytes=first.frame_bytes,
        cpu_s=statistics.median(p.cpu_s for p in passes),
        system_s=statistics.median(p.system_s for p in passes),
        counts={
            key: round(statistics.median(p.counts[key] for p in passes)) for key in first.counts
        },
    )


async def measure_server(args: argparse.Namespace) -> dict[str, Any]:
    """Server CPU and scheduler counts per run, with ``--events`` thinking events and with none.

    A run of n events costs R + n e: R for the run itself, e per event. Two
    loads, one with ``--events`` per run and one with none, give both.
    """
    settings = Settings(
        host="127.0.0.1",
        port=0,
        admin_port=0,
        rate_limit=0,
        max_connections_per_user=0,
        log_level="WARNING",
        plugins=(STREAM_PLUGIN,),
        store="memory:",  # as the other benchmarks: the event path, not the disk
    )
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_chat, settings)
        # As `python -m server` does (server._cli.tune_gc): start-up objects
        # out of the collector's reach, young collections every 10,000.
        gc.collect()
        gc.freeze()
        gc.set_threshold(settings.gc_threshold, *gc.get_threshold()[1:])
        port = server.port
        await drive(port, 2, 3, stream_message(args.events, args.size))  # warm-up
        passes: dict[str, list[Pass]] = {
            "full": [],
            "full_counted": [],
            "empty": [],
            "empty_counted": [],
        }
        for _ in range(args.passes):
            passes["full"].append(await load_pass(port, server, args, args.events, count=False))
            passes["full_counted"].append(
                await load_pass(port, server, args, args.events, count=True)
            )
            passes["empty"].append(await load_pass(port, server, args, 0, count=False))
            passes["empty_counted"].append(await load_pass(port, server, args, 0, count=True))
        nursery.cancel_scope.cancel()
    full, full_counted, empty, empty_counted = (
        median_pass(passes[key]) for key in ("full", "full_counted", "empty", "empty_counted")
    )
    per_run_full, per_run_empty = full.events / full.runs, empty.events / empty.runs
    span = per_run_full - per_run_empty
    cpu_full, cpu_empty = full.cpu_s / full.runs * 1e9, empty.cpu_s / empty.runs * 1e9
    per_event_ns = (cpu_full - cpu_empty) / span
    # Scheduler counts per event beyond those of the run itself, the same way.
    marginal = {
        key: (
            full_counted.counts[key] / full_counted.runs
            - empty_counted.counts[key] / empty_counted.runs
        )
        / span
        for key in full_counted.counts
    }
    batches = full_counted.counts["batches"]
    return {
        "events": full.events,
        "runs": full.runs,
        "events_per_run": per_run_full,
        "mean_frame_bytes": round(full.frame_bytes / full.events, 1),
        "cpu_s": round(full.cpu_s, 3),
        "cpu_ns_per_event": full.cpu_s / full.events * 1e9,
        "marginal_cpu_ns_per_event": per_event_ns,
        "run_cpu_ns": cpu_empty - per_run_empty * per_event_ns,
        "system_share_full": full.system_s / full.cpu_s if full.cpu_s else None,
        "system_share_empty": empty.system_s / empty.cpu_s if empty.cpu_s else None,
        "empty_run": {
            "events_per_run": per_run_empty,
            "cpu_ns_per_run": cpu_empty,
        },
        "cpu_s_per_pass": {key: [p.cpu_s for p in value] for key, value in passes.items()},
        "passes": {
            "full": attrs.asdict(full),
            "full_counted": attrs.asdict(full_counted),
            "empty": attrs.asdict(empty),
            "empty_counted": attrs.asdict(empty_counted),
        },
        "marginal_counts_per_event": marginal,
        "events_per_batch": full_counted.events / batches if batches else None,
        "task_steps_per_batch": full_counted.counts["task_steps"] / batches if batches else None,
    }


# -- part 2: each stage alone ---------------------------------------------------------------


class NullEmitter:
    """An emitter that takes the event and does nothing: the agent's side alone."""

    async def emit(
        self, agent_name: str, event_type: str, data: dict[str, Any], *, final: bool = False
    ) -> None:
        return None


@attrs.define
class StubConnection:
    """What a Run needs of its connection, doing nothing: the run's side alone."""

    user_id: str = USER_ID
    connection_id: str = "c-" + "77ab" * 8
    frames: int = 0

    async def send_event(self, frame: bytes) -> None:
        self.frames += 1


def context(emitter: Any) -> UserExecutionContext:
    return UserExecutionContext(
        user_id=USER_ID,
        thread_id=THREAD_ID,
        run_id=RUN_ID,
        connection_id="c-" + "77ab" * 8,
        request="41 450",
        emitter=emitter,
    )


def event_data(size: int) -> dict[str, Any]:
    return {"reasoning": "x" * size, "step_number": 7}


ENCODER = EventEncoder(run_id=RUN_ID, thread_id=THREAD_ID, user_id=USER_ID)


def encode_event(data: dict[str, Any]) -> bytes:
    """One event's envelope, as a run builds it (from parts encoded once per run)."""
    return ENCODER.encode("agent_thinking", AGENT, 17, False, data)


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of TCP sockets on the loopback interface (what the server writes to)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    for sock in (client, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server, client


def drain(sock: socket.socket, size: int) -> None:
    while size > 0:
        size -= len(sock.recv(min(size, 1 << 20)))


async def time_writes(
    data: bytes, rounds: int, repeat: int
) -> tuple[float, float]:  # ns per batch: trio send_all, bare send()
    """One batch written ``rounds`` times, each time drained (untimed) by the other end."""
    writer, reader = tcp_pair()
    with writer, reader:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(writer))
        trio_best = send_best = float("inf")
        for _ in range(repeat):
            total = 0
            for _ in range(rounds):
                start = time.perf_counter_ns()
                await stream.send_all(data)
                total += time.perf_counter_ns() - start
                drain(reader, len(data))
            trio_best = min(trio_best, total / rounds)
        writer.setblocking(True)
        for _ in range(repeat):
            total = 0
            for _ in range(rounds):
                start = time.perf_counter_ns()
                sent = writer.send(data)
                total += time.perf_counter_ns() - start
                if sent != len(data):
                    raise RuntimeError("short send: the batch does not fit the socket buffer")
                drain(reader, len(data))
            send_best = min(send_best, total / rounds)
    return trio_best, send_best


# The other end of time_waking_send: a process that waits in recv() and acknowledges.
_READER = """
import socket, sys
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while data := sock.recv(1 << 16):
    sock.sendall(b"k")
"""


async def time_waking_send(frame: bytes, rounds: int) -> float:
    """Nanoseconds a send() costs beyond the plain one when it wakes a reader in another process.

    That is the server's usual case: a client waits for its run's events. The
    reader acknowledges each frame; by the time the acknowledgement is read
    the reader is waiting in recv() again (about; it is another process). Median
    over ``rounds`` sends, less the median plain send of the same frame.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        async with trio.open_nursery() as nursery:
            reader = await nursery.start(
                partial(trio.run_process, [sys.executable, "-c", _READER, str(port)])
            )
            writer, _ = await trio.to_thread.run_sync(listener.accept)
            with writer:
                writer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                waking, plain = [], []
                for _ in range(rounds):
                    start = time.perf_counter_ns()
                    writer.send(frame)
                    waking.append(time.perf_counter_ns() - start)
                    writer.recv(16)  # the reader's acknowledgement, blocking
                writer.shutdown(socket.SHUT_WR)
                with trio.fail_after(10):
                    await reader.wait()
    sender, receiver = tcp_pair()
    with sender, receiver:
        for _ in range(rounds):
            start = time.perf_counter_ns()
            sender.send(frame)
            plain.append(time.perf_counter_ns() - start)
            drain(receiver, len(frame))
    return max(0.0, statistics.median(waking) - statistics.median(plain))


async def _yields(count: int) -> None:
    for _ in range(count):
        await trio.lowlevel.cancel_shielded_checkpoint()


async def time_shared_steps(tasks: int, number: int, repeat: int) -> float:
    """Nanoseconds per task step when ``tasks`` tasks are ready at once (one pass serves all)."""
    per_task = max(1, number // tasks)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(_yields, per_task)
        best = min(best, time.perf_counter_ns() - start)
    return best / (tasks * per_task)


async def measure_stages(args: argparse.Namespace, batch: int) -> dict[str, dict[str, Any]]:
    number, repeat = args.number, args.repeat
    data = event_data(args.size)
    stages: dict[str, dict[str, Any]] = {}

    def add(name: str, ns: float, what: str, *, derived: bool = False) -> None:
        stages[name] = {"ns": round(ns, 1), "what": what, "derived": derived}

    with collector_paused():
        empty_sync = time_sync(lambda: None, number, repeat)

        async def nothing() -> None:
            return None

        empty_async = await time_async(nothing, number, repeat)

        # The agent: think() builds its data dict and awaits its emitter.
        agent = StreamAgent(context(NullEmitter()))
        scope = RunScope(context=agent.context, runtime=AgentRuntime(AgentClassRegistry()))
        bind_step(agent, AgentStep(scope, agent.name, opened_at=0.0))
        text = "x" * args.size
        think = await time_async(lambda: agent.think(text), number, repeat) - empty_async
        add("agent think()", think, "BaseAgent.think: step number, data dict, await the emitter")

        # The run: numbering and its call to the connection (encoding included,
        # subtracted below).
        connection = StubConnection()
        run = Run(
            connection,
            AgentRuntime(AgentClassRegistry()),
            run_id=RUN_ID,
            thread_id=THREAD_ID,
            agent_name=AGENT,
            request=f"{args.events} {args.size}",
            message_id=None,
            on_final=lambda run, status: None,
        )
        await run.emit(AGENT, "agent_started", {"status": "started"})  # seq 1 and its yields
        emit = await time_async(lambda: run.emit(AGENT, "agent_thinking", data), number, repeat)
        encode = time_sync(lambda: encode_event(data), number, repeat) - empty_sync
        stamp = time_sync(utc_timestamp, number, repeat) - empty_sync
        clock = iter(range(10**12))
        stamp_new = (
            time_sync(lambda: utc_timestamp(1.7e9 + next(clock) / 1000), number, repeat)
            - empty_sync
        )
        json_ns = time_sync(lambda: encode_json(data), number, repeat) - empty_sync
        add(
            "run emit()",
            emit - empty_async - encode,
            "Run.emit less EventEncoder.encode: seq, the call to the connection, history",
        )
        add(
            "envelope",
            encode - stamp - json_ns,
            "EventEncoder.encode less utc_timestamp and the data's JSON: one join of parts",
            derived=True,
        )
        add("timestamp", stamp, "utc_timestamp() within one millisecond (its cached text)")
        add("JSON", json_ns, "orjson of the event's data (the rest is encoded once per run)")
        payload = encode_event(data)
        cancel_check = (
            await time_async(trio.lowlevel.checkpoint_if_cancelled, number, repeat) - empty_async
        )
        add(
            "cancellation check",
            cancel_check,
            "trio.lowlevel.checkpoint_if_cancelled(), once per queued event",
        )

        queue = OutboundQueue(batch + 1)
        item = (payload, EVENT)

        def fill_and_take() -> None:
            for _ in range(batch):
                queue.put_nowait(item)
            queue.take_batch(1 << 30)

        rounds = max(1, number // batch)
        queue_ns = time_sync(fill_and_take, rounds, repeat) / batch
        add("queue", queue_ns, f"OutboundQueue.put_nowait x {batch}, one take_batch; per event")
        payloads = [payload] * batch
        framing_ns = time_sync(lambda: frame_batch(payloads), rounds, repeat) / batch
        add(
            "framing",
            framing_ns,
            f"frame_batch of {batch} messages: headers and payloads in one buffer; per event",
        )
        frames = frame_batch(payloads)
        _, syscall = await time_writes(bytes(frames), min(rounds, 2000), repeat)
        add(
            "write",
            syscall / batch,
            "the non-blocking send() of the batch on TCP loopback (write_nowait); per event",
        )
        frame = bytes(frame_batch([payload]))
        _, small_write = await time_writes(frame, min(rounds, 2000), repeat)
        waking = await time_waking_send(frame, min(rounds, 500))
        start_agent = stream_message(args.events, args.size)
        decode = time_sync(lambda: decode_client_message(start_agent), number, repeat)

        # A task step alone comes with a whole scheduler pass (an epoll_wait with
        # timeout 0 among other things); under load many steps share a pass.
        step = await time_async(trio.lowlevel.cancel_shielded_checkpoint, number, repeat)
        shared_step = await time_shared_steps(64, number, repeat)

        async def noop() -> None:
            return None

        async with trio.open_nursery() as nursery:

            async def spawn_and_run() -> None:
                nursery.start_soon(noop)
                await trio.lowlevel.cancel_shielded_checkpoint()

            spawn = await time_async(spawn_and_run, max(1, number // 4), repeat) - step
    extras = {
        "timestamp_new_millisecond_ns": round(stamp_new, 1),
        "encode_event_ns": round(encode, 1),
        "task_step_ns": round(shared_step, 1),
        "scheduler_pass_ns": round(max(0.0, step - shared_step), 1),
        "task_spawn_ns": round(spawn, 1),
        "frame_bytes": len(frame),
        "send_per_batch_ns": round(small_write, 1),
        "waking_send_ns": round(waking, 1),
        "decode_ns": round(decode - empty_sync, 1),
        "batch": batch,
    }
    stages["_extras"] = extras
    return stages


# -- report -----------------------------------------------------------------------------------


def build_report(
    args: argparse.Namespace, measured: dict[str, Any], stages: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Per event: the stages against the marginal cost; per run: what is known of R."""
    extras = stages.pop("_extras")
    batch_write_ns = extras["send_per_batch_ns"]

    def scheduling(counts: dict[str, float]) -> tuple[float, str]:
        steps, spawns = counts["task_steps"], counts["tasks_spawned"]
        passes = counts["scheduler_passes"]
        ns = (
            steps * extras["task_step_ns"]
            + passes * extras["scheduler_pass_ns"]
            + spawns * extras["task_spawn_ns"]
        )
        what = (
            f"{steps:.2f} task steps x {extras['task_step_ns']:.0f} ns, "
            f"{passes:.2f} scheduler passes x {extras['scheduler_pass_ns']:.0f} ns, "
            f"{spawns:.2f} spawns x {extras['task_spawn_ns']:.0f} ns"
        )
        return ns, what

    marginal = measured["marginal_counts_per_event"]
    ns, what = scheduling(marginal)
    stages["scheduling"] = {"ns": round(ns, 1), "what": what, "derived": True}
    per_event_total = measured["marginal_cpu_ns_per_event"]
    per_event_sum = sum(stage["ns"] for stage in stages.values())

    # The run itself: its counts are those of a run without thinking, less its events'.
    empty = measured["passes"]["empty_counted"]
    n_empty = measured["empty_run"]["events_per_run"]
    run_counts = {
        key: value / empty["runs"] - n_empty * marginal[key]
        for key, value in empty["counts"].items()
    }
    run_stages: dict[str, dict[str, Any]] = {}
    ns, what = scheduling(run_counts)
    run_stages["scheduling"] = {"ns": round(ns, 1), "what": what, "derived": True}
    run_stages["decoding start_agent"] = {
        "ns": extras["decode_ns"],
        "what": "decode_client_message(start_agent frame)",
        "derived": False,
    }
    waking = extras["waking_send_ns"]
    run_stages["writes"] = {
        "ns": round(run_counts["writes"] * (batch_write_ns + waking), 1),
        "what": (
            f"{run_counts['writes']:.2f} writes x ({batch_write_ns:.0f} ns send() of one "
            f"small frame + {waking:.0f} ns more when it wakes a waiting reader)"
        ),
        "derived": True,
    }
    run_total = measured["run_cpu_ns"]
    run_sum = sum(stage["ns"] for stage in run_stages.values())
    total = measured["cpu_ns_per_event"]
    per_run = measured["events_per_run"]
    return {
        "parameters": {
            "clients": args.clients,
            "runs": args.runs,
            "events": args.events,
            "size": args.size,
            "passes": args.passes,
            "number": args.number,
            "repeat": args.repeat,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "measured": measured,
        "extras": extras,
        "total_ns_per_event": round(total, 1),
        "per_event": {
            "stages": stages,
            "measured_ns": round(per_event_total, 1),
            "attributed_ns": round(per_event_sum, 1),
            "unattributed_ns": round(per_event_total - per_event_sum, 1),
        },
        "per_run": {
            "stages": run_stages,
            "counts": run_counts,
            "measured_ns": round(run_total, 1),
            "attributed_ns": round(run_sum, 1),
            "unattributed_ns": round(run_total - run_sum, 1),
            "ns_per_event": round(run_total / per_run, 1),
        },
    }


def _table(part: dict[str, Any], unit: float, label: str, share_of: float, rest: str) -> list[str]:
    def row(name: str, ns: float, what: str) -> str:
        return f"| {name} | {ns / unit:.2f} | {100 * ns / share_of:.1f}% | {what} |"

    lines = [f"| stage | {label} | share | what is timed |", "|---|---:|---:|---|"]
    for name, stage in part["stages"].items():
        what = stage["what"] + (" (derived)" if stage["derived"] else "")
        lines.append(row(name, stage["ns"], what))
    lines += [
        row("**sum of the stages**", part["attributed_ns"], ""),
        row("not attributed", part["unattributed_ns"], rest),
        row("**measured**", part["measured_ns"], "from part 1"),
    ]
    return lines


def render(report: dict[str, Any]) -> str:
    measured, extras = report["measured"], report["extras"]
    params = report["parameters"]
    total = report["total_ns_per_event"]
    per_event, per_run = report["per_event"], report["per_run"]
    counted = measured["passes"]["full_counted"]["counts"]
    lines = [
        "# Event path breakdown",
        "",
        f"Measured: {measured['events']} events in {measured['runs']} runs of the `stream` "
        f"agent ({params['clients']} clients x {params['runs']} runs of {params['events']} "
        f"thinking events, {measured['events_per_run']:.0f} events a run, mean frame "
        f"{measured['mean_frame_bytes']} B), server in this process, clients in another: "
        f"**{total / 1000:.2f} µs of server CPU per event** = "
        f"{per_event['measured_ns'] / 1000:.2f} µs per event + "
        f"{per_run['measured_ns'] / 1000:.1f} µs per run / {measured['events_per_run']:.0f} "
        f"events ({per_run['ns_per_event'] / 1000:.2f} µs per event). In the kernel "
        f"(system time): {100 * (measured['system_share_full'] or 0):.0f}% of it, "
        f"{100 * (measured['system_share_empty'] or 0):.0f}% with runs of no thinking.",
        f"Writes: {measured['events_per_batch'] or 0:.1f} events and "
        f"{measured['task_steps_per_batch'] or 0:.1f} task steps per batch of the writer "
        f"({counted['batches']} batches, {counted['writes']} writes in all, "
        f"{counted['task_steps']} task steps, "
        f"{counted['tasks_spawned']} tasks spawned, {counted['scheduler_passes']} scheduler "
        "passes, with the instrument on).",
        "",
        f"## Per event ({per_event['measured_ns'] / 1000:.2f} µs: a run's cost grows by this "
        "with each event)",
        "",
        *_table(
            per_event,
            1000,
            "µs per event",
            per_event["measured_ns"],
            "the connection's glue (send_event, the writer's loop), lifecycle, metrics, "
            "GC, cache misses under load",
        ),
        "",
        f"## Per run ({per_run['measured_ns'] / 1000:.1f} µs: a run of no events would cost this)",
        "",
        *_table(
            per_run,
            1000,
            "µs per run",
            per_run["measured_ns"],
            "reading the client frame (our plain reader, or wsproto), the handler, the run "
            "and its task, the agent instance and its lifecycle, metrics",
        ),
        "",
        f"- a timestamp in a new millisecond: {extras['timestamp_new_millisecond_ns'] / 1000:.2f}"
        f" µs; an event's envelope whole: {extras['encode_event_ns'] / 1000:.2f} µs; "
        f"one event frame: {extras['frame_bytes']} B",
        f"- one task step: {extras['task_step_ns'] / 1000:.2f} µs (many ready at once), one "
        f"scheduler pass: {extras['scheduler_pass_ns'] / 1000:.2f} µs, one task spawned "
        f"and run: {extras['task_spawn_ns'] / 1000:.2f} µs; batch size used: {extras['batch']}",
    ]
    return "\n".join(lines) + "\n"


async def main(args: argparse.Namespace) -> int:
    print(
        f"measuring: {args.clients} clients x {args.runs} runs of {args.events} events ...",
        flush=True,
    )
    measured = await measure_server(args)
    batch = args.batch or max(1, round(measured["events_per_batch"] or 1))
    print(f"timing each stage (batches of {batch}) ...", flush=True)
    stages = await measure_stages(args, batch)
    report = build_report(args, measured, stages)
    markdown = render(report)
    print(markdown)
    print(f"report: {write_report(args.report_dir, args.report_name, report, markdown)}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.breakdown",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients [50]")
    parser.add_argument("--runs", type=int, default=20, help="runs per client [20]")
    parser.add_argument(
        "--events",
        type=int,
        default=41,
        help="agent_thinking events per run [41: 43 events a run, as the full pipeline's]",
    )
    parser.add_argument(
        "--size", type=int, default=450, help="bytes of thinking text per event [450]"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=0,
        help="events per write for the batch stages [0: as measured]",
    )
    parser.add_argument(
        "--passes", type=int, default=3, help="load passes of each kind; medians are used [3]"
    )
    parser.add_argument("--number", type=int, default=5000, help="calls per timed loop [5000]")
    parser.add_argument("--repeat", type=int, default=15, help="timed loops per stage [15]")
    add_report_arguments(parser, "breakdown")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(trio.run(main, parse_args()))
