"""``memory:``: the store in plain dicts, for tests and throwaway servers.

It keeps the SQL backends' rules (ownership, one running run per thread,
compare-and-set ends, keyset pages) so the same contract tests pass on it.
Nothing survives the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import trio

from server.protocol import StoreUnavailableError, ThreadBusyError, ThreadNotFoundError

from ._base import Store
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
from ._sql import dump_result, load_result


@attrs.define
class _Run:
    run_key: str
    run_id: str
    user_id: str
    thread_id: str
    turn: int
    agent_name: str
    request: str
    started_at: int
    node_id: str
    status: str = "running"
    error_code: str | None = None
    answer: str | None = None
    result: str | None = None
    ended_at: int | None = None
    last_seq: int = 0
    events: dict[int, bytes] = attrs.field(factory=dict)

    def info(self) -> RunInfo:
        return RunInfo(
            run_key=self.run_key,
            run_id=self.run_id,
            user_id=self.user_id,
            thread_id=self.thread_id,
            agent_name=self.agent_name,
            request=self.request,
            status=self.status,
            error_code=self.error_code,
            answer=self.answer,
            result=load_result(self.result),
            started_at=iso_from_ms(self.started_at),
            ended_at=None if self.ended_at is None else iso_from_ms(self.ended_at),
            last_seq=self.last_seq,
            node_id=self.node_id,
        )


@attrs.define
class _Thread:
    thread_id: str
    user_id: str
    title: str
    created_at: int
    updated_at: int
    last_status: str | None = None
    runs: list[_Run] = attrs.field(factory=list)

    def info(self) -> ThreadInfo:
        return ThreadInfo(
            thread_id=self.thread_id,
            user_id=self.user_id,
            title=self.title,
            created_at=iso_from_ms(self.created_at),
            updated_at=iso_from_ms(self.updated_at),
            run_count=len(self.runs),
            last_status=self.last_status,
        )

    def running(self) -> bool:
        return any(run.status == "running" for run in self.runs)


class MemoryStore(Store):
    kind = "memory"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._threads: dict[str, _Thread] = {}
        self._runs: dict[str, _Run] = {}
        self._closed = False

    async def _enter(self) -> None:
        if self._closed:
            raise StoreUnavailableError("the store is closed")
        await trio.lowlevel.checkpoint()

    def _owned(self, user_id: str, thread_id: str) -> _Thread | None:
        thread = self._threads.get(thread_id)
        return thread if thread is not None and thread.user_id == user_id else None

    async def _begin_run(self, start: RunStart, history_turns: int) -> RunBegun:
        await self._enter()
        thread = self._threads.get(start.thread_id)
        created = thread is None
        if thread is None:
            thread = _Thread(
                thread_id=start.thread_id,
                user_id=start.user_id,
                title=default_title(start.request),
                created_at=start.started_at_ms,
                updated_at=start.started_at_ms,
            )
        elif thread.user_id != start.user_id:
            raise ThreadNotFoundError("thread not found", details={"thread_id": start.thread_id})
        elif thread.running():
            raise ThreadBusyError(
                "the thread has a run in progress", details={"thread_id": start.thread_id}
            )
        ended = [run for run in thread.runs if run.status != "running"]
        history = ended[len(ended) - max(history_turns, 0) :] if history_turns > 0 else []
        run = _Run(
            run_key=start.run_key,
            run_id=start.run_id,
            user_id=start.user_id,
            thread_id=start.thread_id,
            turn=len(thread.runs) + 1,
            agent_name=start.agent_name,
            request=start.request,
            started_at=start.started_at_ms,
            node_id=self.node_id,
        )
        self._threads[thread.thread_id] = thread
        self._runs[run.run_key] = run
        thread.runs.append(run)
        thread.updated_at = max(thread.updated_at, start.started_at_ms)
        thread.last_status = "running"
        return RunBegun(
            thread=thread.info(),
            created=created,
            history=tuple(r.info().to_turn() for r in history),
        )

    async def _write_batch(
        self, events: Sequence[EventRecord], ends: Sequence[RunEnd]
    ) -> list[bool]:
        await self._enter()
        results: list[bool] = []
        writable: set[str] = set()
        refused: set[str] = set()
        for end in ends:
            run = self._runs.get(end.run_key)
            ok = False
            if run is not None and run.status == "running":
                run.status = end.status
                run.error_code = end.error_code
                run.answer = end.answer
                run.result = dump_result(end.result)
                run.ended_at = end.ended_at_ms
                run.last_seq = end.last_seq
                thread = self._threads[run.thread_id]
                thread.last_status = end.status
                thread.updated_at = max(thread.updated_at, end.ended_at_ms)
                ok = True
            elif run is not None:
                ok = (run.status, run.ended_at, run.last_seq) == (
                    end.status,
                    end.ended_at_ms,
                    end.last_seq,
                )
            results.append(ok)
            (writable if ok else refused).add(end.run_key)
        ended = {end.run_key for end in ends}
        for event in events:
            run = self._runs.get(event.run_key)
            if run is None or event.run_key in refused:
                continue
            if event.run_key not in writable and run.status != "running":
                continue
            run.events.setdefault(event.seq, event.frame)
            if event.run_key not in ended:
                run.last_seq = max(run.last_seq, event.seq)
        return results

    async def _get_run(self, user_id: str, run_id: str) -> RunInfo | None:
        await self._enter()
        mine = [r for r in self._runs.values() if r.user_id == user_id and r.run_id == run_id]
        best = max(mine, key=lambda r: (r.started_at, r.run_key), default=None)
        return None if best is None else best.info()

    async def _read_events(self, run_key: str, after_seq: int, limit: int) -> list[StoredEvent]:
        await self._enter()
        run = self._runs.get(run_key)
        if run is None:
            return []
        seqs = sorted(seq for seq in run.events if seq > after_seq)[: max(limit, 0)]
        return [StoredEvent(seq=seq, frame=run.events[seq]) for seq in seqs]

    async def _running_runs(self, node_id: str | None) -> list[RunInfo]:
        await self._enter()
        runs = [
            run
            for run in self._runs.values()
            if run.status == "running" and (node_id is None or run.node_id == node_id)
        ]
        runs.sort(key=lambda run: (run.started_at, run.run_key))
        return [run.info() for run in runs]

    async def _list_threads(self, user_id: str, limit: int, cursor: str | None) -> Page[ThreadInfo]:
        await self._enter()
        limit = max(limit, 1)
        threads = sorted(
            (t for t in self._threads.values() if t.user_id == user_id),
            key=lambda t: (t.updated_at, t.thread_id),
            reverse=True,
        )
        if cursor is not None:
            after = decode_threads_cursor(cursor, user_id)
            threads = [t for t in threads if (t.updated_at, t.thread_id) < after]
        page = threads[:limit]
        next_cursor = None
        if len(threads) > limit:
            next_cursor = threads_cursor(user_id, page[-1].updated_at, page[-1].thread_id)
        return Page(items=tuple(t.info() for t in page), next_cursor=next_cursor)

    async def _get_thread(
        self, user_id: str, thread_id: str, limit: int, cursor: str | None
    ) -> tuple[ThreadInfo, Page[RunInfo]] | None:
        await self._enter()
        thread = self._owned(user_id, thread_id)
        if thread is None:
            return None
        limit = max(limit, 1)
        runs = list(reversed(thread.runs))
        if cursor is not None:
            before = decode_runs_cursor(cursor, thread_id)
            runs = [run for run in runs if run.turn < before]
        page = runs[:limit]
        next_cursor = runs_cursor(thread_id, page[-1].turn) if len(runs) > limit else None
        return thread.info(), Page(items=tuple(r.info() for r in page), next_cursor=next_cursor)

    async def _rename_thread(self, user_id: str, thread_id: str, title: str) -> ThreadInfo | None:
        await self._enter()
        thread = self._owned(user_id, thread_id)
        if thread is None:
            return None
        thread.title = title
        return thread.info()

    async def _delete_thread(self, user_id: str, thread_id: str) -> DeleteResult:
        await self._enter()
        thread = self._owned(user_id, thread_id)
        if thread is None:
            return DeleteResult.NOT_FOUND
        if thread.running():
            return DeleteResult.BUSY
        self._drop(thread)
        return DeleteResult.DELETED

    def _drop(self, thread: _Thread) -> None:
        for run in thread.runs:
            del self._runs[run.run_key]
        del self._threads[thread.thread_id]

    async def _expire_threads(self, updated_before_ms: int, batch_size: int) -> int:
        await self._enter()
        old = sorted(
            (t for t in self._threads.values() if t.updated_at < updated_before_ms),
            key=lambda t: t.updated_at,
        )
        expired = [t for t in old if not t.running()][: max(batch_size, 0)]
        for thread in expired:
            self._drop(thread)
        return len(expired)

    async def _ping(self) -> None:
        await self._enter()

    async def open(self, *, target_version: int) -> None:
        """Nothing to connect to, nothing to migrate."""
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self._closed = True
