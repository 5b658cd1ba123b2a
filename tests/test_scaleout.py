"""Two ``python -m server`` processes on one Redis and one PostgreSQL, as two machines.

Each test starts two real server processes on loopback (distinct ports)
sharing the real Redis (a key prefix of the test's own, ``--broker-prefix``)
and the real PostgreSQL (a schema of the test's own, in the store URL). A
user with a connection on each process resumes and subscribes across them,
stops a run of the other process and meets one connection limit; one
process killed with SIGKILL has its runs ended ``NODE_LOST`` by the other and
its user slots freed within ``--lease-seconds``; Redis blocked mid-load makes
both unready, refuses what crosses processes with ``BROKER_UNAVAILABLE``, and
both recover without a restart.

Runs are held by ``tests/_paced_plugin.py``: a ``paced`` run with ``gate``
in its request connects to this test's gate listener, says its run id, and
waits there until the test releases it, so the test knows when a run is in
flight on which process and decides when it ends, without sleeping.

Needs Redis and PostgreSQL (``CHAT_TEST_REDIS_URL``, ``CHAT_TEST_POSTGRES_URL``):
skipped with the reason where they do not answer, failed when ``CI`` is set.
Every server process is killed at the test's teardown, whether it passed or
not (each test is bounded by ``trio.fail_after`` below pytest-timeout's cap,
and a plain fixture kills what is left should pytest-timeout strike anyway).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from _paced_plugin import AT_GATE, PACED_EVENTS
from _procs import LineReader, reap, server_env
from _redis import TcpProxy, delete_prefix, eventually, new_prefix, redis_test_url
from _store import postgres_schema

from server.protocol import ConnectionClosed
from server.testing import ChatClient, open_chat_client
from server.workers import parse_exposition
from server.workers._scrape import http_get

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
#: Two fresh interpreters at once on a loaded 2-core machine can take a while.
STARTUP = 30.0
WAIT = 20.0
#: The lease of the tests where a process dies: its slots and runs are freed this soon.
SHORT_LEASE = 1.0
#: Longer than the Redis outage of the outage test: no node is taken for dead meanwhile.
LONG_LEASE = 15.0
#: What a process may take beyond a deadline to notice (scheduling on a busy machine).
SLACK = 1.5
#: The broker's call deadline and health interval (server defaults) bound how soon
#: an outage is noticed.
BROKER_NOTICES_WITHIN = 2.0 + 1.0 + SLACK
LISTENING = re.compile(r"listening on (?P<url>ws://\S+)")
ADMIN = re.compile(r"admin on http://127\.0\.0\.1:(?P<port>\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the gate ---------------------------------------------------------------------------


class Gate:
    """Where gated ``paced`` runs wait: a TCP listener; one connection per run."""

    def __init__(self) -> None:
        self.port = 0
        self._arrived: dict[str, trio.Event] = {}
        self._released: dict[str, trio.Event] = {}

    def _event(self, events: dict[str, trio.Event], run_id: str) -> trio.Event:
        return events.setdefault(run_id, trio.Event())

    async def serve(self, *, task_status: trio.TaskStatus[Gate] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            await trio.serve_listeners(self._hold, listeners, handler_nursery=nursery)

    async def _hold(self, stream: trio.SocketStream) -> None:
        """One run at the gate: held until released (the listener closes the stream after)."""
        run_id = await LineReader(stream).readline()
        if run_id is None:
            return
        self._event(self._arrived, run_id).set()
        await self._event(self._released, run_id).wait()
        # The run may be over already (stopped, or its process died).
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(b"!")

    async def reached(self, run_id: str) -> None:
        """Wait until ``run_id`` waits at the gate (it has sent AT_GATE events)."""
        await self._event(self._arrived, run_id).wait()

    def release(self, run_id: str) -> None:
        self._event(self._released, run_id).set()


# -- server processes ------------------------------------------------------------------------


@attrs.define(eq=False)
class Node:
    """One ``python -m server`` process."""

    name: str
    process: trio.Process
    log: Path
    url: str = ""
    admin_port: int = 0

    def ws(self, user_id: str) -> str:
        return f"{self.url}?user_id={user_id}"

    async def get(self, path: str) -> tuple[int, bytes]:
        answer = await http_get("127.0.0.1", self.admin_port, path, within=WAIT)
        assert answer is not None, f"{self.name}: no answer to GET {path}"
        return answer

    async def ready(self) -> bool:
        return (await self.get("/readyz"))[0] == 200

    async def gauge(self, name: str) -> float:
        _, body = await self.get("/metrics")
        for family in parse_exposition(body.decode()):
            for sample in family.samples:
                if sample.name == name and not sample.labels:
                    return sample.value
        raise AssertionError(f"{self.name}: no {name} in /metrics")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@attrs.define(eq=False)
class Cluster:
    """What the test's server processes share, and the means to start them."""

    store_url: str
    redis_url: str
    prefix: str
    gate: Gate
    tmp_path: Path
    nodes: list[Node] = attrs.field(factory=list)

    async def start(
        self, name: str, *, lease: float, limit: int = 10, redis_url: str | None = None
    ) -> Node:
        """A server process on the shared store and broker; returns once it listens."""
        command = [
            sys.executable, "-m", "server", "--port", "0", "--admin-port", str(free_port()),
            "--store", self.store_url, "--broker", redis_url or self.redis_url,
            "--broker-prefix", self.prefix, "--lease-seconds", str(lease),
            "--max-connections-per-user", str(limit), "--heartbeat-interval", "0",
            "--rate-limit", "0", "--plugin", "tests._paced_plugin",
        ]  # fmt: skip
        log = self.tmp_path / f"{name}.log"
        with log.open("ab") as stderr:
            process = await trio.lowlevel.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=ROOT,
                env=server_env(GATE_PORT=str(self.gate.port)),
            )
        _STARTED.append(process.pid)
        node = Node(name, process, log)
        self.nodes.append(node)
        assert process.stdout is not None
        lines = LineReader(process.stdout, errors="replace")
        with trio.fail_after(STARTUP):
            listening = await lines.readline()
            admin = await lines.readline()
        assert listening is not None, f"{name} exited before listening:\n{node.tail()}"
        assert admin is not None, f"{name} printed no admin line:\n{node.tail()}"
        found, admin_found = LISTENING.fullmatch(listening), ADMIN.fullmatch(admin)
        assert found is not None, listening
        assert admin_found is not None, admin
        node.url, node.admin_port = found["url"], int(admin_found["port"])
        return node

    async def start_pair(self, *, lease: float, limit: int = 10,
                         redis_url: str | None = None) -> tuple[Node, Node]:  # fmt: skip
        """Two processes, started at once (each interpreter's start-up is the slow part)."""
        started: dict[str, Node] = {}

        async def one(name: str) -> None:
            started[name] = await self.start(name, lease=lease, limit=limit, redis_url=redis_url)

        async with trio.open_nursery() as nursery:
            for name in ("a", "b"):
                nursery.start_soon(one, name)
        return started["a"], started["b"]


