"""Helpers for pytest-trio tests of agents and clients against a real server.

Start a server on a free loopback port inside a test's nursery, connect
clients over real WebSockets (:func:`open_chat_client`) or over an in-memory
transport (:func:`open_memory_client`, no sockets, for tests where the
network is beside the point), run requests, and check the protocol's
invariants::

    async def test_my_agent(nursery):
        registry = default_registry()
        registry.register(MyAgent)
        server = await start_test_server(nursery, registry=registry)
        async with open_chat_client(server, user_id="u1") as client:
            run = await client.run("hello", agent_name="my_agent")
        assert run.status == "completed"
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import attrs
import trio

from agents import AgentClassRegistry, ToolRegistry

from ._handshake import Identity
from ._server import ChatServer, serve_chat
from ._settings import Settings
from .protocol import (
    RUN_EVENT_TYPES,
    ConnectionClosed,
    InvariantViolation,
    check_run_invariants,
)
from .session import HandlerRouter
from .transport import MemoryPeer, memory_transport_pair, open_websocket_client

__all__ = [
    "RUN_EVENT_TYPES",
    "ChatClient",
    "ClientConnection",
    "InvariantViolation",
    "RunTranscript",
    "check_resumed_events",
    "check_run_invariants",
    "open_chat_client",
    "open_memory_client",
    "start_test_server",
]

#: How long a helper waits for one frame before failing the test.
RECEIVE_TIMEOUT = 10.0


async def start_test_server(
    nursery: trio.Nursery,
    *,
    registry: AgentClassRegistry | None = None,
    tools: ToolRegistry | None = None,
    router: HandlerRouter | None = None,
    **settings: Any,
) -> ChatServer:
    """Start a server in ``nursery`` on 127.0.0.1, free ports, admin listener on.

    The history store is in memory unless ``store=`` says otherwise.
    ``settings`` override :class:`~server.Settings` fields (``agent_timeout=1``,
    ``faults=(FaultSpec.parse("triage:raise:1"),)``, ``admin_port=None``, ...).
    """
    base = Settings(host="127.0.0.1", port=0, admin_port=0, store="memory:")
    server: ChatServer = await nursery.start(
        _serve, attrs.evolve(base, **settings), registry, tools, router
    )
    return server


async def _serve(
    settings: Settings,
    registry: AgentClassRegistry | None,
    tools: ToolRegistry | None,
    router: HandlerRouter | None,
    *,
    task_status: trio.TaskStatus[ChatServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve_chat(
        settings, registry=registry, tools=tools, router=router, task_status=task_status
    )


@attrs.frozen
class RunTranscript:
    """The events one client received for one run, in order."""

    run_id: str
    events: tuple[dict[str, Any], ...]

    @property
    def final(self) -> dict[str, Any]:
        return self.events[-1]

    @property
    def status(self) -> str:
        """``completed``, ``failed``, ``cancelled`` or ``timeout``."""
        return str(self.final["data"]["status"])

    @property
    def result(self) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self.final["data"].get("result")
        return result

    def agents(self) -> list[str]:
        """Agent names in the order their ``agent_started`` arrived."""
        return [e["agent_name"] for e in self.events if e["type"] == "agent_started"]

    def closing(self, agent_name: str) -> dict[str, Any]:
        """The first closing event (completed or error) of ``agent_name``."""
        for event in self.events:
            if event["agent_name"] == agent_name and event["type"] in (
                "agent_completed",
                "agent_error",
            ):
                return event
        raise KeyError(agent_name)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def check(self, *, user_id: str | None = None) -> RunTranscript:
        check_run_invariants(self.events, run_id=self.run_id, user_id=user_id)
        return self


class ClientConnection(Protocol):
    """The client's end of a connection: a WebSocket client or a memory peer."""

    async def send_message(self, message: str | bytes) -> None: ...

    async def get_message(self) -> str | bytes: ...

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None: ...


