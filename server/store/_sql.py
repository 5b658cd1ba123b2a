"""The store's operations in SQL, shared by SQLite and PostgreSQL.

Every function here is synchronous and runs inside one transaction that
the backend opened (in a worker thread); it raises ``ThreadNotFoundError`` or
``ThreadBusyError`` for the caller, which then rolls back. Statements use
``?`` placeholders; the PostgreSQL adapter rewrites them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import orjson

from server.protocol import ThreadBusyError, ThreadNotFoundError

from ._cursor import decode_runs_cursor, decode_threads_cursor, runs_cursor, threads_cursor
from ._records import (
    DeleteResult,
    EventRecord,
    Page,
    RunBegun,
    RunEnd,
    RunInfo,
    RunStart,
    StoredEvent,
    ThreadInfo,
    default_title,
    iso_from_ms,
)

Row = tuple[Any, ...]


class Db(Protocol):
    """One connection inside a transaction, as the operations below use it."""

    #: " FOR UPDATE" on PostgreSQL (row locks), "" on SQLite (one writer at a time).
    for_update: str
    #: " FOR SHARE" on PostgreSQL, "" on SQLite.
    for_share: str
    #: " FOR UPDATE SKIP LOCKED" on PostgreSQL, "" on SQLite.
    skip_locked: str
    #: The two-argument maximum: "MAX" (SQLite) or "GREATEST" (PostgreSQL).
    greatest: str

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    def packed_rows(self, columns: str, query: str, params: Sequence[Any] = ()) -> list[Row]:
        """``SELECT columns FROM (query)`` in as few driver steps as the backend allows.

        Only text, numbers and NULL (it may travel as JSON). Row order is not kept.
        """
        ...

    def is_unique_violation(self, error: Exception) -> bool: ...


THREAD_COLUMNS = "thread_id, user_id, title, created_at, updated_at, run_count, last_status"
RUN_COLUMNS = (
    "run_key, run_id, user_id, thread_id, agent_name, request, status, error_code,"
    " answer, result, started_at, ended_at, last_seq, node_id"
)


def placeholders(count: int) -> str:
    return "(" + ", ".join("?" * count) + ")"


def dump_result(result: Mapping[str, Any] | None) -> str | None:
    return None if result is None else orjson.dumps(result).decode()


def load_result(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = orjson.loads(text)
    return value if isinstance(value, dict) else {"value": value}


def thread_info(row: Row) -> ThreadInfo:
    return ThreadInfo(
        thread_id=row[0],
        user_id=row[1],
        title=row[2],
        created_at=iso_from_ms(row[3]),
        updated_at=iso_from_ms(row[4]),
        run_count=row[5],
        last_status=row[6],
    )


def run_info(row: Row) -> RunInfo:
    return RunInfo(
        run_key=row[0],
        run_id=row[1],
        user_id=row[2],
        thread_id=row[3],
        agent_name=row[4],
        request=row[5],
        status=row[6],
        error_code=row[7],
        answer=row[8],
        result=load_result(row[9]),
        started_at=iso_from_ms(row[10]),
        ended_at=None if row[11] is None else iso_from_ms(row[11]),
        last_seq=row[12],
        node_id=row[13],
    )


# -- runs -------------------------------------------------------------------------


#: The thread, and whether it has a running run, in one statement. (On
#: PostgreSQL the EXISTS may miss a run committed while we waited for the row
#: lock; the partial unique index then refuses our insert: THREAD_BUSY all the same.)
_THREAD_FOR_RUN = (
    "SELECT user_id, run_count, title, created_at, updated_at, EXISTS"
    " (SELECT 1 FROM runs WHERE runs.thread_id = threads.thread_id AND status = 'running')"
    " FROM threads WHERE thread_id = ?"
)


def begin_run(db: Db, start: RunStart, history_turns: int, node_id: str) -> RunBegun:
    at = start.started_at_ms
    row = db.one(_THREAD_FOR_RUN + db.for_update, (start.thread_id,))
    created = False
    if row is None:
        # A new thread, with this run counted and running from the start.
        title = default_title(start.request)
        created = (
            db.run(
                "INSERT INTO threads (thread_id, user_id, title, created_at, updated_at,"
                " run_count, last_status) VALUES (?, ?, ?, ?, ?, 1, 'running')"
                " ON CONFLICT (thread_id) DO NOTHING",
                (start.thread_id, start.user_id, title, at, at),
            )
            == 1
        )
        if created:
            row = (start.user_id, 0, title, at, at, False)
        else:  # created by a concurrent transaction (PostgreSQL): now locked for us
            row = db.one(_THREAD_FOR_RUN + db.for_update, (start.thread_id,))
            assert row is not None
    user_id, run_count, title, created_at, updated_at, busy = row
    if user_id != start.user_id:
        raise ThreadNotFoundError("thread not found", details={"thread_id": start.thread_id})
    if busy:
        raise ThreadBusyError(
            "the thread has a run in progress", details={"thread_id": start.thread_id}
        )
    turn = run_count + 1
    try:
        db.run(
            f"INSERT INTO runs ({RUN_COLUMNS}, turn) VALUES"
            " (?, ?, ?, ?, ?, ?, 'running', NULL, NULL, NULL, ?, NULL, 0, ?, ?)",
            (
                start.run_key,
                start.run_id,
                start.user_id,
                start.thread_id,
                start.agent_name,
                start.request,
                at,
                node_id,
                turn,
            ),
        )
    except Exception as error:
        if db.is_unique_violation(error):
            # Another process started a run on the thread between our check and
            # our insert: the partial unique index is the last word.
            raise ThreadBusyError(
                "the thread has a run in progress", details={"thread_id": start.thread_id}
            ) from None
        raise
    history: list[Row] = []
    if not created:
        updated_at = max(updated_at, at)
        db.run(
            "UPDATE threads SET run_count = ?, last_status = 'running', updated_at = ?"
            " WHERE thread_id = ?",
            (turn, updated_at, start.thread_id),
        )
        if history_turns > 0:
            packed = db.packed_rows(
                f"{RUN_COLUMNS}, turn",
                f"SELECT {RUN_COLUMNS}, turn FROM runs WHERE thread_id = ? AND turn < ?"
                " AND status <> 'running' ORDER BY turn DESC LIMIT ?",
                (start.thread_id, turn, history_turns),
            )
            history = sorted(packed, key=lambda r: -r[-1])
    thread = ThreadInfo(
        thread_id=start.thread_id,
        user_id=user_id,
        title=title,
        created_at=iso_from_ms(created_at),
        updated_at=iso_from_ms(updated_at),
        run_count=turn,
        last_status="running",
    )
    return RunBegun(
        thread=thread,
        created=created,
        history=tuple(run_info(r).to_turn() for r in reversed(history)),
    )


def _has_running_run(db: Db, thread_id: str) -> bool:
    return (
        db.one("SELECT 1 FROM runs WHERE thread_id = ? AND status = 'running'", (thread_id,))
        is not None
    )


def write_batch(db: Db, events: Sequence[EventRecord], ends: Sequence[RunEnd]) -> list[bool]:
    """Ends runs (compare-and-set on ``running``) and appends events, in one transaction.

    Events are written only for runs that are running, or that one of
    ``ends`` has just ended: nothing lands after a run's final event, even
    if another process ended the run (a sweep) meanwhile. Events at or below
    a run's ``last_seq`` (already committed) are skipped, so writing the same
    batch twice is harmless (a retry after a lost acknowledgement). A run's
    events must come in order: what is committed of a run is ``1..last_seq``.
    """
    keys = sorted({e.run_key for e in events} | {end.run_key for end in ends})
    states = _run_states(db, keys)
    results: list[bool] = []
    #: Runs whose events may be written, and the seq their committed events end at.
    open_runs = {key: last for key, (status, last, _) in states.items() if status == "running"}
    for end in ends:
        state = states.get(end.run_key)
        if state is None:
            results.append(False)
        elif state[0] == "running":
            _finish(db, end)
            results.append(True)
            states[end.run_key] = (end.status, end.last_seq, end.ended_at_ms)
        else:
            # Already ended. By this very end (a retry whose first commit's
            # acknowledgement was lost)? Then it is ours; otherwise someone else's.
            results.append(state == (end.status, end.last_seq, end.ended_at_ms))
            open_runs.pop(end.run_key, None)
    chunks: list[tuple[str, list[EventRecord]]] = []
    by_run: dict[str, list[EventRecord]] = {}
    for record in events:
        if record.run_key in open_runs:
            by_run.setdefault(record.run_key, []).append(record)
    advanced: list[tuple[str, int]] = []
    ended = {end.run_key for end in ends}
    for key, records in by_run.items():
        committed = open_runs[key]
        seen: set[int] = set()
        fresh = []
        for record in sorted(records, key=lambda r: r.seq):
            if record.seq > committed and record.seq not in seen:
                seen.add(record.seq)
                fresh.append(record)
        if fresh:
            chunks.extend((key, chunk) for chunk in _consecutive(fresh))
            if key not in ended:
                advanced.append((key, fresh[-1].seq))
    if chunks:
        _insert_chunks(db, chunks)
        _advance_last_seq(db, advanced)
    return results


def _run_states(db: Db, keys: Sequence[str]) -> dict[str, tuple[str, int, int | None]]:
    """{run_key: (status, last_seq, ended_at)}; on PostgreSQL the rows stay locked until commit."""
    states: dict[str, tuple[str, int, int | None]] = {}
    for first in range(0, len(keys), 500):
        chunk = keys[first : first + 500]
        query = (
            "SELECT run_key, status, last_seq, ended_at FROM runs"
            f" WHERE run_key IN {placeholders(len(chunk))}"
        )
        if db.for_update:  # in key order, so two batches cannot deadlock
            rows = db.rows(f"{query} ORDER BY run_key{db.for_update}", chunk)
        else:
            rows = db.packed_rows("run_key, status, last_seq, ended_at", query, chunk)
        for key, status, last_seq, ended_at in rows:
            states[key] = (status, last_seq, ended_at)
    return states


def _consecutive(records: list[EventRecord]) -> list[list[EventRecord]]:
    """Split seq-sorted records where a seq is missing (a chunk holds first..last)."""
    chunks = [[records[0]]]
    for record in records[1:]:
        if record.seq == chunks[-1][-1].seq + 1:
            chunks[-1].append(record)
        else:
            chunks.append([record])
    return chunks


def pack_frames(frames: Sequence[bytes]) -> bytes:
    """Frames in one value: each a 4-byte big-endian length, then its bytes."""
    return b"".join(len(frame).to_bytes(4, "big") + frame for frame in frames)


def unpack_frames(packed: bytes) -> list[bytes]:
    frames = []
    at = 0
    while at < len(packed):
        size = int.from_bytes(packed[at : at + 4], "big")
        frames.append(packed[at + 4 : at + 4 + size])
        at += 4 + size
    return frames


def _advance_last_seq(db: Db, last: Sequence[tuple[str, int]]) -> None:
    """Running runs' ``last_seq`` moves to the end of their committed events (one statement)."""
    for first in range(0, len(last), INSERT_CHUNK):
        chunk = last[first : first + INSERT_CHUNK]
        cases = " ".join(["WHEN ? THEN ?"] * len(chunk))
        params: list[Any] = []
        for key, seq in chunk:
            params += (key, seq)
        params += [key for key, _ in chunk]
        db.run(
            f"UPDATE runs SET last_seq = {db.greatest}(last_seq, CASE run_key {cases} END)"
            f" WHERE status = 'running' AND run_key IN {placeholders(len(chunk))}",
            params,
        )


