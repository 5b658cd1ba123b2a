"""The multi-node soak (``python -m benchmarks.soak --nodes 2 ...``): several servers, one broker.

N ``python -m server`` processes share one Redis (``--broker``, a key prefix
of this run's own) and one PostgreSQL (``--store``; a schema of this run's
own, dropped at the end), each with the soak's faults and short limits.
Steady clients run one request after another on a thread of their own, each
on "its" node; a watcher per steady client (on the next node) subscribes to
that thread and so receives every run across processes; churners come and
go; never-reading clients stall on one node. Part way through, one node is
killed with SIGKILL and, a moment later, started again (a new process).

A client whose node died reconnects to another and resumes the run it was
in (``resume_run`` after the last seq it saw): that run must end, with its
own final event if it was committed before the kill or ``NODE_LOST`` from
the sweep of a surviving node. Checked, over every connection:

- lost runs: a run whose final event never came although the client kept
  (or, after its node died, re-established) a connection (must be 0);
- duplicated or missing events: any seq not exactly one more than the last
  seen for that run on that connection, and a final that is not the last
  (must be 0);
- gauges: each node's four gauges once every client has gone (must be 0).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import attrs
import psycopg
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from ._common import GAUGES, free_port, settled_metrics, write_report

#: Errors of a connection whose node went away (or refused it while starting).
LOST_LINK = (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError)
STARTUP = 30.0


@attrs.define
class NodeStats:
    outcome: Counter[str] = attrs.Factory(Counter)
    finals: Counter[str] = attrs.Factory(Counter)
    lost: list[str] = attrs.Factory(list)
    #: (where, run_id, detail) of every seq out of order and every final not last.
    broken: list[tuple[str, str, str]] = attrs.Factory(list)


@attrs.define
class RunView:
    """What one connection saw of one run."""

    last_seq: int = 0
    final: bool = False
    #: The run_resumed reply's data, for a resumed run (in the report of a lost one).
    reply: dict[str, Any] | None = None

    def take(self, frame: dict[str, Any], where: str, stats: NodeStats) -> None:
        seq = int(frame["seq"])
        what = f"seq {seq} ({frame.get('type')}{', replayed' if frame.get('replay') else ''})"
        if self.final:
            stats.broken.append((where, frame["run_id"], f"{what} after the final event"))
        elif seq != self.last_seq + 1:
            stats.broken.append((where, frame["run_id"], f"{what} after {self.last_seq}"))
        self.last_seq = max(self.last_seq, seq)
        if frame.get("final"):
            self.final = True


@attrs.define(eq=False)
class Node:
    index: int
    command: list[str]
    admin_port: int
    process: trio.Process | None = None
    url: str | None = None
    #: Pids of every process this node has been (for the clean-up).
    pids: list[int] = attrs.Factory(list)

    async def start(self) -> None:
        process = await trio.lowlevel.open_process(self.command, stdout=-1)
        self.process = process
        self.pids.append(process.pid)
        assert process.stdout is not None
        buffer = b""
        with trio.fail_after(STARTUP):
            while b"listening on " not in buffer or not buffer.endswith(b"\n"):
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError(f"node {self.index} exited before listening")
                buffer += chunk
        self.url = buffer.decode().split("listening on ", 1)[1].split()[0]

    def kill(self) -> None:
        self.url = None
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            process.terminate()
        with trio.move_on_after(15):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


@attrs.define(eq=False)
class Cluster:
    nodes: list[Node]
    #: The run each steady client has in flight: (its node's URL, what it saw of it).
    in_flight: dict[int, tuple[str, RunView]] = attrs.Factory(dict)

    def busy(self, node: Node) -> bool:
        """Whether a steady client has a run on ``node`` that has begun and not ended."""
        return any(
            url == node.url and view.last_seq and not view.final
            for url, view in self.in_flight.values()
        )

    def url_for(self, index: int) -> str | None:
        """Node ``index`` (modulo), or the next one up if it is down."""
        count = len(self.nodes)
        for step in range(count):
            url = self.nodes[(index + step) % count].url
            if url is not None:
                return url
        return None


@asynccontextmanager
async def postgres_schema(base_url: str, tag: str) -> Any:
    """A schema of this run's own in ``base_url``'s database; yields the URL that uses it."""
    schema = f"soak_{tag}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _start_frame(run_id: str, thread_id: str, text: str) -> str:
    payload = {"user_request": text, "run_id": run_id, "thread_id": thread_id}
    return json.dumps({"type": "start_agent", "message_id": run_id, "payload": payload})


async def _until_final(ws: Any, run_id: str, view: RunView, where: str, stats: NodeStats,
                       within: float) -> str | None:  # fmt: skip
    """Read until ``run_id``'s final event (its status), an error for it, or ``within`` s."""
    with trio.move_on_after(within):
        while True:
            frame = json.loads(await ws.get_message())
            if frame.get("type") == "error_message" and frame.get("message_id") == run_id:
                return f"error_{frame.get('error_code')}"
            if frame.get("type") == "run_resumed":
                view.reply = frame["data"]
            if frame.get("run_id") != run_id or "seq" not in frame:
                continue
            view.take(frame, where, stats)
            if frame.get("final"):
                error = (frame["data"].get("error") or {}).get("code")
                return "NODE_LOST" if error == "NODE_LOST" else str(frame["data"]["status"])
    return None


