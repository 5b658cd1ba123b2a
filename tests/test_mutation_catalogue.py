"""The mutation catalogue of ``benchmarks.mutation`` still fits the code it mutates.

Running the mutants is slow and outside ``make test`` (``make mutation``); this
checks, in milliseconds, what would silently rot: every mutant's text still
occurs exactly once in its file, its test modules exist, and names are unique.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks._mutants import CATALOGUE, Mutant, StaleMutant, all_mutants
from benchmarks.mutation import first_failure, selected

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = all_mutants()


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_every_mutant_changes_exactly_one_place_of_a_file_that_exists(mutant: Mutant) -> None:
    text = (ROOT / mutant.path).read_text()
    mutated = mutant.apply(text)
    assert mutated != text
    assert len(mutated.splitlines()) >= len(text.splitlines()) - 8  # a one-point change
    compile(mutated, mutant.path, "exec")  # still Python: a test must kill it, not an import
    for test in mutant.tests:
        path, _, name = test.partition("::")  # a module, or one test of it (killer first)
        assert (ROOT / path).is_file(), test
        if name:
            assert f"def {name}(" in (ROOT / path).read_text(), test


def test_names_are_unique_and_say_their_area() -> None:
    names = [mutant.name for mutant in MUTANTS]
    assert len(names) == len(set(names))
    assert all(mutants for mutants in CATALOGUE.values())
    for mutant in MUTANTS:
        assert "." in mutant.name, mutant
        assert mutant.breaks, mutant


def test_a_mutant_whose_text_is_gone_is_stale() -> None:
    mutant = MUTANTS[0]
    with pytest.raises(StaleMutant, match="occurs 0 times"):
        mutant.apply("nothing of it here")
    with pytest.raises(StaleMutant, match="occurs 2 times"):
        mutant.apply(mutant.before * 2)


def test_areas_and_names_select_mutants_and_unknown_names_are_refused() -> None:
    assert [m for _, m in selected(["limits"], [])] == list(CATALOGUE["limits"])
    first = MUTANTS[0]
    assert [m for _, m in selected([], [first.name])] == [first]
    with pytest.raises(SystemExit, match="no such mutant"):
        selected([], ["no.such.mutant"])


def test_the_first_failure_comes_from_the_summary_not_from_captured_logs() -> None:
    output = "\n".join(
        [
            "ERROR    trio_agent_server.connection:_connection.py:173 connection failed",
            "=========================== short test summary info ============================",
            "FAILED tests/test_x.py::test_y - AssertionError: boom",
            "1 failed in 0.5s",
        ]
    )
    assert first_failure(output) == "FAILED tests/test_x.py::test_y - AssertionError: boom"
    assert first_failure("E   IndentationError: oops\n1 error\n") == "1 error"
