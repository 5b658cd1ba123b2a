"""An OpenAI-compatible provider: ``POST {base_url}/chat/completions``, streamed, via httpx.

The answer arrives as Server-Sent Events (``data: {json}`` lines, each with
``choices[0].delta.content``, ending with ``data: [DONE]``); every piece of
text is awaited through ``on_delta`` as it arrives, in the caller's task, so
cancelling the caller (``stop_agent``, a time limit, a drain) cancels the
read and closes the connection.

Failures before any text was streamed are retried: HTTP 429 and 5xx (after
``Retry-After`` when the server sends one, else after an exponential backoff
with jitter) and connection errors and timeouts. Once text has been handed
to ``on_delta`` nothing is retried: the caller has already shown it, so a
broken stream is a :class:`ProviderError`.

httpx runs on trio natively (httpcore's trio backend): the client's sockets,
locks and timeouts are trio's, and its connection pool belongs to whoever
opened it with :func:`open_openai_provider` (the server, for its lifetime).

A :class:`ProviderError`'s message may reach chat users (in an agent's
``agent_error`` or a degraded answer), so it says what went wrong (status,
the API's own error message, timeouts) but not where: the base URL is only
logged. The API key is never in a message, a log line or a repr.
"""

from __future__ import annotations

import email.utils
import ipaddress
import itertools
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import attrs
import httpx
import trio

from server.protocol import ConfigurationError, ProviderError

from .._providers import ChatMessage, ChatResult, DeltaSink, ToolCall

log = logging.getLogger("trio_agent_server.provider")

#: Characters of an error response's body quoted in a ProviderError.
BODY_EXCERPT = 300
#: Bytes of an error response's body read at most.
_ERROR_BODY_LIMIT = 16384
#: Seconds to wait, after ``data: [DONE]``, for the end of the response body.
_AFTER_DONE = 1.0
#: Function calls kept from one answer, and characters of arguments kept per call.
_MAX_CALLS = 4
_MAX_ARGUMENTS = 65_536


def is_loopback_url(url: str) -> bool:
    """Whether ``url``'s host is ``localhost`` or a loopback address."""
    try:
        host = httpx.URL(url).host
    except httpx.InvalidURL:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@attrs.frozen
