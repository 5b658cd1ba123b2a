"""Server frames: encoding what the server sends (pure).

Every frame is compact UTF-8 JSON made by orjson, written straight to bytes.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from ._errors import ProtocolError
from ._ids import utc_timestamp

PROTOCOL_VERSION = 1


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
    *,
    connection_id: str,
    user_id: str,
    config: dict[str, Any],
    features: tuple[str, ...] = (),
    resume_token: str | None = None,
    resumed: bool | None = None,
) -> bytes:
    """The first frame. ``resume_token`` and ``resumed`` only with session resume on."""
    data: dict[str, Any] = {
        "event": "connection_established",
        "connection_id": connection_id,
        "user_id": user_id,
        "server_time": utc_timestamp(),
        "protocol_version": PROTOCOL_VERSION,
        "config": config,
        "features": list(features),
    }
    if resume_token is not None:
        data["resume_token"] = resume_token
    if resumed is not None:
        data["resumed"] = resumed
    return encode_json({"type": "system_message", "data": data})


def encode_reply(kind: str, data: dict[str, Any], *, message_id: str | None) -> bytes:
    """A reply to a client message: ``{"type": kind, "data": data}``, echoing ``message_id``."""
    return encode_json(_with_message_id({"type": kind, "data": data}, message_id))


_REPLAY_TAIL = b',"replay":true}'


def as_replay(event: bytes) -> bytes:
    """A run event (as encoded by :func:`encode_run_event`) marked ``"replay": true``.

    For events sent again (read back from history, or from a live run's
    buffer), so a client can tell them from live ones. The frame is a JSON
    object: the key goes before its closing brace.
    """
    if not event.endswith(b"}"):
        raise ValueError("not an encoded run event")
    return event[:-1] + _REPLAY_TAIL


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
    max_bytes: int | None = None,
) -> bytes:
    """A run event's frame; over ``max_bytes``, its ``data`` is cut (:func:`shrink_data`)."""
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
        encoded = encode_json(frame)
    except (ValueError, TypeError, RecursionError):
        # Agent data that cannot be JSON at all (a circular structure): keep the
        # event, with its scalar fields and the rest as text.
        frame["data"] = {
            key: value
            if isinstance(value, (str, int, float, bool, type(None)))
            else repr(value)[:1000]
            for key, value in data.items()
        }
        encoded = encode_json(frame)
    if max_bytes is not None and len(encoded) > max_bytes:
        sent = frame["data"]
        assert isinstance(sent, dict)
        frame["data"] = shrink_data(sent, original=len(encoded), max_bytes=max_bytes)
        encoded = encode_json(frame)
    return encoded


class EventEncoder:
    """The envelopes of one run's events, each joined from parts encoded once.

    The same bytes as :func:`encode_run_event` (same keys, same order,
    orjson's compact form), but per event only ``seq``, the timestamp and
    ``data`` are encoded; the rest (type, ids, agent name) is encoded once per
    run. The result holds exactly its bytes (orjson's own output keeps an
    allocation of several KiB whatever its size, and a run keeps its events).
    Data orjson refuses, and an event over ``max_bytes``, take the general
    path (:func:`encode_run_event`).
    """

    __slots__ = ("_heads", "_ids", "max_bytes", "run_id", "thread_id", "user_id")

    def __init__(
        self, *, run_id: str, thread_id: str, user_id: str, max_bytes: int | None = None
    ) -> None:
        self.run_id = run_id
        self.thread_id = thread_id
        self.user_id = user_id
        self.max_bytes = max_bytes
        self._ids = b"".join((
            b',"run_id":', orjson.dumps(run_id),
            b',"thread_id":', orjson.dumps(thread_id),
            b',"user_id":', orjson.dumps(user_id),
            b',"agent_name":',
        ))  # fmt: skip
        #: ``{"type":…,"agent_name":…,"seq":`` by (event type, agent name).
        self._heads: dict[tuple[str, str], bytes] = {}

    def encode(
        self, event_type: str, agent_name: str, seq: int, final: bool, data: dict[str, Any]
    ) -> bytes:
        key = (event_type, agent_name)
        head = self._heads.get(key)
        if head is None:
            head = b"".join((
                b'{"type":', orjson.dumps(event_type), self._ids, orjson.dumps(agent_name),
                b',"seq":',
            ))  # fmt: skip
            if len(self._heads) < _MAX_HEADS:
                self._heads[key] = head
        try:
            body = orjson.dumps(data, default=_fallback)
        except TypeError:  # orjson.JSONEncodeError
            return self._general(event_type, agent_name, seq, final, data)
        encoded = b"".join((
            head, b"%d" % seq, _FINAL_TRUE if final else _FINAL_FALSE,
            _timestamp_bytes(), b'","data":', body, b"}",
        ))  # fmt: skip
        if self.max_bytes is not None and len(encoded) > self.max_bytes:
            return self._general(event_type, agent_name, seq, final, data)
        return encoded

    def _general(
        self, event_type: str, agent_name: str, seq: int, final: bool, data: dict[str, Any]
    ) -> bytes:
        return encode_run_event(
            event_type=event_type,
            run_id=self.run_id,
            thread_id=self.thread_id,
            user_id=self.user_id,
            agent_name=agent_name,
            seq=seq,
            final=final,
            data=data,
            max_bytes=self.max_bytes,
        )


