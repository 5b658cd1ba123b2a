"""Protocol v1 as pure functions: decode and validate client frames, encode server frames.

No I/O here. The connection layer reads a text message, calls
:func:`decode_client_message`, and writes whatever the ``encode_*`` functions return.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
import uuid
from typing import Any

import attrs
import orjson

from ._errors import FormatError, ProtocolError, UnknownTypeError

PROTOCOL_VERSION = 1
DEFAULT_AGENT = "supervisor"

_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def is_valid_id(value: object) -> bool:
    """Whether ``value`` is a client-suppliable id (user, thread or run)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def new_id(prefix: str) -> str:
    """A fresh opaque id such as ``r-3f2a…``."""
    return f"{prefix}-{uuid.uuid4().hex}"


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


# The last millisecond formatted: a burst of events shares its timestamp.
_last_stamp: tuple[int, str] = (-1, "")


def utc_timestamp(now: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2026-11-21T10:00:00.123Z``."""
    global _last_stamp
    total = round((time.time() if now is None else now) * 1000)
    last, text = _last_stamp
    if total == last:
        return text
    seconds, millis = divmod(total, 1000)
    text = f"{_second(seconds)}.{millis:03d}Z"
    _last_stamp = (total, text)
    return text


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


ClientMessage = StartRun | StopRun | Ping | Heartbeat

MESSAGE_TYPES: tuple[str, ...] = (
    "user_message",
    "chat",
    "start_agent",
    "stop_agent",
    "ping",
    "heartbeat",
)


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


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
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
        run_id = _optional_id(payload, "run_id", message_id)
        if run_id is None:
            raise FormatError(
                "payload.run_id is required",
                details={"field": "payload.run_id"},
                message_id=message_id,
            )
        return StopRun(type=kind, run_id=run_id, message_id=message_id)
    if kind == "ping":
        return Ping(type=kind, message_id=message_id)
    return Heartbeat(type=kind, message_id=message_id)


def peek_message_id(text: str) -> str | None:
    """The frame's ``message_id`` if it has a valid one (for frames not otherwise decoded)."""
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        return None
    value = frame.get("message_id") if isinstance(frame, dict) else None
    return value if isinstance(value, str) and not _SURROGATE.search(value) else None


# -- server -> client ---------------------------------------------------------


def _fallback(value: object) -> Any:
    # Agent data that is not JSON (sets, objects) is sent as text rather than
    # failing the emit: an emit must never break the event sequence.
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _jsonable(value: Any) -> Any:
    """``value`` made fit for JSON: NaN and infinities become null, keys become text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# Last resort only: big integers orjson cannot write, text that is not valid
# Unicode (escaped, so the frame stays valid UTF-8).
_ascii_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_fallback)


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON; never fails for data that can be made JSON (see ``_jsonable``).

    orjson writes NaN and infinities as null, like ``_jsonable``; whatever it
    refuses (keys that are not text, integers beyond 64 bits, lone surrogates)
    is made JSON by ``_jsonable`` first, then by the standard library.
    """
    try:
        return orjson.dumps(value, default=_fallback)
    except TypeError:  # orjson.JSONEncodeError
        pass
    plain = _jsonable(value)
    try:
        return orjson.dumps(plain, default=_fallback)
    except TypeError:
        return _ascii_encoder.encode(plain).encode()


def encode_connection_established(
    *, connection_id: str, user_id: str, config: dict[str, Any]
) -> bytes:
    return encode_json(
        {
            "type": "system_message",
            "data": {
                "event": "connection_established",
                "connection_id": connection_id,
                "user_id": user_id,
                "server_time": utc_timestamp(),
                "protocol_version": PROTOCOL_VERSION,
                "config": config,
            },
        }
    )


def _with_message_id(frame: dict[str, Any], message_id: str | None) -> dict[str, Any]:
    if message_id is not None:
        frame["message_id"] = message_id
    return frame


def encode_pong(*, user_id: str, message_id: str | None) -> bytes:
    frame = {"type": "pong", "data": {"timestamp": utc_timestamp(), "user_id": user_id}}
    return encode_json(_with_message_id(frame, message_id))


def encode_heartbeat_ack(*, message_id: str | None) -> bytes:
    frame = {"type": "heartbeat_ack", "data": {"status": "healthy", "timestamp": utc_timestamp()}}
    return encode_json(_with_message_id(frame, message_id))


def encode_error(error: ProtocolError) -> bytes:
    frame = {
        "type": "error_message",
        "error_code": error.error_code,
        "error_message": error.message,
        "details": error.details,
    }
    return encode_json(_with_message_id(frame, error.message_id))


def encode_run_event(
    *,
    event_type: str,
    run_id: str,
    thread_id: str,
    user_id: str,
    agent_name: str,
    seq: int,
    final: bool,
    data: dict[str, Any],
) -> bytes:
    frame = {
        "type": event_type,
        "run_id": run_id,
        "thread_id": thread_id,
        "user_id": user_id,
        "agent_name": agent_name,
        "seq": seq,
        "final": final,
        "timestamp": utc_timestamp(),
        "data": data,
    }
    try:
        return encode_json(frame)
    except (ValueError, TypeError, RecursionError):
        # Agent data that cannot be JSON at all (a circular structure): keep the
        # event, with its scalar fields and the rest as text.
        frame["data"] = {
            key: value
            if isinstance(value, (str, int, float, bool, type(None)))
            else repr(value)[:1000]
            for key, value in data.items()
        }
        return encode_json(frame)
