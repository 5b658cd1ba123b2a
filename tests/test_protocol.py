"""Pure tests of protocol v1: decoding client frames, encoding server frames, the handshake.

No sockets here: ``server.protocol`` and ``server._handshake`` are plain functions.
"""

from __future__ import annotations

import calendar
import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server._handshake import Identity, admit
from server.protocol import (
    MESSAGE_TYPES,
    ClientMessage,
    DeleteThread,
    FormatError,
    GetThread,
    HandshakeRejected,
    Heartbeat,
    ListThreads,
    Ping,
    ProtocolError,
    RenameThread,
    ResumeRun,
    StartRun,
    StopRun,
    SubscribeThread,
    UnknownTypeError,
    decode_client_message,
    encode_connection_established,
    encode_error,
    encode_heartbeat_ack,
    encode_pong,
    encode_run_event,
    is_valid_id,
    utc_timestamp,
)

# Written out from PROTOCOL.md, not imported, so the tests do not check the code against itself.
ID_PATTERN = r"[A-Za-z0-9_.:-]{1,128}"
TIMESTAMP_PATTERN = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
ANON_PATTERN = r"anon-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
MESSAGE_CLASSES = (
    StartRun, StopRun, Ping, Heartbeat, ListThreads, GetThread, RenameThread, DeleteThread,
    ResumeRun, SubscribeThread,
)  # fmt: skip
#: 2026-11-21T10:00:00Z, the spec's example instant.
EXAMPLE_SECOND = calendar.timegm((2026, 11, 21, 10, 0, 0))


def is_timestamp(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(TIMESTAMP_PATTERN, value) is not None


def decode(frame: Any) -> ClientMessage:
    return decode_client_message(json.dumps(frame))


def decode_error(frame: Any) -> ProtocolError:
    """The ProtocolError for ``frame`` (a str is sent as it is, anything else as JSON)."""
    text = frame if isinstance(frame, str) else json.dumps(frame)
    with pytest.raises(ProtocolError) as info:
        decode_client_message(text)
    return info.value


def assert_format_error(frame: Any, *, message_id: str | None = None) -> ProtocolError:
    error = decode_error(frame)
    assert type(error) is FormatError
    assert error.error_code == "FORMAT_ERROR"
    assert error.message_id == message_id
    return error


def parse_strict(text: str | bytes) -> dict[str, Any]:
    """Parse a server frame like a strict JSON client (JavaScript's JSON.parse): no NaN
    or Infinity."""

    def reject(name: str) -> Any:
        raise AssertionError(f"{name} is not JSON")

    frame: dict[str, Any] = json.loads(text, parse_constant=reject)
    return frame


# -- decoding: every message type and alias ------------------------------------


@pytest.mark.parametrize("kind", ["user_message", "chat"])
@pytest.mark.parametrize("key", ["content", "message", "text"])
def test_user_message_and_chat_start_a_supervisor_run_from_any_content_alias(
    kind: str, key: str
) -> None:
    message = decode({"type": kind, "payload": {key: "cut my bill"}})
    assert message == StartRun(
        type=kind,
        agent_name="supervisor",
        request="cut my bill",
        thread_id=None,
        run_id=None,
        message_id=None,
    )


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"content": "c", "message": "m", "text": "t"}, "c"),
        ({"content": None, "message": "m", "text": "t"}, "m"),
        ({"message": "m", "text": "t"}, "m"),
        ({"content": None, "message": None, "text": "t"}, "t"),
        ({"text": "t", "message": "m"}, "m"),  # alias order, not key order in the frame
    ],
)
def test_first_non_null_content_alias_wins(payload: dict[str, Any], expected: str) -> None:
    message = decode({"type": "user_message", "payload": payload})
    assert isinstance(message, StartRun)
    assert message.request == expected


@pytest.mark.parametrize(
    "payload",
    [
        {"content": 5, "message": "valid text"},
        {"content": "   ", "text": "valid text"},
        {"content": None, "message": ["x"], "text": "valid text"},
    ],
)
def test_first_non_null_content_alias_wins_even_when_it_is_invalid(
    payload: dict[str, Any],
) -> None:
    assert_format_error({"type": "chat", "payload": payload, "message_id": "m1"}, message_id="m1")


