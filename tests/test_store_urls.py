"""Store URLs: which backend, which file, which options; bad ones say what to write."""

from __future__ import annotations

import pytest

from agents import ConfigurationError
from server.store import MemoryStore, SqliteStore, make_store
from server.store._open import sqlite_path


@pytest.mark.parametrize(
    ("url", "path", "options"),
    [
        ("sqlite:///./data/chat.db", "./data/chat.db", {}),
        ("sqlite:///data/chat.db", "data/chat.db", {}),
        ("sqlite:////srv/chat/chat.db", "/srv/chat/chat.db", {}),
        ("sqlite:///chat.db?synchronous=normal", "chat.db", {"synchronous": "normal"}),
    ],
)
def test_sqlite_urls(url: str, path: str, options: dict[str, str]) -> None:
    assert sqlite_path(url) == (path, options)


def test_the_scheme_picks_the_backend() -> None:
    assert isinstance(make_store("memory:"), MemoryStore)
    store = make_store("sqlite:///x/chat.db?synchronous=normal", node_id="n1", op_timeout=2)
    assert isinstance(store, SqliteStore)
    assert (store.synchronous, store.node_id, store.timeout) == ("NORMAL", "n1", 2)
    assert make_store("postgresql://u@h/db").kind == "postgresql"
    assert make_store("postgres://u@h/db").kind == "postgresql"


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u@h/db",
        "sqlite://host/chat.db",
        "sqlite:///",
        "sqlite:///chat.db?journal=off",
        "sqlite:///chat.db?synchronous=off",
        "chat.db",
    ],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        make_store(url)
