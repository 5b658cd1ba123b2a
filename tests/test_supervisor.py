"""The supervisor's own logic, with stand-ins for workers (tiny Python processes).

A stand-in starts in tens of milliseconds where a real worker takes a second
or more, so what happens to a worker that never listens, prints the wrong
lines, or dies at once is checked here; tests/test_workers.py runs real ones.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

import pytest
import trio

from server._settings import Settings
from server.workers import RestartPolicy, Supervisor, WorkerCommand

PORT = 45678
WAIT = 20.0

#: What a stand-in does, by name: print the listening lines and wait for stdin to
#: close (as a worker waits on its parent), stay silent, die at once, or name a
#: port other than the parent's.
SCRIPTS = {
    "ok": (
        f"print('listening on ws://127.0.0.1:{PORT}/ws'); print('admin on http://127.0.0.1:1');"
        "import sys; sys.stdout.flush(); sys.stdin.read()"
    ),
    "silent": "import sys; sys.stdin.read()",
    "die": "raise SystemExit(3)",
    "wrong_port": (
        "print('listening on ws://127.0.0.1:1/ws'); print('admin on http://127.0.0.1:1');"
        "import sys; sys.stdout.flush(); sys.stdin.read()"
    ),
}


def stand_ins(*kinds: str) -> Callable[[int], WorkerCommand]:
    """Worker ``i`` runs ``kinds[i]`` the first time, then ``kinds[-1]`` once replaced."""
    starts: dict[int, int] = {}

    def command(index: int) -> WorkerCommand:
        starts[index] = starts.get(index, 0) + 1
        kind = kinds[index] if starts[index] == 1 and index < len(kinds) else kinds[-1]
        return WorkerCommand((sys.executable, "-c", SCRIPTS[kind]), {})

    return command


def supervisor(
    command: Callable[[int], WorkerCommand], *, workers: int = 2, max_deaths: int = 5
) -> Supervisor:
    return Supervisor(
        settings=Settings(workers=workers, drain_timeout=1, close_timeout=0.5),
        host="127.0.0.1",
        port=PORT,
        command=command,
        policy=RestartPolicy(max_deaths=max_deaths, first_delay=0.01, max_delay=0.05),
        startup_timeout=2.0,
    )


async def test_a_drain_asks_every_worker_to_stop_and_replaces_none() -> None:
    parent = supervisor(stand_ins("ok"))
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(parent.run)
            await parent.wait_all_ready()
            stats = parent.statistics()
            assert [w.state for w in stats.workers] == ["ready", "ready"]
            assert stats.ready == 2
            parent.begin_drain(signal.SIGINT)
    stats = parent.statistics()
    assert [(w.state, w.pid, w.restarts) for w in stats.workers] == [("stopped", None, 0)] * 2
    assert stats.draining
    assert parent.failure is None


async def test_workers_that_die_at_once_are_replaced_until_the_parent_gives_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parent = supervisor(stand_ins("die"), max_deaths=5)
    with trio.fail_after(WAIT):
        await parent.run()
    assert parent.failure is not None
    assert parent.failure.startswith("the workers keep dying: 5 exits within 30 s")
    assert "exited with code 3" in parent.failure
    replaced = [
        r for r in caplog.records if "exited with code 3: starting another" in r.getMessage()
    ]
    assert len(replaced) == 4  # the fifth death gave up instead
    # Three replacements died; the other slot's next one may have started
    # before the give-up (then it was stopped, not counted as a death).
    stats = parent.statistics()
    assert stats.restarts in (3, 4)
    assert [w.state for w in stats.workers] == ["stopped", "stopped"]


@pytest.mark.parametrize("kind", ["silent", "wrong_port"])
async def test_a_worker_that_does_not_listen_where_told_is_killed_and_replaced(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    parent = supervisor(stand_ins(kind, "ok", "ok"), workers=2)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(parent.run)
            await parent.wait_all_ready()
            parent.begin_drain()
    (first, second) = parent.statistics().workers
    assert (first.restarts, second.restarts) == (1, 0)
    assert parent.failure is None
    expected = "did not start listening within 2 s" if kind == "silent" else "another port"
    assert any(expected in record.getMessage() for record in caplog.records)
    assert any(
        "worker 0" in m and "was killed by SIGKILL: starting another in" in m
        for m in (record.getMessage() for record in caplog.records)
    )


async def test_the_readiness_of_a_worker_that_does_not_answer_is_false() -> None:
    # The stand-ins' admin port (1) answers nothing: listening, yet not ready.
    parent = supervisor(stand_ins("ok"))
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(parent.run)
            await parent.wait_all_ready()
            assert await parent.check_ready() == {0: False, 1: False}
            parent.begin_drain()
