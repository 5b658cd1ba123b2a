"""One client session's state, as a pure state machine (no I/O, no clock of its own).

A session is what a client connection *is* to the protocol: whether it may
start runs, why it is closing, its message rate and its error streak. The
connection layer feeds it what happened (a message arrived, the server
drains, the peer went away) and asks it what to do; it never touches a socket.

States and transitions::

    OPEN ──begin_drain──> DRAINING ──close──> CLOSING ──closed──> CLOSED
      │  └─────────────────close───────────────^   ^
      │                                           │
      └──transport_lost(resumable)──> LINGERING ──┘ (grace over: close)
                  LINGERING ──take_over──> OPEN (or DRAINING)

- OPEN: messages are read and runs may start.
- DRAINING: the server is draining; no new run starts (SHUTTING_DOWN); the
  connection closes with 1001 once its runs have ended.
- LINGERING: the socket went away without a normal close and the session
  waits ``--resume-grace`` seconds for the same client to take it over; its
  runs go on.
- CLOSING: a close was decided (the first reason wins); nothing new starts,
  what is queued is flushed, the close handshake runs.
- CLOSED: over.
"""

from __future__ import annotations

import enum

import attrs

from ._errors import CloseConnection, ShuttingDownError
from ._limits import ErrorStreak, TokenBucket


class SessionState(enum.Enum):
    OPEN = "open"
    DRAINING = "draining"
    LINGERING = "lingering"
    CLOSING = "closing"
    CLOSED = "closed"


_ALIVE = frozenset({SessionState.OPEN, SessionState.DRAINING, SessionState.LINGERING})


@attrs.define
class Session:
    """The protocol state of one session. Every transition is a named method."""

    #: Messages per second (0: no limit) and how many may come at once.
    rate_limit: float = 0.0
    rate_burst: float = 1.0
    #: FORMAT_ERROR / UNKNOWN_TYPE answers in a row before closing (0: no limit).
    max_consecutive_errors: int = 0
    state: SessionState = SessionState.OPEN
    #: Why the session is closing or closed (None while alive, or when the peer closed).
    close_reason: CloseConnection | None = None
    #: Whether the server was draining when the session lingered (restored on take-over).
    _drain_pending: bool = False
    _bucket: TokenBucket | None = attrs.field(init=False, default=None)
    _streak: ErrorStreak = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.rate_limit > 0:
            self._bucket = TokenBucket(rate=self.rate_limit, burst=self.rate_burst)
        self._streak = ErrorStreak(limit=self.max_consecutive_errors)

    # -- questions -------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Not closing or closed (runs keep running)."""
        return self.state in _ALIVE

    @property
    def connected(self) -> bool:
        """A socket is attached and messages are read (OPEN or DRAINING)."""
        return self.state in (SessionState.OPEN, SessionState.DRAINING)

    def check_can_start_run(self, message_id: str | None = None) -> None:
        """Raise :class:`ShuttingDownError` unless a new run may start now."""
        if self.state is not SessionState.OPEN:
            raise ShuttingDownError(
                "the server is shutting down and starts no new runs", message_id=message_id
            )

    # -- messages --------------------------------------------------------------

    def take_message_token(self, now: float) -> float:
        """A message arrived at ``now``: 0.0 if within the rate, else seconds to wait."""
        return 0.0 if self._bucket is None else self._bucket.take(now)

    def message_refused(self) -> bool:
        """A FORMAT_ERROR or UNKNOWN_TYPE was answered; True once the streak says close."""
        if not self._streak.error():
            return False
        limit = self.max_consecutive_errors
        self.close(CloseConnection(1008, f"{limit} invalid messages in a row"))
        return True

    def message_accepted(self) -> None:
        """Any other answer (including other errors) resets the streak."""
        self._streak.accepted()

    # -- lifetime --------------------------------------------------------------

    def begin_drain(self) -> bool:
        """The server drains. True if this changed anything (the session was OPEN)."""
        if self.state is SessionState.OPEN:
            self.state = SessionState.DRAINING
            return True
        if self.state is SessionState.LINGERING:
            self._drain_pending = True
        return False

    def close(self, reason: CloseConnection) -> bool:
        """Decide to close with ``reason``; the first reason wins. True if it was alive."""
        if self.close_reason is None and self.state is not SessionState.CLOSED:
            self.close_reason = reason
        if self.alive:
            self.state = SessionState.CLOSING
            return True
        return False

    def transport_lost(self, *, resumable: bool) -> bool:
        """The socket went away. True if the session now lingers (else it is closing)."""
        if not self.connected:
            return False
        if resumable:
            self._drain_pending = self.state is SessionState.DRAINING
            self.state = SessionState.LINGERING
            return True
        self.state = SessionState.CLOSING
        return False

    def take_over(self) -> None:
        """A new socket of the same client took the lingering session over."""
        if self.state is not SessionState.LINGERING:
            raise RuntimeError(f"cannot take over a session that is {self.state.value}")
        self.state = SessionState.DRAINING if self._drain_pending else SessionState.OPEN
        self._drain_pending = False

    def closed(self) -> None:
        """The close handshake is over (or was cut short): the session is finished."""
        self.state = SessionState.CLOSED