async def steady(cluster: Cluster, index: int, tag: str, until: float, deadline: float,
                 stats: NodeStats, rng: random.Random,
                 requests: tuple[str, ...]) -> None:  # fmt: skip
    """Runs one after another on thread ``soak-{index}``; after a lost node, resumes and goes on."""
    user, thread = f"steady{index}-{tag}", f"soak-{index}"
    pending: tuple[str, RunView] | None = None
    n = 0
    while trio.current_time() < until or pending is not None:
        url = cluster.url_for(index)
        if url is None:
            await trio.sleep(0.2)
            continue
        try:
            async with open_websocket_url(f"{url}?user_id={user}") as ws:
                await ws.get_message()
                if pending is not None:
                    run_id, view = pending
                    after = view.last_seq
                    await ws.send_message(json.dumps({"type": "resume_run", "message_id": run_id,
                        "payload": {"run_id": run_id, "after_seq": view.last_seq}}))  # fmt: skip
                    status = await _until_final(ws, run_id, view, "resume", stats, deadline)
                    if status is None or (status.startswith("error_") and view.last_seq):
                        stats.lost.append(f"{run_id} (resumed after {after}: {view.reply}, "
                                          f"then up to seq {view.last_seq})")  # fmt: skip
                    stats.finals[f"resumed_{status}"] += 1
                    pending = None
                while trio.current_time() < until:
                    n += 1
                    run_id, view = f"s{index}-{n}", RunView()
                    pending = (run_id, view)
                    cluster.in_flight[index] = (url, view)
                    await ws.send_message(_start_frame(run_id, thread, rng.choice(requests)))
                    status = await _until_final(ws, run_id, view, "live", stats, deadline)
                    if status == "error_THREAD_BUSY":  # a dead node's run, not swept yet
                        stats.outcome["thread_busy"] += 1
                        pending = None
                        await trio.sleep(0.2)
                        continue
                    if status is None:
                        stats.lost.append(run_id)  # connection open, no final event
                    stats.finals[str(status)] += 1
                    pending = None
                    await trio.sleep(rng.uniform(0, 0.2))
        except LOST_LINK:
            stats.outcome["steady_reconnects"] += 1
            await trio.sleep(0.1)


async def watcher(cluster: Cluster, index: int, tag: str, until: float, deadline: float,
                  stats: NodeStats) -> None:  # fmt: skip
    """Subscribed, from the next node, to steady client ``index``'s thread: every run whole."""
    user, thread = f"steady{index}-{tag}", f"soak-{index}"
    while trio.current_time() < until:
        url = cluster.url_for(index + 1)
        if url is None:
            await trio.sleep(0.2)
            continue
        views: dict[str, RunView] = {}
        try:
            async with open_websocket_url(f"{url}?user_id={user}") as ws:
                await ws.get_message()
                if not await _subscribe(ws, thread, until, views, stats):
                    return
                stats.outcome["watch_subscribed"] += 1
                with trio.move_on_after(max(0.0, until - trio.current_time())):
                    while True:
                        _watch(json.loads(await ws.get_message()), views, stats)
                # Over: the runs in flight get their final event, then the watcher leaves.
                with trio.move_on_after(deadline):
                    while any(not v.final for v in views.values()):
                        _watch(json.loads(await ws.get_message()), views, stats)
                stats.lost += [f"watch:{r}" for r, v in views.items() if not v.final]
                return
        except LOST_LINK as exc:
            stats.outcome["watch_reconnects"] += 1
            code = getattr(getattr(exc, "reason", None), "code", None)
            stats.outcome[f"watch_closed_{code or type(exc).__name__}"] += 1
            await trio.sleep(0.1)