#: Rows per INSERT statement: one statement per chunk of rows, not one per row
#: (in a worker thread, every statement is a release and re-acquisition of the
#: GIL, which a busy event loop can delay by up to the switch interval).
INSERT_CHUNK = 200


def _insert_chunks(db: Db, chunks: Sequence[tuple[str, list[EventRecord]]]) -> None:
    """One row per run and batch: its consecutive events packed (far fewer index entries)."""
    for first in range(0, len(chunks), INSERT_CHUNK):
        part = chunks[first : first + INSERT_CHUNK]
        params: list[Any] = []
        for key, records in part:
            params += (
                key,
                records[0].seq,
                records[-1].seq,
                pack_frames([r.frame for r in records]),
            )
        db.run(
            "INSERT INTO events (run_key, first_seq, last_seq, frames) VALUES "
            + ", ".join(["(?, ?, ?, ?)"] * len(part))
            + " ON CONFLICT (run_key, first_seq) DO NOTHING",
            params,
        )


def _finish(db: Db, end: RunEnd) -> None:
    """Record the end of a run known to be running (its row is ours: locked, or one writer)."""
    db.run(
        "UPDATE runs SET status = ?, error_code = ?, answer = ?, result = ?, ended_at = ?,"
        " last_seq = ? WHERE run_key = ? AND status = 'running'",
        (
            end.status,
            end.error_code,
            end.answer,
            dump_result(end.result),
            end.ended_at_ms,
            end.last_seq,
            end.run_key,
        ),
    )
    db.run(
        f"UPDATE threads SET last_status = ?, updated_at = {db.greatest}(updated_at, ?)"
        " WHERE thread_id = (SELECT thread_id FROM runs WHERE run_key = ?)",
        (end.status, end.ended_at_ms, end.run_key),
    )


