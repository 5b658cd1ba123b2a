"""Settings that several worker processes cannot run with, refused at start-up (pure).

Each worker is a whole server with its own memory. What a user expects to be
one thing across them must live outside every worker: live events, stop
requests and the per-user limit go through the broker; threads and history
through a store that every worker opens.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from server._settings import Settings
from server.protocol import ConfigurationError

_WHAT_THE_BROKER_CARRIES = (
    "live run events for resume_run and subscribe_thread, stop_agent, and the per-user "
    "connection limit"
)


def check_worker_settings(settings: Settings) -> None:
    """Raise :class:`ConfigurationError`, saying what to do, if ``settings.workers`` > 1 is unsafe.

    Several workers need ``--broker`` and a store they all share: a SQLite
    file (workers on one machine) or PostgreSQL (also across machines). One
    process with ``--broker`` shares runs with other processes, so it needs
    such a store too.
    """
    workers = settings.workers
    if workers <= 1:
        _check_broker_store(settings)
        return
    if not settings.broker:
        raise ConfigurationError(
            f"--workers {workers} needs --broker redis://HOST:PORT: {_WHAT_THE_BROKER_CARRIES} "
            "cross worker processes through it. Add --broker (or CHAT_BROKER), "
            "or run one process (--workers 1)"
        )
    problem = unshared_store(settings.store)
    if problem is not None:
        raise ConfigurationError(
            f"--workers {workers} needs a store that every worker shares, and "
            f"--store {settings.store} {problem}. Use --store sqlite:///PATH (a file, for "
            "workers on one machine) or --store postgresql://... (also across machines)"
        )


def _check_broker_store(settings: Settings) -> None:
    """One process with ``--broker`` shares runs with others: they must see the same store."""
    if not settings.broker:
        return
    problem = unshared_store(settings.store)
    if problem is not None:
        raise ConfigurationError(
            f"--broker shares runs with other server processes, and --store {settings.store} "
            f"{problem}: they would not see each other's threads and runs. Use --store "
            "sqlite:///PATH (processes on one machine) or --store postgresql://... (several "
            "machines), or leave out --broker"
        )


def unshared_store(url: str) -> str | None:
    """Why the store at ``url`` is not one that several processes share, or None if it is."""
    scheme, _, rest = url.partition(":")
    scheme = scheme.lower()
    if scheme == "memory":
        return "keeps threads and history in the memory of each process"
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        return None
    if scheme == "sqlite":
        parts = urlsplit(url)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        in_memory = parse_qs(parts.query).get("mode") == ["memory"]
        if not rest.startswith("///") or not path or path == ":memory:" or in_memory:
            return "is a SQLite database in the memory of each process, not a file"
        return None
    return "is not a store several processes can share"