def test_user_message_carries_thread_id_and_message_id() -> None:
    message = decode(
        {
            "type": "user_message",
            "payload": {"content": "hi", "thread_id": "thread.7:a-b_c"},
            "message_id": "m-42",
        }
    )
    assert message == StartRun(
        type="user_message",
        agent_name="supervisor",
        request="hi",
        thread_id="thread.7:a-b_c",
        run_id=None,
        message_id="m-42",
    )


@pytest.mark.parametrize(
    "payload",
    [None, {}, {"content": None, "message": None, "text": None}, {"body": "hi"}],
    ids=["payload-null", "payload-empty", "all-aliases-null", "unknown-key-only"],
)
def test_user_message_without_content_is_a_format_error(payload: Any) -> None:
    frame: dict[str, Any] = {"type": "user_message"}
    if payload is not None:
        frame["payload"] = payload
    error = assert_format_error(frame)
    assert error.details == {"field": "payload.content"}


def test_start_agent_defaults_to_the_supervisor() -> None:
    for payload in ({"user_request": "go"}, {"user_request": "go", "agent_name": None}):
        message = decode({"type": "start_agent", "payload": payload})
        assert message == StartRun(type="start_agent", agent_name="supervisor", request="go")


def test_start_agent_carries_agent_name_thread_id_run_id_and_message_id() -> None:
    message = decode(
        {
            "type": "start_agent",
            "payload": {
                "user_request": "triage this",
                "agent_name": "triage",
                "thread_id": "t-1",
                "run_id": "run:1",
            },
            "message_id": "m1",
        }
    )
    assert message == StartRun(
        type="start_agent",
        agent_name="triage",
        request="triage this",
        thread_id="t-1",
        run_id="run:1",
        message_id="m1",
    )


def test_start_agent_leaves_unknown_agent_names_to_the_handler() -> None:
    # AGENT_NOT_FOUND comes after the payload checks and needs the registry.
    message = decode({"type": "start_agent", "payload": {"user_request": "x", "agent_name": "no"}})
    assert isinstance(message, StartRun)
    assert message.agent_name == "no"


@pytest.mark.parametrize("agent_name", [5, True, ["supervisor"], {"name": "supervisor"}])
def test_start_agent_with_a_non_string_agent_name_is_a_format_error(agent_name: Any) -> None:
    error = assert_format_error(
        {
            "type": "start_agent",
            "payload": {"user_request": "x", "agent_name": agent_name},
            "message_id": "m",
        },
        message_id="m",
    )
    assert error.details == {"field": "payload.agent_name"}


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"user_request": None},
        {"user_request": 42},
        {"user_request": ["hi"]},
        {"content": "user_message's alias does not count here"},
    ],
)
def test_start_agent_without_a_text_user_request_is_a_format_error(
    payload: dict[str, Any],
) -> None:
    error = assert_format_error({"type": "start_agent", "payload": payload})
    assert error.details == {"field": "payload.user_request"}


def test_stop_agent_names_a_run() -> None:
    message = decode({"type": "stop_agent", "payload": {"run_id": "r-abc"}, "message_id": "s1"})
    assert message == StopRun(type="stop_agent", run_id="r-abc", message_id="s1")


@pytest.mark.parametrize(
    "payload",
    [None, {}, {"run_id": None}, {"run_id": ""}, {"run_id": 7}, {"run_id": "has space"}],
    ids=["no-payload", "empty", "null", "empty-string", "number", "space"],
)
def test_stop_agent_with_a_missing_or_malformed_run_id_is_a_format_error(payload: Any) -> None:
    frame: dict[str, Any] = {"type": "stop_agent", "message_id": "s1"}
    if payload is not None:
        frame["payload"] = payload
    error = assert_format_error(frame, message_id="s1")
    assert error.details == {"field": "payload.run_id"}


@pytest.mark.parametrize(("kind", "cls"), [("ping", Ping), ("heartbeat", Heartbeat)])
def test_ping_and_heartbeat_decode_with_and_without_message_id(
    kind: str, cls: type[Ping | Heartbeat]
) -> None:
    assert decode({"type": kind}) == cls(type=kind, message_id=None)
    assert decode({"type": kind, "message_id": "p1"}) == cls(type=kind, message_id="p1")
    # Their payload has no fields, so anything in it is an ignored extra key.
    assert decode({"type": kind, "payload": {"x": [1, 2]}}) == cls(type=kind, message_id=None)


