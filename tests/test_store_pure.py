"""The store's pure pieces: packed frames, cursors, titles, times."""

from __future__ import annotations

import contextlib

import hypothesis.strategies as st
import pytest
from hypothesis import given

from server import FormatError
from server.store import default_title, iso_from_ms
from server.store._cursor import (
    decode_runs_cursor,
    decode_threads_cursor,
    runs_cursor,
    threads_cursor,
)
from server.store._sql import pack_frames, unpack_frames


@given(st.lists(st.binary(max_size=300), max_size=30))
def test_packed_frames_come_back_byte_for_byte(frames: list[bytes]) -> None:
    assert unpack_frames(pack_frames(frames)) == frames


@given(user=st.text(max_size=40), at=st.integers(0, 2**62 - 1), thread=st.text(max_size=40))
def test_thread_cursors_round_trip_and_stay_in_their_list(user: str, at: int, thread: str) -> None:
    cursor = threads_cursor(user, at, thread)
    assert cursor.isascii()
    assert decode_threads_cursor(cursor, user) == (at, thread)
    with pytest.raises(FormatError):
        decode_threads_cursor(cursor, user + "x")
    with pytest.raises(FormatError):
        decode_runs_cursor(cursor, thread)


@given(thread=st.text(max_size=40), turn=st.integers(0, 2**62 - 1))
def test_run_cursors_round_trip(thread: str, turn: int) -> None:
    assert decode_runs_cursor(runs_cursor(thread, turn), thread) == turn


@given(st.text(max_size=60))
def test_any_text_is_a_format_error_or_a_position_never_a_crash(text: str) -> None:
    with contextlib.suppress(FormatError):
        decode_threads_cursor(text, "alice")


@pytest.mark.parametrize(
    ("request_text", "title"),
    [
        ("Hello", "Hello"),
        ("\n\n  first line  \nsecond", "first line"),
        ("x" * 81, "x" * 80),
        ("a" * 79 + " b", "a" * 79),  # cut at 80, trailing space trimmed
    ],
)
def test_default_title(request_text: str, title: str) -> None:
    assert default_title(request_text) == title


def test_times_are_iso_utc_with_milliseconds() -> None:
    assert iso_from_ms(1_763_719_200_123) == "2025-11-21T10:00:00.123Z"
    assert iso_from_ms(0) == "1970-01-01T00:00:00.000Z"
