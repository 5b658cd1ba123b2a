"""When a dead worker is replaced, when the parent gives up, which settings it refuses (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server._cli import settings_from_args
from server._settings import Settings
from server.protocol import ConfigurationError
from server.workers import RestartPolicy, check_worker_settings, unshared_store


def test_the_backoff_doubles_with_each_quick_death_up_to_its_cap() -> None:
    policy = RestartPolicy(max_deaths=100, window=30, first_delay=0.25, max_delay=4)
    delays = [
        policy.record_death(0, now=60.0 * i, uptime=1.0).delay for i in range(7)
    ]  # far apart: the window never fills
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_run_longer_than_stable_after_starts_the_backoff_again() -> None:
    policy = RestartPolicy(max_deaths=100, first_delay=0.25, stable_after=30)
    assert policy.record_death(0, now=100, uptime=1).delay == 0.25
    assert policy.record_death(0, now=200, uptime=1).delay == 0.5
    assert policy.record_death(0, now=300, uptime=31).delay == 0.25


def test_each_slot_has_its_own_backoff() -> None:
    policy = RestartPolicy(max_deaths=100, first_delay=1)
    assert policy.record_death(0, now=100, uptime=0).delay == 1
    assert policy.record_death(0, now=200, uptime=0).delay == 2
    assert policy.record_death(1, now=300, uptime=0).delay == 1


def test_five_deaths_within_thirty_seconds_give_up() -> None:
    policy = RestartPolicy()  # 5 within 30 s
    decisions = [policy.record_death(i % 2, now=7.0 * i, uptime=1) for i in range(5)]
    assert [d.give_up for d in decisions] == [False] * 4 + [True]
    assert decisions[-1].deaths_in_window == 5


def test_deaths_spread_wider_than_the_window_never_give_up() -> None:
    policy = RestartPolicy()
    assert not any(
        policy.record_death(0, now=8.0 * i, uptime=1).give_up for i in range(50)
    )  # at most 4 within any 30 s


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.floats(0, 20), st.floats(0, 60)), min_size=1, max_size=40
    )
)
def test_the_policy_gives_up_exactly_when_the_window_holds_max_deaths(
    events: list[tuple[int, float, float]],
) -> None:
    policy = RestartPolicy()
    times: list[float] = []
    now = 0.0
    for index, gap, uptime in events:
        now += gap
        times.append(now)
        decision = policy.record_death(index, now=now, uptime=uptime)
        in_window = sum(1 for t in times if t > now - policy.window)
        assert decision.deaths_in_window == in_window
        assert decision.give_up == (in_window >= policy.max_deaths)
        if decision.delay is not None:
            assert policy.first_delay <= decision.delay <= policy.max_delay


# -- settings refused with --workers > 1 ---------------------------------------------------

REDIS = "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    "store",
    [
        "sqlite:///./data/chat.db",
        "sqlite:////var/lib/chat/chat.db",
        "postgresql://postgres@127.0.0.1:5432/test",
        "postgres://db.example.com/chat",
    ],
)
def test_several_workers_run_with_a_broker_and_a_shared_store(store: str) -> None:
    check_worker_settings(Settings(workers=4, broker=REDIS, store=store))


@pytest.mark.parametrize(
    ("store", "why"),
    [
        ("memory:", "memory of each process"),
        ("sqlite:///:memory:", "SQLite database in the memory of each process"),
        ("sqlite://", "SQLite database in the memory of each process"),
        ("sqlite:///chat.db?mode=memory", "SQLite database in the memory of each process"),
        ("bogus://x", "not a store several processes can share"),
    ],
)
def test_a_store_the_workers_cannot_share_is_refused_with_what_to_use(store: str, why: str) -> None:
    assert unshared_store(store) is not None
    with pytest.raises(ConfigurationError) as refused:
        check_worker_settings(Settings(workers=2, broker=REDIS, store=store))
    message = str(refused.value)
    assert why in message
    assert "--store sqlite:///PATH" in message
    assert "--store postgresql://" in message


@pytest.mark.parametrize("broker", [None, ""])
def test_several_workers_without_a_broker_are_refused_with_what_to_do(
    broker: str | None,
) -> None:
    with pytest.raises(ConfigurationError, match=r"--workers 3 needs --broker redis://") as e:
        check_worker_settings(Settings(workers=3, broker=broker, store="sqlite:///x.db"))
    assert "--workers 1" in str(e.value)


def test_one_worker_needs_neither_a_broker_nor_a_shared_store() -> None:
    check_worker_settings(Settings(workers=1, broker=None, store="memory:"))


@pytest.mark.parametrize("store", ["memory:", "sqlite:///:memory:"])
def test_one_process_with_a_broker_and_a_private_store_is_refused(store: str) -> None:
    with pytest.raises(ConfigurationError, match=r"--broker shares runs") as refused:
        check_worker_settings(Settings(workers=1, broker=REDIS, store=store))
    assert "--store postgresql://" in str(refused.value)
    check_worker_settings(Settings(workers=1, broker=REDIS, store="sqlite:///chat.db"))


def test_the_worker_index_comes_only_from_the_environment_and_is_hidden() -> None:
    assert settings_from_args([], {}).worker_index is None
    assert settings_from_args([], {"CHAT_WORKER_INDEX": "3"}).worker_index == 3
    assert settings_from_args(["--workers", "2"], {}).workers == 2