def test_json_null_means_absent_for_every_optional_field() -> None:
    assert decode({"type": "ping", "payload": None, "message_id": None}) == Ping(type="ping")
    message = decode(
        {
            "type": "start_agent",
            "payload": {
                "user_request": "x",
                "agent_name": None,
                "thread_id": None,
                "run_id": None,
            },
            "message_id": None,
        }
    )
    assert message == StartRun(type="start_agent", agent_name="supervisor", request="x")
    message = decode({"type": "chat", "payload": {"content": None, "text": "y", "thread_id": None}})
    assert message == StartRun(type="chat", agent_name="supervisor", request="y")


def test_unknown_extra_keys_are_ignored_in_envelope_and_payload() -> None:
    message = decode(
        {
            "type": "start_agent",
            "payload": {"user_request": "x", "priority": "high", "nested": {"a": [1]}},
            "message_id": "m",
            "version": 2,
            "data": None,
        }
    )
    assert message == StartRun(
        type="start_agent", agent_name="supervisor", request="x", message_id="m"
    )


# -- decoding: errors in the protocol's check order -----------------------------


@pytest.mark.parametrize(
    "text",
    ["", "   ", "{", "hello", "{'type': 'ping'}", '{"type": "ping"} trailing', '{"type": }'],
)
def test_text_that_is_not_json_is_a_format_error(text: str) -> None:
    assert_format_error(text)


@pytest.mark.parametrize("frame", [[], [{"type": "ping"}], "ping", 1, 1.5, None, True])
def test_json_that_is_not_an_object_is_a_format_error(frame: Any) -> None:
    assert_format_error(frame)


@pytest.mark.parametrize("kind", [None, 1, True, ["ping"], {"t": "ping"}])
def test_missing_or_non_string_type_is_a_format_error(kind: Any) -> None:
    frame: dict[str, Any] = {"message_id": "m1"}
    if kind is not None:
        frame["type"] = kind
    assert_format_error(frame, message_id="m1")


@pytest.mark.parametrize("payload", [[], "x", 3, True, [{"content": "hi"}]])
def test_non_object_payload_is_a_format_error(payload: Any) -> None:
    assert_format_error(
        {"type": "user_message", "payload": payload, "message_id": "m1"}, message_id="m1"
    )


@pytest.mark.parametrize("message_id", [1, 0, True, False, [], ["m"], {"id": "m"}, 1.5])
def test_non_string_message_id_is_a_format_error_and_is_not_echoed(message_id: Any) -> None:
    # Even on a frame that is otherwise fine.
    assert_format_error({"type": "ping", "message_id": message_id}, message_id=None)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        # Envelope problems answer before UNKNOWN_TYPE ...
        ({"type": "teleport", "payload": []}, "FORMAT_ERROR"),
        ({"type": "teleport", "message_id": 5}, "FORMAT_ERROR"),
        ({"type": 5, "payload": {"user_request": "   "}}, "FORMAT_ERROR"),
        # ... UNKNOWN_TYPE before the payload's fields ...
        ({"type": "teleport", "payload": {"run_id": "not an id"}}, "UNKNOWN_TYPE"),
        ({"type": "teleport"}, "UNKNOWN_TYPE"),
        # ... and the payload's fields last.
        ({"type": "stop_agent", "payload": {"run_id": "not an id"}}, "FORMAT_ERROR"),
    ],
)
def test_checks_run_in_protocol_order(frame: dict[str, Any], code: str) -> None:
    assert decode_error(frame).error_code == code


@pytest.mark.parametrize("kind", ["teleport", "", "PING", "Ping", " ping", "user-message", "pong"])
def test_a_type_not_in_the_table_is_unknown_type(kind: str) -> None:
    error = decode_error({"type": kind, "message_id": "m1"})
    assert type(error) is UnknownTypeError
    assert error.error_code == "UNKNOWN_TYPE"
    assert error.message_id == "m1"
    assert error.details["type"] == kind


