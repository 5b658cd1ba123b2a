"""Client messages: decoding and validating what clients send (pure).

The connection layer reads one text message and calls
:func:`decode_client_message`, which returns one of the message classes or
raises the :class:`~server.protocol.ProtocolError` the frame is answered with.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

from ._errors import FormatError, UnknownTypeError
from ._ids import is_valid_id

DEFAULT_AGENT = "supervisor"

# -- client -> server ---------------------------------------------------------


@attrs.frozen
class StartRun:
    """``user_message``/``chat`` or ``start_agent``: start a run of a top-level agent."""

    type: str
    agent_name: str
    request: str
    thread_id: str | None = None
    run_id: str | None = None
    message_id: str | None = None


@attrs.frozen
class StopRun:
    type: str
    run_id: str
    message_id: str | None = None


@attrs.frozen
class Ping:
    type: str
    message_id: str | None = None


@attrs.frozen
class Heartbeat:
    type: str
    message_id: str | None = None


@attrs.frozen
class ListThreads:
    """``list_threads``: a page of the user's threads, newest ``updated_at`` first."""

    type: str
    limit: int = 20
    cursor: str | None = None
    message_id: str | None = None


@attrs.frozen
class GetThread:
    """``get_thread``: a thread and a page of its runs, newest first."""

    type: str
    thread_id: str
    limit: int = 50
    cursor: str | None = None
    message_id: str | None = None


@attrs.frozen
class RenameThread:
    type: str
    thread_id: str
    title: str
    message_id: str | None = None


@attrs.frozen
class DeleteThread:
    type: str
    thread_id: str
    message_id: str | None = None


@attrs.frozen
class ResumeRun:
    """``resume_run``: the run's events after ``after_seq``, then its live ones."""

    type: str
    run_id: str
    after_seq: int = 0
    message_id: str | None = None


@attrs.frozen
class SubscribeThread:
    """``subscribe_thread`` or ``unsubscribe_thread`` (``type`` says which)."""

    type: str
    thread_id: str
    message_id: str | None = None


ClientMessage = (
    StartRun
    | StopRun
    | Ping
    | Heartbeat
    | ListThreads
    | GetThread
    | RenameThread
    | DeleteThread
    | ResumeRun
    | SubscribeThread
)

MESSAGE_TYPES: tuple[str, ...] = (
    "user_message",
    "chat",
    "start_agent",
    "stop_agent",
    "ping",
    "heartbeat",
    "list_threads",
    "get_thread",
    "rename_thread",
    "delete_thread",
    "resume_run",
    "subscribe_thread",
    "unsubscribe_thread",
)

#: A thread's title, after trimming: 1 to this many characters.
MAX_TITLE = 200


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# A \uD800-\uDFFF escape; only then can parsed JSON hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


# Made once: json.loads with any option builds a new decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _parse_json(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise FormatError("frame is not valid JSON", details={"reason": str(exc)[:200]}) from None


def _optional(payload: dict[str, Any], key: str) -> Any:
    """``payload[key]``, with JSON null meaning absent."""
    return payload.get(key)


def _optional_id(payload: dict[str, Any], key: str, message_id: str | None) -> str | None:
    value = _optional(payload, key)
    if value is None:
        return None
    if not is_valid_id(value):
        raise FormatError(
            f"payload.{key} must match [A-Za-z0-9_.:-]{{1,128}}",
            details={"field": f"payload.{key}"},
            message_id=message_id,
        )
    assert isinstance(value, str)
    return value


def _text(value: Any, field: str, message_id: str | None) -> str:
    if value is None:
        raise FormatError(
            f"payload.{field} is required",
            details={"field": f"payload.{field}"},
            message_id=message_id,
        )
    if not isinstance(value, str) or not value.strip():
        raise FormatError(
            f"payload.{field} must be a string with non-whitespace text",
            details={"field": f"payload.{field}"},
            message_id=message_id,
        )
    return value


