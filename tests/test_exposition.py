"""Parsing, summing and rendering the workers' Prometheus text (server/workers/_exposition.py)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server._metrics import Metrics
from server.workers import (
    MetricFamily,
    Sample,
    aggregate_expositions,
    parse_exposition,
    render_exposition,
    sum_cumulative,
)


def busy_metrics(scale: int) -> Metrics:
    """A worker's metrics after some activity, different for each ``scale``."""
    metrics = Metrics()
    metrics.connections_active = 2 * scale
    metrics.handlers_active = 8 * scale
    metrics.runs_active = scale
    metrics.connections_total = 10 * scale
    metrics.events_sent_total = 430 * scale
    metrics.runs_total["completed"] = 9 * scale
    metrics.protocol_errors_total["FORMAT_ERROR"] = scale
    metrics.connection_closed(1000)
    metrics.connection_closed(4321)  # counted as "other"
    for _ in range(scale):
        metrics.time_to_first_event.observe(0.0004 * scale)
        metrics.run_finished("completed", 0.02 * scale)
        metrics.agent_closed(f'agent "{scale}"\\n', 0.003)  # a name that needs escapes
    metrics.event_loop_lag.observe(0.001)
    return metrics


def by_key(families: list[MetricFamily]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, s.labels): s.value for f in families for s in f.samples}


def test_a_workers_own_metrics_parse_with_their_types_and_escaped_labels() -> None:
    families = {f.name: f for f in parse_exposition(busy_metrics(1).render())}
    assert families["chat_connections_active"].kind == "gauge"
    assert families["chat_events_sent_total"].kind == "counter"
    steps = families["chat_agent_step_duration_seconds"]
    assert steps.kind == "histogram"
    names = {s.name for s in steps.samples}
    assert names == {
        "chat_agent_step_duration_seconds_bucket",
        "chat_agent_step_duration_seconds_sum",
        "chat_agent_step_duration_seconds_count",
    }
    assert {dict(s.labels)["agent"] for s in steps.samples} == {'agent "1"\\n'}
    assert families["chat_events_sent_total"].help == "Run events written to clients."


def test_rendering_what_was_parsed_gives_the_same_families() -> None:
    families = parse_exposition(busy_metrics(3).render())
    assert parse_exposition(render_exposition(families)) == families


def test_two_workers_sum_counters_and_histograms_and_keep_each_gauge_per_worker() -> None:
    texts = {0: busy_metrics(1).render(), 1: busy_metrics(2).render()}
    workers = {i: parse_exposition(text) for i, text in texts.items()}
    total = {f.name: f for f in aggregate_expositions(workers)}
    mine = by_key(list(total.values()))
    each = [by_key(families) for families in workers.values()]
    for family in total.values():
        for sample in family.samples:
            labels = dict(sample.labels)
            if "worker" in labels:
                own = tuple(kv for kv in sample.labels if kv[0] != "worker")
                assert family.kind == "gauge"
                assert sample.value == each[int(labels["worker"])][(sample.name, own)]
            else:
                expected = sum(values.get((sample.name, sample.labels), 0.0) for values in each)
                assert sample.value == pytest.approx(expected)
    assert mine[("chat_connections_active", ())] == 6
    assert mine[("chat_connections_active", (("worker", "1"),))] == 4
    assert mine[("chat_events_sent_total", ())] == 1290
    assert mine[("chat_connections_closed_total", (("code", "other"),))] == 2
    inf = ("chat_run_duration_seconds_bucket", (("status", "completed"), ("le", "+Inf")))
    assert mine[inf] == 3
    # A series only one worker has (each ran its own agent names) is still there.
    assert ("chat_agent_step_duration_seconds_count", (("agent", 'agent "2"\\n'),)) in mine
    # Counters get no per-worker series.
    assert not [s for s in total["chat_events_sent_total"].samples if s.labels]