class ChatClient:
    """A test client on one connection; sorts what it receives by run.

    Run events go to per-run lists; every other frame goes to
    ``self.frames``. An event for a run this client did not start fails
    (invariant 6), and so does any event of a run that arrives after that
    run's final event, however much later (invariant 3): the client
    remembers which runs have ended until a new run reuses the id.
    """

    def __init__(
        self,
        ws: ClientConnection,
        established: dict[str, Any],
        *,
        receive_timeout: float = RECEIVE_TIMEOUT,
    ) -> None:
        self.ws = ws
        #: Cap on every wait of this client, in the test's clock (virtual time
        #: under ``autojump_clock``: raise it for runs that take long virtually).
        self.receive_timeout = receive_timeout
        self.established = established
        data = established["data"]
        self.connection_id: str = data["connection_id"]
        self.user_id: str = data["user_id"]
        self.frames: list[dict[str, Any]] = []
        self._runs: dict[str, list[dict[str, Any]]] = {}
        #: Runs received from a later point (resume_run): the seq they start after.
        self._after: dict[str, int] = {}
        #: Threads this client subscribed to: their runs' events are expected.
        self._threads: set[str] = set()
        #: Runs whose final event has arrived (until ``start`` or ``resume`` reuses the id).
        self._ended: set[str] = set()
        #: Where the latest run of each id begins in its list (ids may be reused).
        self._began: dict[str, int] = {}
        self._ids = itertools.count(1)

    async def send(self, frame: Mapping[str, Any] | str | bytes) -> None:
        """Send a frame: a mapping is sent as JSON, text and bytes as they are."""
        if isinstance(frame, Mapping):
            frame = json.dumps(frame)
        await self.ws.send_message(frame)

    async def receive(self) -> dict[str, Any]:
        """The next frame, whatever it is; run events are also filed under their run."""
        with trio.fail_after(self.receive_timeout):
            text = await self.ws.get_message()
        frame: dict[str, Any] = json.loads(text)
        if frame.get("type") in RUN_EVENT_TYPES:
            run_id = frame.get("run_id")
            if run_id not in self._runs and frame.get("thread_id") in self._threads:
                self._runs[str(run_id)] = []  # a run of a subscribed thread
            if run_id not in self._runs:
                raise InvariantViolation(f"invariant 6: event for foreign run {run_id!r}")
            if frame.get("user_id") != self.user_id:
                raise InvariantViolation(f"invariant 6: event for user {frame.get('user_id')!r}")
            if run_id in self._ended:
                raise InvariantViolation(
                    f"invariant 3: {frame.get('type')} (seq {frame.get('seq')!r}) of run "
                    f"{run_id!r} after its final event"
                )
            self._runs[run_id].append(frame)
            if frame.get("final") is True:
                self._ended.add(run_id)
        else:
            self.frames.append(frame)
        return frame

    async def receive_frame(self, frame_type: str) -> dict[str, Any]:
        """Receive until a non-run frame of ``frame_type`` arrives; return it."""
        with trio.fail_after(self.receive_timeout):
            while True:
                frame = await self.receive()
                if frame.get("type") == frame_type:
                    return frame

    async def start(
        self,
        text: str,
        *,
        agent_name: str | None = None,
        run_id: str | None = None,
        message_id: str | None = None,
        thread_id: str | None = None,
    ) -> str:
        """Send ``start_agent`` with a client-chosen run id; return that id."""
        run_id = run_id or f"test-{self.connection_id}-{next(self._ids)}"
        payload: dict[str, Any] = {"user_request": text, "run_id": run_id}
        if agent_name is not None:
            payload["agent_name"] = agent_name
        if thread_id is not None:
            payload["thread_id"] = thread_id
        frame: dict[str, Any] = {"type": "start_agent", "payload": payload}
        if message_id is not None:
            frame["message_id"] = message_id
        events = self._runs.setdefault(run_id, [])
        if run_id in self._ended:  # the id of a run that has ended: a new run
            self._ended.discard(run_id)
            self._began[run_id] = len(events)
            self._after.pop(run_id, None)
        await self.send(frame)
        return run_id

    async def stop(self, run_id: str) -> None:
        await self.send({"type": "stop_agent", "payload": {"run_id": run_id}})

    async def resume(self, run_id: str, after_seq: int = 0) -> dict[str, Any]:
        """Send ``resume_run``; return its ``run_resumed`` reply (the events follow it)."""
        message_id = f"resume-{next(self._ids)}"
        self._runs[run_id] = []
        self._after[run_id] = after_seq
        self._ended.discard(run_id)  # asked for again: its events are expected again
        self._began.pop(run_id, None)
        await self.send(
            {
                "type": "resume_run",
                "message_id": message_id,
                "payload": {"run_id": run_id, "after_seq": after_seq},
            }
        )
        return await self._reply(message_id)

    async def subscribe(self, thread_id: str) -> dict[str, Any]:
        """Send ``subscribe_thread``; return its reply. The thread's new runs are expected."""
        message_id = f"subscribe-{next(self._ids)}"
        self._threads.add(thread_id)
        await self.send(
            {
                "type": "subscribe_thread",
                "message_id": message_id,
                "payload": {"thread_id": thread_id},
            }
        )
        return await self._reply(message_id)

    def run_ids(self) -> list[str]:
        """Runs this client received events of (or started), in the order it learnt of them."""
        return list(self._runs)

    async def _reply(self, message_id: str) -> dict[str, Any]:
        with trio.fail_after(self.receive_timeout):
            while True:
                frame = await self.receive()
                if frame.get("type") not in RUN_EVENT_TYPES and frame.get("message_id") == (
                    message_id
                ):
                    return frame

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """Events received so far for ``run_id`` (of every run that used the id)."""
        return list(self._runs.get(run_id, ()))

    def _latest(self, run_id: str) -> list[dict[str, Any]]:
        """The events of the latest run started with ``run_id``."""
        return self._runs.get(run_id, [])[self._began.get(run_id, 0) :]

    async def wait_event(
        self, run_id: str, event_type: str, *, agent_name: str | None = None
    ) -> dict[str, Any]:
        """Receive until ``run_id`` has an event of ``event_type`` (from ``agent_name``)."""
        with trio.fail_after(self.receive_timeout):
            while True:
                for event in self._latest(run_id):
                    if event["type"] == event_type and agent_name in (None, event["agent_name"]):
                        return event
                await self.receive()

    async def collect(self, run_id: str) -> RunTranscript:
        """Receive until ``run_id``'s final event; return its checked transcript.

        Only the latest run started with ``run_id`` counts. Any event of the
        run that arrives later (here or in any later read) fails. A run
        received from a later point (:meth:`resume`) is checked for what can
        be: seq ``after_seq + 1, + 2, ...`` with no gap and no repeat, and only
        its last event final.
        """
        with trio.fail_after(self.receive_timeout):
            while run_id not in self._ended:
                await self.receive()
        transcript = RunTranscript(run_id, tuple(self._latest(run_id)))
        after = self._after.get(run_id, 0)
        if after == 0:
            return transcript.check(user_id=self.user_id)
        check_resumed_events(transcript.events, after_seq=after)
        return transcript

    async def run(
        self, text: str, *, agent_name: str | None = None, **kwargs: Any
    ) -> RunTranscript:
        """Start a run and collect it to its final event."""
        run_id = await self.start(text, agent_name=agent_name, **kwargs)
        return await self.collect(run_id)

    async def wait_closed(self) -> tuple[int | None, str | None]:
        """Read (recording frames) until the server closes; return (code, reason)."""
        with trio.fail_after(self.receive_timeout):
            while True:
                try:
                    await self.receive()
                except ConnectionClosed as exc:
                    return exc.code, exc.reason or None


