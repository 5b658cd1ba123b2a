"""``python -m server.client URL``: a terminal chat client for trio-agent-server.

Interactive by default: every line read from standard input starts a run in
the current thread and its live view is printed (agents, tools, thinking,
the final answer and the run's status); lines starting with ``/`` are
commands (``/threads``, ``/open``, ``/new``, ``/help``, ``/quit``). Ctrl-C
stops the run in progress (the client stays connected); Ctrl-C with no run
in progress exits. ``--message TEXT`` sends one message and exits with a
status telling how the run ended; ``--json`` prints every frame received as
one JSON object a line.

When the connection drops, the client reconnects (a bounded number of
attempts, with backoff), takes its session over with the resume token when
the server offers session resume, and asks for the current run's events
after the last seq it printed (``resume_run``): the run is shown whole, each
event once.

The rendering is pure (:mod:`server.client._view`); this module only
connects, reads, writes and handles Ctrl-C. The client depends on the
protocol and the client side of the transport, never on the server.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import random
import secrets
import shutil
import signal
import ssl
import sys
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from typing import Any, TextIO, cast

import attrs
import trio

from server.protocol import RUN_EVENT_TYPES, ConnectionClosed, HandshakeRejected
from server.transport import WebSocketClient, connect_websocket

from ._view import (
    EXIT_CANCELLED,
    EXIT_COMPLETED,
    EXIT_DISCONNECTED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    ChatView,
    describe_close,
    exit_code_for,
    shorten,
)

#: Largest frame the client accepts from the server (answers can be long).
MAX_FRAME = 16 * 2**20
#: Seconds the client waits for the server's close handshake when it leaves.
CLOSE_TIMEOUT = 2.0
#: Seconds a command waits for its reply.
REQUEST_TIMEOUT = 30.0
#: Close codes after which the client reconnects: the network or the server went away
#: (no close frame: None or 1006), a restart or drain (1001, 1012), a server error
#: (1011) or a slow-consumer close (1013). Others (1000, 1008, 1009...) are final.
RETRY_CODES = frozenset({None, 1001, 1006, 1011, 1012, 1013})
#: First reconnection delay (doubled each attempt, up to the maximum, with jitter).
RETRY_FIRST = 0.5
RETRY_MAX = 8.0
#: Threads listed and runs shown per page.
THREADS_PAGE = 20
RUNS_PAGE = 20

_EPILOG = f"""\
interactive mode:
  Each line read from standard input starts a run in the current thread,
  shown live; the next line is sent once that run has ended, so follow-ups
  continue the conversation. Commands:
    /threads [more]   list your threads, newest first (numbered)
    /open THREAD      show a thread's runs and answers, then continue in it
                      (THREAD: an id, or a number from /threads)
    /new              start a new thread with the next message
    /help             this list
    /quit             leave (so does end of input)
  Ctrl-C stops the run in progress (stop_agent) and the client stays
  connected; Ctrl-C when no run is in progress, or again while a stop is
  pending, exits.

reconnection:
  When the connection drops (no close frame, 1001, 1011, 1012 or 1013) the
  client reconnects, up to --retries times in a row with growing delays; it
  takes its session over when the server offers session resume, and asks for
  the events of the run in progress after the last one it printed.

exit status:
  {EXIT_COMPLETED}    the run completed (interactive mode: /quit or end of input)
  {EXIT_FAILED}    the run ended failed or timeout
  {EXIT_USAGE}    usage or connection error: bad arguments or URL, server unreachable,
       handshake rejected (the HTTP status is printed on stderr), connection
       closed before connection_established, or the server refused the
       message with an error_message (e.g. AGENT_NOT_FOUND, SHUTTING_DOWN)
  {EXIT_CANCELLED}    the run was cancelled (Ctrl-C sent stop_agent, or the server drained)
  {EXIT_DISCONNECTED}    the connection closed before the run's final event and could not be
       resumed (interactive mode: the connection was lost for good)
  {EXIT_INTERRUPTED}  Ctrl-C while no run was in progress