def get_run(db: Db, user_id: str, run_id: str) -> RunInfo | None:
    row = db.one(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE user_id = ? AND run_id = ?"
        " ORDER BY started_at DESC, run_key DESC LIMIT 1",
        (user_id, run_id),
    )
    return None if row is None else run_info(row)


def read_events(db: Db, run_key: str, after_seq: int, limit: int) -> list[StoredEvent]:
    if limit <= 0:
        return []
    out: list[StoredEvent] = []
    # Each row holds at least one event: ``limit`` rows are always enough.
    for first_seq, _, packed in db.rows(
        "SELECT first_seq, last_seq, frames FROM events WHERE run_key = ? AND last_seq > ?"
        " ORDER BY first_seq LIMIT ?",
        (run_key, after_seq, limit),
    ):
        for seq, frame in enumerate(unpack_frames(bytes(packed)), start=first_seq):
            if seq > after_seq:
                out.append(StoredEvent(seq=seq, frame=frame))
                if len(out) == limit:
                    return out
    return out


def running_runs(db: Db, node_id: str | None) -> list[RunInfo]:
    if node_id is None:
        rows = db.rows(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' ORDER BY started_at, run_key"
        )
    else:
        rows = db.rows(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' AND node_id = ?"
            " ORDER BY started_at, run_key",
            (node_id,),
        )
    return [run_info(r) for r in rows]