#: Envelope heads an encoder keeps (event types x agent names of one run).
_MAX_HEADS = 64
_FINAL_TRUE = b',"final":true,"timestamp":"'
_FINAL_FALSE = b',"final":false,"timestamp":"'
# utc_timestamp()'s last text and its bytes: a burst of events shares both.
_last_stamp: tuple[str, bytes] = ("", b"")


def _timestamp_bytes() -> bytes:
    global _last_stamp
    text = utc_timestamp()
    last = _last_stamp
    if text is last[0]:
        return last[1]
    encoded = text.encode()
    _last_stamp = (text, encoded)
    return encoded


#: Fields of an event's data that are always small and that clients rely on.
_STRUCTURAL = frozenset(
    {"status", "tool_call_id", "tool_name", "execution_time_ms", "step_number",
     "progress_percentage", "message_id", "error"}
)  # fmt: skip
#: Characters of a cut value kept as a preview.
PREVIEW_CHARS = 2048


def shrink_data(data: dict[str, Any], *, original: int, max_bytes: int) -> dict[str, Any]:
    """``data`` cut to fit an event of about ``max_bytes``, with a visible marker.

    Structural fields stay as they are; any other value whose JSON is large
    is replaced: text by its first :data:`PREVIEW_CHARS` characters and a note
    of how much was cut, anything else by ``{"truncated": true, "bytes": N,
    "preview": "<the start of its JSON>"}``. ``data["truncated"]`` says that
    the event was cut and how large it was. If that still does not fit (many
    large fields), the previews go; if even that does not (very many fields),
    only the structural fields stay and ``truncated.omitted`` names the rest.
    """
    for preview in (PREVIEW_CHARS, 0):
        shrunk: dict[str, Any] = {}
        for key, value in data.items():
            if key in _STRUCTURAL and len(encode_json(value)) <= 1024:
                shrunk[key] = value
                continue
            encoded = encode_json(value)
            if len(encoded) <= 1024:
                shrunk[key] = value
            elif isinstance(value, str):
                shrunk[key] = f"{value[:preview]}… [truncated: {len(value)} characters]"
            else:
                shrunk[key] = {
                    "truncated": True,
                    "bytes": len(encoded),
                    "preview": encoded[:preview].decode("utf-8", "ignore"),
                }
        shrunk["truncated"] = {"original_bytes": original, "max_bytes": max_bytes}
        if len(encode_json(shrunk)) <= max_bytes // 2:
            return shrunk
    # Many values, each small: keep only the structural fields, and say which went.
    kept = {k: v for k, v in data.items() if k in _STRUCTURAL and len(encode_json(v)) <= 1024}
    kept["truncated"] = {
        "original_bytes": original,
        "max_bytes": max_bytes,
        "omitted": [str(k)[:64] for k in data if k not in kept][:64],
    }
    return kept
