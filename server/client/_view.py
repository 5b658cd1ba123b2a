"""The terminal client's live view: frames in, text lines out (pure, no I/O).

:class:`ChatView` turns each frame the server sends into the lines the
terminal client prints: one line per agent start and end, indented by
nesting depth, tool calls with shortened parameters and timings, thinking
lines, then the final answer and the run's status. It also lays out the
replies of the thread commands (a list of threads, a thread's runs and
answers). Everything the server or an agent wrote is stripped of control
characters before it is shown, so agent text cannot move the cursor or
change colours.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from server.protocol import RUN_EVENT_TYPES

#: Exit status of the one-shot client for each final run status.
EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_DISCONNECTED = 4
EXIT_INTERRUPTED = 130

_EXIT_BY_STATUS = {
    "completed": EXIT_COMPLETED,
    "failed": EXIT_FAILED,
    "timeout": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
}


# ANSI SGR codes, used only when the view is told to colour.
_RESET = "\x1b[0m"
_BOLD = "1"
_DIM = "2"
_RED = "31"
_GREEN = "32"
_YELLOW = "33"
_MAGENTA = "35"
_CYAN = "36"

_STATUS_MARK = {"completed": ("✓", _GREEN), "cancelled": ("⊘", _YELLOW)}
#: Replies to the v1.1 requests: the client's commands lay them out, not the live view.
REPLY_TYPES = frozenset(
    {
        "threads",
        "thread",
        "thread_renamed",
        "thread_deleted",
        "run_resumed",
        "thread_subscribed",
        "thread_unsubscribed",
    }
)
_ERROR_MARK = ("✗", _RED)

#: C0 and C1 control characters (and DEL): never printed as they are.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"\s+")
_CLOSE_NAMES = {
    1000: "normal closure",
    1001: "server shutting down",
    1003: "binary frame refused",
    1006: "connection dropped",
    1008: "policy violation",
    1009: "message too big",
    1011: "server error",
    1013: "slow consumer",
}


def exit_code_for(status: str | None) -> int:
    """The one-shot exit status for a run's final status (``None``: no final event)."""
    if status is None:
        return EXIT_DISCONNECTED
    return _EXIT_BY_STATUS.get(status, EXIT_FAILED)


