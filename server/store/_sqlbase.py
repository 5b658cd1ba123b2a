"""The part of the SQL backends that is the same for SQLite and PostgreSQL.

A backend supplies ``_write(fn)`` and ``_read(fn)``: run ``fn(db)`` in one
write (or read-only) transaction in a worker thread, and translate driver
errors into ``StoreUnavailableError``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import TypeVar

from . import _sql
from ._base import Store
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
)
from ._sql import Db

T = TypeVar("T")


class SqlStore(Store):
    @abc.abstractmethod
    async def _write(self, name: str, fn: Callable[[Db], T]) -> T: ...

    @abc.abstractmethod
    async def _read(self, name: str, fn: Callable[[Db], T]) -> T: ...

    async def _begin_run(self, start: RunStart, history_turns: int) -> RunBegun:
        return await self._write(
            "begin_run", lambda db: _sql.begin_run(db, start, history_turns, self.node_id)
        )

    async def _write_batch(
        self, events: Sequence[EventRecord], ends: Sequence[RunEnd]
    ) -> list[bool]:
        return await self._write("write_batch", lambda db: _sql.write_batch(db, events, ends))

    async def _get_run(self, user_id: str, run_id: str) -> RunInfo | None:
        return await self._read("get_run", lambda db: _sql.get_run(db, user_id, run_id))

    async def _read_events(self, run_key: str, after_seq: int, limit: int) -> list[StoredEvent]:
        return await self._read(
            "read_events", lambda db: _sql.read_events(db, run_key, after_seq, limit)
        )

    async def _running_runs(self, node_id: str | None) -> list[RunInfo]:
        return await self._read("running_runs", lambda db: _sql.running_runs(db, node_id))

    async def _list_threads(self, user_id: str, limit: int, cursor: str | None) -> Page[ThreadInfo]:
        return await self._read(
            "list_threads", lambda db: _sql.list_threads(db, user_id, limit, cursor)
        )

    async def _get_thread(
        self, user_id: str, thread_id: str, limit: int, cursor: str | None
    ) -> tuple[ThreadInfo, Page[RunInfo]] | None:
        return await self._read(
            "get_thread", lambda db: _sql.get_thread(db, user_id, thread_id, limit, cursor)
        )

    async def _rename_thread(self, user_id: str, thread_id: str, title: str) -> ThreadInfo | None:
        return await self._write(
            "rename_thread", lambda db: _sql.rename_thread(db, user_id, thread_id, title)
        )

    async def _delete_thread(self, user_id: str, thread_id: str) -> DeleteResult:
        return await self._write(
            "delete_thread", lambda db: _sql.delete_thread(db, user_id, thread_id)
        )

    async def _expire_threads(self, updated_before_ms: int, batch_size: int) -> int:
        return await self._write(
            "expire_threads",
            lambda db: _sql.expire_threads(db, updated_before_ms, batch_size),
        )

    async def _ping(self) -> None:
        await self._read("ping", lambda db: db.one("SELECT 1"))

    async def _check_writes(self) -> None:
        # A real write (the row is rewritten as it is): a read-only file or a
        # database refusing writes fails it, as it fails the server's writes.
        await self._write(
            "check_writes",
            lambda db: db.run(
                "UPDATE schema_version SET applied_at = applied_at"
                " WHERE version = (SELECT MAX(version) FROM schema_version)"
            ),
        )