"""


# -- options -------------------------------------------------------------------


@attrs.frozen
class Target:
    """Where to connect: host, port, the request path with its query, TLS or not."""

    host: str
    port: int
    resource: str
    secure: bool

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"

    def with_query(self, name: str, value: str) -> Target:
        """The same target with ``name=value`` added to its query."""
        extra = urllib.parse.urlencode({name: value})
        glue = "&" if "?" in self.resource else "?"
        return attrs.evolve(self, resource=f"{self.resource}{glue}{extra}")


def parse_target(url: str, user_id: str | None = None) -> Target:
    """Split a ``ws://`` or ``wss://`` URL; add ``user_id`` to its query.

    An empty path means ``/ws``. Raises ``ValueError`` for anything else
    than a ws/wss URL with a host.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"the URL must start with ws:// or wss://, got {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r}: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"the URL has no host: {url!r}")
    secure = parts.scheme == "wss"
    query = parts.query
    if user_id is not None:
        extra = urllib.parse.urlencode({"user_id": user_id})
        query = f"{query}&{extra}" if query else extra
    resource = (parts.path or "/ws") + (f"?{query}" if query else "")
    return Target(parts.hostname, port or (443 if secure else 80), resource, secure)


@attrs.frozen
class ClientOptions:
    """What :func:`run_client` needs; :func:`main` builds it from the command line."""

    target: Target
    token: str | None = None
    agent: str | None = None
    message: str | None = None
    json: bool = False
    color: bool = False
    width: int = 100
    prompt: bool = False
    connect_timeout: float = 10.0
    stdin_fd: int = 0
    #: The thread to start in (None: the first run starts a new one).
    thread: str | None = None
    #: Reconnection attempts in a row after the connection drops (0: none).
    retries: int = 5


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return (
        "trio-agent-client" if name.startswith("trio-agent-client") else "python -m server.client"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog(),
        description="Terminal chat client for trio-agent-server: watch each run live\n"
        "(agents, tools, thinking, answer), or script it with --message and --json.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", help="server URL, e.g. ws://127.0.0.1:8765/ws (empty path: /ws)")
    parser.add_argument(
        "--user-id", metavar="ID", help="user id sent as ?user_id= (servers with --auth none)"
    )
    parser.add_argument(
        "--token",
        metavar="JWT",
        default=os.environ.get("CHAT_TOKEN") or None,
        help="JWT sent as 'Authorization: Bearer' (servers with --auth jwt) "
        "[environment variable CHAT_TOKEN]",
    )
    parser.add_argument(
        "--agent", metavar="NAME", help="top-level agent to start [the server's default]"
    )
    parser.add_argument(
        "--thread",
        metavar="THREAD",
        help="continue the thread THREAD (interactive mode shows its runs first); "
        "an id never used starts a thread with that id",
    )
    parser.add_argument(
        "--message",
        metavar="TEXT",
        help="one-shot: send TEXT, print its run, exit with the run's status",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print every frame received as one JSON object a line, nothing else on stdout",
    )
    parser.add_argument(
        "--no-color", action="store_true", help="no ANSI colours (also when stdout is not a TTY)"
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds to connect and complete the handshake [10]",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=5,
        metavar="N",
        help="reconnection attempts in a row when the connection drops (0: none) [5]",
    )
    return parser


# -- I/O -------------------------------------------------------------------------


class _Output:
    """Writes view lines to stdout and diagnostics to stderr, flushing each time."""

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self._stdout = stdout
        self._stderr = stderr
        self._broken = False

    def lines(self, lines: Sequence[str]) -> None:
        self.write("".join(f"{line}\n" for line in lines))

    def write(self, text: str) -> None:
        if not text or self._broken:
            return
        try:
            self._stdout.write(text)
            self._stdout.flush()
        except BrokenPipeError:
            # The reader went away (``| head``): keep running quietly, as the
            # Python docs advise, so the exit status still tells the outcome.
            self._broken = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stdout.fileno())
            os.close(devnull)

    def diag(self, text: str) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):
            print(text, file=self._stderr, flush=True)


