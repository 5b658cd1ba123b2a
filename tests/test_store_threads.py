"""run_interruptible: what a cancelled blocking call does, with threads and events only."""

from __future__ import annotations

import functools
import threading

import pytest
import trio
import trio.testing

from server.store._threads import CallGuard, Interrupted, run_interruptible


async def test_cancelled_mid_call_interrupts_waits_and_raises() -> None:
    inside = threading.Event()
    returned = threading.Event()
    interrupted: list[bool] = []

    def call(guard: CallGuard) -> str:
        stop = threading.Event()

        def interrupt() -> None:
            interrupted.append(True)
            stop.set()

        guard.attach(interrupt)
        inside.set()
        stop.wait(10)
        try:
            guard.check()  # the next statement is refused
            return "ran on"
        finally:
            returned.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(run_interruptible, call, grace=5))
            await trio.to_thread.run_sync(inside.wait)
            nursery.cancel_scope.cancel()
        assert nursery.cancel_scope.cancelled_caught
    assert interrupted == [True]
    assert returned.is_set()  # the thread was back before the cancellation went on


async def test_cancelled_before_the_thread_starts_never_runs() -> None:
    ran: list[bool] = []
    limiter = trio.CapacityLimiter(1)
    async with limiter:  # the call waits for a thread token, then is cancelled
        with trio.move_on_after(0.01):
            await run_interruptible(lambda guard: ran.append(True), grace=1, limiter=limiter)
    await trio.to_thread.run_sync(lambda: None)
    assert ran == []


async def test_a_call_that_completes_despite_the_interruption_returns_its_result() -> None:
    inside = threading.Event()
    proceed = threading.Event()

    def committed(guard: CallGuard) -> str:
        guard.attach(None)  # nothing to interrupt: say, COMMIT already sent
        inside.set()
        proceed.wait(10)
        return "committed"

    results: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def go() -> None:
                with trio.CancelScope() as scope:
                    cancel_scope.append(scope)
                    results.append(await run_interruptible(committed, grace=5))

            cancel_scope: list[trio.CancelScope] = []
            nursery.start_soon(go)
            await trio.to_thread.run_sync(inside.wait)
            cancel_scope[0].cancel()
            await trio.testing.wait_all_tasks_blocked()
            proceed.set()
    assert results == ["committed"]


async def test_a_call_that_overstays_its_grace_is_abandoned_and_cleans_up_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inside = threading.Event()
    release = threading.Event()
    late = threading.Event()
    events: list[str] = []

    def stuck(guard: CallGuard) -> None:
        guard.attach(lambda: None)  # an interruption that does not stop the wait
        inside.set()
        release.wait(10)

    def late_return() -> None:
        events.append("late return")
        late.set()

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            nursery.start_soon(
                lambda: run_interruptible(
                    stuck,
                    grace=2,
                    on_abandon=lambda: events.append("abandon"),
                    on_late_return=late_return,
                )
            )
            await trio.to_thread.run_sync(inside.wait)
            cancelled_at = trio.current_time()
            nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught
    # It waited its 2 s of grace (virtual time), then gave up on the thread.
    assert trio.current_time() - cancelled_at == 2
    assert events == ["abandon"]
    release.set()
    await trio.to_thread.run_sync(late.wait, 10)
    assert events == ["abandon", "late return"]


def test_interrupted_is_raised_by_a_tripped_guard() -> None:
    guard = CallGuard()
    guard.trip()
    with pytest.raises(Interrupted):
        guard.check()
    with pytest.raises(Interrupted):
        guard.attach(lambda: None)
