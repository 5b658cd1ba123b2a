"""Helpers for the v1.1 tests (threads, resume, subscriptions); not a test module.

- :class:`Strings` and :func:`puppet_registry`: a top-level agent, ``puppet``,
  that emits exactly what the test tells it to, one command at a time, so a
  schedule of emits is deterministic.
- :class:`Link`: one client connection over the in-memory transport whose
  frames a background task reads and keeps (raw text and parsed), so a test
  can interleave many connections without any of them blocking the server.
- :class:`GatedMemoryStore`, :class:`GatedSqliteStore`: stores whose
  ``write_batch`` (the history writer's group commit) waits for the test's
  permission, and that know when none of their operations is in flight.
- :func:`start_server_on`: a test server using a store object the test made.
- :func:`settle`: wait until every task is blocked and the store is idle.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
import trio
import trio.testing

import server._server
from agents import AgentClassRegistry, BaseAgent
from agents.builtin import default_registry
from server import ChatServer
from server._handshake import Identity
from server.protocol import ConnectionClosed, check_run_invariants
from server.store import LATEST_VERSION, MemoryStore, SqliteStore, Store, StoreObserver
from server.testing import RUN_EVENT_TYPES, start_test_server
from server.transport import MemoryPeer, memory_transport_pair

T = TypeVar("T")

#: Bound on every wait for a frame in these helpers (the test's clock).
WAIT = 10.0
REPLAY_TAIL = ',"replay":true}'


# -- the puppet agent -------------------------------------------------------------


class Strings:
    """Commands for puppet runs, by run id (see :func:`puppet_registry`)."""

    def __init__(self, capacity: int = 1000) -> None:
        self._capacity = capacity
        self._channels: dict[
            str, tuple[trio.MemorySendChannel[str], trio.MemoryReceiveChannel[str]]
        ] = {}

    def _pair(
        self, run_id: str
    ) -> tuple[trio.MemorySendChannel[str], trio.MemoryReceiveChannel[str]]:
        pair = self._channels.get(run_id)
        if pair is None:
            pair = self._channels[run_id] = trio.open_memory_channel[str](self._capacity)
        return pair

    def pull(self, run_id: str, *commands: str) -> None:
        """Queue ``commands`` for the run (it may not have started yet)."""
        send, _ = self._pair(run_id)
        for command in commands:
            send.send_nowait(command)

    async def next(self, run_id: str) -> str:
        _, receive = self._pair(run_id)
        return await receive.receive()


async def _echo(**parameters: Any) -> dict[str, Any]:
    await trio.lowlevel.checkpoint()
    return dict(parameters)


def puppet_registry(strings: Strings) -> AgentClassRegistry:
    """The built-in agents plus ``puppet`` (top level) and its inner ``puppet_helper``.

    For each command ``puppet`` emits: ``think`` one ``agent_thinking``;
    ``tool`` a ``tool_executing`` and its ``tool_completed``; ``inner`` the
    helper's ``agent_started``, ``agent_thinking`` and ``agent_completed``;
    ``big`` one ``agent_thinking`` of 20 kB; ``nap`` sleeps one second and emits
    nothing; ``fail`` raises (its ``agent_error`` failed is the final event);
    ``done`` returns the answer, the number of earlier turns and those turns
    (``agent_completed`` final).
    """

    class PuppetHelper(BaseAgent):
        name = "puppet_helper"

        async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            await self.think("helping")
            return {"helped": True}

    class Puppet(BaseAgent):
        name = "puppet"
        top_level = True

        async def execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
            run_id = self.context.run_id
            step = 0
            while True:
                command = await strings.next(run_id)
                step += 1
                if command == "think":
                    await self.think(f"thought {step}")
                elif command == "tool":
                    await self.call_tool("echo", {"step": step}, _echo)
                elif command == "inner":
                    await self.run_agent("puppet_helper")
                elif command == "big":
                    await self.think(f"a long thought {step}: " + "x" * 20_000)
                elif command == "nap":
                    await trio.sleep(1)
                elif command == "fail":
                    raise RuntimeError("the puppet was told to fail")
                elif command == "done":
                    return {
                        "answer": f"done after {step - 1} step(s)",
                        "turns": len(self.context.history),
                        "earlier": [
                            [t.run_id, t.request, t.status, t.answer] for t in self.context.history
                        ],
                    }

    registry = default_registry()
    registry.register(Puppet)
    registry.register(PuppetHelper)
    return registry


# -- stores the test controls --------------------------------------------------------


class _Gated(Store):
    """Group commits wait for :meth:`allow` while ``holding``; operations in flight are counted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.holding = False
        self._permits = 0
        self._changed = trio.Event()
        self.busy = 0
        self._idle = trio.Event()
        #: Batches committed (write_batch calls that returned).
        self.commits = 0
        #: If set, a begin_run that has committed waits for it before returning
        #: (and sets ``begun`` first).
        self.after_begin: trio.Event | None = None
        self.begun = trio.Event()

    def hold(self) -> None:
        """From now on each group commit waits for a permit."""
        self.holding = True

    def allow(self, commits: int = 1) -> None:
        self._permits += commits
        self._wake()

    def release(self) -> None:
        """Stop holding: every commit goes through."""
        self.holding = False
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _op(self, name: str, call: Callable[[], Awaitable[T]]) -> T:
        if name == "write_batch":
            while self.holding and not self._permits:
                await self._changed.wait()
            if self.holding:
                self._permits -= 1
        self.busy += 1
        try:
            result = await super()._op(name, call)
        finally:
            self.busy -= 1
            if not self.busy:
                self._idle.set()
                self._idle = trio.Event()
        if name == "write_batch":
            self.commits += 1
        if name == "begin_run" and self.after_begin is not None:
            self.begun.set()
            await self.after_begin.wait()
        return result

    async def wait_idle(self) -> None:
        if self.busy:
            await self._idle.wait()