def test_what_exited_workers_left_behind_adds_to_counters_but_not_to_gauges() -> None:
    gone = parse_exposition(busy_metrics(5).render())
    retired = sum_cumulative(gone)
    assert {f.kind for f in retired} <= {"counter", "histogram", "summary"}
    live = {1: parse_exposition(busy_metrics(1).render())}
    total = by_key(aggregate_expositions(live, retired))
    assert total[("chat_events_sent_total", ())] == 430 * 6
    assert total[("chat_connections_active", ())] == 2  # the live worker's alone
    assert ("chat_connections_active", (("worker", "1"),)) in total
    # Retired totals of several exits add up as well.
    twice = by_key(sum_cumulative(retired, gone))
    assert twice[("chat_events_sent_total", ())] == 430 * 10


def test_a_summarys_quantiles_are_left_out_and_its_sum_and_count_summed() -> None:
    text = (
        "# TYPE rpc summary\n"
        'rpc{quantile="0.5"} 3\n'
        "rpc_sum 10\n"
        "rpc_count 4\n"
        "# TYPE up untyped\n"
        "up 1\n"
    )
    families = parse_exposition(text)
    total = by_key(aggregate_expositions({0: families, 1: families}))
    assert total == {
        ("rpc_sum", ()): 20,
        ("rpc_count", ()): 8,
        ("up", ()): 2,
        ("up", (("worker", "0"),)): 1,
        ("up", (("worker", "1"),)): 1,
    }


@pytest.mark.parametrize(
    "line",
    [
        "metric{a=b} 1",  # unquoted label value
        'metric{a="b} 1',  # unterminated value
        'metric{a="\\x"} 1',  # unknown escape
        'metric{a="b" c="d"} 1',  # no comma
        "metric",  # no value
        "metric one",  # not a number
        "metric 1 2 3",  # too many fields
        "# TYPE metric bogus",  # unknown type
        "{} 1",  # no name
    ],
)
def test_malformed_lines_are_refused_with_their_line_number(line: str) -> None:
    with pytest.raises(ValueError, match=r"^line 2: "):
        parse_exposition(f"ok 1\n{line}\n")


def test_special_values_and_timestamps_parse() -> None:
    families = parse_exposition("a +Inf\nb -Inf\nc NaN\nd 1.5e3 1700000000000\n")
    values = {f.name: f.samples[0].value for f in families}
    assert values["a"] == math.inf
    assert values["b"] == -math.inf
    assert math.isnan(values["c"])
    assert values["d"] == 1500.0
    assert render_exposition(families).splitlines()[1::2] == ["a +Inf", "b -Inf", "c NaN", "d 1500"]


METRIC_NAMES = ("a", "hits_total", "x:y", "_up", "chat_b_seconds", "n9")
label_values = st.text(alphabet=st.sampled_from('ab"\\\n{},= é'), max_size=8)
numbers = st.one_of(
    st.integers(-(2**40), 2**40).map(float),
    st.floats(allow_nan=False, allow_infinity=True, width=64),
)


@st.composite
def families(draw: st.DrawFn) -> list[MetricFamily]:
    out = []
    names = draw(st.lists(st.sampled_from(METRIC_NAMES), unique=True, max_size=4))
    for name in names:
        kind = draw(st.sampled_from(["counter", "gauge", "untyped"]))
        label_sets = draw(st.lists(st.lists(label_values, max_size=2), unique_by=tuple))
        samples = tuple(
            Sample(name, tuple((f"l{i}", v) for i, v in enumerate(values)), draw(numbers))
            for values in label_sets
        )
        if samples:
            out.append(MetricFamily(name, kind, draw(st.sampled_from(["", "Some help."])), samples))
    return out


@given(families())
def test_any_families_survive_rendering_and_parsing(original: list[MetricFamily]) -> None:
    parsed = parse_exposition(render_exposition(original))
    assert parsed == original


@given(st.lists(st.dictionaries(st.sampled_from("abc"), st.integers(0, 10**9)), max_size=4))
def test_summed_counters_equal_the_sum_of_each_workers(values: list[dict[str, int]]) -> None:
    workers = {
        index: [
            MetricFamily(
                "hits_total",
                "counter",
                "",
                tuple(Sample("hits_total", (("k", k),), float(v)) for k, v in sorted(d.items())),
            )
        ]
        for index, d in enumerate(values)
        if d
    }
    total = by_key(aggregate_expositions(workers))
    expected: Counter[str] = Counter()
    for d in values:
        expected.update(d)
    assert total == {("hits_total", (("k", k),)): float(v) for k, v in expected.items()}
