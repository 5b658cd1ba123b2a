"""The session state machine (server/protocol/_session.py), without any I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from server.protocol import CloseConnection, Session, SessionState, ShuttingDownError
from server.protocol._limits import TokenBucket


def state_of(session: Session) -> SessionState:
    """The state, read afresh (mypy would keep an earlier narrowing of the attribute)."""
    return session.state


def test_a_new_session_is_open_and_may_start_runs() -> None:
    session = Session()
    assert session.state is SessionState.OPEN
    assert session.alive
    assert session.connected
    session.check_can_start_run()


def test_draining_refuses_new_runs_with_the_message_id() -> None:
    session = Session()
    assert session.begin_drain() is True
    assert session.begin_drain() is False  # only the first drain changes anything
    with pytest.raises(ShuttingDownError) as refused:
        session.check_can_start_run("m7")
    assert refused.value.message_id == "m7"
    assert session.connected


def test_the_first_close_reason_wins() -> None:
    session = Session()
    assert session.close(CloseConnection(1013, "slow consumer")) is True
    assert session.close(CloseConnection(1001, "server shutting down")) is False
    assert session.close_reason is not None
    assert session.close_reason.code == 1013
    assert session.state is SessionState.CLOSING
    assert not session.alive
    with pytest.raises(ShuttingDownError):
        session.check_can_start_run()


def test_a_lost_transport_lingers_only_when_resumable() -> None:
    gone = Session()
    assert gone.transport_lost(resumable=False) is False
    assert gone.state is SessionState.CLOSING
    assert gone.close_reason is None  # the peer's doing: no code of ours

    lingering = Session()
    assert lingering.transport_lost(resumable=True) is True
    assert lingering.state is SessionState.LINGERING
    assert lingering.alive
    assert not lingering.connected
    lingering.take_over()
    assert state_of(lingering) is SessionState.OPEN


def test_a_drain_during_the_grace_applies_after_the_take_over() -> None:
    session = Session()
    session.transport_lost(resumable=True)
    assert session.begin_drain() is False
    session.take_over()
    assert session.state is SessionState.DRAINING


def test_only_a_lingering_session_can_be_taken_over() -> None:
    session = Session()
    with pytest.raises(RuntimeError, match="open"):
        session.take_over()


def test_the_error_streak_closes_with_1008_at_the_limit_and_any_accepted_message_resets_it() -> (
    None
):
    session = Session(max_consecutive_errors=3)
    assert not session.message_refused()
    assert not session.message_refused()
    session.message_accepted()
    assert not session.message_refused()
    assert not session.message_refused()
    assert session.message_refused()
    assert session.close_reason is not None
    assert session.close_reason.code == 1008
    assert session.state is SessionState.CLOSING


def test_no_streak_limit_never_closes() -> None:
    session = Session(max_consecutive_errors=0)
    assert not any(session.message_refused() for _ in range(1000))
    assert session.state is SessionState.OPEN


def test_the_rate_limit_holds_under_a_clock_that_does_not_start_at_zero() -> None:
    # trio's real clock starts anywhere: the burst cap must hold at any `now`.
    session = Session(rate_limit=20, rate_burst=40)
    now = 123_456.75
    allowed = sum(session.take_message_token(now) == 0.0 for _ in range(10_000))
    assert allowed == 40
    # Half a second later, ten more tokens (20 per second), no more.
    later = now + 0.5
    assert sum(session.take_message_token(later) == 0.0 for _ in range(100)) == 10


@given(
    start=st.floats(0, 1e9),
    rate=st.floats(0.1, 1000),
    burst=st.integers(1, 100),
)
def test_a_token_bucket_allows_exactly_its_burst_at_one_instant_whenever_its_clock_starts(
    start: float, rate: float, burst: int
) -> None:
    bucket = TokenBucket(rate=rate, burst=burst)
    allowed = [bucket.take(start) == 0.0 for _ in range(burst + 3)]
    assert allowed == [True] * burst + [False] * 3


@given(
    start=st.floats(0, 1e6),
    rate=st.floats(0.5, 100),
    burst=st.integers(1, 10),
    saved=st.floats(0.05, 0.95),
)
def test_retry_after_is_exactly_the_time_until_the_next_whole_token(
    start: float, rate: float, burst: int, saved: float
) -> None:
    bucket = TokenBucket(rate=rate, burst=burst)
    while bucket.take(start) == 0.0:  # spend the burst
        pass
    now = start + saved / rate  # a part of the next token is saved up
    wait = bucket.take(now)
    assert wait == pytest.approx((1 - saved) / rate, rel=1e-6)
    assert bucket.take(now + wait * 0.999) > 0.0  # not yet
    assert bucket.take(now + wait * 1.000001 + 1e-9) == 0.0  # due now
    assert bucket.take(now + wait * 1.000001 + 1e-9) > 0.0  # and only one


class SessionMachine(RuleBasedStateMachine):
    """Any sequence of transitions keeps the session's promises."""

    def __init__(self) -> None:
        super().__init__()
        self.session = Session(max_consecutive_errors=3)
        self.closed_with: int | None = None

    @rule(code=st.sampled_from([1001, 1008, 1011, 1013]))
    def close(self, code: int) -> None:
        was_alive = self.session.alive
        changed = self.session.close(CloseConnection(code, "why"))
        assert changed == was_alive
        if self.closed_with is None and self.session.state is not SessionState.CLOSED:
            self.closed_with = code

    @rule()
    def drain(self) -> None:
        before = self.session.state
        changed = self.session.begin_drain()
        assert changed == (before is SessionState.OPEN)

    @rule(resumable=st.booleans())
    def lose_transport(self, resumable: bool) -> None:
        was_connected = self.session.connected
        lingers = self.session.transport_lost(resumable=resumable)
        assert lingers == (was_connected and resumable)

    @precondition(lambda self: self.session.state is SessionState.LINGERING)
    @rule()
    def take_over(self) -> None:
        self.session.take_over()
        assert self.session.connected

    @rule()
    def refuse(self) -> None:
        finished = self.session.state is SessionState.CLOSED
        if self.session.message_refused() and self.closed_with is None and not finished:
            self.closed_with = 1008

    @rule()
    def finish(self) -> None:
        self.session.closed()

    @invariant()
    def runs_start_only_when_open(self) -> None:
        if self.session.state is SessionState.OPEN:
            self.session.check_can_start_run()
        else:
            with pytest.raises(ShuttingDownError):
                self.session.check_can_start_run()

    @invariant()
    def the_first_close_reason_is_kept(self) -> None:
        reason = self.session.close_reason
        if self.closed_with is None:
            assert reason is None or reason.code == 1008
        else:
            assert reason is not None
            assert reason.code == self.closed_with


TestSessionMachine = SessionMachine.TestCase