def clean(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` without control characters (tabs become spaces; newlines kept if asked)."""
    text = text.replace("\r\n", "\n").replace("\t", "    ")
    if not keep_newlines:
        text = text.replace("\n", " ")
    return _CONTROL.sub("\N{REPLACEMENT CHARACTER}", text)


def shorten(text: str, width: int) -> str:
    """``text`` on one line, whitespace collapsed, cut to ``width`` characters with ``…``."""
    text = _SPACE.sub(" ", clean(text)).strip()
    width = max(width, 1)
    if len(text) <= width:
        return text
    return text[: width - 1].rstrip() + "…"


def format_duration(ms: Any) -> str:
    """``0.4 ms``, ``12 ms``, ``1.23 s``; empty if ``ms`` is not a number."""
    if isinstance(ms, bool) or not isinstance(ms, int | float) or not math.isfinite(ms):
        return ""
    if ms < 9.95:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.2f} s"


def describe_close(code: int | None, reason: str | None) -> str:
    """A one-line description of a close: ``connection closed: 1009 message too big``."""
    if code is None:
        return "connection closed"
    text = f"connection closed: {code} {_CLOSE_NAMES.get(code, '')}".rstrip()
    if reason:
        text += f" ({shorten(reason, 80)})"
    return text


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _when(value: Any) -> str:
    """``2026-11-21T10:00:00.123Z`` as ``2026-11-21 10:00Z``; anything else shortened."""
    text = _text(value)
    match = re.fullmatch(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d)[0-9:.]*Z", text)
    return f"{match[1]} {match[2]}Z" if match else shorten(text, 20)


def _json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=False)
    except (TypeError, ValueError):
        return repr(value)


@attrs.define
class ChatView:
    """Renders frames as lines; remembers each run's open agents for the indentation."""

    color: bool = False
    width: int = 100
    _open: dict[str, list[str]] = attrs.field(factory=dict, init=False)

    # -- public ------------------------------------------------------------

    def render(self, frame: Mapping[str, Any]) -> list[str]:
        """The lines to print for ``frame`` (possibly none)."""
        kind = frame.get("type")
        data = frame.get("data")
        data = data if isinstance(data, Mapping) else {}
        if kind in RUN_EVENT_TYPES:
            return self._run_event(str(kind), frame, data)
        if kind == "error_message":
            code = shorten(_text(frame.get("error_code")) or "ERROR", 40)
            text = shorten(_text(frame.get("error_message")), self.width - len(code) - 4)
            return [self._style(f"! {code}: {text}", _RED)]
        if kind == "system_message":
            if data.get("event") == "connection_established":
                user = shorten(_text(data.get("user_id")), 60)
                connection = shorten(_text(data.get("connection_id")), 60)
                return [self._style(f"connected as {user} ({connection})", _DIM)]
            return [self._style(f"system: {shorten(_json(dict(data)), self.width - 8)}", _DIM)]
        if kind in ("pong", "heartbeat_ack"):
            return [self._style(str(kind), _DIM)]
        if kind in REPLY_TYPES:
            return []
        return [self._style(f"? {shorten(_json(dict(frame)), self.width - 2)}", _DIM)]

    def render_all(self, frames: Iterable[Mapping[str, Any]]) -> list[str]:
        """The lines for several frames in order."""
        return [line for frame in frames for line in self.render(frame)]

    # -- thread commands -----------------------------------------------------

    def threads(self, data: Mapping[str, Any], *, first: int = 1) -> list[str]:
        """A ``threads`` reply as a numbered list (numbers from ``first``), newest first:
        each thread's title, then its runs, last status, time and id on a line of their own."""
        threads = [t for t in _list(data.get("threads")) if isinstance(t, Mapping)]
        if not threads:
            return [self._style("no threads yet" if first == 1 else "no more threads", _DIM)]
        lines = []
        for number, thread in enumerate(threads, first):
            count = _count(thread.get("run_count"))
            runs = f"{count} run" + ("" if count == 1 else "s")
            status = shorten(_text(thread.get("last_status")) or "-", 20)
            when = _when(thread.get("updated_at"))
            thread_id = shorten(_text(thread.get("thread_id")), 128)
            title = shorten(_text(thread.get("title")) or "(untitled)", self.width - 6)
            lines.append(f"{number:>4}  {self._style(title, _BOLD)}")
            meta = ", ".join(part for part in (runs, status, when, thread_id) if part)
            lines.append(self._style(f"      {meta}", _DIM))
        if data.get("next_cursor"):
            lines.append(self._style("      more: /threads more", _DIM))
        return lines

    def thread(self, data: Mapping[str, Any]) -> list[str]:
        """A ``thread`` reply: its title, then each run (oldest first) with its answer."""
        title = shorten(_text(data.get("title")) or "(untitled)", self.width - 10)
        thread_id = shorten(_text(data.get("thread_id")), 128)
        lines = [self._style(f"thread {thread_id}: {title}", _BOLD)]
        if data.get("next_cursor"):
            lines.append(self._style("(earlier runs not shown)", _DIM))
        runs = [r for r in _list(data.get("runs")) if isinstance(r, Mapping)]
        if not runs:
            lines.append(self._style("(no runs yet)", _DIM))
        for run in reversed(runs):
            lines.append("")
            request = self._block(_text(run.get("user_request")))
            lines += [self._style(f"> {line}", _CYAN) for line in request]
            status = shorten(_text(run.get("status")) or "?", 20)
            answer = run.get("answer")
            if isinstance(answer, str) and answer.strip():
                lines += [self._markdown_line(line) for line in self._block(answer)]
            mark, code = _STATUS_MARK.get(status, _ERROR_MARK)
            if status == "running":
                mark, code = "…", _CYAN
            when = _when(run.get("started_at"))
            lines.append(self._style(f"{mark} run {status}  {when}".rstrip(), code))
        return lines

    # -- run events ----------------------------------------------------------

    def _run_event(self, kind: str, frame: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
        run_id = _text(frame.get("run_id"))
        agent = shorten(_text(frame.get("agent_name")) or "?", 60)
        stack = self._open.setdefault(run_id, [])
        if kind == "agent_started":
            indent = "  " * len(stack)
            stack.append(agent)
            return [f"{indent}{self._style('▸', _CYAN)} {self._style(agent, _BOLD)} …"]
        if kind in ("agent_completed", "agent_error"):
            if agent in stack:
                del stack[len(stack) - 1 - stack[::-1].index(agent) :]
            lines = [self._closing_line("  " * len(stack), agent, kind, data)]
            if frame.get("final") is True:
                self._open.pop(run_id, None)
                lines += self._final_lines(kind, data)
            return lines
        indent = "  " * len(stack)
        room = self.width - len(indent)
        if kind == "agent_thinking":
            progress = data.get("progress_percentage")
            suffix = ""
            if isinstance(progress, int | float) and not isinstance(progress, bool):
                suffix = f" ({progress:.0f}%)"
            text = shorten(_text(data.get("reasoning")), room - 2 - len(suffix)) + suffix
            return [indent + self._style(f"· {text}", _DIM)]
        tool = shorten(_text(data.get("tool_name")) or "?", 60)
        if kind == "tool_executing":
            params = shorten(_json(data.get("parameters", {})), room - len(tool) - 3)
            return [f"{indent}{self._style('→', _MAGENTA)} {tool} {self._style(params, _DIM)}"]
        # tool_completed
        timing = format_duration(data.get("execution_time_ms"))
        if data.get("status") == "completed":
            return [f"{indent}{self._style('←', _MAGENTA)} {tool} {timing}".rstrip()]
        head = f"{tool} failed {timing}".rstrip()
        detail = shorten(_json(data.get("result")), room - len(head) - 4)
        return [f"{indent}{self._style('←', _RED)} {self._style(head, _RED)}: {detail}"]

    def _closing_line(self, indent: str, agent: str, kind: str, data: Mapping[str, Any]) -> str:
        timing = format_duration(data.get("execution_time_ms"))
        if kind == "agent_completed":
            mark, code = _STATUS_MARK["completed"]
            return f"{indent}{self._style(mark, code)} {agent} {timing}".rstrip()
        status = shorten(_text(data.get("status")) or "failed", 20)
        mark, code = _STATUS_MARK.get(status, _ERROR_MARK)
        message, error_code = self._error(data, status)
        room = self.width - len(indent) - len(agent) - len(status) - len(error_code) - 16
        head = f"{agent} {status}"
        tail = f"{shorten(message, room)}{error_code} {timing}".rstrip()
        return f"{indent}{self._style(mark, code)} {self._style(head, code)}: {tail}"

    def _final_lines(self, kind: str, data: Mapping[str, Any]) -> list[str]:
        timing = format_duration(data.get("execution_time_ms"))
        if kind == "agent_completed":
            lines = [""]
            result = data.get("result")
            answer = result.get("answer") if isinstance(result, Mapping) else None
            if isinstance(answer, str):
                lines += [self._markdown_line(line) for line in self._block(answer)]
            elif result is not None:
                lines += self._block(json.dumps(result, ensure_ascii=False, indent=2))
            lines += ["", self._style(f"run completed in {timing}".rstrip(), _GREEN, _BOLD)]
            return lines
        status = shorten(_text(data.get("status")) or "failed", 20)
        _, code = _STATUS_MARK.get(status, _ERROR_MARK)
        message, error_code = self._error(data, status)
        head = f"run {status} in {timing}" if timing else f"run {status}"
        text = f"{head}: {shorten(message, self.width - len(head) - len(error_code) - 2)}"
        return ["", self._style(f"{text}{error_code}", code, _BOLD)]

    # -- helpers -------------------------------------------------------------

    @staticmethod
    def _error(data: Mapping[str, Any], status: str) -> tuple[str, str]:
        """The error's message, and its code as `` [CODE]`` unless the status says it."""
        error = data.get("error")
        error = error if isinstance(error, Mapping) else {}
        code = shorten(_text(error.get("code")) or "ERROR", 40)
        return _text(error.get("message")), "" if code.lower() == status else f" [{code}]"

    @staticmethod
    def _block(text: str) -> list[str]:
        return clean(text, keep_newlines=True).rstrip("\n").split("\n")

    def _markdown_line(self, line: str) -> str:
        if line.startswith("#"):
            return self._style(line, _BOLD)
        return line

    def _style(self, text: str, *codes: str) -> str:
        if not self.color or not text:
            return text
        return f"\x1b[{';'.join(codes)}m{text}{_RESET}"