def test_unknown_type_details_are_bounded_for_huge_types() -> None:
    error = decode_error({"type": "x" * 10_000})
    assert error.error_code == "UNKNOWN_TYPE"
    assert len(encode_error(error)) < 2_000


@pytest.mark.parametrize(
    "frame",
    [
        {"type": 5},
        {"type": "ping", "payload": "x"},
        {"type": "teleport"},
        {"type": "user_message", "payload": {}},
        {"type": "chat", "payload": {"content": " \t"}},
        {"type": "user_message", "payload": {"content": "x", "thread_id": "bad id"}},
        {"type": "start_agent", "payload": {"user_request": "x", "agent_name": 1}},
        {"type": "start_agent", "payload": {"user_request": "x", "run_id": "a" * 129}},
        {"type": "stop_agent"},
    ],
)
def test_a_string_message_id_is_echoed_in_every_error_about_the_frame(
    frame: dict[str, Any],
) -> None:
    assert decode_error({**frame, "message_id": "m:echo-1"}).message_id == "m:echo-1"
    assert decode_error(frame).message_id is None


VALID_IDS = [
    "a",
    "Z",
    "0",
    "_",
    "r-3f2a",
    "A.b:c-d_e",
    "x" * 128,
    ":" * 128,
    uuid.uuid4().hex,
]
INVALID_IDS = [
    "",
    "x" * 129,
    "abc\n",
    "\nabc",
    "a b",
    "a/b",
    "a+b",
    "é",
    "a\x00",
    "a\t",
    "\uff41",  # fullwidth a
    "\u0663",  # Arabic-Indic digit three: \d in a sloppy pattern would take it
]
ID_FIELDS = [
    ("user_message", "thread_id", {"content": "x"}),
    ("start_agent", "thread_id", {"user_request": "x"}),
    ("start_agent", "run_id", {"user_request": "x"}),
    ("stop_agent", "run_id", {}),
]


@pytest.mark.parametrize("value", VALID_IDS)
@pytest.mark.parametrize(("kind", "field", "payload"), ID_FIELDS)
def test_ids_matching_the_id_syntax_are_accepted_as_they_are(
    kind: str, field: str, payload: dict[str, Any], value: str
) -> None:
    message = decode({"type": kind, "payload": {**payload, field: value}})
    assert getattr(message, field) == value


@pytest.mark.parametrize("value", [*INVALID_IDS, 5, 1.0, True, ["a"], {"a": 1}])
@pytest.mark.parametrize(("kind", "field", "payload"), ID_FIELDS)
def test_ids_not_matching_the_id_syntax_in_full_are_format_errors(
    kind: str, field: str, payload: dict[str, Any], value: Any
) -> None:
    error = assert_format_error(
        {"type": kind, "payload": {**payload, field: value}, "message_id": "m"}, message_id="m"
    )
    assert error.details == {"field": f"payload.{field}"}


def test_is_valid_id_matches_the_documented_syntax_in_full() -> None:
    for value in VALID_IDS:
        assert is_valid_id(value), value
    for junk in [*INVALID_IDS, None, 5, b"abc"]:
        assert not is_valid_id(junk), junk


@pytest.mark.parametrize("text", [" ", "   ", "\t", "\n", " \r\n\t ", "\u3000", "\u2003\u00a0"])
@pytest.mark.parametrize(
    ("kind", "key"),
    [("user_message", "content"), ("chat", "text"), ("start_agent", "user_request")],
)
def test_whitespace_only_text_is_a_format_error(kind: str, key: str, text: str) -> None:
    assert_format_error({"type": kind, "payload": {key: text}})


def test_text_with_surrounding_whitespace_is_kept_verbatim() -> None:
    message = decode({"type": "chat", "payload": {"content": "  hi\n"}})
    assert isinstance(message, StartRun)
    assert message.request == "  hi\n"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(
    "template",
    [
        '{{"type": "ping", "payload": {{"x": {}}}}}',
        '{{"type": "ping", "message_id": {}}}',
        '{{"type": "ping", "extra": [{}]}}',
        "{}",
    ],
)
def test_nan_and_infinity_are_not_json(template: str, constant: str) -> None:
    assert_format_error(template.format(constant))


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000,
        '{"type": "ping", "payload": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}",
    ],
    ids=["open-arrays", "closed-arrays", "open-objects", "deep-payload"],
)
def test_deeply_nested_json_is_a_format_error_not_a_recursion_error(text: str) -> None:
    # pytest.raises would let a RecursionError through as a test error; that is the point.
    assert_format_error(text)