class _WatchedStream(trio.abc.Stream):
    """A stream that notices when it stops working (EOF, error, closed).

    trio-websocket's client waits for the handshake forever if the TCP
    connection ends before a response; the client races that wait against
    :attr:`ended`.
    """

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.ended = trio.Event()
        self.error: BaseException | None = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.inner.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._end(exc)
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.inner.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._end(exc)
            raise
        if not data:
            self._end(None)
        return data

    async def aclose(self) -> None:
        self._end(None)
        await self.inner.aclose()

    def _end(self, error: BaseException | None) -> None:
        if self.error is None and error is not None:
            self.error = error.__cause__ or error
        self.ended.set()


class _HandshakeFailed(Exception):
    """The connection ended, or timed out, before the WebSocket handshake completed."""


async def _read_lines(fd: int, send: trio.MemorySendChannel[str]) -> None:
    """Send each line read from ``fd``; close ``send`` at end of input.

    Reads in a worker thread with ``os.read`` (no buffered-file lock that
    could block the interpreter's exit), abandoned when cancelled. Stops
    quietly once nobody receives any more.
    """
    async with send:
        pending = b""
        with contextlib.suppress(trio.BrokenResourceError):
            while True:
                chunk = await trio.to_thread.run_sync(os.read, fd, 65536, abandon_on_cancel=True)
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    await send.send(line.decode("utf-8", "replace").rstrip("\r"))
            if pending:
                await send.send(pending.decode("utf-8", "replace").rstrip("\r"))


# -- the chat: what outlives a connection ------------------------------------------


@attrs.define(eq=False)
class _Run:
    """The run in progress: started here, or followed (``/open`` of a running thread)."""

    run_id: str
    message_id: str
    done: trio.Event = attrs.field(factory=trio.Event)
    #: Set when it is done, or when its start must be sent again.
    wake: trio.Event = attrs.field(factory=trio.Event)
    status: str | None = None
    refused: bool = False
    stop_sent: bool = False
    #: Its start (or resume) reached the socket: a new connection resumes it.
    sent: bool = False
    #: The seq of the last event printed: a new connection asks for what follows.
    last_seq: int = 0
    #: Its start_agent may be sent again once, if the server never saw it.
    may_restart: bool = False

    def finish(self) -> None:
        self.done.set()
        self.wake.set()


@attrs.define(eq=False)
class _Request:
    """A command's request waiting for its reply (or an error_message, or the close)."""

    done: trio.Event = attrs.field(factory=trio.Event)
    reply: dict[str, Any] | None = None


@attrs.frozen
class _Ended:
    """How one connection attempt ended."""

    established: bool = False
    rejected: bool = False
    code: int | None = None
    reason: str | None = None


