"""Opaque keyset cursors for the store's lists. Pure code.

A cursor holds the sort key of the last item of a page and the list it
belongs to, as URL-safe base64 of a small JSON array. The next page is
"everything after that key", so items inserted meanwhile never shift a
walk (no item is skipped or repeated because of them). A cursor that does
not decode, or that belongs to another list, is a ``FormatError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TypeGuard

import orjson

from server.protocol import FormatError

_THREADS = "t"
_RUNS = "r"


def _scope(value: str) -> str:
    """A short tag of the list's owner (user or thread), so cursors don't cross lists."""
    return hashlib.blake2b(value.encode(), digest_size=6).hexdigest()


def _is_key(value: object) -> TypeGuard[int]:
    """An integer sort key that any backend can compare (64-bit, not negative)."""
    return type(value) is int and 0 <= value < 2**62


def _encode(parts: list[object]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")


def _decode(cursor: str, kind: str, scope: str) -> list[object]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise FormatError("malformed cursor", details={"field": "cursor"}) from None
    if (
        not isinstance(parts, list)
        or len(parts) != 4
        or parts[0] != kind
        or parts[1] != _scope(scope)
    ):
        raise FormatError("cursor does not belong to this list", details={"field": "cursor"})
    return parts


def threads_cursor(user_id: str, updated_at_ms: int, thread_id: str) -> str:
    """After the thread (``updated_at_ms``, ``thread_id``) in ``user_id``'s list."""
    return _encode([_THREADS, _scope(user_id), updated_at_ms, thread_id])


def decode_threads_cursor(cursor: str, user_id: str) -> tuple[int, str]:
    parts = _decode(cursor, _THREADS, user_id)
    updated_at_ms, thread_id = parts[2], parts[3]
    if not _is_key(updated_at_ms) or not isinstance(thread_id, str):
        raise FormatError("malformed cursor", details={"field": "cursor"})
    return updated_at_ms, thread_id


def runs_cursor(thread_id: str, turn: int) -> str:
    """After the run numbered ``turn`` in ``thread_id`` (runs go newest first)."""
    return _encode([_RUNS, _scope(thread_id), turn, ""])


def decode_runs_cursor(cursor: str, thread_id: str) -> int:
    turn = _decode(cursor, _RUNS, thread_id)[2]
    if not _is_key(turn):
        raise FormatError("malformed cursor", details={"field": "cursor"})
    return turn