class GatedMemoryStore(_Gated, MemoryStore):
    pass


class GatedSqliteStore(_Gated, SqliteStore):
    pass


async def settle(store: _Gated | None = None) -> None:
    """Return once every task is blocked and no store operation is in flight.

    SQLite operations run in worker threads, which ``wait_all_tasks_blocked``
    does not see: the store's own count of operations in flight covers them.
    """
    while True:
        await trio.testing.wait_all_tasks_blocked()
        if store is None or not store.busy:
            return
        await store.wait_idle()


@asynccontextmanager
async def _this_store(
    store: Store, *, observer: StoreObserver | None = None, node_id: str | None = None
) -> AsyncIterator[Store]:
    # What open_store would have done with them: the server's metrics see the
    # operations, and the runs are recorded as this server's.
    store._observer = observer
    if node_id is not None:
        store.node_id = node_id
    await store.open(target_version=LATEST_VERSION)
    try:
        yield store
    finally:
        await store.aclose()


async def start_server_on(nursery: trio.Nursery, store: Store, **settings: Any) -> ChatServer:
    """:func:`start_test_server` with ``store`` (made by the test) as the history store.

    ``serve_chat`` opens its store from a URL; for the time it takes to start,
    it gets this one instead (opened and migrated here, closed when it stops).
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(server._server, "open_store", lambda url, **kw: _this_store(store, **kw))
        return await start_test_server(nursery, **settings)


# -- connections -------------------------------------------------------------------


class Link:
    """One client over the in-memory transport; a background task keeps what arrives."""

    def __init__(self, peer: MemoryPeer, user_id: str, established: dict[str, Any]) -> None:
        self.peer = peer
        self.user_id = user_id
        self.established = established
        self.connection_id: str = established["data"]["connection_id"]
        #: Everything received after connection_established: (raw text, parsed).
        self.texts: list[str] = []
        self.frames: list[dict[str, Any]] = []
        self.closed: ConnectionClosed | None = None
        self.dropped = False
        self._arrived = trio.Event()
        self._ids = itertools.count(1)
        self._reading = trio.CancelScope()

    async def _read(self) -> None:
        with self._reading:
            await self._read_all()

    async def _read_all(self) -> None:
        try:
            while True:
                text = await self.peer.get_message()
                self.texts.append(text)
                self.frames.append(json.loads(text))
                self._arrived.set()
                self._arrived = trio.Event()
        except ConnectionClosed as exc:
            self.closed = exc
            self._arrived.set()

    def next_id(self) -> str:
        return f"m{next(self._ids)}"

    async def send(self, kind: str, payload: Mapping[str, Any] | None = None, *,
                   message_id: str | None = None) -> str:  # fmt: skip
        """Send a frame; return its message_id (one is made if not given)."""
        message_id = message_id or self.next_id()
        frame: dict[str, Any] = {"type": kind, "message_id": message_id}
        if payload is not None:
            frame["payload"] = dict(payload)
        await self.peer.send_message(json.dumps(frame))
        return message_id

    async def wait_for(
        self, check: Callable[[dict[str, Any]], bool], *, within: float = WAIT
    ) -> dict[str, Any]:
        """The first frame received (so far or from now on) for which ``check`` holds."""
        with trio.fail_after(within):
            seen = 0
            while True:
                for frame in self.frames[seen:]:
                    if check(frame):
                        return frame
                seen = len(self.frames)
                if self.closed is not None:
                    raise AssertionError(f"connection closed ({self.closed}) while waiting")
                await self._arrived.wait()

    async def reply(self, message_id: str) -> dict[str, Any]:
        """The reply (any non-run frame) that echoes ``message_id``."""
        return await self.wait_for(
            lambda f: f.get("message_id") == message_id and f.get("type") not in RUN_EVENT_TYPES
        )

    async def ask(self, kind: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send a frame and return its reply."""
        return await self.reply(await self.send(kind, payload))

    async def wait_final(self, run_id: str, *, within: float = WAIT) -> dict[str, Any]:
        return await self.wait_for(
            lambda f: f.get("run_id") == run_id and f.get("final") is True, within=within
        )

    async def wait_closed(self) -> ConnectionClosed:
        with trio.fail_after(WAIT):
            while self.closed is None:
                await self._arrived.wait()
        return self.closed

    def events(self, run_id: str) -> list[dict[str, Any]]:
        return [
            f for f in self.frames if f.get("run_id") == run_id and f["type"] in RUN_EVENT_TYPES
        ]

    def event_texts(self, run_id: str) -> list[str]:
        return [
            t for t, f in zip(self.texts, self.frames, strict=True)
            if f.get("run_id") == run_id and f["type"] in RUN_EVENT_TYPES
        ]  # fmt: skip

    def stop_reading(self) -> None:
        """From now on the client reads nothing (the server's frames pile up)."""
        self._reading.cancel()

    def drop(self) -> None:
        """Vanish without a close frame (a lost network)."""
        self.dropped = True
        self.peer.drop()

    async def aclose(self) -> None:
        with trio.move_on_after(WAIT):
            await self.peer.aclose()


