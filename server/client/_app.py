"""``python -m server.client URL``: a terminal chat client for trio-agent-server.

Interactive by default: every line read from standard input starts a run and
its live view is printed (agents, tools, thinking, the final answer and the
run's status); ``/quit`` or end of input exits. Ctrl-C stops the run in
progress (the client stays connected); Ctrl-C with no run in progress exits.
``--message TEXT`` sends one message and exits with a status telling how the
run ended; ``--json`` prints every frame received as one JSON object a line.

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

_EPILOG = f"""\
interactive mode:
  Each line read from standard input starts a run, shown live; the next line
  is sent once that run has ended. /quit or end of input exits. Ctrl-C stops
  the run in progress (stop_agent) and the client stays connected; Ctrl-C
  when no run is in progress, or again while a stop is pending, exits.

exit status:
  {EXIT_COMPLETED}    the run completed (interactive mode: /quit or end of input)
  {EXIT_FAILED}    the run ended failed or timeout
  {EXIT_USAGE}    usage or connection error: bad arguments or URL, server unreachable,
       handshake rejected (the HTTP status is printed on stderr), connection
       closed before connection_established, or the server refused the
       message with an error_message (e.g. AGENT_NOT_FOUND, SHUTTING_DOWN)
  {EXIT_CANCELLED}    the run was cancelled (Ctrl-C sent stop_agent, or the server drained)
  {EXIT_DISCONNECTED}    the connection closed before the run's final event (interactive
       mode: the server closed the connection)
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


# -- a session on one connection -----------------------------------------------


@attrs.define(eq=False)
class _Run:
    run_id: str
    message_id: str
    done: trio.Event = attrs.field(factory=trio.Event)
    status: str | None = None
    refused: bool = False
    stop_sent: bool = False


class _Session:
    """One connection: a reader task prints frames; the chat loop starts runs."""

    def __init__(self, ws: WebSocketClient, options: ClientOptions, out: _Output) -> None:
        self.ws = ws
        self.options = options
        self.out = out
        self.view = ChatView(color=options.color, width=options.width)
        self.established = trio.Event()
        self.current: _Run | None = None
        self.closed: tuple[int | None, str | None] | None = None
        self._prefix = f"cli-{secrets.token_hex(4)}"
        self._ids = itertools.count(1)

    async def read_frames(self, chat_scope: trio.CancelScope) -> None:
        """Print every frame; on the server's close, end the chat loop."""
        try:
            while True:
                self.handle(await self.ws.get_message())
        except ConnectionClosed as exc:
            self.closed = (exc.code, exc.reason or None)
            chat_scope.cancel()

    def handle(self, text: str | bytes) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            self.out.diag(f"not JSON: {shorten(str(text), 200)}")
            return
        if not isinstance(frame, dict):
            self.out.diag(f"not a JSON object: {shorten(str(text), 200)}")
            return
        if self.options.json:
            self.out.lines([json.dumps(frame, ensure_ascii=False, separators=(",", ":"))])
        else:
            self.out.lines(self.view.render(frame))
        kind = frame.get("type")
        data: dict[str, Any] = frame["data"] if isinstance(frame.get("data"), dict) else {}
        if kind == "system_message" and data.get("event") == "connection_established":
            self.established.set()
        run = self.current
        if run is None or run.done.is_set():
            return
        if kind in RUN_EVENT_TYPES and frame.get("run_id") == run.run_id and frame.get("final"):
            run.status = str(data.get("status"))
            run.done.set()
        elif kind == "error_message" and frame.get("message_id") == run.message_id:
            run.refused = True
            run.done.set()

    async def chat(self) -> int:
        """Wait for ``connection_established``, then run the message or the input lines."""
        await self.established.wait()
        if self.options.message is not None:
            return await self.run(self.options.message)
        return await self.interactive()

    def code_after_close(self) -> int:
        """The exit status once the server has closed the connection mid-chat."""
        if not self.established.is_set():
            return EXIT_USAGE
        run = self.current
        if self.options.message is not None and run is not None and run.done.is_set():
            return EXIT_USAGE if run.refused else exit_code_for(run.status)
        return EXIT_DISCONNECTED

    async def run(self, text: str) -> int:
        """Start a run of ``text``; wait for its final event; its exit status."""
        number = next(self._ids)
        run = _Run(f"{self._prefix}-{number}", f"{self._prefix}-m{number}")
        self.current = run
        payload: dict[str, Any] = {"user_request": text, "run_id": run.run_id}
        if self.options.agent is not None:
            payload["agent_name"] = self.options.agent
        await self._send({"type": "start_agent", "payload": payload, "message_id": run.message_id})
        await run.done.wait()
        self.current = None
        return EXIT_USAGE if run.refused else exit_code_for(run.status)

    async def stop(self) -> bool:
        """Send ``stop_agent`` for the run in progress; False if there is none to stop."""
        run = self.current
        if run is None or run.done.is_set() or run.stop_sent:
            return False
        run.stop_sent = True
        self.out.diag("stopping the run (Ctrl-C again to quit)")
        frame = {
            "type": "stop_agent",
            "payload": {"run_id": run.run_id},
            "message_id": f"{run.message_id}-stop",
        }
        # If the connection has closed, the reader task ends the chat loop.
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send_message(json.dumps(frame))
        return True

    async def interactive(self) -> int:
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
                if text:
                    await self.run(text)
            # Stop the stdin reader before ``receive`` closes under it.
            nursery.cancel_scope.cancel()
        return EXIT_COMPLETED

    async def _send(self, frame: dict[str, Any]) -> None:
        try:
            await self.ws.send_message(json.dumps(frame))
        except ConnectionClosed:
            # The reader task sees the close too and ends the chat loop.
            await trio.sleep_forever()