def decode_outcome(text: str) -> ClientMessage | ProtocolError:
    """The decoded message, or the ProtocolError it raised (anything else propagates)."""
    try:
        return decode_client_message(text)
    except ProtocolError as exc:
        return exc


def test_an_integer_literal_too_long_for_python_does_not_escape_as_value_error() -> None:
    text = '{"type": "ping", "payload": {"n": ' + "9" * 5_000 + "}}"
    outcome = decode_outcome(text)
    if isinstance(outcome, ProtocolError):
        assert outcome.error_code == "FORMAT_ERROR"
    else:
        assert outcome == Ping(type="ping")


def encoded_reply(text: str) -> bytes:
    """What the server would send for ``text``: the error, or the run's first event."""
    message = decode_outcome(text)
    if isinstance(message, ProtocolError):
        return encode_error(message)
    assert isinstance(message, StartRun)
    return encode_run_event(
        event_type="agent_started",
        run_id="r-1",
        thread_id="t-1",
        user_id="u1",
        agent_name=message.agent_name,
        seq=1,
        final=False,
        data={"status": "started", "user_request": message.request},
    )


@pytest.mark.parametrize(
    "text",
    [
        r'{"type": "\ud800", "message_id": "m1"}',
        r'{"type": "x\udfff"}',
        r'{"type": "start_agent", "payload": {"user_request": "hi \udc00"}}',
        r'{"type": "chat", "payload": {"content": "\ud83d"}}',
    ],
    ids=["unknown-type", "unknown-type-low", "user-request", "content"],
)
def test_lone_surrogate_escapes_never_reach_a_frame_that_cannot_be_sent_as_utf8(
    text: str,
) -> None:
    # json.loads accepts "\ud800" escapes; the frame the server then sends (an
    # UNKNOWN_TYPE echoing the type, or the first event echoing the request)
    # must still be UTF-8, or writing it kills the connection.
    reply = encoded_reply(text)
    reply.decode("utf-8")  # raises if the frame is not valid UTF-8


# -- encoding -------------------------------------------------------------------


def test_utc_timestamp_of_a_fixed_time_is_iso8601_utc_with_milliseconds() -> None:
    assert utc_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert utc_timestamp(EXAMPLE_SECOND) == "2026-11-21T10:00:00.000Z"
    assert utc_timestamp(EXAMPLE_SECOND + 0.5) == "2026-11-21T10:00:00.500Z"
    assert utc_timestamp(EXAMPLE_SECOND + 0.25) == "2026-11-21T10:00:00.250Z"
    assert utc_timestamp(951_825_600.75) == "2000-02-29T12:00:00.750Z"  # leap day


@pytest.mark.parametrize("millis", [1, 7, 123, 999])
def test_utc_timestamp_keeps_the_milliseconds_it_is_given(millis: int) -> None:
    # The spec's own example: 10:00:00.123 must not come out as .122.
    now = EXAMPLE_SECOND + millis / 1000
    assert utc_timestamp(now) == f"2026-11-21T10:00:00.{millis:03d}Z"


def test_utc_timestamp_defaults_to_the_current_utc_time() -> None:
    before = time.time()
    stamp = utc_timestamp()
    after = time.time()
    assert is_timestamp(stamp)
    parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    assert before - 0.001 <= parsed <= after + 0.001  # rounded to the nearest ms


def assert_recent(stamp: object) -> None:
    assert is_timestamp(stamp), stamp
    assert isinstance(stamp, str)
    parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    assert abs(parsed - time.time()) < 5


