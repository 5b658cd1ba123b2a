"""Ids and timestamps as the protocol writes them (pure)."""

from __future__ import annotations

import functools
import os
import re
import time

_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def is_valid_id(value: object) -> bool:
    """Whether ``value`` is a client-suppliable id (user, thread or run)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def new_id(prefix: str) -> str:
    """A fresh opaque id such as ``r-3f2a…`` (128 random bits, 32 hex digits)."""
    return f"{prefix}-{os.urandom(16).hex()}"


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
