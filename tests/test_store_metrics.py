"""The store's observer feeds chat_store_operations_total and chat_store_latency_seconds."""

from __future__ import annotations

import pytest
from _store import start

from server import Metrics
from server.store import STORE_OPERATIONS, StoreUnavailableError, ThreadBusyError, open_store


async def test_store_operations_are_counted_and_timed_by_result() -> None:
    metrics = Metrics()
    async with open_store("memory:", observer=metrics.store_operation) as store:
        await store.begin_run(start("alice", "t-1"), history_turns=0)
        with pytest.raises(ThreadBusyError):
            await store.begin_run(start("alice", "t-1"), history_turns=0)
        await store.list_threads("alice")
    with pytest.raises(StoreUnavailableError):
        await store.ping()  # closed: a failure
    stats = metrics.statistics()
    assert stats.store_operations_total[("begin_run", "ok")] == 2
    assert stats.store_operations_total[("list_threads", "ok")] == 1
    assert stats.store_operations_total[("ping", "error")] == 1
    assert stats.store_latency["begin_run"].count == 2
    text = metrics.render()
    assert 'chat_store_operations_total{op="begin_run",result="ok"} 2' in text
    assert 'chat_store_operations_total{op="ping",result="error"} 1' in text
    assert 'chat_store_latency_seconds_count{op="begin_run"} 2' in text
    assert 'chat_store_latency_seconds_bucket{op="ping",le="+Inf"} 1' in text
    # Every operation is pre-set to 0, so dashboards see the series from the start.
    for op in STORE_OPERATIONS:
        assert f'chat_store_operations_total{{op="{op}",result="error"}}' in text