def test_connection_established_has_the_documented_shape() -> None:
    config = {"max_message_size": 65536, "heartbeat_interval": 25, "max_runs_per_connection": 5}
    frame = parse_strict(
        encode_connection_established(connection_id="c-1", user_id="u1", config=config)
    )
    assert frame.keys() == {"type", "data"}
    assert frame["type"] == "system_message"
    data = frame["data"]
    assert data.keys() == {
        "event",
        "connection_id",
        "user_id",
        "server_time",
        "protocol_version",
        "config",
        "features",
    }
    assert data["features"] == []
    assert data["event"] == "connection_established"
    assert data["connection_id"] == "c-1"
    assert data["user_id"] == "u1"
    assert data["protocol_version"] == 1
    assert type(data["protocol_version"]) is int
    assert data["config"] == config


def test_connection_established_carries_features_and_the_resume_token_when_given() -> None:
    data = parse_strict(
        encode_connection_established(
            connection_id="c-1",
            user_id="u1",
            config={},
            features=("threads", "resume", "subscriptions", "session_resume"),
            resume_token="tok",
            resumed=True,
        )
    )["data"]
    assert data["features"] == ["threads", "resume", "subscriptions", "session_resume"]
    assert data["resume_token"] == "tok"
    assert data["resumed"] is True
    assert_recent(data["server_time"])


def test_pong_echoes_message_id_only_when_given() -> None:
    with_id = parse_strict(encode_pong(user_id="u1", message_id="p1"))
    assert with_id.keys() == {"type", "data", "message_id"}
    assert with_id["type"] == "pong"
    assert with_id["message_id"] == "p1"
    assert with_id["data"].keys() == {"timestamp", "user_id"}
    assert with_id["data"]["user_id"] == "u1"
    assert_recent(with_id["data"]["timestamp"])

    without_id = parse_strict(encode_pong(user_id="u1", message_id=None))
    assert without_id.keys() == {"type", "data"}
    assert without_id["data"]["user_id"] == "u1"


def test_heartbeat_ack_echoes_message_id_only_when_given() -> None:
    with_id = parse_strict(encode_heartbeat_ack(message_id="h1"))
    assert with_id.keys() == {"type", "data", "message_id"}
    assert with_id["type"] == "heartbeat_ack"
    assert with_id["message_id"] == "h1"
    assert with_id["data"].keys() == {"status", "timestamp"}
    assert with_id["data"]["status"] == "healthy"
    assert_recent(with_id["data"]["timestamp"])

    without_id = parse_strict(encode_heartbeat_ack(message_id=None))
    assert without_id.keys() == {"type", "data"}


def test_error_message_has_the_documented_shape_and_echoes_message_id() -> None:
    error = FormatError("bad frame", details={"field": "type"}, message_id="m1")
    assert parse_strict(encode_error(error)) == {
        "type": "error_message",
        "error_code": "FORMAT_ERROR",
        "error_message": "bad frame",
        "details": {"field": "type"},
        "message_id": "m1",
    }


def test_error_message_omits_the_message_id_key_when_the_frame_had_none() -> None:
    frame = parse_strict(encode_error(UnknownTypeError("no such type")))
    assert "message_id" not in frame
    assert frame == {
        "type": "error_message",
        "error_code": "UNKNOWN_TYPE",
        "error_message": "no such type",
        "details": {},
    }


def test_error_for_a_non_string_message_id_has_no_message_id_key() -> None:
    frame = parse_strict(encode_error(decode_error({"type": "ping", "message_id": 12})))
    assert frame["error_code"] == "FORMAT_ERROR"
    assert "message_id" not in frame
    assert isinstance(frame["error_message"], str)
    assert frame["error_message"]


def test_run_event_has_the_documented_envelope() -> None:
    data = {"status": "started", "user_request": "hi"}
    frame = parse_strict(
        encode_run_event(
            event_type="agent_started",
            run_id="r-1",
            thread_id="t-1",
            user_id="u1",
            agent_name="triage",
            seq=3,
            final=False,
            data=data,
        )
    )
    assert frame.keys() == {
        "type",
        "run_id",
        "thread_id",
        "user_id",
        "agent_name",
        "seq",
        "final",
        "timestamp",
        "data",
    }
    assert {k: v for k, v in frame.items() if k != "timestamp"} == {
        "type": "agent_started",
        "run_id": "r-1",
        "thread_id": "t-1",
        "user_id": "u1",
        "agent_name": "triage",
        "seq": 3,
        "final": False,
        "data": data,
    }
    assert_recent(frame["timestamp"])


