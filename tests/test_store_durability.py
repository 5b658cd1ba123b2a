"""Durability groundwork: SIGKILL a process committing runs, at random moments, and look.

The child (tests/_store_kill_child.py) prints ``DONE`` for a run only after
``commit_final`` returned True, the moment a server sends the final event.
After each kill: every DONE run is complete (all events, in seq order, byte
for byte, the last one final); every ended run is complete; the runs left
``running`` hold a gap-free prefix of their events and are found by
``running_runs``, so a start-up sweep can end them (which this test then does,
before the next child works on the same file).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import trio
from _procs import LineReader, reap
from _store_kill_child import frame

from server.store import EventRecord, RunEnd, Store, open_store

ROOT = Path(__file__).resolve().parent.parent
KILLS = 4


async def run_child_until_killed(db: Path, seed: int, rng: random.Random) -> dict[str, int]:
    """Start the child, kill it at a random moment, return its DONE runs."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await trio.lowlevel.open_process(
        [sys.executable, str(ROOT / "tests" / "_store_kill_child.py"), str(db), str(seed)],
        stdout=subprocess.PIPE,
        env=env,
    )
    done: dict[str, int] = {}
    try:
        assert process.stdout is not None
        lines = LineReader(process.stdout)
        with trio.fail_after(30):
            assert await lines.readline() == "READY"
        with trio.move_on_after(rng.uniform(0.1, 1.2)):
            while (line := await lines.readline()) is not None:
                _, run_key, last = line.split()
                done[run_key] = int(last)
        process.send_signal(signal.SIGKILL)
        with trio.fail_after(30):
            for line in await lines.read_rest():
                if line.startswith("DONE "):
                    _, run_key, last = line.split()
                    done[run_key] = int(last)
    finally:
        await reap([process], 10)
    assert process.returncode == -signal.SIGKILL
    return done


async def check_and_sweep(store: Store, done: dict[str, int]) -> tuple[int, int]:
    """Check the store after a kill; end the runs left running. (#ended, #swept)."""
    ended = 0
    for run_key, last in done.items():
        info = await store.get_run("durable", run_key)
        assert info is not None, f"{run_key}: its final was sent, its record is gone"
        assert (info.status, info.last_seq) == ("completed", last)
        stored = await store.read_events(run_key, 0, 1000)
        assert [e.seq for e in stored] == list(range(1, last + 1))
        assert [e.frame for e in stored] == [
            frame(run_key, s, s == last) for s in range(1, last + 1)
        ]
        ended += 1
    running = await store.running_runs(None)
    for info in running:
        stored = await store.read_events(info.run_key, 0, 1000)
        # A prefix with no gap, ending where the record says.
        assert [e.seq for e in stored] == list(range(1, info.last_seq + 1))
        assert all(e.frame == frame(info.run_key, e.seq, False) for e in stored)
        seq = info.last_seq + 1
        lost = EventRecord(run_key=info.run_key, seq=seq, frame=frame(info.run_key, seq, True))
        end = RunEnd(run_key=info.run_key, status="failed", last_seq=seq, error_code="NODE_LOST")
        assert await store.finish_run(end, [lost])
    assert await store.running_runs(None) == []
    return ended, len(running)


async def test_sigkill_at_random_moments_leaves_no_half_written_run(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    print(f"seed {seed}")
    rng.seed(seed)
    total_done = total_swept = 0
    for round_ in range(KILLS):
        done = await run_child_until_killed(db, seed + round_, rng)
        async with open_store(f"sqlite:///{db}") as store:
            with trio.fail_after(60):
                ended, swept = await check_and_sweep(store, done)
        total_done += ended
        total_swept += swept
        print(f"round {round_}: {ended} runs complete, {swept} swept")
    # Every threads' runs, ended or swept, are all complete now.
    async with open_store(f"sqlite:///{db}") as store:
        page = await store.list_threads("durable", limit=100)
        assert page.items
        assert all(t.last_status in ("completed", "failed") for t in page.items)
    assert total_done > 0, "the child never finished a run before it was killed"
