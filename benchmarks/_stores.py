"""The history store a benchmark's server runs with, from a short spec (``--store``).

    memory:                      nothing written anywhere
    sqlite                       a fresh file in a temporary directory (removed afterwards)
    sqlite:///PATH               that file, as given
    postgresql                   a fresh schema in CHAT_TEST_POSTGRES_URL (or the local
                                 server's ``test`` database), dropped afterwards
    postgresql://...             a fresh schema in that database, dropped afterwards

A benchmark never writes ``./data/`` of the checkout: ``sqlite`` alone is the
embedded default's engine in a temporary directory, and a PostgreSQL run gets
a schema of its own so that its tables start empty and nothing of another
run (or of the tests) is read or left behind.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from urllib.parse import quote

import attrs

DEFAULT_POSTGRES = os.environ.get(
    "CHAT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@attrs.frozen
class BenchStore:
    """What ``--store`` the server gets, and where its bytes are (SQLite)."""

    label: str  # "memory", "sqlite" or "postgresql": row names and report keys
    url: str  # the server's --store
    sqlite_path: Path | None = None
    postgres_url: str | None = None  # the database (not the schema) of a PostgreSQL store
    schema: str | None = None

    def server_args(self) -> list[str]:
        return [f"--store={self.url}"]

    def size_bytes(self) -> dict[str, int] | None:
        """Bytes the store takes on disk now: SQLite's file and its WAL, PostgreSQL's schema."""
        if self.sqlite_path is not None:
            sizes = {}
            for suffix, key in (("", "db"), ("-wal", "wal"), ("-shm", "shm")):
                path = Path(f"{self.sqlite_path}{suffix}")
                sizes[key] = path.stat().st_size if path.exists() else 0
            sizes["total"] = sizes["db"] + sizes["wal"] + sizes["shm"]
            return sizes
        if self.postgres_url is not None and self.schema is not None:
            return {"total": postgres_schema_bytes(self.postgres_url, self.schema)}
        return None


def label_of(spec: str) -> str:
    if spec.startswith("memory"):
        return "memory"
    if spec.startswith("sqlite"):
        return "sqlite"
    if spec.startswith(("postgresql", "postgres")):
        return "postgresql"
    raise ValueError(f"unknown store {spec!r}: memory:, sqlite[:///PATH] or postgresql[://...]")


def check_specs(specs: list[str]) -> None:
    """ValueError for an unknown spec or two of the same kind (they would share a row)."""
    labels = [label_of(spec) for spec in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"one --store of each kind at most, got {specs}")


def postgres_schema_bytes(database_url: str, schema: str) -> int:
    import psycopg

    query = (
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'm')"
    )
    with psycopg.connect(database_url, autocommit=True, connect_timeout=3) as conn:
        row = conn.execute(query, (schema,)).fetchone()
    return int(row[0]) if row else 0


@asynccontextmanager
async def open_bench_store(spec: str) -> AsyncIterator[BenchStore]:
    """The store ``spec`` names, made fresh; removed afterwards (see the module doc)."""
    label = label_of(spec)
    if label == "memory":
        yield BenchStore(label, "memory:")
        return
    if label == "sqlite":
        if spec.startswith("sqlite:///"):
            path = Path(spec.removeprefix("sqlite:///").split("?", 1)[0])
            yield BenchStore(label, spec, sqlite_path=path)
            return
        with tempfile.TemporaryDirectory(prefix="bench-store-") as directory:
            path = Path(directory) / "chat.db"
            yield BenchStore(label, f"sqlite:///{path}", sqlite_path=path)
        return
    import psycopg

    database = DEFAULT_POSTGRES if "://" not in spec else spec
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in database else "?"
    url = f"{database}{separator}options={quote(f'-csearch_path={schema}')}"
    try:
        yield BenchStore(label, url, postgres_url=database, schema=schema)
    finally:
        with suppress(psycopg.Error), psycopg.connect(database, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _socket_inodes(pids: list[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        with suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    return inodes


def postgres_backends(pids: list[int], db_port: int = 5432) -> list[int]:
    """The PostgreSQL backend processes serving the TCP connections of ``pids`` (local server).

    Found by port: the local ports of ``pids``' connections to ``db_port``
    (``/proc/net/tcp``), and the backends whose title names them
    (``postgres: ... 127.0.0.1(PORT) ...``). Reading their CPU needs the
    right to read another user's ``/proc/PID/stat`` (any user may).
    """
    inodes = _socket_inodes(pids)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == db_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    backends = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if title.startswith("postgres:") and any(f"({port})" in title for port in ports):
                backends.append(int(entry.name))
    return backends
