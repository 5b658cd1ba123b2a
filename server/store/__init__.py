"""The history store: threads, runs and every event as sent, in SQLite, PostgreSQL or memory.

``async with open_store(url) as store:`` opens the backend the URL names
(``memory:``, ``sqlite:///PATH``, ``postgresql://…``), applies its migrations,
and closes it on exit. A :class:`HistoryWriter` in the server's nursery
commits run events in batches (group commit) behind the hot path.
"""

from typing import TYPE_CHECKING, Any

from server.protocol import StoreUnavailableError as StoreUnavailableError
from server.protocol import ThreadBusyError as ThreadBusyError
from server.protocol import ThreadNotFoundError as ThreadNotFoundError

from ._base import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._base import STORE_OPERATIONS as STORE_OPERATIONS
from ._base import Store as Store
from ._base import StoreObserver as StoreObserver
from ._memory import MemoryStore as MemoryStore
from ._open import DEFAULT_STORE_URL as DEFAULT_STORE_URL
from ._open import default_node_id as default_node_id
from ._open import make_store as make_store
from ._open import open_store as open_store
from ._records import RUN_STATUSES as RUN_STATUSES
from ._records import DeleteResult as DeleteResult
from ._records import EventRecord as EventRecord
from ._records import Page as Page
from ._records import RunBegun as RunBegun
from ._records import RunEnd as RunEnd
from ._records import RunInfo as RunInfo
from ._records import RunStart as RunStart
from ._records import StoredEvent as StoredEvent
from ._records import ThreadInfo as ThreadInfo
from ._records import default_title as default_title
from ._records import iso_from_ms as iso_from_ms
from ._records import now_ms as now_ms
from ._schema import LATEST_VERSION as LATEST_VERSION
from ._sqlite import SqliteStore as SqliteStore
from ._writer import HistoryWriter as HistoryWriter
from ._writer import WriterStatistics as WriterStatistics

if TYPE_CHECKING:
    from ._postgres import PostgresStore as PostgresStore


def __getattr__(name: str) -> Any:
    # psycopg takes ~0.2 s to import: only for servers that use PostgreSQL.
    if name == "PostgresStore":
        from ._postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_STORE_URL",
    "DEFAULT_TIMEOUT",
    "LATEST_VERSION",
    "RUN_STATUSES",
    "STORE_OPERATIONS",
    "DeleteResult",
    "EventRecord",
    "HistoryWriter",
    "MemoryStore",
    "Page",
    "PostgresStore",
    "RunBegun",
    "RunEnd",
    "RunInfo",
    "RunStart",
    "SqliteStore",
    "Store",
    "StoreObserver",
    "StoreUnavailableError",
    "StoredEvent",
    "ThreadBusyError",
    "ThreadInfo",
    "ThreadNotFoundError",
    "WriterStatistics",
    "default_node_id",
    "default_title",
    "iso_from_ms",
    "make_store",
    "now_ms",
    "open_store",
]