# -- threads ----------------------------------------------------------------------


def list_threads(db: Db, user_id: str, limit: int, cursor: str | None) -> Page[ThreadInfo]:
    limit = max(limit, 1)
    if cursor is None:
        rows = db.rows(
            f"SELECT {THREAD_COLUMNS} FROM threads WHERE user_id = ?"
            " ORDER BY updated_at DESC, thread_id DESC LIMIT ?",
            (user_id, limit + 1),
        )
    else:
        updated_at, thread_id = decode_threads_cursor(cursor, user_id)
        rows = db.rows(
            f"SELECT {THREAD_COLUMNS} FROM threads WHERE user_id = ?"
            " AND (updated_at < ? OR (updated_at = ? AND thread_id < ?))"
            " ORDER BY updated_at DESC, thread_id DESC LIMIT ?",
            (user_id, updated_at, updated_at, thread_id, limit + 1),
        )
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = threads_cursor(user_id, last[4], last[0])
    return Page(items=tuple(thread_info(r) for r in page), next_cursor=next_cursor)


def _owned_thread(db: Db, user_id: str, thread_id: str, *, lock: bool = False) -> Row | None:
    row = db.one(
        f"SELECT {THREAD_COLUMNS} FROM threads WHERE thread_id = ?{db.for_update if lock else ''}",
        (thread_id,),
    )
    return row if row is not None and row[1] == user_id else None


