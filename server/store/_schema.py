"""The schema and its migrations, for SQLite and PostgreSQL.

Versions are applied in order at start-up, each in the same transaction as
the ``schema_version`` row that records it, so a crash leaves either the old
version or the new one. Each backend serialises start-ups (SQLite:
``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock) so two
processes starting at once apply each version once.

Only ever add versions; never edit one that has shipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs


@attrs.frozen
class Migration:
    version: int
    description: str
    #: Statements per dialect ("sqlite", "postgresql").
    statements: dict[str, tuple[str, ...]]


def _both(*statements: str) -> dict[str, tuple[str, ...]]:
    return {"sqlite": statements, "postgresql": statements}


def _v1(dialect: str) -> tuple[str, ...]:
    big = "INTEGER" if dialect == "sqlite" else "BIGINT"
    blob = "BLOB" if dialect == "sqlite" else "BYTEA"
    return (
        f"""CREATE TABLE threads (
            thread_id   TEXT PRIMARY KEY,
            user_id     TEXT NOT NULL,
            title       TEXT NOT NULL,
            created_at  {big} NOT NULL,
            updated_at  {big} NOT NULL,
            run_count   INTEGER NOT NULL DEFAULT 0,
            last_status TEXT
        )""",
        "CREATE INDEX threads_by_user ON threads (user_id, updated_at DESC, thread_id DESC)",
        f"""CREATE TABLE runs (
            run_key     TEXT PRIMARY KEY,
            user_id     TEXT NOT NULL,
            run_id      TEXT NOT NULL,
            thread_id   TEXT NOT NULL,
            turn        INTEGER NOT NULL,
            agent_name  TEXT NOT NULL,
            request     TEXT NOT NULL,
            status      TEXT NOT NULL,
            error_code  TEXT,
            answer      TEXT,
            result      TEXT,
            started_at  {big} NOT NULL,
            ended_at    {big},
            last_seq    INTEGER NOT NULL DEFAULT 0,
            node_id     TEXT NOT NULL
        )""",
        # A thread's runs in order (get_thread's pages, the history turns).
        "CREATE UNIQUE INDEX runs_by_thread ON runs (thread_id, turn)",
        # At most one running run per thread, whichever process starts it.
        "CREATE UNIQUE INDEX runs_one_running ON runs (thread_id) WHERE status = 'running'",
        # The latest run a user named run_id (resume_run, stop_agent).
        "CREATE INDEX runs_by_run_id ON runs (user_id, run_id, started_at)",
        # One row per run and commit: the run's consecutive events first_seq..
        # last_seq, each a 4-byte length and the frame. Under load a commit
        # carries many events of each run, so this is far fewer index entries
        # than a row per event. (A rowid table on SQLite: rows of kilobytes
        # append in rowid order, only the small key index is updated in place.)
        f"""CREATE TABLE events (
            run_key   TEXT NOT NULL,
            first_seq INTEGER NOT NULL,
            last_seq  INTEGER NOT NULL,
            frames    {blob} NOT NULL,
            PRIMARY KEY (run_key, first_seq)
        )""",
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="threads, runs and events",
        statements={"sqlite": _v1("sqlite"), "postgresql": _v1("postgresql")},
    ),
    Migration(
        version=2,
        description="indexes for retention and for the running-runs sweeps",
        statements=_both(
            # expire_threads scans the oldest threads first.
            "CREATE INDEX threads_by_age ON threads (updated_at)",
            # running_runs(node_id): the start-up sweep and the NODE_LOST sweep
            # look only at running runs, a handful among millions of ended ones.
            "CREATE INDEX runs_running_by_node ON runs (node_id, started_at)"
            " WHERE status = 'running'",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

CREATE_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)"
)


def pending_migrations(current: int, target: int) -> Sequence[Migration]:
    """The migrations after ``current`` up to ``target``, in order."""
    return [m for m in MIGRATIONS if current < m.version <= target]
