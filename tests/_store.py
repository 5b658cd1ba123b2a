"""Helpers for the store tests (not a test module): databases per test, records.

PostgreSQL tests use ``CHAT_TEST_POSTGRES_URL`` (default: the local server's
``test`` database). Each test gets its own schema, dropped afterwards. Where
PostgreSQL cannot be reached they skip with the reason, except with ``CI``
set, where they fail: CI must run them.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import orjson
import psycopg
import pytest

from server.store import EventRecord, RunEnd, RunStart

POSTGRES_URL = os.environ.get("CHAT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@functools.cache
def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used here, or None if it can."""
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable ({error}); set CHAT_TEST_POSTGRES_URL"
    return None


def require_postgres() -> None:
    """Skip (or fail, under CI) when PostgreSQL is not there."""
    problem = postgres_problem()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {problem}")
        pytest.skip(problem)


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` (libpq's ``options`` parameter)."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def postgres_schema(base_url: str = POSTGRES_URL) -> Iterator[str]:
    """A fresh schema for one test; yields a URL that uses it; drops it afterwards."""
    require_postgres()
    schema = f"store_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(base_url, schema)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# -- records -----------------------------------------------------------------------


def start(
    user_id: str = "alice",
    thread_id: str | None = None,
    *,
    request: str = "How much would gpt-4o-mini save?",
    run_id: str | None = None,
    at_ms: int = 1_763_719_200_000,
    agent_name: str = "supervisor",
) -> RunStart:
    return RunStart(
        run_key=f"rk-{uuid.uuid4().hex}",
        user_id=user_id,
        run_id=run_id or f"r-{uuid.uuid4().hex[:8]}",
        thread_id=thread_id or f"t-{uuid.uuid4().hex[:8]}",
        agent_name=agent_name,
        request=request,
        started_at_ms=at_ms,
    )


def frame(run_key: str, seq: int, *, final: bool = False) -> bytes:
    """A frame that says which run and seq it is (checked byte for byte)."""
    return orjson.dumps(
        {"type": "agent_thinking", "run": run_key, "seq": seq, "final": final, "data": "é✓"}
    )


def event(run_key: str, seq: int, *, final: bool = False) -> EventRecord:
    return EventRecord(run_key=run_key, seq=seq, frame=frame(run_key, seq, final=final))


def events(run_key: str, first: int, last: int) -> list[EventRecord]:
    return [event(run_key, seq) for seq in range(first, last + 1)]


def end(
    run_key: str,
    last_seq: int,
    *,
    status: str = "completed",
    answer: str | None = "the answer",
    at_ms: int = 1_763_719_201_000,
    memory: dict[str, object] | None = None,
) -> RunEnd:
    result: dict[str, object] = {"answer": answer, "pipeline": ["triage"]}
    if memory is not None:
        result["memory"] = memory
    return RunEnd(
        run_key=run_key,
        status=status,
        last_seq=last_seq,
        error_code=None if status == "completed" else "AGENT_ERROR",
        result=result,
        ended_at_ms=at_ms,
    )
