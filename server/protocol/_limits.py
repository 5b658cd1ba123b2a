"""Per-connection limits as plain state machines (no I/O, no clock of their own)."""

from __future__ import annotations

import attrs


@attrs.define
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; one token a message."""

    rate: float
    burst: float
    tokens: float = attrs.field(default=-1.0)
    updated: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, now: float) -> float:
        """Take a token at time ``now``: 0.0 if allowed, else seconds until one is due."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@attrs.define
class ErrorStreak:
    """Counts FORMAT_ERROR / UNKNOWN_TYPE answers in a row; any accepted frame resets."""

    limit: int  # 0: never trips
    count: int = 0

    def error(self) -> bool:
        """Record one more; True when the streak reaches the limit."""
        self.count += 1
        return self.limit > 0 and self.count >= self.limit

    def accepted(self) -> None:
        self.count = 0