def check_resumed_events(events: Sequence[Mapping[str, Any]], *, after_seq: int) -> None:
    """What can be checked of a run received from ``after_seq`` on (``resume_run``).

    Raises :class:`InvariantViolation`: every seq from ``after_seq + 1`` once, in
    order (invariant 1 over that range), and only the last one final (3).
    """
    seqs = [event.get("seq") for event in events]
    expected = list(range(after_seq + 1, after_seq + 1 + len(events)))
    if seqs != expected:
        raise InvariantViolation(f"invariant 1: seq {seqs}, expected {expected}")
    finals = [i for i, event in enumerate(events) if event.get("final") is True]
    if finals not in ([], [len(events) - 1]):
        raise InvariantViolation(f"invariant 3: final:true on events {finals}")


def _target(server: ChatServer | str, user_id: str | None, query: str | None) -> str:
    url = server if isinstance(server, str) else server.url
    params = []
    if user_id is not None:
        params.append(f"user_id={user_id}")
    if query:
        params.append(query)
    return url + ("?" + "&".join(params) if params else "")


@asynccontextmanager
async def open_chat_client(
    server: ChatServer | str,
    *,
    user_id: str | None = None,
    query: str | None = None,
    subprotocols: Sequence[str] | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    receive_timeout: float = RECEIVE_TIMEOUT,
) -> AsyncIterator[ChatClient]:
    """Connect to ``server`` (or a ``ws://`` URL) over a socket; read ``connection_established``."""
    async with open_websocket_client(
        _target(server, user_id, query),
        subprotocols=subprotocols,
        extra_headers=extra_headers,
        connect_timeout=receive_timeout,
        disconnect_timeout=receive_timeout,
    ) as ws:
        yield await _chat_client(ws, receive_timeout)


@asynccontextmanager
async def open_memory_client(
    server: ChatServer,
    *,
    user_id: str = "u1",
    capacity: int = 16,
    receive_timeout: float = RECEIVE_TIMEOUT,
    resume_token: str = "",
) -> AsyncIterator[ChatClient]:
    """Connect to ``server`` over an in-memory transport (no socket, no handshake).

    The server serves the connection (in its own nursery, as it does a
    socket's); leaving the block closes the client's end (1000, after the
    server's answer) unless the peer dropped or closed it already.
    ``client.ws`` is the :class:`~server.transport.MemoryPeer`: set
    ``answers_pings = False`` to play a peer that stops answering, or call
    ``drop()`` to vanish without a close frame. ``resume_token`` takes over a
    session that lingers (``--resume-grace``), as ``?resume=`` does.
    """
    transport, peer = memory_transport_pair(
        capacity=capacity, max_message_size=server.settings.max_message_size
    )
    server.connect(transport, Identity(user_id), resume_token=resume_token)
    try:
        yield await _chat_client(peer, receive_timeout)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(receive_timeout):
            await peer.aclose()


async def _chat_client(ws: ClientConnection | MemoryPeer, receive_timeout: float) -> ChatClient:
    with trio.fail_after(receive_timeout):
        established = json.loads(await ws.get_message())
    if established.get("data", {}).get("event") != "connection_established":
        raise AssertionError(f"first frame is not connection_established: {established}")
    return ChatClient(ws, established, receive_timeout=receive_timeout)