def run_event_with(data: dict[str, Any]) -> bytes:
    return encode_run_event(
        event_type="agent_completed",
        run_id="r-1",
        thread_id="t-1",
        user_id="u1",
        agent_name="supervisor",
        seq=9,
        final=True,
        data=data,
    )


def test_run_event_data_that_is_not_json_is_sent_as_json_rather_than_failing() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque!"

    frame = parse_strict(run_event_with({"tags": {"a"}, "pair": (1, 2), "obj": Opaque()}))
    assert frame["data"] == {"tags": ["a"], "pair": [1, 2], "obj": "opaque!"}
    assert frame["final"] is True


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_run_event_data_with_non_finite_floats_is_still_strict_json(value: float) -> None:
    # A JavaScript client's JSON.parse rejects NaN/Infinity; the server rejects them
    # from clients, so it must not send them either.
    frame = parse_strict(run_event_with({"status": "completed", "result": {"score": value}}))
    assert frame["data"]["status"] == "completed"
    assert frame["data"]["result"] == {"score": None}


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({1: "a", None: "b"}, {"1": "a", "None": "b"}),  # keys that are not text
        ({"n": 2**70}, {"n": 2**70}),  # beyond 64 bits
        ({"n": -(2**64), "ok": 1.5}, {"n": -(2**64), "ok": 1.5}),
        ({"t": "half \ud800 pair"}, {"t": "half \ud800 pair"}),  # lone surrogate, escaped
    ],
    ids=["keys", "big-int", "big-negative-int", "lone-surrogate"],
)
def test_run_event_data_the_fast_encoder_refuses_is_still_sent_as_utf8_json(
    result: dict[Any, Any], expected: dict[str, Any]
) -> None:
    frame = run_event_with({"status": "completed", "result": result})
    frame.decode("utf-8")  # a frame that is not UTF-8 could not be sent at all
    assert parse_strict(frame)["data"]["result"] == expected


# -- handshake: admit() ------------------------------------------------------------


def assert_anonymous(identity: Identity) -> None:
    assert re.fullmatch(ANON_PATTERN, identity.user_id), identity.user_id
    assert uuid.UUID(identity.user_id.removeprefix("anon-")).version == 4
    assert identity.subprotocol is None


@pytest.mark.parametrize("target", ["/ws", "/ws?", "/ws?foo=bar", "/ws?user_id=&x=1"])
def test_ws_path_without_user_id_admits_a_fresh_anonymous_user(target: str) -> None:
    first, second = admit(target), admit(target)
    assert_anonymous(first)
    assert_anonymous(second)
    assert first.user_id != second.user_id


@pytest.mark.parametrize(
    "target",
    ["/ws/", "/other", "/", "", "/WS", "/ws/x", "/wss", "/api/ws", "ws", "/ws#x", "/other?x=/ws"],
)
def test_any_path_but_ws_is_rejected_with_404(target: str) -> None:
    with pytest.raises(HandshakeRejected) as info:
        admit(target)
    assert info.value.status == 404


def test_path_is_checked_before_the_user_id() -> None:
    with pytest.raises(HandshakeRejected) as info:
        admit("/ws/?user_id=bad%20id")
    assert info.value.status == 404


@pytest.mark.parametrize(
    ("query", "user_id"),
    [
        ("user_id=u1", "u1"),
        ("x=1&user_id=alice.b:c-d_e", "alice.b:c-d_e"),
        ("user_id=a%3Ab", "a:b"),  # percent-decoded like any query value
        ("user_id=" + "u" * 128, "u" * 128),
    ],
)
def test_valid_user_id_in_the_query_string_is_the_identity(query: str, user_id: str) -> None:
    assert admit(f"/ws?{query}") == Identity(user_id=user_id)


@pytest.mark.parametrize(
    "value",
    ["a%20b", "a+b", "a%0A", "%0Aa", "u" * 129, "%C3%A9", "a%2Fb", "a%00", "a%3Fb"],
)
def test_invalid_user_id_in_the_query_string_is_rejected_with_400(value: str) -> None:
    with pytest.raises(HandshakeRejected) as info:
        admit(f"/ws?user_id={value}")
    assert info.value.status == 400


