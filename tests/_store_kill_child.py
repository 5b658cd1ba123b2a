"""The process that test_store_durability.py kills: runs committed through HistoryWriter.

``python tests/_store_kill_child.py DB_PATH SEED`` commits runs into the SQLite
store at DB_PATH until it is killed: 8 tasks, each beginning a run (on a thread
of its own or a new one), appending 1-60 events, then ``commit_final``. For
every run whose ``commit_final`` returned True it prints ``DONE run_key
last_seq`` (flushed), which is exactly when a server would send the final event.
"""

from __future__ import annotations

import random
import sys
import uuid

import trio

from server.store import EventRecord, HistoryWriter, RunEnd, RunStart, Store, open_store


def frame(run_key: str, seq: int, final: bool) -> bytes:
    """The frame for (run, seq): the test recomputes it to check every byte."""
    return (
        f'{{"type":"agent_thinking","run_key":"{run_key}","seq":{seq},'
        f'"final":{"true" if final else "false"},"pad":"{"x" * (seq % 97)}"}}'
    ).encode()


async def runs(store: Store, writer: HistoryWriter, task: int, rng: random.Random) -> None:
    thread_id = f"t-{uuid.uuid4().hex[:8]}-{task}"
    while True:
        if rng.random() < 0.3:
            thread_id = f"t-{uuid.uuid4().hex[:8]}-{task}"
        run_key = f"rk-{uuid.uuid4().hex}"
        await store.begin_run(
            RunStart(
                run_key=run_key,
                user_id="durable",
                run_id=run_key,
                thread_id=thread_id,
                agent_name="supervisor",
                request="keep me",
            ),
            history_turns=5,
        )
        last = rng.randint(1, 60)
        for seq in range(1, last):
            writer.append(EventRecord(run_key=run_key, seq=seq, frame=frame(run_key, seq, False)))
            if rng.random() < 0.2:
                await trio.lowlevel.checkpoint()
        end = RunEnd(run_key=run_key, status="completed", last_seq=last, result={"answer": "ok"})
        final = EventRecord(run_key=run_key, seq=last, frame=frame(run_key, last, True))
        if await writer.commit_final(end, final):
            print(f"DONE {run_key} {last}", flush=True)


async def main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    async with open_store(f"sqlite:///{path}", node_id=f"child-{seed}") as store:
        writer = HistoryWriter(store)
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            for task in range(8):
                nursery.start_soon(runs, store, writer, task, random.Random(rng.random()))
            print("READY", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