class _Chat:
    """The conversation across connections: thread, run in progress, view, resume token.

    Each connection's reader calls :meth:`serve`; the chat loop (one-shot or
    interactive) sends through whichever connection is up, waiting for one.
    """

    def __init__(self, options: ClientOptions, out: _Output) -> None:
        self.options = options
        self.out = out
        self.view = ChatView(color=options.color, width=options.width)
        self.thread_id = options.thread
        self.current: _Run | None = None
        self.ws: WebSocketClient | None = None
        self.linked = trio.Event()
        self.ever_established = False
        self.resume_token: str | None = None
        self.closed: tuple[int | None, str | None] | None = None
        #: The chat is over: the client closes the connection and does not reconnect.
        self.leaving = False
        self._pending: dict[str, _Request] = {}
        self._listed: list[str] = []
        self._threads_cursor: str | None = None
        self._prefix = f"cli-{secrets.token_hex(4)}"
        self._ids = itertools.count(1)

    # -- one connection ------------------------------------------------------------

    async def serve(self, ws: WebSocketClient) -> _Ended:
        """Read the connection's frames until it closes; how it ended."""
        self.ws = ws
        established = False
        try:
            while True:
                frame = self._parse(await ws.get_message())
                if frame is None:
                    continue
                if self._is_established(frame):
                    established = True
                    await self._on_established(ws, frame)
                else:
                    self._handle(frame)
        except ConnectionClosed as exc:
            self.closed = (exc.code, exc.reason or None)
            return _Ended(established=established, code=exc.code, reason=exc.reason or None)
        finally:
            self.ws = None
            if self.linked.is_set():
                self.linked = trio.Event()
            # Replies to what was asked on this connection will never come.
            for request in self._pending.values():
                request.done.set()
            self._pending.clear()

    def _parse(self, text: str | bytes) -> dict[str, Any] | None:
        try:
            frame = json.loads(text)
        except ValueError:
            self.out.diag(f"not JSON: {shorten(str(text), 200)}")
            return None
        if not isinstance(frame, dict):
            self.out.diag(f"not a JSON object: {shorten(str(text), 200)}")
            return None
        if self.options.json:
            self.out.lines([json.dumps(frame, ensure_ascii=False, separators=(",", ":"))])
        return frame

    @staticmethod
    def _is_established(frame: dict[str, Any]) -> bool:
        data = frame.get("data")
        return (
            frame.get("type") == "system_message"
            and isinstance(data, dict)
            and data.get("event") == "connection_established"
        )

    async def _on_established(self, ws: WebSocketClient, frame: dict[str, Any]) -> None:
        data: dict[str, Any] = frame["data"]
        features = data.get("features")
        token = data.get("resume_token")
        offered = isinstance(features, list) and "session_resume" in features
        self.resume_token = token if offered and isinstance(token, str) else None
        if not self.ever_established:
            self.ever_established = True
            if not self.options.json:
                self.out.lines(self.view.render(frame))
        else:
            user = shorten(str(data.get("user_id")), 60)
            how = "the session resumed" if data.get("resumed") is True else "a new session"
            self.out.diag(f"reconnected as {user} ({how})")
            await self._resume_current(ws)
        self.linked.set()

    async def _resume_current(self, ws: WebSocketClient) -> None:
        """A new connection: ask for the run in progress's events after the last printed."""
        run = self.current
        if run is None or run.done.is_set() or not run.sent:
            return
        self.out.diag(f"resuming the run after event {run.last_seq}")
        frame = {
            "type": "resume_run",
            "payload": {"run_id": run.run_id, "after_seq": run.last_seq},
            "message_id": f"{run.message_id}-resume",
        }
        with contextlib.suppress(ConnectionClosed):  # the reader sees the close next
            await ws.send_message(json.dumps(frame))

    def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        message_id = frame.get("message_id")
        run = self.current
        if run is not None and not run.done.is_set() and message_id == f"{run.message_id}-resume":
            self._on_resume_answer(run, frame)
            return
        request = self._pending.pop(message_id, None) if isinstance(message_id, str) else None
        if request is not None:
            request.reply = frame
            request.done.set()
            return
        if not self.options.json:
            self.out.lines(self.view.render(frame))
        if run is None or run.done.is_set():
            return
        data: dict[str, Any] = frame["data"] if isinstance(frame.get("data"), dict) else {}
        if kind in RUN_EVENT_TYPES and frame.get("run_id") == run.run_id:
            seq = frame.get("seq")
            if isinstance(seq, int):
                run.last_seq = seq
            if self.thread_id is None and isinstance(frame.get("thread_id"), str):
                self.thread_id = frame["thread_id"]
            if frame.get("final"):
                run.status = str(data.get("status"))
                run.finish()
        elif kind == "error_message" and message_id == run.message_id:
            run.refused = True
            run.finish()

    def _on_resume_answer(self, run: _Run, frame: dict[str, Any]) -> None:
        """``run_resumed`` (its events follow) or an error (RUN_NOT_FOUND...)."""
        if frame.get("type") == "run_resumed":
            return
        if frame.get("error_code") == "RUN_NOT_FOUND" and run.last_seq == 0 and run.may_restart:
            # The start never reached the server (the connection dropped first): again.
            self.out.diag("the run had not started; starting it again")
            run.may_restart = False
            run.sent = False
            run.wake.set()
            return
        if not self.options.json:
            self.out.lines(self.view.render(frame))
        self.out.diag("the run could not be resumed")
        run.finish()

    # -- sending -------------------------------------------------------------------

    async def send(self, frame: dict[str, Any]) -> None:
        """Send ``frame`` on the connection, waiting for one to be up; retried on the next."""
        text = json.dumps(frame)
        while True:
            await self.linked.wait()
            ws = self.ws
            if ws is None:
                await trio.lowlevel.checkpoint()
                continue
            try:
                await ws.send_message(text)
            except ConnectionClosed:
                # Not sent: the reader sees the close, a new connection comes (or the
                # client gives up and cancels this).
                await trio.lowlevel.checkpoint()
                continue
            return

    async def request(self, kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Send a v1.1 request; its reply or error_message (None: the connection dropped)."""
        message_id = f"{self._prefix}-q{next(self._ids)}"
        request = _Request()
        self._pending[message_id] = request
        try:
            await self.send({"type": kind, "payload": payload, "message_id": message_id})
            with trio.move_on_after(REQUEST_TIMEOUT):
                await request.done.wait()
        finally:
            self._pending.pop(message_id, None)
        if request.reply is None:
            self.out.diag(f"no answer to {kind}: the connection dropped or the server is slow")
            return None
        if request.reply.get("type") == "error_message":
            self.out.lines(self.view.render(request.reply))
            return None
        return request.reply

    # -- the chat loop ---------------------------------------------------------------

    async def main(self) -> int:
        """Wait for the first connection, then run the message or the input lines."""
        await self.linked.wait()
        if self.options.message is not None:
            return await self.run(self.options.message)
        return await self.interactive()

    def code_after_close(self) -> int:
        """The exit status once the connection is lost for good."""
        if not self.ever_established:
            return EXIT_USAGE
        run = self.current
        if self.options.message is not None and run is not None and run.done.is_set():
            return EXIT_USAGE if run.refused else exit_code_for(run.status)
        return EXIT_DISCONNECTED

    async def run(self, text: str) -> int:
        """Start a run of ``text`` in the current thread; wait for its final event."""
        number = next(self._ids)
        run = _Run(f"{self._prefix}-{number}", f"{self._prefix}-m{number}")
        payload: dict[str, Any] = {"user_request": text, "run_id": run.run_id}
        if self.options.agent is not None:
            payload["agent_name"] = self.options.agent
        if self.thread_id is not None:
            payload["thread_id"] = self.thread_id
        start = {"type": "start_agent", "payload": payload, "message_id": run.message_id}
        run.may_restart = True
        self.current = run
        try:
            while not run.done.is_set():
                await self.send(start)
                run.sent = True
                await run.wake.wait()
                run.wake = trio.Event()
        finally:
            self.current = None
        return EXIT_USAGE if run.refused else exit_code_for(run.status)

    async def follow(self, run_id: str) -> None:
        """Show a run in progress from its start (``resume_run``), live to its end."""
        run = _Run(run_id, f"{self._prefix}-f{next(self._ids)}")
        self.current = run
        try:
            frame = {
                "type": "resume_run",
                "payload": {"run_id": run_id, "after_seq": 0},
                "message_id": f"{run.message_id}-resume",
            }
            await self.send(frame)
            run.sent = True
            await run.done.wait()
        finally:
            self.current = None

    async def stop(self) -> bool:
        """Send ``stop_agent`` for the run in progress; False if there is none to stop."""
        run = self.current
        ws = self.ws
        if run is None or run.done.is_set() or run.stop_sent or ws is None:
            return False
        run.stop_sent = True
        self.out.diag("stopping the run (Ctrl-C again to quit)")
        frame = {
            "type": "stop_agent",
            "payload": {"run_id": run.run_id},
            "message_id": f"{run.message_id}-stop",
        }
        # If the connection has closed, the reader sees it and a new one comes.
        with contextlib.suppress(ConnectionClosed):
            await ws.send_message(json.dumps(frame))
        return True

    async def interactive(self) -> int:
        if self.thread_id is not None:
            await self.open_thread(self.thread_id, missing_ok=True)
        send, receive = trio.open_memory_channel[str](0)
        async with trio.open_nursery() as nursery, receive:
            nursery.start_soon(_read_lines, self.options.stdin_fd, send)
            while True:
                if self.options.prompt:
                    self.out.write("> ")
                try:
                    line = await receive.receive()
                except trio.EndOfChannel:
                    break
                text = line.strip()
                if text == "/quit":
                    break
                if text.startswith("/"):
                    await self.command(text)
                elif text:
                    await self.run(text)
            # Stop the stdin reader before ``receive`` closes under it.
            nursery.cancel_scope.cancel()
        return EXIT_COMPLETED

    async def command(self, text: str) -> None:
        name, _, argument = text.partition(" ")
        argument = argument.strip()
        if name == "/threads":
            await self.list_threads(more=argument == "more")
        elif name == "/open" and argument:
            await self.open_thread(self._thread_ref(argument))
        elif name == "/new":
            self.thread_id = None
            self.out.diag("the next message starts a new thread")
        elif name in ("/help", "/?"):
            self.out.lines(_EPILOG.split("\n\n")[0].splitlines()[1:])
        else:
            self.out.diag(f"unknown command {shorten(text, 40)!r}: /help lists them")

    def _thread_ref(self, argument: str) -> str:
        """A thread id, or the number of a thread in the last /threads listing."""
        if argument.isdigit() and 1 <= int(argument) <= len(self._listed):
            return self._listed[int(argument) - 1]
        return argument

    async def list_threads(self, *, more: bool = False) -> None:
        payload: dict[str, Any] = {"limit": THREADS_PAGE}
        if more:
            if self._threads_cursor is None:
                self.out.diag("no more threads")
                return
            payload["cursor"] = self._threads_cursor
        reply = await self.request("list_threads", payload)
        if reply is None:
            return
        data = reply.get("data") if isinstance(reply.get("data"), dict) else {}
        assert isinstance(data, dict)
        if not more:
            self._listed = []
        threads = [t for t in data.get("threads") or [] if isinstance(t, dict)]
        first = len(self._listed) + 1
        self._listed += [str(t.get("thread_id")) for t in threads]
        cursor = data.get("next_cursor")
        self._threads_cursor = cursor if isinstance(cursor, str) else None
        if not self.options.json:
            self.out.lines(self.view.threads(data, first=first))

    async def open_thread(self, thread_id: str, *, missing_ok: bool = False) -> None:
        """Show the thread's runs and answers; continue in it (follow a run in progress)."""
        payload = {"thread_id": thread_id, "limit": RUNS_PAGE}
        if missing_ok:
            reply = await self._ask_quietly("get_thread", payload)
            if reply is not None and reply.get("error_code") == "THREAD_NOT_FOUND":
                self.out.diag(f"thread {shorten(thread_id, 60)}: new, the next message starts it")
                return
            if reply is not None and reply.get("type") == "error_message":
                self.out.lines(self.view.render(reply))
                reply = None
        else:
            reply = await self.request("get_thread", payload)
        if reply is None:
            return
        data = reply.get("data") if isinstance(reply.get("data"), dict) else {}
        assert isinstance(data, dict)
        self.thread_id = thread_id
        if not self.options.json:
            self.out.lines(self.view.thread(data))
        runs = [r for r in data.get("runs") or [] if isinstance(r, dict)]
        if runs and runs[0].get("status") == "running" and isinstance(runs[0].get("run_id"), str):
            self.out.diag("a run is in progress in this thread: following it")
            await self.follow(runs[0]["run_id"])

    async def _ask_quietly(self, kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Like :meth:`request`, but an error_message is returned, not printed."""
        message_id = f"{self._prefix}-q{next(self._ids)}"
        request = _Request()
        self._pending[message_id] = request
        try:
            await self.send({"type": kind, "payload": payload, "message_id": message_id})
            with trio.move_on_after(REQUEST_TIMEOUT):
                await request.done.wait()
        finally:
            self._pending.pop(message_id, None)
        return request.reply


# -- the client: connections, reconnections, Ctrl-C ---------------------------------


class _Client:
    def __init__(self, options: ClientOptions, out: _Output) -> None:
        self.options = options
        self.out = out
        self.chat = _Chat(options, out)
        self.interrupted = False
        self.end_code = EXIT_USAGE

    async def watch_interrupts(
        self, interrupts: AsyncIterator[int], cancel_scope: trio.CancelScope
    ) -> None:
        """Ctrl-C: stop the run in progress, else leave with status 130."""
        async for _ in interrupts:
            if await self.chat.stop():
                continue
            self.interrupted = True
            cancel_scope.cancel()

    async def connect_and_chat(self) -> int:
        chat = self.chat
        code: int | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_connected, nursery.cancel_scope)
            code = await chat.main()
            chat.leaving = True
            ws = chat.ws
            if ws is not None:
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await ws.aclose()
            nursery.cancel_scope.cancel()
        return code if code is not None else self.end_code

    async def _keep_connected(self, chat_scope: trio.CancelScope) -> None:
        """Connect; after a drop, reconnect with backoff (bounded); else end the chat."""
        chat = self.chat
        failures = 0
        while True:
            ended = await self._connect_once()
            if chat.leaving:
                return
            if ended.code is not None or ended.established:
                self.out.diag(describe_close(ended.code, ended.reason))
            if ended.established:
                failures = 0
            retry = (
                chat.ever_established
                and not ended.rejected
                and (ended.code in RETRY_CODES or not ended.established)
                and failures < self.options.retries
            )
            if not retry:
                if chat.ever_established and failures and failures >= self.options.retries:
                    self.out.diag(f"giving up after {failures} reconnection attempts")
                self.end_code = chat.code_after_close()
                chat_scope.cancel()
                return
            delay = min(RETRY_MAX, RETRY_FIRST * 2**failures) * random.uniform(0.8, 1.2)
            failures += 1
            self.out.diag(
                f"reconnecting in {delay:.1f} s (attempt {failures} of {self.options.retries})"
            )
            await trio.sleep(delay)

    async def _connect_once(self) -> _Ended:
        target = self.options.target
        if self.chat.resume_token is not None:
            target = target.with_query("resume", self.chat.resume_token)
        try:
            with trio.fail_after(self.options.connect_timeout):
                raw = await self._open_stream(target)
        except (OSError, trio.TooSlowError) as exc:
            why = str(exc) or "timed out"
            self.out.diag(f"error: cannot connect to {target.host}:{target.port}: {why}")
            return _Ended()
        stream = _WatchedStream(raw)
        ended = _Ended()
        try:
            async with trio.open_nursery() as nursery:
                ws = await self._handshake(nursery, stream, target)
                ended = await self.chat.serve(ws)
                nursery.cancel_scope.cancel()
        except* HandshakeRejected as group:
            rejected = cast(HandshakeRejected, group.exceptions[0])
            body = rejected.reason
            detail = f": {shorten(body, 200)}" if body.strip() else ""
            self.out.diag(f"error: handshake rejected: HTTP {rejected.status}{detail}")
            ended = _Ended(rejected=True)
        except* _HandshakeFailed as group:
            self.out.diag(f"error: {group.exceptions[0]}")
        finally:
            await trio.aclose_forcefully(raw)
        return ended

    async def _open_stream(self, target: Target) -> trio.abc.Stream:
        if target.secure:
            return await trio.open_ssl_over_tcp_stream(
                target.host,
                target.port,
                ssl_context=ssl.create_default_context(),
                https_compatible=True,
            )
        return await trio.open_tcp_stream(target.host, target.port)

    async def _handshake(
        self, nursery: trio.Nursery, stream: _WatchedStream, target: Target
    ) -> WebSocketClient:
        """The WebSocket handshake; its reader task runs in ``nursery``.

        A rejection raises ``HandshakeRejected`` out of ``nursery``; a
        connection that ends first raises :class:`_HandshakeFailed`.
        """
        headers = []
        if self.options.token:
            headers.append((b"authorization", f"Bearer {self.options.token}".encode()))
        connected: list[WebSocketClient] = []

        async def connect(race: trio.Nursery) -> None:
            connected.append(
                await connect_websocket(
                    nursery,
                    stream,
                    target.host_header,
                    target.resource,
                    extra_headers=headers,
                    max_message_size=MAX_FRAME,
                )
            )
            race.cancel_scope.cancel()

        async def watch(race: trio.Nursery) -> None:
            await stream.ended.wait()
            race.cancel_scope.cancel()

        with trio.move_on_after(self.options.connect_timeout):
            async with trio.open_nursery() as race:
                race.start_soon(connect, race)
                race.start_soon(watch, race)
        if connected:
            return connected[0]
        if stream.ended.is_set():
            why = f": {stream.error}" if stream.error is not None else ""
            raise _HandshakeFailed(f"the connection ended during the WebSocket handshake{why}")
        raise _HandshakeFailed("the WebSocket handshake timed out")


async def run_client(options: ClientOptions, out: _Output | None = None) -> int:
    """Connect, chat, return the exit status (see ``--help``)."""
    out = out or _Output(sys.stdout, sys.stderr)
    client = _Client(options, out)
    code = EXIT_USAGE
    with trio.open_signal_receiver(signal.SIGINT) as interrupts:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.watch_interrupts, interrupts, nursery.cancel_scope)
            code = await client.connect_and_chat()
            nursery.cancel_scope.cancel()
    if client.interrupted:
        out.diag("interrupted")
        return EXIT_INTERRUPTED
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        target = parse_target(args.url, args.user_id)
    except ValueError as exc:
        parser.error(str(exc))
    if args.message is not None and not args.message.strip():
        parser.error("--message needs some text")
    if args.connect_timeout <= 0:
        parser.error("--connect-timeout must be greater than 0")
    if args.retries < 0:
        parser.error("--retries must be 0 or more")
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")
    stdout_tty = sys.stdout.isatty()
    options = ClientOptions(
        target=target,
        token=args.token,
        agent=args.agent,
        message=args.message,
        json=args.json,
        color=stdout_tty and not args.no_color and "NO_COLOR" not in os.environ,
        width=shutil.get_terminal_size((100, 24)).columns if stdout_tty else 100,
        prompt=stdout_tty and sys.stdin.isatty() and not args.json and args.message is None,
        connect_timeout=args.connect_timeout,
        thread=args.thread,
        retries=args.retries,
    )
    if options.prompt:
        print(
            "Type a message and press Enter; /help lists the commands. Ctrl-C stops a run; "
            "/quit, Ctrl-D or Ctrl-C when idle exits.",
            file=sys.stderr,
        )
    try:
        return trio.run(run_client, options)
    except KeyboardInterrupt:  # Ctrl-C before the signal receiver was open
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