@given(st.text(max_size=140))
@settings(deadline=None, max_examples=200)
def test_admit_takes_exactly_the_user_ids_the_syntax_allows(value: str) -> None:
    target = "/ws?" + urlencode({"user_id": value}, quote_via=quote)
    if value == "":
        assert_anonymous(admit(target))
    elif re.fullmatch(ID_PATTERN, value):
        assert admit(target) == Identity(user_id=value)
    else:
        with pytest.raises(HandshakeRejected) as info:
            admit(target)
        assert info.value.status == 400


# -- properties: decoding never fails with anything but ProtocolError ---------------

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
finite_json = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
any_json = st.recursive(
    json_scalars | st.floats(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
ids = st.from_regex(ID_PATTERN, fullmatch=True) | st.text(max_size=6) | finite_json
texts = st.text(max_size=12) | st.sampled_from(["", " ", "\t\n", "hello"]) | finite_json
payloads = (
    st.fixed_dictionaries(
        {},
        optional={
            "content": texts,
            "message": texts,
            "text": texts,
            "user_request": texts,
            "agent_name": st.sampled_from(["supervisor", "triage"]) | finite_json,
            "thread_id": ids,
            "run_id": ids,
            "other": finite_json,
        },
    )
    | finite_json
)
frames = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(MESSAGE_TYPES) | st.text(max_size=12) | finite_json,
        "payload": payloads,
        "message_id": st.none() | st.text(max_size=8) | finite_json,
        "extra": finite_json,
    },
)


def check_decoded(text: str) -> ClientMessage | ProtocolError:
    """Decode ``text``; assert the properties every outcome must have; return it."""
    message = decode_outcome(text)
    if isinstance(message, ProtocolError):
        assert type(message) in (FormatError, UnknownTypeError)
        assert message.message_id is None or isinstance(message.message_id, str)
        parse_strict(encode_error(message))
        return message
    assert isinstance(message, MESSAGE_CLASSES)
    assert message.type in MESSAGE_TYPES
    assert message.message_id is None or isinstance(message.message_id, str)
    if isinstance(message, StartRun):
        assert isinstance(message.request, str)
        assert message.request.strip()
        assert isinstance(message.agent_name, str)
        for value in (message.thread_id, message.run_id):
            assert value is None or re.fullmatch(ID_PATTERN, value)
    if isinstance(message, StopRun):
        assert re.fullmatch(ID_PATTERN, message.run_id)
    return message


@given(st.text())
@settings(deadline=None, max_examples=300)
def test_decoding_arbitrary_text_returns_a_message_or_raises_protocol_error(text: str) -> None:
    check_decoded(text)


@given(any_json)
@settings(deadline=None, max_examples=300)
def test_decoding_arbitrary_json_returns_a_message_or_raises_protocol_error(value: Any) -> None:
    check_decoded(json.dumps(value))


@given(frames)
@settings(deadline=None, max_examples=500)
def test_decoding_arbitrary_frames_follows_the_check_order_and_echo_rules(
    frame: dict[str, Any],
) -> None:
    outcome = check_decoded(json.dumps(frame))
    kind, payload, raw_id = frame.get("type"), frame.get("payload"), frame.get("message_id")
    envelope_ok = (
        isinstance(kind, str)
        and (payload is None or isinstance(payload, dict))
        and (raw_id is None or isinstance(raw_id, str))
    )
    # A string message_id is echoed by whatever answers the frame; anything else is not.
    assert outcome.message_id == (raw_id if isinstance(raw_id, str) else None)
    if not envelope_ok:
        assert isinstance(outcome, FormatError)
    elif kind not in MESSAGE_TYPES:
        assert isinstance(outcome, UnknownTypeError)
    elif isinstance(outcome, ProtocolError):
        assert isinstance(outcome, FormatError)
        assert kind not in ("ping", "heartbeat")  # they have no payload fields to fail
    else:
        assert outcome.type == kind
        if isinstance(outcome, StartRun) and kind == "start_agent":
            assert payload is not None
            assert outcome.request == payload["user_request"]
            name = payload.get("agent_name")
            assert outcome.agent_name == ("supervisor" if name is None else name)