class OpenAIConfig:
    """Where and how to reach an OpenAI-compatible chat completions API.

    ``retries`` is the number of retries after the first attempt (so at most
    ``retries + 1`` requests per chat). A retry without ``Retry-After`` waits
    ``min(backoff_max, backoff_base * 2 ** (n - 1))`` seconds, stretched by a
    random factor in ``[1, 1 + jitter)``; a ``Retry-After`` (or OpenAI's
    ``retry-after-ms``) is honoured as given, up to ``max_retry_after``
    seconds (longer: give up at once).
    """

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key: str | None = attrs.field(default=None, repr=False)
    connect_timeout: float = 5.0
    #: Longest silence while reading (waiting for the headers, or between two
    #: chunks of the stream); longer is an error.
    read_timeout: float = 30.0
    retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    jitter: float = 0.25
    max_retry_after: float = 60.0

    def __attrs_post_init__(self) -> None:
        try:
            url = httpx.URL(self.base_url)
        except httpx.InvalidURL as exc:
            raise ConfigurationError(f"--model-base-url {self.base_url!r}: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigurationError(
                f"--model-base-url must be an http:// or https:// URL, not {self.base_url!r}"
            )
        for option, value in (
            ("--model-connect-timeout", self.connect_timeout),
            ("--model-read-timeout", self.read_timeout),
        ):
            if not value > 0:
                raise ConfigurationError(f"{option} must be greater than 0, got {value}")
        if self.retries < 0:
            raise ConfigurationError(f"--model-retries must be 0 or more, got {self.retries}")
        if not self.model:
            raise ConfigurationError("--model must not be empty")
        if not self.api_key and not is_loopback_url(self.base_url):
            raise ConfigurationError(
                "--model-provider openai needs an API key (--model-api-key, "
                "CHAT_MODEL_API_KEY or OPENAI_API_KEY) unless --model-base-url is a "
                f"loopback address; {self.base_url} is not"
            )

    @property
    def endpoint(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    @property
    def timeout(self) -> httpx.Timeout:
        # No pool timeout: the pool has no connection limit, so nothing waits for it.
        return httpx.Timeout(
            connect=self.connect_timeout,
            read=self.read_timeout,
            write=self.read_timeout,
            pool=None,
        )

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (1-based) without ``Retry-After``."""
        nominal = min(self.backoff_max, self.backoff_base * 2.0 ** (retry - 1))
        return nominal * (1 + self.jitter * rng.random())


class _Retryable(Exception):
    """An attempt failed before any text was streamed; another may succeed."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class _Text:
    """The text received so far, handed to ``on_delta`` piece by piece."""

    def __init__(self, on_delta: DeltaSink | None) -> None:
        self._on_delta = on_delta
        self._parts: list[str] = []
        self.length = 0

    async def deliver(self, piece: str) -> None:
        self._parts.append(piece)
        self.length += len(piece)
        if self._on_delta is not None:
            await self._on_delta(piece)

    @property
    def text(self) -> str:
        return "".join(self._parts)


class _EventStream:
    """Server-Sent Events to text: ``data:`` lines up to a blank line make one event."""

    def __init__(self, config: OpenAIConfig, text: _Text) -> None:
        self._text = text
        self._data: list[str] = []
        self.model = config.model
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        #: [DONE] arrived, or a finish_reason for the first choice.
        self.finished = False
        #: Function calls being streamed: index -> [name, argument pieces].
        self.calls: dict[int, tuple[list[str], list[str]]] = {}

    async def feed(self, line: str) -> bool:
        """Take one line (without its end); True once ``data: [DONE]`` has arrived."""
        if line:
            field, _, value = line.partition(":")
            if field == "data":  # other fields (event, id, retry) and ":" comments: ignored
                self._data.append(value.removeprefix(" "))
            return False
        if not self._data:
            return False
        event = "\n".join(self._data)
        self._data.clear()
        if event == "[DONE]":
            self.finished = True
            return True
        chunk = _parse_event(event)
        model = chunk.get("model")
        if isinstance(model, str) and model:
            self.model = model
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = _int_or(usage.get("prompt_tokens"), self.prompt_tokens)
            self.completion_tokens = _int_or(usage.get("completion_tokens"), self.completion_tokens)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            piece = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(piece, str) and piece:
                await self._text.deliver(piece)
            calls = delta.get("tool_calls") if isinstance(delta, dict) else None
            for call in calls if isinstance(calls, list) else ():
                self._add_call(call)
            if choice.get("finish_reason"):
                self.finished = True
        return False

    def _add_call(self, call: Any) -> None:
        """One piece of a streamed function call (its name first, then argument text)."""
        if not isinstance(call, dict):
            return
        index = call.get("index", 0)
        function = call.get("function")
        if not isinstance(index, int) or not isinstance(function, dict):
            return
        if index not in self.calls and len(self.calls) >= _MAX_CALLS:
            return
        name, arguments = self.calls.setdefault(index, ([], []))
        if isinstance(function.get("name"), str):
            name.append(function["name"])
        piece = function.get("arguments")
        if isinstance(piece, str) and sum(map(len, arguments)) + len(piece) <= _MAX_ARGUMENTS:
            arguments.append(piece)

    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(name="".join(name), arguments="".join(arguments))
            for _, (name, arguments) in sorted(self.calls.items())
        )