def get_thread(
    db: Db, user_id: str, thread_id: str, limit: int, cursor: str | None
) -> tuple[ThreadInfo, Page[RunInfo]] | None:
    row = _owned_thread(db, user_id, thread_id)
    if row is None:
        return None
    limit = max(limit, 1)
    if cursor is None:
        runs = db.rows(
            f"SELECT {RUN_COLUMNS}, turn FROM runs WHERE thread_id = ? ORDER BY turn DESC LIMIT ?",
            (thread_id, limit + 1),
        )
    else:
        before = decode_runs_cursor(cursor, thread_id)
        runs = db.rows(
            f"SELECT {RUN_COLUMNS}, turn FROM runs WHERE thread_id = ? AND turn < ?"
            " ORDER BY turn DESC LIMIT ?",
            (thread_id, before, limit + 1),
        )
    page = runs[:limit]
    next_cursor = runs_cursor(thread_id, page[-1][-1]) if len(runs) > limit else None
    return thread_info(row), Page(items=tuple(run_info(r) for r in page), next_cursor=next_cursor)


def rename_thread(db: Db, user_id: str, thread_id: str, title: str) -> ThreadInfo | None:
    if _owned_thread(db, user_id, thread_id, lock=True) is None:
        return None
    db.run("UPDATE threads SET title = ? WHERE thread_id = ?", (title, thread_id))
    row = db.one(f"SELECT {THREAD_COLUMNS} FROM threads WHERE thread_id = ?", (thread_id,))
    assert row is not None
    return thread_info(row)


def delete_thread(db: Db, user_id: str, thread_id: str) -> DeleteResult:
    if _owned_thread(db, user_id, thread_id, lock=True) is None:
        return DeleteResult.NOT_FOUND
    if _has_running_run(db, thread_id):
        return DeleteResult.BUSY
    _delete_threads(db, [thread_id])
    return DeleteResult.DELETED


def _delete_threads(db: Db, thread_ids: Sequence[str]) -> None:
    marks = placeholders(len(thread_ids))
    db.run(
        "DELETE FROM events WHERE run_key IN"
        f" (SELECT run_key FROM runs WHERE thread_id IN {marks})",
        thread_ids,
    )
    db.run(f"DELETE FROM runs WHERE thread_id IN {marks}", thread_ids)
    db.run(f"DELETE FROM threads WHERE thread_id IN {marks}", thread_ids)


def expire_threads(db: Db, updated_before_ms: int, batch_size: int) -> int:
    """Delete at most ``batch_size`` threads not updated since then, none with a running run."""
    rows = db.rows(
        "SELECT thread_id FROM threads t WHERE updated_at < ? AND NOT EXISTS"
        " (SELECT 1 FROM runs r WHERE r.thread_id = t.thread_id AND r.status = 'running')"
        f" ORDER BY updated_at LIMIT ?{db.skip_locked}",
        (updated_before_ms, max(batch_size, 0)),
    )
    thread_ids = [r[0] for r in rows]
    if thread_ids:
        _delete_threads(db, thread_ids)
    return len(thread_ids)
