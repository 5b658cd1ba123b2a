"""What the broker costs per published run event, with and without batching.

    python -m benchmarks.broker_bench --events 200000 --runs 50

Needs the Redis at ``--redis-url`` (default ``CHAT_TEST_REDIS_URL`` or
``redis://127.0.0.1:6379/0``); it writes under a key prefix of its own and
deletes it afterwards.

``--runs`` producers each append events to their own run stream the way a
run emits: a burst of ``--burst`` events, then a checkpoint. Every thread is
followed, so every event is really appended. Rows:

- ``awaited``: one ``Broker.publish`` round trip per event (no batching);
- ``publisher, max_batch N``: ``Publisher.append_nowait`` on the hot path, one
  drain task batching up to N entries per round trip (the Lua script);
- ``pipeline, max_batch N``: the same batches sent as a coredis pipeline of
  XADD + EXPIRE instead of the script, to show why the script was chosen;
- ``gated, nobody follows``: the script's cost when it appends nothing.

CPU is this process's (where the broker runs in a server) per event, and
Redis's own (``INFO cpu``) per event; wall time gives events per second.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs
import coredis
import trio
from coredis import PureToken

from server.broker import Broker, RunStream, open_broker, open_publisher

from ._common import add_report_arguments, write_report

PAYLOAD = (
    b'{"type":"agent_thinking","run_id":"r-0123456789abcdef","thread_id":"t-0123456789abcdef",'
    b'"user_id":"bench","agent_name":"data","seq":0,"final":false,'
    b'"timestamp":"2026-11-21T21:26:02.118Z","data":{"reasoning":"Computing monthly cost '
    b'and cost per request","step_number":3}}'
)


@attrs.frozen
class Row:
    name: str
    events: int
    appended: int
    seconds: float
    cpu_s: float
    redis_cpu_s: float
    batches: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "events": self.events,
            "appended": self.appended,
            "events_per_s": round(self.events / self.seconds) if self.seconds else None,
            "cpu_us_per_event": round(self.cpu_s / self.events * 1e6, 2),
            "redis_cpu_us_per_event": round(self.redis_cpu_s / self.events * 1e6, 2),
            "mean_batch": round(self.events / self.batches, 1) if self.batches else None,
        }


async def redis_cpu(client: coredis.Redis[bytes]) -> float:
    info = await client.info("cpu")
    return float(str(info["used_cpu_user"])) + float(str(info["used_cpu_sys"]))


async def measure(
    name: str,
    client: coredis.Redis[bytes],
    work: Callable[[], Awaitable[tuple[int, int]]],
    events: int,
) -> Row:
    redis_before = await redis_cpu(client)
    cpu_before = time.process_time()
    started = time.perf_counter()
    appended, batches = await work()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    redis_used = await redis_cpu(client) - redis_before
    return Row(name, events, appended, seconds, cpu, redis_used, batches)


def streams(broker: Broker, tag: str, runs: int) -> list[RunStream]:
    return [broker.run_stream("bench", "t1", f"{tag}-{i}") for i in range(runs)]


async def produce(
    runs: list[RunStream], per_run: int, burst: int, append: Callable[[RunStream, int], None]
) -> None:
    """Every run emits ``per_run`` events in bursts of ``burst``, interleaved."""

    async def run(stream: RunStream) -> None:
        for start in range(1, per_run + 1, burst):
            for seq in range(start, min(start + burst, per_run + 1)):
                append(stream, seq)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for stream in runs:
            nursery.start_soon(run, stream)


async def publisher_row(
    broker: Broker, tag: str, args: argparse.Namespace, max_batch: int, gated: bool
) -> tuple[int, int]:
    runs = streams(broker, tag, args.runs)
    per_run = args.events // args.runs
    async with open_publisher(
        broker, capacity=args.events, max_batch=max_batch, gated=gated
    ) as publisher:

        def append(stream: RunStream, seq: int) -> None:
            publisher.append_nowait(stream, seq, PAYLOAD)

        await produce(runs, per_run, args.burst, append)
        await publisher.flush()
        stats = publisher.statistics()
    assert stats.failed == 0, stats
    assert stats.dropped == 0, stats
    return stats.published, stats.batches


async def awaited_row(broker: Broker, tag: str, args: argparse.Namespace) -> tuple[int, int]:
    runs = streams(broker, tag, args.runs)
    per_run = args.events // args.runs
    appended = 0

    async def run(stream: RunStream) -> None:
        nonlocal appended
        for seq in range(1, per_run + 1):
            outcome = await broker.publish([(stream, seq, PAYLOAD)])
            appended += outcome.appended  # after the await: no lost update

    async with trio.open_nursery() as nursery:
        for stream in runs:
            nursery.start_soon(run, stream)
    return appended, args.runs * per_run


async def pipeline_row(
    broker: Broker,
    client: coredis.Redis[bytes],
    tag: str,
    args: argparse.Namespace,
    max_batch: int,
) -> tuple[int, int]:
    """The same batching as the publisher, sent as a pipeline of XADD + EXPIRE."""
    runs = streams(broker, tag, args.runs)
    per_run = args.events // args.runs
    buffer: list[tuple[RunStream, int]] = []
    wakeup = trio.Event()
    done = trio.Event()
    counts = [0, 0]

    def append(stream: RunStream, seq: int) -> None:
        buffer.append((stream, seq))
        wakeup.set()

    async def drain() -> None:
        nonlocal wakeup
        while True:
            if not buffer:
                if done.is_set():
                    return
                await wakeup.wait()
                wakeup = trio.Event()
                continue
            batch = buffer[:max_batch]
            del buffer[:max_batch]
            async with client.pipeline(transaction=False) as pipe:
                for stream, seq in batch:
                    pipe.xadd(
                        stream.key,
                        {"p": PAYLOAD},
                        identifier=f"0-{seq}",
                        trim_strategy=PureToken.MAXLEN,
                        threshold=10_000,
                        trim_operator=PureToken.APPROXIMATELY,
                    )
                for key in {stream.key for stream, _ in batch}:
                    pipe.expire(key, 600)
            counts[0] += len(batch)
            counts[1] += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await produce(runs, per_run, args.burst, append)
        done.set()
        wakeup.set()
    return counts[0], counts[1]


async def main(args: argparse.Namespace) -> int:
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    rows: list[Row] = []
    raw = coredis.Redis.from_url(args.redis_url, stream_timeout=30)
    async with raw, open_broker(args.redis_url, node_id="bench", key_prefix=prefix) as broker:
        await broker.follow("bench", "t1")
        try:
            # Warm-up: scripts loaded, connections made.
            await publisher_row(broker, "warm", _scaled(args, 0.05), 256, True)
            awaited_events = max(args.runs, args.events // 10)
            rows.append(
                await measure(
                    "awaited: one round trip per event",
                    raw,
                    lambda: awaited_row(broker, "awaited", _scaled(args, awaited_events)),
                    awaited_events,
                )
            )
            for max_batch in args.batches:
                rows.append(
                    await measure(
                        f"publisher, max_batch {max_batch}",
                        raw,
                        partial(publisher_row, broker, f"pub{max_batch}", args, max_batch, True),
                        args.events,
                    )
                )
            for max_batch in args.batches:
                rows.append(
                    await measure(
                        f"pipeline XADD+EXPIRE, max_batch {max_batch}",
                        raw,
                        partial(pipeline_row, broker, raw, f"pipe{max_batch}", args, max_batch),
                        args.events,
                    )
                )
            await broker.unfollow("bench", "t1")
            rows.append(
                await measure(
                    "publisher, gated, nobody follows",
                    raw,
                    lambda: publisher_row(broker, "gated", args, max(args.batches), True),
                    args.events,
                )
            )
        finally:
            keys = [key async for key in raw.scan_iter(match=f"{prefix}*", count=1000)]
            if keys:
                await raw.delete(keys)
    report: dict[str, object] = {
        "events": args.events,
        "runs": args.runs,
        "burst": args.burst,
        "payload_bytes": len(PAYLOAD),
        "rows": [row.as_dict() for row in rows],
    }
    lines = [
        "# Broker: cost per published run event",
        "",
        f"{args.events} events over {args.runs} runs in bursts of {args.burst}, "
        f"{len(PAYLOAD)}-byte payloads, every thread followed (except the gated row). "
        "CPU: this process (the broker's side of a server) and Redis's own.",
        "",
        "| how | events/s | µs CPU/event (client) | µs CPU/event (Redis) | mean batch |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        d = row.as_dict()
        lines.append(
            f"| {d['name']} | {d['events_per_s']} | {d['cpu_us_per_event']} | "
            f"{d['redis_cpu_us_per_event']} | {d['mean_batch']} |"
        )
    markdown = "\n".join(lines) + "\n"
    path = write_report(args.report_dir, args.report_name, report, markdown)
    print(markdown)
    print(f"report: {path}")
    return 0


def _scaled(args: argparse.Namespace, events: float) -> argparse.Namespace:
    count = int(events if events >= 1 else args.events * events)
    return argparse.Namespace(**{**vars(args), "events": max(args.runs, count)})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("CHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    parser.add_argument("--events", type=int, default=200_000, help="events per row")
    parser.add_argument("--runs", type=int, default=50, help="concurrent runs (streams)")
    parser.add_argument("--burst", type=int, default=4, help="events a run emits at once")
    parser.add_argument(
        "--batches", type=int, nargs="+", default=[16, 64, 256, 1024], help="max_batch values"
    )
    add_report_arguments(parser, "broker_bench")
    return parser


if __name__ == "__main__":
    raise SystemExit(trio.run(main, build_parser().parse_args()))