class OpenAIProvider:
    """A :class:`~agents.ModelProvider` for OpenAI's chat completions API and compatibles.

    Holds no connection of its own: requests go through ``client`` (its pool
    is shared by every run of the server). Safe to call from many tasks at
    once. ``rng`` draws the backoff jitter (seed it for repeatable waits).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        config: OpenAIConfig,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self.config = config
        self._rng = rng if rng is not None else random.Random()

    @property
    def name(self) -> str:
        return "openai"

    @property
    def tool_calling(self) -> bool:
        return True

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        on_delta: DeltaSink | None = None,
        max_tokens: int | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | None = None,
    ) -> ChatResult:
        config = self.config
        body: dict[str, Any] = {
            "model": config.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if tools:
            body["tools"] = [{"type": "function", "function": dict(t)} for t in tools]
            if tool_choice is not None:
                body["tool_choice"] = {"type": "function", "function": {"name": tool_choice}}
        try:
            return await self._chat(body, on_delta)
        except ProviderError as exc:
            log.warning("model request to %s failed: %s", config.endpoint, exc)
            raise

    async def _chat(self, body: Mapping[str, Any], on_delta: DeltaSink | None) -> ChatResult:
        config = self.config
        attempts = config.retries + 1
        for attempt in itertools.count(1):
            try:
                return await self._attempt(body, _Text(on_delta))
            except _Retryable as exc:
                if attempt >= attempts:
                    raise ProviderError(
                        f"{exc.message} (gave up after {attempts} attempt(s))"
                    ) from exc.__cause__
                delay = exc.retry_after
                if delay is None:
                    delay = config.backoff(attempt, self._rng)
                elif delay > config.max_retry_after:
                    raise ProviderError(
                        f"{exc.message} (the server asked to retry after {delay:g} s, "
                        f"more than {config.max_retry_after:g} s)"
                    ) from exc.__cause__
                log.warning(
                    "model request to %s failed: %s; retry %d of %d in %.2f s",
                    config.endpoint,
                    exc.message,
                    attempt,
                    config.retries,
                    delay,
                )
                await trio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, body: Mapping[str, Any], text: _Text) -> ChatResult:
        config = self.config
        headers = {"Accept": "text/event-stream"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        try:
            async with self._client.stream(
                "POST", config.endpoint, json=body, headers=headers, timeout=config.timeout
            ) as response:
                status = response.status_code
                if not 200 <= status < 300:
                    message = f"the model API answered HTTP {status}: "
                    message += await _error_excerpt(response)
                    if status == 429 or status >= 500:
                        raise _Retryable(message, _retry_after(response.headers))
                    raise ProviderError(message)
                content_type = response.headers.get("content-type", "")
                if content_type.startswith("application/json"):
                    # A server that ignored "stream": the whole answer at once.
                    return await self._read_whole(response, text)
                return await self._read_stream(response, text)
        except httpx.TimeoutException as exc:
            what = {
                httpx.ConnectTimeout: f"no connection within {config.connect_timeout:g} s",
                httpx.ReadTimeout: f"no data for {config.read_timeout:g} s",
            }.get(type(exc), _describe(exc))
            self._broken(f"the model API: {what}", text, exc)
        except httpx.TransportError as exc:
            self._broken(f"the model API: {_describe(exc)}", text, exc)
        except httpx.HTTPError as exc:
            raise ProviderError(f"the model API: {_describe(exc)}") from exc

    @staticmethod
    def _broken(message: str, text: _Text, exc: Exception | None) -> NoReturn:
        if text.length:
            raise ProviderError(
                f"{message}, after {text.length} characters had been streamed (not retried)"
            ) from exc
        raise _Retryable(message) from exc

    async def _read_stream(self, response: httpx.Response, text: _Text) -> ChatResult:
        stream = _EventStream(self.config, text)
        response.encoding = "utf-8"  # Server-Sent Events are always UTF-8
        lines = response.aiter_lines()
        done = False
        try:
            async for line in lines:
                if await stream.feed(line):
                    done = True
                    break
            else:
                await stream.feed("")  # an event left without its blank line
        finally:
            # After [DONE], the end of the body normally follows at once: read it,
            # briefly, so the connection goes back to the pool.
            await _finish(lines, grace=min(_AFTER_DONE, self.config.read_timeout) if done else 0)
        if not stream.finished:
            self._broken("the model API's stream ended before [DONE]", text, None)
        return ChatResult(
            text=text.text,
            model=stream.model,
            prompt_tokens=stream.prompt_tokens,
            completion_tokens=stream.completion_tokens,
            tool_calls=stream.tool_calls(),
        )

    async def _read_whole(self, response: httpx.Response, text: _Text) -> ChatResult:
        raw = await response.aread()
        chunk = _parse_event(raw.decode("utf-8", "replace"))
        try:
            message = chunk["choices"][0]["message"]
            content = message.get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ProviderError("the model API answered JSON without choices[0].message") from None
        if isinstance(content, str) and content:
            await text.deliver(content)
        calls: list[ToolCall] = []
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and len(calls) < _MAX_CALLS:
                arguments = function.get("arguments")
                calls.append(
                    ToolCall(
                        name=str(function.get("name", "")),
                        arguments=arguments[:_MAX_ARGUMENTS] if isinstance(arguments, str) else "",
                    )
                )
        usage = chunk.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return ChatResult(
            text=text.text,
            model=str(chunk.get("model") or self.config.model),
            prompt_tokens=_int_or(usage.get("prompt_tokens"), None),
            completion_tokens=_int_or(usage.get("completion_tokens"), None),
            tool_calls=tuple(calls),
        )


@asynccontextmanager
async def open_openai_provider(
    config: OpenAIConfig, *, rng: random.Random | None = None
) -> AsyncIterator[OpenAIProvider]:
    """An :class:`OpenAIProvider` with its own httpx client, closed on exit (even if cancelled)."""
    client = httpx.AsyncClient(
        timeout=config.timeout,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
    )
    try:
        yield OpenAIProvider(client, config, rng=rng)
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()


# -- helpers ------------------------------------------------------------------


async def _finish(iterator: AsyncIterator[Any], *, grace: float = 0.0) -> None:
    """Run an httpx streaming iterator to its end, waiting at most ``grace`` seconds.

    httpx and httpcore stream through a chain of async generators; one left
    suspended (we stopped reading: [DONE], an error, a cancellation while
    ``on_delta`` ran) is finalised by the garbage collector, which trio
    reports as a ResourceWarning (encode/httpx#3686). Iterating on under a
    deadline consumes what arrives in time; then the next network read
    raises Cancelled through every generator, so each of them finishes, and
    httpcore closes a connection whose response was not read to the end.
    Errors are not ours to report here: the caller has its answer or its
    own exception already.
    """
    with trio.move_on_after(grace):
        try:
            async for _ in iterator:
                pass
        except httpx.HTTPError:
            pass


async def _error_excerpt(response: httpx.Response) -> str:
    """The start of an error response's body: the API's error message if it is JSON."""
    chunks: list[bytes] = []
    size = 0
    pieces = response.aiter_bytes()
    try:
        async for chunk in pieces:
            chunks.append(chunk)
            size += len(chunk)
            if size >= _ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError as exc:
        if not chunks:
            return f"(body unreadable: {_describe(exc)})"
    finally:
        await _finish(pieces)
    body = b"".join(chunks)[:_ERROR_BODY_LIMIT].decode("utf-8", "replace")
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        message = parsed["error"].get("message")
        if isinstance(message, str) and message:
            body = message
    body = " ".join(body.split()) or "(empty body)"
    return body if len(body) <= BODY_EXCERPT else body[: BODY_EXCERPT - 1] + "…"


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    seconds: float | None = None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            seconds = float(millis) / 1000
        except ValueError:
            seconds = None
    value = headers.get("retry-after")
    if seconds is None and value is not None:
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            seconds = when.timestamp() - time.time()
    if seconds is None or not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _parse_event(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError:
        chunk = None
    if not isinstance(chunk, dict):
        raise ProviderError(f"the model API sent a malformed event: {data[:BODY_EXCERPT]!r}")
    error = chunk.get("error")
    if error is not None:
        message = error.get("message") if isinstance(error, dict) else error
        raise ProviderError(f"the model API reported an error mid-stream: {message}")
    choices = chunk.get("choices")
    if choices is not None and not isinstance(choices, list):
        raise ProviderError(f"the model API sent a malformed event: {data[:BODY_EXCERPT]!r}")
    return chunk


def _int_or(value: object, default: int | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