#: Every server process the tests started, by pid (see the fixture below).
_STARTED: list[int] = []


@pytest.fixture(autouse=True)
def _no_server_outlives_its_test() -> Iterator[None]:
    """Kill any server process of the test still running once the test is over.

    The async fixture below reaps them; this plain one also runs after a test
    that pytest-timeout interrupted, where the async teardown cannot.
    """
    yield
    while _STARTED:
        pid = _STARTED.pop()
        with contextlib.suppress(OSError):
            if b"server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def store_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture
async def cluster(nursery: trio.Nursery, store_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    redis_url = redis_test_url()
    prefix = new_prefix()
    gate: Gate = await nursery.start(Gate().serve)
    shared = Cluster(store_url, redis_url, prefix, gate, tmp_path)
    try:
        yield shared
    finally:
        await reap([node.process for node in shared.nodes], WAIT)
        await delete_prefix(redis_url, prefix)


# -- helpers ------------------------------------------------------------------------------


def seqs(events: Any) -> list[int]:
    return [int(event["seq"]) for event in events]


def without_replay(event: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in event.items() if key != "replay"}


def error_code(event: dict[str, Any]) -> str | None:
    error = event["data"].get("error") or {}
    code = error.get("code")
    return None if code is None else str(code)


async def ping(client: ChatClient, message_id: str) -> None:
    """The connection still answers (and nothing unexpected arrived before the pong)."""
    await client.send({"type": "ping", "message_id": message_id})
    assert (await client.receive_frame("pong"))["message_id"] == message_id


async def connect_outcome(url: str) -> int | None:
    """None if a connection is accepted (and closed again), else its close code."""
    try:
        async with open_chat_client(url, receive_timeout=WAIT):
            return None
    except ConnectionClosed as refused:
        return refused.code


async def open_when_free(stack: AsyncExitStack, url: str, *, within: float) -> ChatClient:
    """A connection to ``url`` (held by ``stack``), asked for again while refused (1008).

    For slots given back by another process (a connection closing there, or a
    lease running out on Redis's clock): nothing here could signal them. The
    bound is a deadline rather than a cancel scope, which the connections
    entered into ``stack`` must outlive.
    """
    deadline = trio.current_time() + within
    while True:
        try:
            return await stack.enter_async_context(open_chat_client(url, receive_timeout=WAIT))
        except ConnectionClosed as refused:
            if refused.code != 1008:
                raise
        if trio.current_time() > deadline:
            raise AssertionError(f"{url}: still refused after {within} s")
        await trio.sleep(0.05)


# -- (a) resume and subscribe across the processes ---------------------------------------------


async def test_a_user_resumes_and_subscribes_across_two_processes_without_loss_or_repeat(
    cluster: Cluster,
) -> None:
    gate = cluster.gate
    with trio.fail_after(45):
        a, b = await cluster.start_pair(lease=SHORT_LEASE)
        async with (
            open_chat_client(a.ws("u"), receive_timeout=WAIT) as on_a,
            open_chat_client(b.ws("u"), receive_timeout=WAIT) as on_b,
        ):
            # A run on a, resumed on b while it waits at its gate, from seq 2.
            run_id = await on_a.start("gate", agent_name="paced", thread_id="t-a")
            await gate.reached(run_id)
            resumed = await on_b.resume(run_id, after_seq=2)
            assert resumed["data"]["live"] is True
            gate.release(run_id)
            mine = await on_a.collect(run_id)
            theirs = await on_b.collect(run_id)
            assert mine.status == theirs.status == "completed"
            assert seqs(mine.events) == list(range(1, PACED_EVENTS + 1))
            assert seqs(theirs.events) == list(range(3, PACED_EVENTS + 1))
            assert [without_replay(e) for e in theirs.events] == list(mine.events[2:])

            # A thread of b's, subscribed to on a: b's next run there arrives whole.
            first = await on_b.run("first", agent_name="paced", thread_id="t-b")
            assert first.status == "completed"
            reply = await on_a.subscribe("t-b")
            assert reply["type"] == "thread_subscribed"
            second = await on_b.start("gate", agent_name="paced", thread_id="t-b")
            await gate.reached(second)
            gate.release(second)
            mine = await on_b.collect(second)
            theirs = await on_a.collect(second)
            assert seqs(theirs.events) == seqs(mine.events) == list(range(1, PACED_EVENTS + 1))
            assert [without_replay(e) for e in theirs.events] == list(mine.events)
            # Nothing more of either run arrives later on either connection.
            await ping(on_a, "after-a")
            await ping(on_b, "after-b")
        assert not [f for f in on_a.frames + on_b.frames if f["type"] == "error_message"]


# -- (b) stop_agent across the processes -------------------------------------------------------


async def test_stop_agent_on_one_process_stops_a_run_on_the_other(cluster: Cluster) -> None:
    with trio.fail_after(45):
        a, b = await cluster.start_pair(lease=SHORT_LEASE)
        async with (
            open_chat_client(a.ws("u"), receive_timeout=WAIT) as on_a,
            open_chat_client(b.ws("u"), receive_timeout=WAIT) as on_b,
        ):
            run_id = await on_a.start("gate", agent_name="paced")
            await cluster.gate.reached(run_id)
            await on_b.stop(run_id)
            stopped = await on_a.collect(run_id)
            await ping(on_b, "after-stop")
        assert stopped.status == "cancelled"
        assert error_code(stopped.final) == "CANCELLED"
        assert seqs(stopped.events) == list(range(1, len(stopped.events) + 1))
        assert not [f for f in on_b.frames if f["type"] == "error_message"]
        assert await a.gauge("chat_runs_active") == 0


# -- (c) one per-user limit across the processes ------------------------------------------------


async def test_the_per_user_limit_holds_across_both_under_concurrent_connects(
    cluster: Cluster,
) -> None:
    limit, attempts = 3, 10
    with trio.fail_after(45):
        a, b = await cluster.start_pair(lease=SHORT_LEASE, limit=limit)
        accepted: list[str] = []
        refused: list[int] = []
        decided = trio.Event()
        leave = trio.Event()

        async def connect(node: Node) -> None:
            try:
                async with open_chat_client(node.ws("u"), receive_timeout=WAIT) as client:
                    accepted.append(node.name)
                    if len(accepted) + len(refused) == attempts:
                        decided.set()
                    await leave.wait()  # hold the slot until every attempt is decided
                    await ping(client, "held")
            except ConnectionClosed as exc:
                refused.append(exc.code)
                if len(accepted) + len(refused) == attempts:
                    decided.set()

        async with trio.open_nursery() as nursery:
            for n in range(attempts):
                nursery.start_soon(connect, (a, b)[n % 2])
            await decided.wait()
            assert len(accepted) == limit
            assert refused == [1008] * (attempts - limit)
            leave.set()
        # Every slot is given back (each once its connection has closed on its
        # process): the limit's worth of connections is welcome again, no more.
        async with AsyncExitStack() as stack:
            for node in (a, b, a):
                await open_when_free(stack, node.ws("u"), within=WAIT)
            assert await connect_outcome(b.ws("u")) == 1008


# -- (d) SIGKILL of one process mid-run ---------------------------------------------------------


async def hold_connection(nursery: trio.Nursery, url: str) -> ChatClient:
    """A connection of the process that will be killed, held open in ``nursery``'s task.

    (Not ``nursery.start``: a task that moves nurseries must not hold the
    client's own nursery open across the move.)
    """
    opened: list[ChatClient] = []
    ready = trio.Event()

    async def hold() -> None:
        try:
            async with open_chat_client(url, receive_timeout=WAIT) as client:
                opened.append(client)
                ready.set()
                await trio.sleep_forever()
        except (ConnectionClosed, trio.BrokenResourceError, OSError):
            pass  # its process was killed under it
        finally:
            ready.set()

    nursery.start_soon(hold)
    await ready.wait()
    assert opened, f"could not connect to {url}"
    return opened[0]


async def test_sigkill_of_one_process_mid_run_its_runs_end_node_lost_via_the_other(
    cluster: Cluster,
) -> None:
    gate, limit = cluster.gate, 3
    with trio.fail_after(45):
        a, b = await cluster.start_pair(lease=SHORT_LEASE, limit=limit)
        async with (
            open_chat_client(b.ws("k"), receive_timeout=WAIT) as k_on_b,
            open_chat_client(b.ws("other"), receive_timeout=WAIT) as other_on_b,
            trio.open_nursery() as nursery,
        ):
            # k holds two connections on a (with two runs there) and one on b: the limit.
            k1 = await hold_connection(nursery, a.ws("k"))
            k2 = await hold_connection(nursery, a.ws("k"))
            assert await connect_outcome(b.ws("k")) == 1008
            first = await k1.run("straight through", agent_name="paced", thread_id="t-sub")
            assert first.status == "completed"
            # On b: a subscriber to the thread of one of a's runs, a resume of the other.
            await k_on_b.subscribe("t-sub")
            subscribed = await k1.start("gate", agent_name="paced", thread_id="t-sub")
            resumed = await k2.start("gate", agent_name="paced", thread_id="t-res")
            await gate.reached(subscribed)
            await gate.reached(resumed)
            reply = await k_on_b.resume(resumed, after_seq=0)
            assert reply["data"]["live"] is True
            await k_on_b.wait_event(subscribed, "agent_thinking")
            # b's own client has a run in flight too.
            own = await other_on_b.start("gate", agent_name="paced")
            await gate.reached(own)

            a.kill()
            killed_at = trio.current_time()
            with trio.fail_after(WAIT):
                assert await a.process.wait() == -signal.SIGKILL
            for lost in (k1, k2):  # closed without a close frame
                assert (await lost.wait_closed())[0] == 1006

            # Within the lease, a's two slots of k are free (b's connection holds the third).
            async with AsyncExitStack() as held:
                await open_when_free(held, b.ws("k"), within=SHORT_LEASE + SLACK)
                freed_after = trio.current_time() - killed_at
                await open_when_free(held, b.ws("k"), within=SLACK)
                assert await connect_outcome(b.ws("k")) == 1008

            # Both of a's runs end NODE_LOST on b: one final each, after what they had sent.
            for run_id in (subscribed, resumed):
                ended = await k_on_b.collect(run_id)
                assert ended.status == "failed"
                assert error_code(ended.final) == "NODE_LOST"
                assert [e["final"] for e in ended.events].count(True) == 1
                assert seqs(ended.events) == list(range(1, len(ended.events) + 1))
                assert len(ended.events) > AT_GATE
            swept_after = trio.current_time() - killed_at

            # b's own run never noticed: it completes whole once released.
            gate.release(own)
            whole = await other_on_b.collect(own)
            assert whole.status == "completed"
            assert seqs(whole.events) == list(range(1, PACED_EVENTS + 1))
            again = await other_on_b.run("straight through", agent_name="paced")
            assert again.status == "completed"
            # What history says of a's runs, read through b: ended once, the same events.
            for run_id in (subscribed, resumed):
                live = k_on_b.events(run_id)
                reread = await k_on_b.resume(run_id, after_seq=0)
                assert reread["data"]["live"] is False
                assert reread["data"]["status"] == "failed"
                history = await k_on_b.collect(run_id)
                assert [without_replay(e) for e in history.events] == [
                    without_replay(e) for e in live
                ]
            await ping(k_on_b, "still-here")
            nursery.cancel_scope.cancel()
        assert await b.gauge("chat_runs_active") == 0
    print(f"slots freed {freed_after:.2f} s, runs swept {swept_after:.2f} s after the kill")
    assert freed_after <= SHORT_LEASE + SLACK


# -- (e) Redis blocked mid-load ------------------------------------------------------------------


@attrs.define(eq=False)
class Load:
    """Runs one after another on one client (a process's own load), and when each ended."""

    client: ChatClient
    completed: list[float] = attrs.field(factory=list)
    _more: trio.Event = attrs.field(factory=trio.Event)

    async def serve(self, stop: trio.Event) -> None:
        while not stop.is_set():
            run = await self.client.run("straight through", agent_name="paced")
            assert run.status == "completed", run.final
            assert seqs(run.events) == list(range(1, PACED_EVENTS + 1))
            self.completed.append(trio.current_time())
            self._more.set()
            self._more = trio.Event()

    async def wait_completed_after(self, moment: float) -> None:
        while not (self.completed and self.completed[-1] > moment):
            await self._more.wait()

    def between(self, start: float, end: float) -> int:
        return sum(start <= t <= end for t in self.completed)


async def test_redis_blocked_mid_load_no_hang_clear_errors_recovery_without_restart(
    cluster: Cluster, nursery: trio.Nursery
) -> None:
    gate = cluster.gate
    proxy: TcpProxy = await nursery.start(TcpProxy(cluster.redis_url).serve)
    with trio.fail_after(45):
        a, b = await cluster.start_pair(lease=LONG_LEASE, redis_url=proxy.url)
        pids = (a.process.pid, b.process.pid)
        assert await a.ready()
        assert await b.ready()
        async with (
            open_chat_client(a.ws("e"), receive_timeout=WAIT) as e_on_a,
            open_chat_client(b.ws("e"), receive_timeout=WAIT) as e_on_b,
            open_chat_client(a.ws("load-a"), receive_timeout=WAIT) as load_a,
            open_chat_client(b.ws("load-b"), receive_timeout=WAIT) as load_b,
            trio.open_nursery() as load,
        ):
            stop_load = trio.Event()
            loads = (Load(load_a), Load(load_b))
            for each in loads:
                load.start_soon(each.serve, stop_load)
            # Two runs of a in flight: one followed on b across the outage, one to stop.
            followed = await e_on_a.start("gate", agent_name="paced", thread_id="t-f")
            to_stop = await e_on_a.start("gate", agent_name="paced", thread_id="t-s")
            await gate.reached(followed)
            await gate.reached(to_stop)
            assert (await e_on_b.resume(followed, after_seq=0))["data"]["live"] is True

            proxy.block()
            blocked_at = trio.current_time()

            # Both notice, with nothing asked of them: /readyz 503, naming the broker.
            async def both_unready() -> bool:
                return not (await a.ready() or await b.ready())

            with trio.fail_after(BROKER_NOTICES_WITHIN):
                await eventually(both_unready, interval=0.1)
            noticed_after = trio.current_time() - blocked_at
            status, body = await b.get("/readyz")
            assert status == 503
            assert b'"broker":false' in body.replace(b" ", b"")

            # What crosses processes is refused at once, with its error code.
            with trio.fail_after(SLACK):
                await e_on_b.send({"type": "stop_agent", "message_id": "stop-1",
                                   "payload": {"run_id": to_stop}})  # fmt: skip
                refused = await e_on_b.receive_frame("error_message")
            assert refused["message_id"] == "stop-1"
            assert refused["error_code"] == "BROKER_UNAVAILABLE"
            with trio.fail_after(SLACK):
                await e_on_a.send({"type": "subscribe_thread", "message_id": "sub-1",
                                   "payload": {"thread_id": "t-f"}})  # fmt: skip
                refused = await e_on_a.receive_frame("error_message")
            assert refused["message_id"] == "sub-1"
            assert refused["error_code"] == "BROKER_UNAVAILABLE"

            # What stays in one process goes on: connections, new connections, runs.
            await ping(e_on_a, "during-a")
            await ping(e_on_b, "during-b")
            with trio.fail_after(SLACK):
                assert await connect_outcome(b.ws("newcomer")) is None
            mark = trio.current_time()
            with trio.fail_after(WAIT):
                for each in loads:
                    await each.wait_completed_after(mark)
            assert await both_unready()

            proxy.unblock()
            unblocked_at = trio.current_time()

            async def both_ready() -> bool:
                return await a.ready() and await b.ready()

            with trio.fail_after(BROKER_NOTICES_WITHIN):
                await eventually(both_ready, interval=0.1)
            recovered_after = trio.current_time() - unblocked_at

            # Recovered without a restart: the run followed across the outage arrives whole.
            gate.release(followed)
            theirs = await e_on_b.collect(followed)
            mine = await e_on_a.collect(followed)
            assert seqs(theirs.events) == seqs(mine.events) == list(range(1, PACED_EVENTS + 1))
            assert [without_replay(e) for e in theirs.events] == list(mine.events)
            # ... and what crosses processes works again.
            await e_on_b.stop(to_stop)
            stopped = await e_on_a.collect(to_stop)
            assert error_code(stopped.final) == "CANCELLED"
            assert (await e_on_a.subscribe("t-f"))["type"] == "thread_subscribed"
            stop_load.set()
        assert (a.process.pid, b.process.pid) == pids
        assert a.process.returncode is None
        assert b.process.returncode is None
        for node in (a, b):
            assert await node.gauge("chat_runs_active") == 0
        outage = unblocked_at - blocked_at
        during = [each.between(blocked_at, unblocked_at) for each in loads]
    print(
        f"outage {outage:.2f} s, unready after {noticed_after:.2f} s, runs completed during it "
        f"{during}, ready again {recovered_after:.2f} s after"
    )