def decode_client_message(text: str) -> ClientMessage:
    """Parse and validate one client frame; raise a :class:`ProtocolError` if it is bad.

    Checks run in the protocol's order: envelope, type, payload fields. The
    checks that need server state (agent exists, run id free, run limit) are
    the handlers' job.
    """
    frame = _parse_json(text)
    if not isinstance(frame, dict):
        raise FormatError("frame must be a JSON object")
    raw_id = frame.get("message_id")
    message_id = raw_id if isinstance(raw_id, str) else None
    if raw_id is not None and message_id is None:
        raise FormatError("message_id must be a string", details={"field": "message_id"})
    # Escaped lone surrogates parse, but no text holding one can be sent back
    # as UTF-8: refuse the frame rather than fail later when echoing it.
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(frame):
        echo = (
            message_id if message_id is not None and not _has_lone_surrogate(message_id) else None
        )
        raise FormatError("frame contains a lone UTF-16 surrogate escape", message_id=echo)
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise FormatError("type must be a string", details={"field": "type"}, message_id=message_id)
    payload = frame.get("payload")
    if payload is None:
        payload = {}
    elif not isinstance(payload, dict):
        raise FormatError(
            "payload must be an object", details={"field": "payload"}, message_id=message_id
        )
    if kind not in MESSAGE_TYPES:
        raise UnknownTypeError(
            f"unknown message type {kind[:64]!r}",
            details={"type": kind[:128], "known": list(MESSAGE_TYPES)},
            message_id=message_id,
        )
    if kind in ("user_message", "chat"):
        content = next(
            (payload[k] for k in ("content", "message", "text") if payload.get(k) is not None),
            None,
        )
        return StartRun(
            type=kind,
            agent_name=DEFAULT_AGENT,
            request=_text(content, "content", message_id),
            thread_id=_optional_id(payload, "thread_id", message_id),
            run_id=_optional_id(payload, "run_id", message_id),
            message_id=message_id,
        )
    if kind == "start_agent":
        agent_name = _optional(payload, "agent_name")
        if agent_name is None:
            agent_name = DEFAULT_AGENT
        elif not isinstance(agent_name, str):
            raise FormatError(
                "payload.agent_name must be a string",
                details={"field": "payload.agent_name"},
                message_id=message_id,
            )
        return StartRun(
            type=kind,
            agent_name=agent_name,
            request=_text(_optional(payload, "user_request"), "user_request", message_id),
            thread_id=_optional_id(payload, "thread_id", message_id),
            run_id=_optional_id(payload, "run_id", message_id),
            message_id=message_id,
        )
    if kind == "stop_agent":
        return StopRun(
            type=kind, run_id=_required_id(payload, "run_id", message_id), message_id=message_id
        )
    if kind == "ping":
        return Ping(type=kind, message_id=message_id)
    if kind == "heartbeat":
        return Heartbeat(type=kind, message_id=message_id)
    if kind == "list_threads":
        return ListThreads(
            type=kind,
            limit=_limit(payload, 20, message_id),
            cursor=_cursor(payload, message_id),
            message_id=message_id,
        )
    if kind == "get_thread":
        return GetThread(
            type=kind,
            thread_id=_required_id(payload, "thread_id", message_id),
            limit=_limit(payload, 50, message_id),
            cursor=_cursor(payload, message_id),
            message_id=message_id,
        )
    if kind == "rename_thread":
        return RenameThread(
            type=kind,
            thread_id=_required_id(payload, "thread_id", message_id),
            title=_title(_optional(payload, "title"), message_id),
            message_id=message_id,
        )
    if kind == "delete_thread":
        return DeleteThread(
            type=kind,
            thread_id=_required_id(payload, "thread_id", message_id),
            message_id=message_id,
        )
    if kind == "resume_run":
        return ResumeRun(
            type=kind,
            run_id=_required_id(payload, "run_id", message_id),
            after_seq=_after_seq(payload, message_id),
            message_id=message_id,
        )
    return SubscribeThread(
        type=kind, thread_id=_required_id(payload, "thread_id", message_id), message_id=message_id
    )


def _required_id(payload: dict[str, Any], key: str, message_id: str | None) -> str:
    value = _optional_id(payload, key, message_id)
    if value is None:
        raise FormatError(
            f"payload.{key} is required", details={"field": f"payload.{key}"}, message_id=message_id
        )
    return value


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _limit(payload: dict[str, Any], default: int, message_id: str | None) -> int:
    value = _optional(payload, "limit")
    if value is None:
        return default
    if not _integer(value) or not 1 <= value <= 100:
        raise FormatError(
            "payload.limit must be an integer from 1 to 100",
            details={"field": "payload.limit"},
            message_id=message_id,
        )
    assert isinstance(value, int)
    return value


def _cursor(payload: dict[str, Any], message_id: str | None) -> str | None:
    value = _optional(payload, "cursor")
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 512:
        raise FormatError(
            "payload.cursor must be a cursor from an earlier reply",
            details={"field": "payload.cursor"},
            message_id=message_id,
        )
    return value


def _title(value: Any, message_id: str | None) -> str:
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= MAX_TITLE:
        raise FormatError(
            f"payload.title must be a string of 1 to {MAX_TITLE} characters after trimming",
            details={"field": "payload.title"},
            message_id=message_id,
        )
    return value.strip()


def _after_seq(payload: dict[str, Any], message_id: str | None) -> int:
    value = _optional(payload, "after_seq")
    if value is None:
        return 0
    if not _integer(value) or value < 0:
        raise FormatError(
            "payload.after_seq must be an integer of 0 or more",
            details={"field": "payload.after_seq"},
            message_id=message_id,
        )
    assert isinstance(value, int)
    return value


def peek_message_id(text: str) -> str | None:
    """The frame's ``message_id`` if it has a valid one (for frames not otherwise decoded)."""
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        return None
    value = frame.get("message_id") if isinstance(frame, dict) else None
    return value if isinstance(value, str) and not _SURROGATE.search(value) else None
