"""Language-model providers: the interface agents call, and the offline default.

A provider turns chat messages into text, streamed: ``on_delta`` is awaited
with each piece as it arrives and the whole text is returned at the end.
Callbacks rather than async generators keep every await inside the caller's
task and cancel scopes, so cancelling a run cancels the stream cleanly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import trio

DeltaSink = Callable[[str], Awaitable[None]]


@attrs.frozen
class ChatMessage:
    role: str  # "system", "user" or "assistant"
    content: str


@attrs.frozen
class ToolCall:
    """A function call the model made: its name and its arguments as JSON text, unparsed
    (the caller validates them against the function's schema)."""

    name: str
    arguments: str


@attrs.frozen
class ChatResult:
    text: str
    model: str
    #: Token counts when the provider reports them.
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    #: The functions the model called, when it was offered some.
    tool_calls: tuple[ToolCall, ...] = ()


class ModelProvider(Protocol):
    """What agents need from a language model.

    ``tools`` offers functions (``{"name", "description", "parameters"}``, the
    shape of :meth:`agents.Tool.schema`); ``tool_choice`` names the one the
    model must call. A provider whose ``tool_calling`` is False ignores both
    and never returns tool calls: agents then read the request themselves.
    """

    @property
    def name(self) -> str: ...

    @property
    def tool_calling(self) -> bool: ...

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        on_delta: DeltaSink | None = None,
        max_tokens: int | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | None = None,
    ) -> ChatResult: ...


DRAFT_MARKER = "Draft:\n"


@attrs.frozen
class OfflineProvider:
    """Deterministic, network-free provider (the default).

    Agents compute their answer themselves and pass it as a draft in the last
    user message (after a line ``Draft:``); a real model would improve the
    wording, the offline provider returns the draft as it is, streamed
    ``words_per_delta`` words at a time (a thought stream shows it as one event
    at the start and one at the end however it is cut, so the pieces are large:
    fewer awaits for the same events). Without a draft it answers with a fixed
    sentence. Same messages, same text, every time.
    """

    name: str = "offline"
    words_per_delta: int = 64
    #: The offline provider understands nothing: it never calls a function.
    tool_calling: bool = False

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        on_delta: DeltaSink | None = None,
        max_tokens: int | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | None = None,
    ) -> ChatResult:
        last = next((m.content for m in reversed(messages) if m.role == "user"), "")
        _, marker, draft = last.rpartition(DRAFT_MARKER)
        text = draft if marker else "I can only answer from the figures provided."
        words = text.split(" ")
        if max_tokens is not None:
            words = words[:max_tokens]
        text = " ".join(words)
        for start in range(0, len(words), self.words_per_delta):
            chunk = " ".join(words[start : start + self.words_per_delta])
            if start + self.words_per_delta < len(words):
                chunk += " "
            if on_delta is not None:
                await on_delta(chunk)
            else:
                await trio.lowlevel.checkpoint()
        return ChatResult(text=text, model="offline", completion_tokens=len(words))