async def open_link(
    nursery: trio.Nursery, server: ChatServer, user_id: str = "alice", *, capacity: int = 16
) -> Link:
    """Connect ``user_id`` to ``server`` over memory; the connection lives in ``nursery``."""
    transport, peer = memory_transport_pair(
        capacity=capacity, max_message_size=server.settings.max_message_size
    )
    nursery.start_soon(server.serve_transport, transport, Identity(user_id))
    with trio.fail_after(WAIT):
        established = json.loads(await peer.get_message())
    assert established["data"]["event"] == "connection_established"
    link = Link(peer, user_id, established)
    nursery.start_soon(link._read)
    return link


@asynccontextmanager
async def linked(server: ChatServer, *users: str) -> AsyncIterator[list[Link]]:
    """Links for ``users``, closed normally (1000) when the block ends."""
    async with trio.open_nursery() as nursery:
        links = [await open_link(nursery, server, user) for user in users]
        try:
            yield links
        finally:
            for link in links:
                if not link.dropped:
                    await link.aclose()


# -- what a run looks like ---------------------------------------------------------


def strip_replay(text: str) -> str:
    """The frame as first sent: a replayed one without its ``"replay":true``."""
    return text[: -len(REPLAY_TAIL)] + "}" if text.endswith(REPLAY_TAIL) else text


def check_complete(events: Sequence[Mapping[str, Any]], user_id: str) -> None:
    """Invariants 1-5 (and the user) on a run's whole list of events."""
    check_run_invariants(events, user_id=user_id)


def seqs(events: Sequence[Mapping[str, Any]]) -> list[int]:
    return [int(e["seq"]) for e in events]


def segments(link: Link, run_id: str) -> Iterator[tuple[dict[str, Any] | None, list[int]]]:
    """The link's frames of ``run_id`` cut at each ``run_resumed`` reply for it.

    Yields (reply or None for what came before any reply, indexes into
    ``link.frames`` of the run's events after it).
    """
    reply: dict[str, Any] | None = None
    indexes: list[int] = []
    for i, frame in enumerate(link.frames):
        if frame.get("type") == "run_resumed" and frame["data"]["run_id"] == run_id:
            yield reply, indexes
            reply, indexes = frame, []
        elif frame.get("run_id") == run_id and frame.get("type") in RUN_EVENT_TYPES:
            indexes.append(i)
    yield reply, indexes