# -- the client ------------------------------------------------------------------


class _Client:
    def __init__(self, options: ClientOptions, out: _Output) -> None:
        self.options = options
        self.out = out
        self.session: _Session | None = None
        self.interrupted = False

    async def watch_interrupts(
        self, interrupts: AsyncIterator[int], cancel_scope: trio.CancelScope
    ) -> None:
        """Ctrl-C: stop the run in progress, else leave with status 130."""
        async for _ in interrupts:
            if self.session is not None and await self.session.stop():
                continue
            self.interrupted = True
            cancel_scope.cancel()

    async def connect_and_chat(self) -> int:
        target = self.options.target
        try:
            with trio.fail_after(self.options.connect_timeout):
                raw = await self._open_stream()
        except (OSError, trio.TooSlowError) as exc:
            why = str(exc) or "timed out"
            self.out.diag(f"error: cannot connect to {target.host}:{target.port}: {why}")
            return EXIT_USAGE
        stream = _WatchedStream(raw)
        code = EXIT_USAGE
        try:
            code = await self._session(stream)
        except* HandshakeRejected as group:
            rejected = cast(HandshakeRejected, group.exceptions[0])
            body = rejected.reason
            detail = f": {shorten(body, 200)}" if body.strip() else ""
            self.out.diag(f"error: handshake rejected: HTTP {rejected.status}{detail}")
        except* _HandshakeFailed as group:
            self.out.diag(f"error: {group.exceptions[0]}")
        finally:
            await trio.aclose_forcefully(raw)
        return code

    async def _open_stream(self) -> trio.abc.Stream:
        target = self.options.target
        if target.secure:
            return await trio.open_ssl_over_tcp_stream(
                target.host,
                target.port,
                ssl_context=ssl.create_default_context(),
                https_compatible=True,
            )
        return await trio.open_tcp_stream(target.host, target.port)

    async def _session(self, stream: _WatchedStream) -> int:
        async with trio.open_nursery() as nursery:
            ws = await self._handshake(nursery, stream)
            session = self.session = _Session(ws, self.options, self.out)
            with trio.CancelScope() as chat_scope:
                nursery.start_soon(session.read_frames, chat_scope)
                code = await session.chat()
            if chat_scope.cancelled_caught:
                code = session.code_after_close()
            if session.closed is not None:
                self.out.diag(describe_close(*session.closed))
            else:
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await ws.aclose()
            nursery.cancel_scope.cancel()
        return code

    async def _handshake(self, nursery: trio.Nursery, stream: _WatchedStream) -> WebSocketClient:
        """The WebSocket handshake; its reader task runs in ``nursery``.

        A rejection raises ``HandshakeRejected`` out of ``nursery``; a
        connection that ends first raises :class:`_HandshakeFailed`.
        """
        target = self.options.target
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
    )
    if options.prompt:
        print(
            "Type a message and press Enter. Ctrl-C stops a run; /quit, Ctrl-D "
            "or Ctrl-C when idle exits.",
            file=sys.stderr,
        )
    try:
        return trio.run(run_client, options)
    except KeyboardInterrupt:  # Ctrl-C before the signal receiver was open
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