async def _subscribe(ws: Any, thread: str, until: float, views: dict[str, RunView],
                     stats: NodeStats) -> bool:  # fmt: skip
    """Subscribe to ``thread``; False if the soak ended first.

    A run that starts on the thread while the subscription is being recorded
    may send events before the reply: they are the subscription's already.
    """
    while trio.current_time() < until:
        await ws.send_message(json.dumps({"type": "subscribe_thread", "message_id": "sub",
                                          "payload": {"thread_id": thread}}))  # fmt: skip
        while True:
            frame = json.loads(await ws.get_message())
            if "seq" in frame:
                _watch(frame, views, stats)
            elif frame.get("message_id") == "sub":
                break
        if frame.get("type") == "thread_subscribed":
            return True
        await trio.sleep(0.3)  # the thread has no run yet (THREAD_NOT_FOUND), or a blip
    return False


def _watch(frame: dict[str, Any], views: dict[str, RunView], stats: NodeStats) -> None:
    run_id = frame.get("run_id")
    if run_id is None or "seq" not in frame:
        return
    view = views.setdefault(str(run_id), RunView())
    view.take(frame, "watch", stats)
    if frame.get("final"):
        stats.outcome["watch_finals"] += 1
        if (frame["data"].get("error") or {}).get("code") == "NODE_LOST":
            stats.outcome["watch_node_lost"] += 1


async def churner(cluster: Cluster, index: int, tag: str, until: float, stats: NodeStats,
                  rng: random.Random, requests: tuple[str, ...]) -> None:  # fmt: skip
    """Connects to a node, starts a run, leaves at a random moment; again and again."""
    n = 0
    while trio.current_time() < until:
        n += 1
        url = cluster.url_for(index + n)
        if url is None:
            await trio.sleep(0.2)
            continue
        try:
            async with open_websocket_url(f"{url}?user_id=churn{index}-{tag}") as ws:
                await ws.get_message()
                await ws.send_message(json.dumps({"type": "chat", "payload": {
                    "content": rng.choice(requests)}}))  # fmt: skip
                with trio.move_on_after(rng.uniform(0, 0.5)):
                    while not json.loads(await ws.get_message()).get("final"):
                        pass
            stats.outcome["churn_cycles"] += 1
        except LOST_LINK:
            stats.outcome["churn_errors"] += 1


