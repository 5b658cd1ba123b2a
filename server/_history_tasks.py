"""Background work on the history store: ending lost runs, and retention.

Both run in the server's nursery. A run recorded as running whose process is
gone (this server's previous life, after a crash or a SIGKILL) is ended the
way the contract says: its open tool calls and agents close, and its final
event is ``agent_error`` failed / ``NODE_LOST``, committed with a
compare-and-set, so a run is never ended twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs
import trio
import trio.lowlevel

from server.protocol import StoreUnavailableError
from server.store import EventRecord, RunInfo, Store, now_ms

from .runs import History, lost_run_ending

log = logging.getLogger("trio_agent_server.history")

#: Threads deleted per query by the retention task, and seconds between its passes.
RETENTION_BATCH = 500
RETENTION_INTERVAL = 3600.0


#: ``await recover(run)``: events of ``run`` after its last committed one that
#: were delivered all the same (seq ``run.last_seq + 1`` on, in order).
Recover = Callable[[RunInfo], Awaitable[list[bytes]]]


async def end_lost_runs(
    history: History, *, node_id: str | None, recover: Recover | None = None
) -> list[tuple[RunInfo, list[EventRecord]]]:
    """End every run still recorded as running (of ``node_id``, or of any process).

    Returns the runs this call ended, each with the events it wrote (for the
    broker to pass on to their followers). ``recover`` gives the events the
    dead process delivered but had not committed (the broker's stream has
    them): they are recorded first and the closing events come after them,
    so no follower ever saw a seq that history gives to another event. A
    store that cannot be reached is logged and left for the next sweep.
    """
    store = history.store
    ended: list[tuple[RunInfo, list[EventRecord]]] = []
    try:
        for run in await store.running_runs(node_id):
            committed = await _committed_frames(store, run.run_key, run.last_seq)
            delivered = await recover(run) if recover is not None else []
            tail = [
                EventRecord(run.run_key, run.last_seq + i, frame)
                for i, frame in enumerate(delivered, start=1)
            ]
            end, records = lost_run_ending(
                attrs.evolve(run, last_seq=run.last_seq + len(tail)), committed + delivered
            )
            if await store.finish_run(end, tail + records):
                ended.append((run, tail + records))
    except StoreUnavailableError as exc:
        log.error("could not end the runs left running: %s", exc)
    if ended:
        log.warning(
            "ended %d run(s) left running by a process that stopped (NODE_LOST)", len(ended)
        )
    return ended


async def _committed_frames(store: Store, run_key: str, last_seq: int) -> list[bytes]:
    frames: list[bytes] = []
    after = 0
    while after < last_seq:
        events = await store.read_events(run_key, after, 512)
        if not events:
            break
        frames.extend(event.frame for event in events)
        after = events[-1].seq
    return frames


async def expire_history(store: Store, days: float) -> None:
    """Delete threads not updated for ``days`` days, in bounded batches, every hour."""
    while True:
        cutoff = now_ms() - int(days * 86_400_000)
        deleted = 0
        try:
            while (batch := await store.expire_threads(cutoff, RETENTION_BATCH)) > 0:
                deleted += batch
                await trio.lowlevel.checkpoint()  # let the server breathe between batches
        except StoreUnavailableError as exc:
            log.warning("retention pass stopped: %s", exc)
        if deleted:
            log.info("retention: deleted %d thread(s) older than %g days", deleted, days)
        await trio.sleep(RETENTION_INTERVAL)
