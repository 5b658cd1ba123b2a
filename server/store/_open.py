"""``open_store(url)``: pick the backend from the URL, migrate, close on exit."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from server.protocol import ConfigurationError

from ._base import DEFAULT_TIMEOUT, Store, StoreObserver
from ._memory import MemoryStore
from ._schema import LATEST_VERSION
from ._sqlite import SqliteStore

#: What ``make serve`` uses.
DEFAULT_STORE_URL = "sqlite:///./data/chat.db"


def default_node_id() -> str:
    """This process's name in ``runs.node_id``: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def sqlite_path(url: str) -> tuple[str, dict[str, str]]:
    """The path and options of a SQLite URL.

    ``sqlite:///./data/chat.db`` is ``./data/chat.db``; ``sqlite:////srv/chat.db``
    is ``/srv/chat.db``.
    """
    parts = urlsplit(url)
    if parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2:
        raise ConfigurationError(
            f"bad store URL {url!r}: use sqlite:///relative/path or sqlite:////absolute/path"
        )
    return parts.path[1:], dict(parse_qsl(parts.query))


def make_store(
    url: str,
    *,
    observer: StoreObserver | None = None,
    node_id: str | None = None,
    op_timeout: float = DEFAULT_TIMEOUT,
) -> Store:
    """The (unopened) store a URL names; a ``ConfigurationError`` if it names none."""
    node = node_id or default_node_id()
    scheme = url.partition(":")[0].lower()
    if scheme == "memory":
        return MemoryStore(observer=observer, node_id=node, timeout=op_timeout)
    if scheme == "sqlite":
        path, options = sqlite_path(url)
        unknown = set(options) - {"synchronous"}
        if unknown:
            raise ConfigurationError(f"unknown sqlite store options: {sorted(unknown)}")
        return SqliteStore(
            path,
            synchronous=options.get("synchronous", "FULL"),
            observer=observer,
            node_id=node,
            timeout=op_timeout,
        )
    if scheme in ("postgresql", "postgres"):
        from ._postgres import PostgresStore  # psycopg loads only for PostgreSQL

        conninfo = urlunsplit(("postgresql", *urlsplit(url)[1:]))
        return PostgresStore(conninfo, observer=observer, node_id=node, timeout=op_timeout)
    raise ConfigurationError(
        f"unknown store URL {url!r}: use memory:, sqlite:///PATH or postgresql://..."
    )


@asynccontextmanager
async def open_store(
    url: str,
    *,
    observer: StoreObserver | None = None,
    node_id: str | None = None,
    op_timeout: float = DEFAULT_TIMEOUT,
    target_version: int = LATEST_VERSION,
) -> AsyncIterator[Store]:
    """Open the store ``url`` names, apply its migrations, and close it on exit.

    Raises ``ConfigurationError`` for a URL that names no store, and
    ``StoreUnavailableError`` if the database cannot be reached or migrated.
    ``op_timeout`` bounds every operation (seconds); ``target_version`` stops
    the migrations early (for migration tests).
    """
    store = make_store(url, observer=observer, node_id=node_id, op_timeout=op_timeout)
    try:
        await store.open(target_version=target_version)
        yield store
    finally:
        await store.aclose()
