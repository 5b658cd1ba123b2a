"""The parent of ``--workers N``: starts the workers, replaces the dead, stops them all.

Ownership, from the top::

    serve_workers             holds the port (PortReservation) until every worker is gone
    └── supervisor nursery    public admin listener, signal forwarding, the announcement
        └── Supervisor.run
            └── slots nursery one task per worker slot (_keep_running): starts a worker
                │             process, waits for it, and after a death starts the next
                │             one after a backoff (RestartPolicy)
                └── process nursery   while that process runs: reads its stdout (the
                                      listening lines, then whatever comes) and waits
                                      for its exit

Each worker is ``python -m server`` with the parent's own options, ``--port``
the port the parent holds, and ``CHAT_WORKER_INDEX`` in its environment. It is
a complete server (its own listeners on the shared port, its own admin
listener on 127.0.0.1 for the parent), in a process group of its own so that
a terminal's Ctrl-C reaches only the parent, which forwards it. Its stdin is a
pipe from the parent: when the parent dies, even by SIGKILL, the worker reads
end-of-file and drains. Its stderr is the parent's.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

import attrs
import trio

from server._settings import Settings

from ._exposition import (
    MetricFamily,
    Sample,
    aggregate_expositions,
    parse_exposition,
    render_exposition,
    sum_cumulative,
)
from ._policy import RestartPolicy
from ._scrape import http_get

log = logging.getLogger("trio_agent_server.workers")

#: The environment variable that makes ``python -m server`` a worker, and says which.
WORKER_INDEX_ENV = "CHAT_WORKER_INDEX"
#: Seconds a new worker has to print its listening lines before it is killed.
STARTUP_TIMEOUT = 60.0
#: Seconds a stopping worker gets on top of its own bound (--drain-timeout and the
#: close handshakes) before it is killed.
STOP_GRACE = 5.0
#: Seconds the parent waits for one answer from a worker's admin listener.
SCRAPE_TIMEOUT = 2.0
#: Longest stdout line read from a worker.
MAX_LINE = 65536

_LISTENING = re.compile(r"listening on ws://.*:(?P<port>\d+)/ws")
_ADMIN = re.compile(r"admin on http://127\.0\.0\.1:(?P<port>\d+)")


@attrs.frozen
class WorkerCommand:
    """How to start one worker process."""

    argv: tuple[str, ...]
    env: Mapping[str, str]


def worker_command(
    options: Sequence[str], environ: Mapping[str, str], port: int, index: int
) -> WorkerCommand:
    """``python -m server OPTIONS --port PORT`` with ``CHAT_WORKER_INDEX=index``."""
    return WorkerCommand(
        argv=(sys.executable, "-m", "server", *options, "--port", str(port)),
        env={**environ, WORKER_INDEX_ENV: str(index)},
    )


@attrs.frozen
class WorkerStatistics:
    index: int
    #: starting, ready, backoff (waiting to be replaced) or stopped.
    state: str
    pid: int | None
    #: Its internal admin listener (for the parent), while it is ready.
    admin_url: str | None
    #: Replacements started in this slot.
    restarts: int


@attrs.frozen
class SupervisorStatistics:
    workers: tuple[WorkerStatistics, ...]
    draining: bool
    #: Why the supervisor gave up, if it did.
    failure: str | None

    @property
    def ready(self) -> int:
        return sum(1 for worker in self.workers if worker.state == "ready")

    @property
    def restarts(self) -> int:
        return sum(worker.restarts for worker in self.workers)


@attrs.define(eq=False)
class WorkerSlot:
    """One of the N places a worker process runs in; its process changes when replaced."""

    index: int
    state: str = "starting"
    process: trio.Process | None = None
    admin_port: int | None = None
    restarts: int = 0
    #: What this process last answered on /metrics: its totals, should it die.
    last_metrics: list[MetricFamily] | None = None

    def statistics(self) -> WorkerStatistics:
        admin = None if self.admin_port is None else f"http://127.0.0.1:{self.admin_port}"
        pid = None if self.process is None else self.process.pid
        return WorkerStatistics(self.index, self.state, pid, admin, self.restarts)


@attrs.define(eq=False)
class Supervisor:
    """N worker processes serving one port, kept running until told to stop."""

    settings: Settings
    #: The address the workers share (the parent holds it).
    host: str
    port: int
    #: The command of worker ``index``.
    command: Callable[[int], WorkerCommand]
    policy: RestartPolicy = attrs.field(factory=RestartPolicy)
    slots: list[WorkerSlot] = attrs.field(factory=list)
    #: Seconds a new worker has to print its listening lines before it is killed.
    startup_timeout: float = STARTUP_TIMEOUT
    #: The public admin listener's port (None: none).
    admin_port: int | None = None
    #: Why it gave up (workers kept dying), or None.
    failure: str | None = None
    #: Counters and histograms that exited workers left behind.
    _retired: list[MetricFamily] = attrs.field(factory=list)
    _stopping: trio.Event = attrs.field(factory=trio.Event)
    _all_ready: trio.Event = attrs.field(factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        if not self.slots:
            self.slots = [WorkerSlot(i) for i in range(self.settings.workers)]

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def draining(self) -> bool:
        """Stopping: after SIGINT/SIGTERM, or after giving up."""
        return self._stopping.is_set()

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(
            tuple(slot.statistics() for slot in self.slots), self.draining, self.failure
        )

    async def wait_all_ready(self) -> None:
        """Until every worker has been listening at once (the first time only)."""
        await self._all_ready.wait()

    # -- stopping ------------------------------------------------------------------

    def begin_drain(self, signum: int = signal.SIGTERM) -> None:
        """Ask every worker to drain (SIGTERM) and replace none; again: they stop at once."""
        name = signal.Signals(signum).name
        if not self.draining:
            log.info("received %s: draining the workers", name)
            self._stop()
        else:
            log.warning("received %s again: the workers stop now", name)
            self._signal_workers(signal.SIGTERM)

    def give_up(self, reason: str) -> None:
        """Stop replacing workers and drain the others; ``failure`` says why."""
        if self.failure is None:
            self.failure = reason
            log.error("giving up: %s", reason)
        if not self.draining:
            self._stop()

    def _stop(self) -> None:
        self._stopping.set()
        self._signal_workers(signal.SIGTERM)

    def _signal_workers(self, signum: int) -> None:
        for slot in self.slots:
            process = slot.process
            if process is not None and process.returncode is None:
                process.send_signal(signum)

    # -- running ---------------------------------------------------------------------

    async def run(self) -> None:
        """Keep N workers running until stopped; return when every one has exited."""
        async with trio.open_nursery() as outer:
            outer.start_soon(self._kill_when_overdue)
            async with trio.open_nursery() as slots:
                for slot in self.slots:
                    slots.start_soon(self._keep_running, slot)
            outer.cancel_scope.cancel()

    async def _kill_when_overdue(self) -> None:
        """SIGKILL workers still running well past the bound of their own drain."""
        await self._stopping.wait()
        settings = self.settings
        await trio.sleep(settings.drain_timeout + 2 * settings.close_timeout + STOP_GRACE)
        for slot in self.slots:
            process = slot.process
            if process is not None and process.returncode is None:
                log.error(
                    "worker %d (pid %d) is still running long after it was asked to stop: "
                    "killing it",
                    slot.index,
                    process.pid,
                    extra=_worker(slot),
                )
                process.kill()

    async def _keep_running(self, slot: WorkerSlot) -> None:
        while not self.draining:
            started = trio.current_time()
            status = await self._run_once(slot)
            if self.draining:
                log.info("worker %d %s", slot.index, status, extra=_worker(slot))
                break
            now = trio.current_time()
            decision = self.policy.record_death(slot.index, now=now, uptime=now - started)
            if decision.delay is None:
                self.give_up(
                    f"the workers keep dying: {decision.deaths_in_window} exits within "
                    f"{self.policy.window:g} s (the last: worker {slot.index} {status})"
                )
                break
            slot.state = "backoff"
            log.warning(
                "worker %d %s: starting another in %g s",
                slot.index,
                status,
                decision.delay,
                extra=_worker(slot),
            )
            with trio.move_on_after(decision.delay):
                await self._stopping.wait()
            if not self.draining:
                slot.restarts += 1
        slot.state = "stopped"

    async def _run_once(self, slot: WorkerSlot) -> str:
        """Start the slot's worker and wait for it to exit; how it ended, in words."""
        command = self.command(slot.index)
        slot.state = "starting"
        try:
            process = await trio.lowlevel.open_process(
                list(command.argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=dict(command.env),
                process_group=0,
            )
        except OSError as exc:
            log.error("worker %d could not be started: %s", slot.index, exc, extra=_worker(slot))
            return f"could not be started ({exc})"
        slot.process = process
        if self.draining:  # asked to stop while it was being started
            process.send_signal(signal.SIGTERM)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._follow_output, slot, process)
                await process.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:  # we are being cancelled: it goes with us
                    process.kill()
                    await process.wait()
                for pipe in (process.stdin, process.stdout):
                    if pipe is not None:
                        await pipe.aclose()
            slot.process = None
            slot.admin_port = None
            if slot.last_metrics is not None:
                self._retired = sum_cumulative(self._retired, slot.last_metrics)
                slot.last_metrics = None
        return f"(pid {process.pid}) {describe_exit(process.returncode)}"

    async def _follow_output(self, slot: WorkerSlot, process: trio.Process) -> None:
        """Wait for the worker's listening lines (it is ready), then read the rest."""
        assert process.stdout is not None
        lines = _LineReader(process.stdout)
        admin_port = None
        with trio.move_on_after(self.startup_timeout) as startup:
            listening = await lines.readline()
            admin = await lines.readline()
            if listening is None or admin is None:
                return  # it is exiting; _run_once reports how
            admin_port = self._check_startup(slot, listening, admin)
        if startup.cancelled_caught:
            log.error(
                "worker %d (pid %d) did not start listening within %g s: killing it",
                slot.index,
                process.pid,
                self.startup_timeout,
                extra=_worker(slot),
            )
        if admin_port is None:
            process.kill()
            return
        slot.admin_port = admin_port
        slot.state = "ready"
        log.info("worker %d (pid %d) listening", slot.index, process.pid, extra=_worker(slot))
        if all(s.state == "ready" for s in self.slots):
            self._all_ready.set()
        while (line := await lines.readline()) is not None:
            log.info("worker %d printed: %s", slot.index, line, extra=_worker(slot))

    def _check_startup(self, slot: WorkerSlot, listening: str, admin: str) -> int | None:
        """The worker's admin port from its two start-up lines; None if they are wrong."""
        match_listening = _LISTENING.fullmatch(listening)
        match_admin = _ADMIN.fullmatch(admin)
        if match_listening is None or match_admin is None:
            log.error(
                "worker %d started with unexpected lines %r, %r: killing it",
                slot.index,
                listening,
                admin,
                extra=_worker(slot),
            )
            return None
        if int(match_listening["port"]) != self.port:
            log.error(
                "worker %d listens on another port (%r): killing it",
                slot.index,
                listening,
                extra=_worker(slot),
            )
            return None
        return int(match_admin["port"])

    # -- what the admin listener asks ----------------------------------------------------

    async def check_ready(self) -> dict[int, bool]:
        """Whether each worker is ready: listening, and its own /readyz answers 200."""
        answers: dict[int, bool] = {}

        async def ask(slot: WorkerSlot, port: int) -> None:
            answer = await http_get("127.0.0.1", port, "/readyz", within=SCRAPE_TIMEOUT)
            answers[slot.index] = answer is not None and answer[0] == 200

        async with trio.open_nursery() as nursery:
            for slot in self.slots:
                if slot.state == "ready" and slot.admin_port is not None:
                    nursery.start_soon(ask, slot, slot.admin_port)
                else:
                    answers[slot.index] = False
        return dict(sorted(answers.items()))

    async def render_metrics(self) -> str:
        """The workers' /metrics summed (see :mod:`._exposition`), and the supervisor's own."""
        live: dict[int, list[MetricFamily]] = {}
        stale: list[list[MetricFamily]] = []

        async def scrape(slot: WorkerSlot, process: trio.Process, port: int) -> None:
            answer = await http_get("127.0.0.1", port, "/metrics", within=SCRAPE_TIMEOUT)
            families = None
            if answer is not None and answer[0] == 200:
                try:
                    families = parse_exposition(answer[1].decode("utf-8", "replace"))
                except ValueError as exc:
                    log.warning("worker %d: unreadable /metrics: %s", slot.index, exc)
            if slot.process is not process:
                return  # it exited meanwhile: what it last answered is in the retired totals
            if families is None:
                if slot.last_metrics is not None:  # keep its totals, not its gauges
                    stale.append(slot.last_metrics)
                return
            slot.last_metrics = live[slot.index] = families

        async with trio.open_nursery() as nursery:
            for slot in self.slots:
                if slot.process is not None and slot.admin_port is not None:
                    nursery.start_soon(scrape, slot, slot.process, slot.admin_port)
        families = aggregate_expositions(live, sum_cumulative(self._retired, *stale))
        return render_exposition([*families, *self._own_families()])

    def _own_families(self) -> list[MetricFamily]:
        stats = self.statistics()
        return [
            MetricFamily(
                "chat_workers", "gauge", "Worker processes configured (--workers).",
                (Sample("chat_workers", (), len(self.slots)),),
            ),
            MetricFamily(
                "chat_workers_ready", "gauge", "Worker processes listening now.",
                (Sample("chat_workers_ready", (), stats.ready),),
            ),
            MetricFamily(
                "chat_worker_restarts_total", "counter",
                "Worker processes started to replace one that died.",
                (Sample("chat_worker_restarts_total", (), stats.restarts),),
            ),
        ]  # fmt: skip


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def _worker(slot: WorkerSlot) -> dict[str, str]:
    return {"worker": str(slot.index)}


class _LineReader:
    """Lines of a worker's stdout, read on demand; a line is at most MAX_LINE bytes."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._eof = False

    async def readline(self) -> str | None:
        """The next line without its ending, or None at end of file."""
        while b"\n" not in self._buffer and not self._eof and len(self._buffer) < MAX_LINE:
            chunk = await self._stream.receive_some(MAX_LINE)
            self._eof = not chunk
            self._buffer += chunk
        if not self._buffer:
            return None
        end = self._buffer.find(b"\n")
        end = min(len(self._buffer), MAX_LINE) if end < 0 else end
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line.decode("utf-8", "replace").removesuffix("\r")
