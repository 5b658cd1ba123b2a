"""The OpenAI-compatible provider against a loopback server that speaks its streamed format.

The fake server below is written on trio + h11 and listens on 127.0.0.1; each
request it receives is answered by the next behaviour of its script (normal
stream, 429, 500, stall, dropped connection, malformed event, ...), and it
records what it was sent and whether the client went away mid-stream.
Timed behaviours run under ``autojump_clock``: httpx on trio uses trio's own
timeouts (httpcore's trio backend), so retries, backoffs and read timeouts
happen in virtual time and their exact durations are asserted.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import h11
import pytest
import trio
import trio.testing

from agents import ChatMessage, ConfigurationError, ProviderError
from agents.builtin.triage import CATEGORIES
from agents.builtin.triage._understanding import record_request_schema
from agents.providers import (
    OpenAIConfig,
    OpenAIProvider,
    ToolCall,
    is_loopback_url,
    open_openai_provider,
)
from server import ChatServer
from server._assembly import build_provider_config
from server._cli import build_parser, main, settings_from_args
from server.testing import open_chat_client, start_test_server

MESSAGES = (
    ChatMessage("system", "You are terse."),
    ChatMessage("user", "Say hello.\nDraft:\nHello."),
)
KEY = "sk-test-0123456789"
SEED = 7


# -- the fake OpenAI-compatible server -----------------------------------------


@attrs.frozen
class Seen:
    """One request the fake server received."""

    method: str
    target: str
    headers: dict[str, str]
    body: dict[str, Any]


def chunk(content: str | None = None, *, finish: str | None = None) -> str:
    """A ``chat.completion.chunk`` for choice 0, as OpenAI streams it."""
    delta: dict[str, Any] = {} if content is None else {"content": content}
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "model": "fake-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


class Exchange:
    """One request being answered: what a behaviour can do with the connection."""

    def __init__(
        self, fake: FakeOpenAI, stream: trio.SocketStream, conn: h11.Connection, seen: Seen
    ) -> None:
        self.fake = fake
        self.request = seen
        self._stream = stream
        self._conn = conn
        self.closed = False

    async def _send(self, event: h11.Event) -> None:
        data = self._conn.send(event)
        if data:
            await self._stream.send_all(data)

    async def respond(
        self,
        status: int,
        body: bytes,
        *,
        headers: Sequence[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> None:
        """A whole response with a Content-Length (the connection stays reusable)."""
        fields = [("content-type", content_type), ("content-length", str(len(body))), *headers]
        await self._send(h11.Response(status_code=status, headers=fields))
        await self._send(h11.Data(data=body))
        await self._send(h11.EndOfMessage())

    async def start_stream(self) -> None:
        """200 with text/event-stream; h11 sends the body chunked."""
        fields = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
        await self._send(h11.Response(status_code=200, headers=fields))
        await self.event(
            json.dumps(
                {"model": "fake-model", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
            )
        )

    async def raw(self, data: bytes) -> None:
        await self._send(h11.Data(data=data))

    async def event(self, data: str) -> None:
        await self.raw(f"data: {data}\n\n".encode())

    async def delta(self, text: str) -> None:
        await self.event(chunk(text))
        self.fake.deltas_sent += 1
        self.fake.delta_sent.set()

    async def end_stream(self, *, done: bool = True) -> None:
        if done:
            await self.event(chunk(finish="stop"))
            await self.event("[DONE]")
        await self._send(h11.EndOfMessage())

    async def drop(self) -> None:
        """Close the connection at once (mid-response: no terminating chunk)."""
        self.closed = True
        await self._stream.aclose()

    async def wait_for_disconnect(self) -> None:
        """Send nothing more; return when the client has closed the connection."""
        while True:
            try:
                data = await self._stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not data:
                break
        self.closed = True
        self.fake.disconnected.set()


Behaviour = Callable[[Exchange], Awaitable[None]]


class FakeOpenAI:
    """Answers each request with the next behaviour of ``script``, then with ``default``."""

    def __init__(self, script: Sequence[Behaviour], default: Behaviour | None) -> None:
        self._script = list(script)
        self._default = default
        self.port = 0
        self.requests: list[Seen] = []
        self.request_times: list[float] = []
        self.deltas_sent = 0
        self.delta_sent = trio.Event()
        #: A client closed its connection while a response was being streamed.
        self.disconnected = trio.Event()
        self.open_connections = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def handle(self, stream: trio.SocketStream) -> None:
        self.open_connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                seen = await self._read_request(stream, conn)
                if seen is None:
                    return
                self.requests.append(seen)
                self.request_times.append(trio.current_time())
                behaviour = self._script.pop(0) if self._script else self._default
                assert behaviour is not None, f"unscripted request {len(self.requests)}"
                exchange = Exchange(self, stream, conn, seen)
                await behaviour(exchange)
                if exchange.closed or conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except trio.BrokenResourceError:
            self.disconnected.set()
        finally:
            self.open_connections -= 1
            await trio.aclose_forcefully(stream)

    @staticmethod
    async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> Seen | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return Seen(
                    method=request.method.decode(),
                    target=request.target.decode(),
                    headers={k.decode(): v.decode() for k, v in request.headers},
                    body=json.loads(body),
                )
            elif isinstance(event, h11.ConnectionClosed):
                return None


async def start_fake(
    nursery: trio.Nursery, *script: Behaviour, default: Behaviour | None = None
) -> FakeOpenAI:
    fake = FakeOpenAI(script, default)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    fake.port = listeners[0].socket.getsockname()[1]
    await nursery.start(trio.serve_listeners, fake.handle, listeners)
    return fake


# -- behaviours ----------------------------------------------------------------


def stream(pieces: Sequence[str], *, pause: float = 0.0, done: bool = True) -> Behaviour:
    async def behaviour(ex: Exchange) -> None:
        await ex.start_stream()
        for piece in pieces:
            await ex.delta(piece)
            if pause:
                await trio.sleep(pause)
        await ex.end_stream(done=done)

    return behaviour


def fail(status: int, message: str, *, headers: Sequence[tuple[str, str]] = ()) -> Behaviour:
    async def behaviour(ex: Exchange) -> None:
        body = json.dumps({"error": {"message": message, "type": "server_error"}})
        await ex.respond(status, body.encode(), headers=headers)

    return behaviour


def stall_after(pieces: Sequence[str]) -> Behaviour:
    async def behaviour(ex: Exchange) -> None:
        await ex.start_stream()
        for piece in pieces:
            await ex.delta(piece)
        await ex.wait_for_disconnect()

    return behaviour


def drop_after(pieces: Sequence[str]) -> Behaviour:
    async def behaviour(ex: Exchange) -> None:
        await ex.start_stream()
        for piece in pieces:
            await ex.delta(piece)
        await ex.drop()

    return behaviour


async def drop_before_response(ex: Exchange) -> None:
    await ex.drop()


def malformed_after(pieces: Sequence[str]) -> Behaviour:
    async def behaviour(ex: Exchange) -> None:
        await ex.start_stream()
        for piece in pieces:
            await ex.delta(piece)
        await ex.raw(b'data: {"choices": [{"index": 0, "delta": {"content": "x"\n\n')
        await ex.wait_for_disconnect()

    return behaviour


def call_event(delta: dict[str, Any], finish: str | None = None) -> str:
    return json.dumps(
        {
            "model": "fake-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


def tool_call(name: str, arguments: Any, *, pieces: int = 4) -> Behaviour:
    """A streamed function call, its JSON arguments cut into ``pieces`` chunks as OpenAI
    streams them (the name and id in the first chunk only)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    size = max(1, -(-len(text) // pieces))

    async def behaviour(ex: Exchange) -> None:
        await ex.start_stream()
        for n, start in enumerate(range(0, len(text), size)):
            function: dict[str, Any] = {"arguments": text[start : start + size]}
            call: dict[str, Any] = {"index": 0, "function": function}
            if n == 0:
                function["name"] = name
                call.update(id="call_1", type="function")
            await ex.event(call_event({"tool_calls": [call]}))
        await ex.event(call_event({}, finish="tool_calls"))
        await ex.event("[DONE]")
        await ex._send(h11.EndOfMessage())

    return behaviour


def whole_tool_call(name: str, arguments: Any) -> Behaviour:
    """A function call in one JSON answer (a server that ignores "stream")."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)

    async def behaviour(ex: Exchange) -> None:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": name, "arguments": text}}
            ],
        }
        body = {"model": "fake-model", "choices": [{"index": 0, "message": message}]}
        await ex.respond(200, json.dumps(body).encode())

    return behaviour


# -- helpers -------------------------------------------------------------------


def config(fake: FakeOpenAI, **overrides: Any) -> OpenAIConfig:
    values: dict[str, Any] = {"base_url": fake.base_url, "model": "gpt-test", "api_key": KEY}
    values.update(overrides)
    return OpenAIConfig(**values)


@asynccontextmanager
async def provider_for(fake: FakeOpenAI, **overrides: Any) -> AsyncIterator[OpenAIProvider]:
    async with open_openai_provider(config(fake, **overrides), rng=random.Random(SEED)) as p:
        yield p


class Collected:
    def __init__(self) -> None:
        self.pieces: list[str] = []

    async def __call__(self, piece: str) -> None:
        self.pieces.append(piece)


def backoffs(cfg: OpenAIConfig, count: int) -> list[float]:
    """The waits before retries 1..count, drawn as the provider draws them."""
    rng = random.Random(SEED)
    return [cfg.backoff(n, rng) for n in range(1, count + 1)]


# -- streaming -----------------------------------------------------------------


async def test_streams_each_delta_in_order_and_returns_the_whole_text(
    nursery: trio.Nursery,
) -> None:
    pieces = ["Hel", "lo", ", ", "wor", "ld."]
    fake = await start_fake(nursery, stream(pieces))
    got = Collected()
    async with provider_for(fake) as provider:
        result = await provider.chat(MESSAGES, on_delta=got, max_tokens=50)
    assert got.pieces == pieces
    assert result.text == "Hello, world."
    assert result.model == "fake-model"
    [seen] = fake.requests
    assert (seen.method, seen.target) == ("POST", "/v1/chat/completions")
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["accept"] == "text/event-stream"
    assert seen.body == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello.\nDraft:\nHello."},
        ],
        "stream": True,
        "max_tokens": 50,
    }


async def test_without_max_tokens_or_key_neither_is_sent(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, stream(["ok"]))
    async with provider_for(fake, api_key=None) as provider:  # loopback: no key needed
        result = await provider.chat(MESSAGES)
    assert result.text == "ok"
    [seen] = fake.requests
    assert "authorization" not in seen.headers
    assert "max_tokens" not in seen.body
    assert seen.body["stream"] is True


async def test_connection_is_reused_for_the_next_chat(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, stream(["a"]), stream(["b"]))
    async with provider_for(fake) as provider:
        first = await provider.chat(MESSAGES)
        second = await provider.chat(MESSAGES)
        assert fake.open_connections == 1
    assert (first.text, second.text) == ("a", "b")


async def test_a_whole_json_answer_is_accepted_when_the_server_ignores_stream(
    nursery: trio.Nursery,
) -> None:
    async def whole(ex: Exchange) -> None:
        body = {
            "model": "fake-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "All at once."}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3},
        }
        await ex.respond(200, json.dumps(body).encode())

    fake = await start_fake(nursery, whole)
    got = Collected()
    async with provider_for(fake) as provider:
        result = await provider.chat(MESSAGES, on_delta=got)
    assert got.pieces == ["All at once."]
    assert (result.text, result.prompt_tokens, result.completion_tokens) == ("All at once.", 12, 3)


# -- retries -------------------------------------------------------------------


async def test_429_waits_exactly_retry_after_then_succeeds(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake = await start_fake(
        nursery, fail(429, "slow down", headers=[("retry-after", "7")]), stream(["fine"])
    )
    async with provider_for(fake) as provider:
        start = trio.current_time()
        result = await provider.chat(MESSAGES)
        elapsed = trio.current_time() - start
    assert result.text == "fine"
    assert len(fake.requests) == 2
    assert elapsed == pytest.approx(7.0)
    assert fake.request_times[1] - fake.request_times[0] == pytest.approx(7.0)


async def test_retry_after_ms_is_honoured(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake = await start_fake(
        nursery, fail(429, "slow down", headers=[("retry-after-ms", "250")]), stream(["fine"])
    )
    async with provider_for(fake) as provider:
        await provider.chat(MESSAGES)
    assert fake.request_times[1] - fake.request_times[0] == pytest.approx(0.25)


async def test_500_is_retried_after_a_seeded_jittered_backoff(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake = await start_fake(nursery, fail(500, "oops"), stream(["recovered"]))
    async with provider_for(fake) as provider:
        result = await provider.chat(MESSAGES)
        [wait] = backoffs(provider.config, 1)
    assert result.text == "recovered"
    assert len(fake.requests) == 2
    assert 0.5 <= wait < 0.5 * 1.25  # base 0.5 s, jitter up to 25 %
    assert fake.request_times[1] - fake.request_times[0] == pytest.approx(wait)


async def test_500_forever_gives_up_after_exactly_the_retry_cap(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake = await start_fake(nursery, default=fail(503, "the engine is overloaded"))
    async with provider_for(fake, retries=3) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.chat(MESSAGES)
        waits = backoffs(provider.config, 3)
    assert len(fake.requests) == 4
    gaps = [b - a for a, b in zip(fake.request_times, fake.request_times[1:], strict=False)]
    assert gaps == pytest.approx(waits)
    assert waits[0] < waits[1] < waits[2]  # exponential: 0.5, 1, 2 s (+ jitter)
    message = str(caught.value)
    assert "HTTP 503" in message
    assert "the engine is overloaded" in message
    assert "4 attempt" in message


async def test_zero_retries_means_one_attempt(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake = await start_fake(nursery, default=fail(500, "down"))
    async with provider_for(fake, retries=0) as provider:
        with pytest.raises(ProviderError, match="HTTP 500"):
            await provider.chat(MESSAGES)
    assert len(fake.requests) == 1


async def test_retry_after_beyond_the_cap_gives_up_at_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake = await start_fake(nursery, fail(429, "quota", headers=[("retry-after", "3600")]))
    async with provider_for(fake) as provider:
        start = trio.current_time()
        with pytest.raises(ProviderError, match="retry after 3600 s"):
            await provider.chat(MESSAGES)
        assert trio.current_time() == start
    assert len(fake.requests) == 1


async def test_client_errors_are_not_retried_and_quote_the_api_message(
    nursery: trio.Nursery,
) -> None:
    fake = await start_fake(nursery, fail(401, "Incorrect API key provided: sk-test***"))
    async with provider_for(fake) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.chat(MESSAGES)
    assert len(fake.requests) == 1
    assert "HTTP 401" in str(caught.value)
    assert "Incorrect API key provided" in str(caught.value)
    # The message can reach chat users: it names neither the API's address nor the key.
    assert f"127.0.0.1:{fake.port}" not in str(caught.value)
    assert KEY not in str(caught.value)


async def test_a_connection_dropped_before_any_content_is_retried(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake = await start_fake(nursery, drop_before_response, stream(["second try"]))
    async with provider_for(fake) as provider:
        result = await provider.chat(MESSAGES)
    assert result.text == "second try"
    assert len(fake.requests) == 2


async def test_connection_refused_is_retried_then_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        await listener.aclose()  # nothing listens there any more
    cfg = OpenAIConfig(base_url=f"http://127.0.0.1:{port}/v1", retries=2)
    async with open_openai_provider(cfg, rng=random.Random(SEED)) as provider:
        start = trio.current_time()
        with pytest.raises(ProviderError, match="3 attempt") as caught:
            await provider.chat(MESSAGES)
    assert "ConnectError" in str(caught.value)
    assert trio.current_time() - start == pytest.approx(sum(backoffs(cfg, 2)))


# -- broken streams --------------------------------------------------------------


async def test_a_stall_mid_stream_longer_than_the_read_timeout_fails_without_retry(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake = await start_fake(nursery, stall_after(["one ", "two "]), default=stream(["never"]))
    got = Collected()
    async with provider_for(fake, read_timeout=5.0) as provider:
        start = trio.current_time()
        with pytest.raises(ProviderError) as caught:
            await provider.chat(MESSAGES, on_delta=got)
        elapsed = trio.current_time() - start
        with trio.fail_after(1):
            await fake.disconnected.wait()
    assert got.pieces == ["one ", "two "]
    assert elapsed == pytest.approx(5.0)
    assert len(fake.requests) == 1
    assert "no data for 5 s" in str(caught.value)
    assert "not retried" in str(caught.value)


async def test_a_stall_before_any_content_is_a_retried_read_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake = await start_fake(nursery, stall_after([]), stream(["late but fine"]))
    async with provider_for(fake, read_timeout=2.0) as provider:
        start = trio.current_time()
        result = await provider.chat(MESSAGES)
        [wait] = backoffs(provider.config, 1)
        assert trio.current_time() - start == pytest.approx(2.0 + wait)
    assert result.text == "late but fine"


async def test_a_connection_dropped_mid_stream_fails_without_retry(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    fake = await start_fake(nursery, drop_after(["par", "tial"]), default=stream(["never"]))
    got = Collected()
    async with provider_for(fake) as provider:
        with pytest.raises(ProviderError, match="after 7 characters") as caught:
            await provider.chat(MESSAGES, on_delta=got)
    assert got.pieces == ["par", "tial"]
    assert len(fake.requests) == 1
    assert "not retried" in str(caught.value)


async def test_a_stream_that_ends_without_done_after_content_is_an_error(
    nursery: trio.Nursery,
) -> None:
    fake = await start_fake(nursery, stream(["cut"], done=False), default=stream(["never"]))
    async with provider_for(fake) as provider:
        with pytest.raises(ProviderError, match=r"ended before \[DONE\]"):
            await provider.chat(MESSAGES)
    assert len(fake.requests) == 1


async def test_a_malformed_event_is_a_provider_error(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, malformed_after(["fine so far"]), default=stream(["never"]))
    got = Collected()
    async with provider_for(fake) as provider:
        with pytest.raises(ProviderError, match="malformed event") as caught:
            await provider.chat(MESSAGES, on_delta=got)
        with trio.fail_after(5):
            await fake.disconnected.wait()  # the rest of that response is not waited for
    assert got.pieces == ["fine so far"]
    assert '{"choices"' in str(caught.value)
    assert len(fake.requests) == 1


async def test_an_error_object_mid_stream_is_a_provider_error(nursery: trio.Nursery) -> None:
    async def error_mid_stream(ex: Exchange) -> None:
        await ex.start_stream()
        await ex.event(json.dumps({"error": {"message": "context length exceeded"}}))
        await ex.end_stream(done=False)

    fake = await start_fake(nursery, error_mid_stream)
    async with provider_for(fake) as provider:
        with pytest.raises(ProviderError, match="context length exceeded"):
            await provider.chat(MESSAGES)


# -- cancellation ----------------------------------------------------------------


async def test_cancelled_while_waiting_for_the_next_chunk_closes_the_connection(
    nursery: trio.Nursery,
) -> None:
    fake = await start_fake(nursery, stall_after(["first"]))
    got = Collected()
    async with provider_for(fake) as provider:
        with trio.fail_after(5):
            async with trio.open_nursery() as inner:
                inner.start_soon(partial(provider.chat, MESSAGES, on_delta=got))
                await fake.delta_sent.wait()
                await trio.testing.wait_all_tasks_blocked()  # the provider waits to read
                inner.cancel_scope.cancel()
            await fake.disconnected.wait()
    assert got.pieces == ["first"]
    assert fake.open_connections == 0


async def test_cancelled_inside_on_delta_closes_the_connection_and_every_stream_iterator(
    nursery: trio.Nursery,
) -> None:
    # Cancellation that lands while on_delta runs leaves httpx's chain of async
    # generators suspended; unless the provider finishes them, trio reports an
    # abandoned generator (a ResourceWarning, an error in this suite).
    fake = await start_fake(nursery, stall_after(["a", "b", "c"]))
    got: list[str] = []
    async with provider_for(fake) as provider:
        with trio.CancelScope() as scope:

            async def on_delta(piece: str) -> None:
                got.append(piece)
                if len(got) == 2:
                    scope.cancel()
                await trio.lowlevel.checkpoint()

            await provider.chat(MESSAGES, on_delta=on_delta)
        assert scope.cancelled_caught
        with trio.fail_after(5):
            await fake.disconnected.wait()
    assert got == ["a", "b"]


async def test_closing_the_provider_closes_its_idle_connections(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, stream(["kept alive"]))
    async with provider_for(fake) as provider:
        await provider.chat(MESSAGES)
        assert fake.open_connections == 1
    with trio.fail_after(5):
        while fake.open_connections:
            await trio.testing.wait_all_tasks_blocked()
    assert fake.open_connections == 0


# -- function calls ----------------------------------------------------------------

SCHEMA = record_request_schema(CATEGORIES)


@pytest.mark.parametrize("answer", [tool_call, whole_tool_call])
async def test_a_function_call_is_returned_whole_with_its_raw_arguments(
    nursery: trio.Nursery, answer: Callable[[str, Any], Behaviour]
) -> None:
    arguments = {"reply": "smalltalk", "language": "en", "category": "general", "figures": []}
    fake = await start_fake(nursery, answer("record_request", arguments))
    async with provider_for(fake) as provider:
        result = await provider.chat(MESSAGES, tools=[SCHEMA], tool_choice="record_request")
    assert result.tool_calls == (ToolCall("record_request", json.dumps(arguments)),)
    assert result.text == ""
    (seen,) = fake.requests
    assert seen.body["tools"] == [{"type": "function", "function": SCHEMA}]
    assert seen.body["tool_choice"] == {"type": "function", "function": {"name": "record_request"}}


async def test_without_tools_none_are_offered(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, stream(["plain"]))
    async with provider_for(fake) as provider:
        result = await provider.chat(MESSAGES)
    assert result.tool_calls == ()
    assert "tools" not in fake.requests[0].body
    assert "tool_choice" not in fake.requests[0].body


# -- configuration -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8000/v1", True),
        ("http://127.8.9.10/v1", True),
        ("http://localhost:11434/v1", True),
        ("http://[::1]:8000/v1", True),
        ("https://api.openai.com/v1", False),
        ("http://10.0.0.1/v1", False),
        ("not a url", False),
    ],
)
def test_loopback_urls_are_recognised(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


def test_a_remote_url_needs_a_key_and_the_key_is_never_in_repr() -> None:
    with pytest.raises(ConfigurationError, match="needs an API key"):
        OpenAIConfig(base_url="https://api.openai.com/v1")
    assert KEY not in repr(OpenAIConfig(api_key=KEY))
    OpenAIConfig(base_url="http://localhost:8000/v1")  # a local server needs none


@pytest.mark.parametrize(
    "overrides",
    [
        {"base_url": "ftp://127.0.0.1/v1"},
        {"base_url": "127.0.0.1:8000"},
        {"read_timeout": 0},
        {"connect_timeout": -1},
        {"retries": -1},
        {"model": ""},
    ],
)
def test_unusable_options_are_configuration_errors(overrides: dict[str, Any]) -> None:
    values: dict[str, Any] = {"base_url": "http://127.0.0.1:9/v1", **overrides}
    with pytest.raises(ConfigurationError):
        OpenAIConfig(**values)


def test_cli_defaults_and_the_api_key_environment() -> None:
    settings = settings_from_args([], {})
    assert settings.model_provider == "offline"
    assert settings.model_base_url == "https://api.openai.com/v1"
    assert settings.model == "gpt-4o-mini"
    assert settings.model_api_key is None
    assert (settings.model_connect_timeout, settings.model_read_timeout) == (5.0, 30.0)
    assert settings.model_retries == 3
    assert settings_from_args([], {"OPENAI_API_KEY": "k2"}).model_api_key == "k2"
    both = {"CHAT_MODEL_API_KEY": "k1", "OPENAI_API_KEY": "k2"}
    assert settings_from_args([], both).model_api_key == "k1"
    assert settings_from_args(["--model-api-key", "k0"], both).model_api_key == "k0"
    args = ["--model-provider", "openai", "--model", "m", "--model-retries", "0"]
    chosen = settings_from_args(args, {"CHAT_MODEL_READ_TIMEOUT": "2.5"})
    assert (chosen.model_provider, chosen.model, chosen.model_retries) == ("openai", "m", 0)
    assert chosen.model_read_timeout == 2.5


def test_the_api_key_is_never_printed() -> None:
    environ = {"OPENAI_API_KEY": KEY}
    help_text = build_parser(environ).format_help()
    assert KEY not in help_text
    assert "[set]" in help_text
    assert KEY not in repr(settings_from_args([], environ))


def test_openai_without_a_key_is_a_startup_error_unless_the_url_is_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("CHAT_MODEL_API_KEY", raising=False)
    assert main(["--model-provider", "openai"]) == 2
    assert "needs an API key" in capsys.readouterr().err
    loopback = ["--model-provider", "openai", "--model-base-url", "http://127.0.0.1:1/v1"]
    cfg = build_provider_config(settings_from_args(loopback, {}))
    assert cfg is not None
    assert cfg.api_key is None


async def test_a_server_configured_without_a_key_does_not_start(nursery: trio.Nursery) -> None:
    with pytest.raises(ConfigurationError, match="needs an API key"):
        await start_test_server(
            nursery, model_provider="openai", model_base_url="https://api.example.com/v1"
        )


# -- end to end: the server's agents stream through the provider ------------------------

REQUEST = (
    "We spend about $12,000 a month on gpt-4o with 400M input tokens and 80M output "
    "tokens a month. How can we cut the cost by 30%?"
)


async def start_openai_server(nursery: trio.Nursery, fake: FakeOpenAI) -> ChatServer:
    return await start_test_server(
        nursery,
        model_provider="openai",
        model_base_url=fake.base_url,
        model="gpt-test",
        model_api_key=KEY,
    )


async def test_a_run_streams_the_model_text_as_coalesced_thoughts_into_the_answer(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    pieces = [f"w{i} " for i in range(200)]
    model_text = "".join(pieces)
    fake = await start_fake(nursery, default=stream(pieces, pause=0.001))
    server = await start_openai_server(nursery, fake)
    async with open_chat_client(server, user_id="u1") as client:
        run = await client.run(REQUEST)
    assert run.status == "completed", run.final
    assert fake.requests, "no agent called the model provider"
    for seen in fake.requests:
        assert seen.body["model"] == "gpt-test"
        assert seen.body["stream"] is True
        assert seen.headers["authorization"] == f"Bearer {KEY}"
    reporting = [s for s in fake.requests if "Draft:" in s.body["messages"][-1]["content"]]
    assert reporting, "the reporting step did not send its draft to the model"
    thoughts = [
        e["data"]["reasoning"]
        for e in run.events
        if e["type"] == "agent_thinking" and e["agent_name"] == "reporting"
    ]
    streamed = [t for t in thoughts if t in model_text]
    # 200 deltas over 0.2 s of (virtual) time: the first at once, then at most one
    # event per 50 ms, then the rest when the stream ends.
    assert len(streamed) <= 6
    assert "".join(streamed) == model_text
    assert run.result is not None
    assert model_text.strip() in run.result["answer"]


#: What a model reads in REQUEST, as record_request arguments.
UNDERSTOOD = {
    "reply": "answer",
    "language": "en",
    "category": "cost_optimization",
    "current_model": "gpt-4o",
    "figures": [
        {"kind": "spend", "value": 12000, "per": "month", "currency": "USD",
         "quote": "$12,000 a month"},
        {"kind": "input_tokens", "value": 400e6, "per": "month", "quote": "400M input tokens"},
        {"kind": "output_tokens", "value": 80e6, "per": "month", "quote": "80M output tokens"},
        {"kind": "cost_reduction_pct", "value": 30, "quote": "cut the cost by 30%"},
    ],
}  # fmt: skip


async def test_stop_agent_while_the_model_streams_cancels_the_run_and_the_stream(
    nursery: trio.Nursery,
) -> None:
    fake = await start_fake(
        nursery,
        tool_call("record_request", UNDERSTOOD),
        default=stall_after(["Thinking ", "slowly "]),
    )
    server = await start_openai_server(nursery, fake)
    async with open_chat_client(server, user_id="u1") as client:
        run_id = await client.start(REQUEST)
        with trio.fail_after(10):
            while not any(
                e["type"] == "agent_thinking" and "Thinking" in e["data"]["reasoning"]
                for e in client.events(run_id)
            ):
                await client.receive()
        await client.stop(run_id)
        run = await client.collect(run_id)
        with trio.fail_after(5):
            await fake.disconnected.wait()
    assert run.status == "cancelled"
    assert run.final["data"]["error"]["code"] == "CANCELLED"
    assert run.closing("reporting")["data"]["status"] == "cancelled"
    with trio.fail_after(5):
        await server.wait_idle()
    assert server.statistics().gauges == (0, 0, 0, 0)
    assert fake.open_connections == 0  # the provider kept no connection to the model


async def test_a_failing_model_degrades_the_run_to_the_offline_answer_and_says_why(
    nursery: trio.Nursery,
) -> None:
    fake = await start_fake(nursery, default=fail(401, "Incorrect API key provided"))
    server = await start_openai_server(nursery, fake)
    async with open_chat_client(server, user_id="u1") as client:
        run = await client.run(REQUEST)
    assert run.status == "completed", run.final
    # Both model calls failed (a 401 is not retried): triage read the request offline
    # and reporting kept its own draft, and the answer and the result say so.
    assert len(fake.requests) == 2
    assert run.result is not None
    assert run.result["degraded"] is True
    reasons = run.result["degraded_reasons"]
    assert any("could not read the request" in r and "HTTP 401" in r for r in reasons)
    assert any("could not write the answer" in r for r in reasons)
    answer = run.result["answer"]
    assert answer.startswith("> **Degraded answer:** the model could not read the request")
    assert "Incorrect API key provided" in answer
    triage = run.closing("triage")["data"]["result"]
    assert triage["understood_by"] == "offline"
    assert result_figures(run)["monthly_cost_usd"] == 1800.0  # 400M x $2.50 + 80M x $10


def result_figures(run: Any) -> dict[str, Any]:
    figures: dict[str, Any] = run.closing("data")["data"]["result"]["figures"]
    return figures


GERMAN = (
    "Jeder Aufruf hat etwa 2.500 Eingabe-Tokens und 300 Ausgabe-Tokens, wir machen "
    "1,5 Mio. Aufrufe im Monat mit gpt-4o. Was kostet das, und was spart gpt-4o-mini?"
)
GERMAN_UNDERSTOOD = {
    "reply": "answer",
    "language": "de",
    "category": "cost_optimization",
    "current_model": "gpt-4o",
    "candidate_models": ["gpt-4o-mini"],
    "figures": [
        {"kind": "input_tokens", "value": 2500, "per": "request",
         "quote": "2.500 Eingabe-Tokens"},
        {"kind": "output_tokens", "value": 300, "per": "request", "quote": "300 Ausgabe-Tokens"},
        {"kind": "requests", "value": 1.5e6, "per": "month",
         "quote": "1,5 Mio. Aufrufe im Monat"},
    ],
}  # fmt: skip
# 3.75B input x $2.50 + 450M output x $10 = $13,875; on gpt-4o-mini $832.50.
GERMAN_ANSWER = (
    "## Kosten\n\nIhre Aufrufe kosten 13.875,00 $ im Monat mit gpt-4o; mit gpt-4o-mini "
    "wären es 832,50 $, also 13.042,50 $ weniger (94 %)."
)


async def test_the_model_reads_the_request_the_tools_compute_and_the_model_words_it_in_german(
    nursery: trio.Nursery,
) -> None:
    fake = await start_fake(
        nursery, tool_call("record_request", GERMAN_UNDERSTOOD), stream([GERMAN_ANSWER])
    )
    server = await start_openai_server(nursery, fake)
    async with open_chat_client(server, user_id="u1") as client:
        run = await client.run(GERMAN)
    assert run.status == "completed", run.final
    understand, write = fake.requests
    assert understand.body["tool_choice"]["function"]["name"] == "record_request"
    triage = run.closing("triage")["data"]["result"]
    assert (triage["understood_by"], triage["language"]) == ("model", "de")
    assert triage["entities"]["models"] == ["gpt-4o", "gpt-4o-mini"]
    # The figures are the tools' arithmetic on what the model read, not the model's.
    figures = result_figures(run)
    assert figures["monthly_tokens"]["input"] == 3.75e9
    assert figures["monthly_cost_usd"] == 13_875.0
    system, user = write.body["messages"]
    assert "in German" in system["content"]
    assert '"monthly_cost_usd":13875.0' in user["content"]
    assert run.result is not None
    assert run.result["answer"] == GERMAN_ANSWER
    assert run.result["language"] == "de"
    assert run.result["degraded"] is False


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ("{not json", "Expecting property name"),
        ({**UNDERSTOOD, "category": "astrology"}, "record_request.category must be one of"),
        (
            {**UNDERSTOOD, "figures": [{"kind": "input_tokens", "value": -5, "quote": "x"}]},
            "must be at least 0",
        ),
        ({**UNDERSTOOD, "mood": "happy"}, "unknown property 'mood'"),
    ],
)
async def test_a_model_call_that_does_not_fit_the_schema_falls_back_offline_and_says_so(
    nursery: trio.Nursery, arguments: Any, complaint: str
) -> None:
    fake = await start_fake(nursery, tool_call("record_request", arguments), stream(["ok"]))
    server = await start_openai_server(nursery, fake)
    async with open_chat_client(server, user_id="u1") as client:
        run = await client.run(REQUEST)
    assert run.status == "completed", run.final
    triage = run.closing("triage")["data"]["result"]
    assert triage["understood_by"] == "offline"
    assert complaint in triage["degraded"]
    assert run.result is not None
    assert run.result["degraded"] is True
    assert complaint in run.result["answer"]
    assert result_figures(run)["monthly_cost_usd"] == 1800.0  # read by the offline parser


async def test_a_figure_the_model_did_not_find_in_the_request_is_dropped(
    nursery: trio.Nursery,
) -> None:
    invented = {
        "kind": "requests", "value": 9e9, "per": "month", "quote": "nine billion calls",
    }  # fmt: skip
    understood = {**UNDERSTOOD, "figures": [*UNDERSTOOD["figures"], invented]}
    fake = await start_fake(nursery, tool_call("record_request", understood), stream(["ok"]))
    server = await start_openai_server(nursery, fake)
    async with open_chat_client(server, user_id="u1") as client:
        run = await client.run(REQUEST)
    triage = run.closing("triage")["data"]["result"]
    assert triage["understood_by"] == "model"
    assert triage["dropped"] == ["requests 9e+09: not found in the request"]
    assert triage["entities"]["request_volumes"] == []
    assert "monthly_requests" not in result_figures(run)


async def test_an_answer_with_figures_nobody_computed_is_replaced_by_the_draft(
    nursery: trio.Nursery,
) -> None:
    fake = await start_fake(
        nursery,
        tool_call("record_request", UNDERSTOOD),
        stream(["You will save $99,999 a month and 1,800 is your cost."]),
    )
    server = await start_openai_server(nursery, fake)
    async with open_chat_client(server, user_id="u1") as client:
        run = await client.run(REQUEST)
    assert run.result is not None
    assert run.result["degraded"] is True
    (reason,) = run.result["degraded_reasons"]
    assert "figures that were not computed (99,999)" in reason
    answer = run.result["answer"]
    assert "$99,999" not in answer
    assert "## Cost optimisation" in answer  # the draft, under the reason