async def run_nodes(args: argparse.Namespace, server_args: list[str], faults: tuple[str, ...],
                    requests: tuple[str, ...], never_reader: Any) -> int:  # fmt: skip
    """The multi-node soak (see the module doc); writes the report, returns the exit status."""
    tag = uuid.uuid4().hex[:10]
    stats = NodeStats()
    rng = random.Random(args.seed)
    victim = 0
    lease = args.lease_seconds
    async with postgres_schema(args.store, tag) as store:
        nodes = [
            Node(i, [
                sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", "0",
                "--admin-port", str(port), "--log-level", "WARNING", *server_args,
                "--max-connections-per-user=20", f"--broker={args.broker}",
                f"--broker-prefix=soak:{tag}:", f"--lease-seconds={lease:g}", f"--store={store}",
            ], port)
            for i, port in enumerate(free_port() for _ in range(args.nodes))
        ]  # fmt: skip
        cluster = Cluster(nodes)
        killed_at = restarted_at = 0.0
        started = time.perf_counter()
        try:
            async with trio.open_nursery() as starting:
                for node in nodes:
                    starting.start_soon(node.start)
            until = trio.current_time() + args.seconds
            deadline = 9.0 + lease  # run timeout 4 s, + the sweep of a dead node's runs

            async def kill_and_restart() -> None:
                nonlocal killed_at, restarted_at
                await trio.sleep(args.seconds * args.kill_at)
                with trio.move_on_after(5):  # kill it mid-run: while one of its runs is going
                    while not cluster.busy(nodes[victim]):  # noqa: ASYNC110 (clients' state)
                        await trio.sleep(0.005)
                nodes[victim].kill()
                killed_at = time.perf_counter() - started
                dead = nodes[victim].process
                assert dead is not None
                await dead.wait()
                await trio.sleep(args.restart_after)
                await nodes[victim].stop()
                await nodes[victim].start()
                restarted_at = time.perf_counter() - started

            with trio.fail_after(args.seconds + 60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(kill_and_restart)
                    for i in range(args.clients):
                        nursery.start_soon(steady, cluster, i, tag, until, deadline, stats,
                                           random.Random(rng.random()), requests)  # fmt: skip
                        if i < args.watchers:
                            nursery.start_soon(watcher, cluster, i, tag, until, deadline, stats)
                    for i in range(args.churners):
                        nursery.start_soon(churner, cluster, i, tag, until, stats,
                                           random.Random(rng.random()), requests)  # fmt: skip
                    survivor = nodes[(victim + 1) % len(nodes)]
                    assert survivor.url is not None
                    host, port = survivor.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
                    for i in range(args.slow):
                        nursery.start_soon(never_reader, host, int(port), i, until, stats)
            elapsed = time.perf_counter() - started
            finals = [await settled_metrics(node.admin_port, within=15) for node in nodes]
        finally:
            for node in nodes:
                await node.stop()

    gauges = {f"node{n.index}": {g: finals[n.index][g] for g in GAUGES} for n in nodes}
    closes = {k.split('"')[1]: int(v) for k, v in finals[(victim + 1) % len(nodes)].items()
              if k.startswith("chat_connections_closed_total") and v}  # fmt: skip
    checks = {
        "lost runs == 0": not stats.lost,
        "duplicated or missing events == 0": not stats.broken,
        "every node's four gauges 0 with no clients": all(
            value == 0 for node in gauges.values() for value in node.values()
        ),
        "a node was killed and restarted mid-run": bool(killed_at and restarted_at),
        "runs of the killed node ended NODE_LOST via the others": stats.finals["resumed_NODE_LOST"]
        + stats.outcome["watch_node_lost"]
        > 0,
    }
    if args.seconds >= 10 and args.slow:
        checks["every never-reading client was closed with 1013"] = closes.get("1013", 0) >= (
            args.slow
        )
    report: dict[str, Any] = {
        "nodes": args.nodes, "seconds": args.seconds, "clients": args.clients,
        "watchers": min(args.watchers, args.clients), "churners": args.churners,
        "never_readers": args.slow, "faults": list(faults), "lease_seconds": lease,
        "elapsed_s": round(elapsed, 1), "killed_at_s": round(killed_at, 1),
        "restarted_at_s": round(restarted_at, 1), "finals_seen": dict(stats.finals),
        "client_outcomes": dict(stats.outcome), "lost_runs": stats.lost,
        "broken_sequences": stats.broken[:50], "closes_by_code_survivor": closes,
        "final_gauges": gauges, "checks": checks,
    }  # fmt: skip
    lines = [
        "# Soak report, several nodes", "",
        f"- {args.seconds:g} s, {args.nodes} nodes on one broker and one PostgreSQL "
        f"(lease {lease:g} s): {args.clients} steady clients, "
        f"{report['watchers']} watchers on another node, {args.churners} churners, "
        f"{args.slow} never-reading clients; faults {', '.join(faults)}",
        f"- node {victim} killed (SIGKILL) at {killed_at:.1f} s, started again at "
        f"{restarted_at:.1f} s",
        f"- final events seen by the steady clients: {dict(sorted(stats.finals.items()))}",
        f"- client outcomes: {dict(sorted(stats.outcome.items()))}",
        f"- closes by code (a surviving node): {closes}",
        f"- lost runs: {len(stats.lost)}; duplicated or missing events: {len(stats.broken)}",
        f"- gauges at the end: {gauges}", "",
        *[f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in checks.items()],
    ]  # fmt: skip
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    print(f"report: {write_report(args.report_dir, args.report_name, report, markdown)}")
    return 0 if all(checks.values()) else 1
