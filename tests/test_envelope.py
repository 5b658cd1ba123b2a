"""A run's envelopes joined from pre-encoded parts are the envelopes the protocol defines.

:class:`~server.protocol.EventEncoder` builds each event's frame from parts
encoded once per run; :func:`~server.protocol.encode_run_event` builds it from
a dict. Whatever the data (nested, non-ASCII, NaN, keys that are not text,
integers orjson refuses, objects that are not JSON), the bytes must be the
same, and a run's events must hold exactly their bytes.
"""

from __future__ import annotations

import math
import tracemalloc
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.protocol import EventEncoder, _frames, encode_run_event

pytestmark = pytest.mark.timeout(60)

STAMP = "2026-12-06T10:00:00.123Z"

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
_keys = st.text(max_size=12) | st.integers(min_value=-5, max_value=5)
_values = st.recursive(
    _scalars | st.sets(st.integers(0, 9), max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)
_data = st.dictionaries(st.text(max_size=12), _values, max_size=5)
_names = st.text(min_size=1, max_size=20)


@pytest.fixture(autouse=True)
def _fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # Both paths read the same timestamp: the test compares bytes, not clocks.
    monkeypatch.setattr(_frames, "utc_timestamp", lambda: STAMP)


def _general(encoder: EventEncoder, kind: str, agent: str, seq: int, final: bool,
             data: dict[str, Any], max_bytes: int | None) -> bytes:  # fmt: skip
    return encode_run_event(
        event_type=kind, run_id=encoder.run_id, thread_id=encoder.thread_id,
        user_id=encoder.user_id, agent_name=agent, seq=seq, final=final, data=data,
        max_bytes=max_bytes,
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    kind=_names,
    agent=_names,
    seq=st.integers(min_value=1, max_value=10**9),
    final=st.booleans(),
    data=_data,
    max_bytes=st.none() | st.integers(min_value=64, max_value=4096),
    ids=st.tuples(_names, _names, _names),
)
def test_joined_envelopes_are_the_protocol_s_bytes(
    kind: str, agent: str, seq: int, final: bool, data: dict[str, Any],
    max_bytes: int | None, ids: tuple[str, str, str],
) -> None:  # fmt: skip
    run_id, thread_id, user_id = ids
    encoder = EventEncoder(run_id=run_id, thread_id=thread_id, user_id=user_id, max_bytes=max_bytes)
    # Twice: the second time from the encoder's kept parts.
    for _ in range(2):
        joined = encoder.encode(kind, agent, seq, final, data)
        assert joined == _general(encoder, kind, agent, seq, final, data, max_bytes)
    frame = orjson.loads(joined)
    assert (frame["type"], frame["agent_name"], frame["seq"], frame["final"]) == (
        kind, agent, seq, final,
    )  # fmt: skip


def test_a_run_s_events_hold_only_their_bytes() -> None:
    encoder = EventEncoder(run_id="r-1", thread_id="t-1", user_id="u")
    data = {"reasoning": "x" * 450, "step_number": 7, "ratio": math.pi}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [encoder.encode("agent_thinking", "stream", n + 1, False, data) for n in range(100)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    size = len(kept[0])
    # orjson's own output would hold several KiB each, whatever its length.
    assert held < 100 * (size + 128)
    assert orjson.loads(kept[-1])["data"] == data


def test_the_parts_kept_per_run_are_bounded() -> None:
    encoder = EventEncoder(run_id="r-1", thread_id="t-1", user_id="u")
    for n in range(200):
        event = encoder.encode(f"custom_{n}", "agent", n + 1, False, {})
        assert orjson.loads(event)["type"] == f"custom_{n}"
    assert len(encoder._heads) <= 64
