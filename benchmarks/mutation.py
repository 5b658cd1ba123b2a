"""Mutation testing of the core: does the suite notice one-point mistakes?

Applies each curated mutant of ``benchmarks/_mutants.py`` (one exact text
change in one file) to a private copy of the source tree, runs the test
modules that mutant names (``pytest -x``, with a time limit) and counts it
*killed* if they fail and *survived* if they pass. Prints the kill rate and
every survivor, and writes ``mutation.md`` and ``mutation.json`` into
``--report-dir``. The working tree is never modified: the copy lives in a
temporary directory and is imported through ``PYTHONPATH``.

Before the mutants, the union of their test modules runs once on the
unmutated copy: a suite that already fails would make every mutant look
killed.

Examples::

    python -m benchmarks.mutation                        # every area
    python -m benchmarks.mutation --area outbound --area runs
    python -m benchmarks.mutation --only outbound.batch_unbounded
    python -m benchmarks.mutation --tree main            # the tests of another commit
    python -m benchmarks.mutation --list

The exit status is 0 when the kill rate reaches ``--min-kill-rate``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from ._common import add_report_arguments, write_report
from ._mutants import CATALOGUE, Mutant, StaleMutant

ROOT = Path(__file__).resolve().parent.parent
#: Outcomes; "killed" and "timeout" count as killed.
KILLED, TIMEOUT, SURVIVED, STALE, ERROR = "killed", "timeout", "survived", "stale", "error"


@attrs.frozen
class Outcome:
    mutant: Mutant
    area: str
    result: str
    seconds: float
    #: The first failing test (for a killed mutant) or what went wrong.
    detail: str = ""

    @property
    def killed(self) -> bool:
        return self.result in (KILLED, TIMEOUT)


# -- the tree ----------------------------------------------------------------------


def _git(*args: str) -> bytes:
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=True)
    return result.stdout


def copy_tree(dest: Path, ref: str | None) -> None:
    """The working tree's files (tracked and untracked, not ignored), or commit ``ref``'s."""
    if ref is not None:
        archive = dest / ".tree.tar"
        _git("archive", "--format=tar", "-o", str(archive), ref)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
        archive.unlink()
        return
    listing = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in listing.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def describe_tree(ref: str | None) -> str:
    commit = _git("rev-parse", "--short", ref or "HEAD").decode().strip()
    if ref is not None:
        return f"{ref} ({commit})"
    dirty = bool(_git("status", "--porcelain").strip())
    return f"working tree ({commit}{', with changes' if dirty else ''})"


# -- running the tests ---------------------------------------------------------------


@attrs.frozen
class TestRun:
    returncode: int | None  # None: killed at the time limit
    output: str
    seconds: float


async def run_tests(tree: Path, tests: Sequence[str], limit: float) -> TestRun:
    """``pytest -x`` on ``tests`` in ``tree``, importing the tree's own packages."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a restored file must never meet a stale .pyc
    # Tests that need PostgreSQL or Redis fail instead of skipping: a skipped
    # test kills nothing, so without them the baseline run fails, loudly.
    env["CI"] = "1"
    command = [sys.executable, "-m", "pytest", "-x", "-q", "--no-header",
               "-p", "no:cacheprovider", *tests]  # fmt: skip
    started = time.monotonic()
    result: subprocess.CompletedProcess[bytes] | None = None
    with trio.move_on_after(limit):
        result = await trio.run_process(
            command, cwd=tree, env=env, capture_stdout=True, stderr=subprocess.STDOUT, check=False
        )
    seconds = time.monotonic() - started
    if result is None:
        return TestRun(None, "", seconds)
    return TestRun(result.returncode, result.stdout.decode(errors="replace"), seconds)


def first_failure(output: str) -> str:
    """The first ``FAILED``/``ERROR`` line of pytest's short summary, shortened."""
    lines = output.splitlines()
    summary = next((i for i, line in enumerate(lines) if "short test summary info" in line), 0)
    for line in lines[summary:]:
        if line.startswith(("FAILED ", "ERROR ")):
            return line[:200]
    lines = [line for line in lines if line.strip()]
    return lines[-1][:200] if lines else ""


def present(tree: Path, tests: Sequence[str]) -> list[str]:
    """The test paths that exist in ``tree`` (an older tree may lack newer modules)."""
    return [test for test in tests if (tree / test.partition("::")[0]).exists()]


async def try_mutant(tree: Path, mutant: Mutant, area: str, limit: float) -> Outcome:
    path = tree / mutant.path
    original = path.read_text()
    try:
        mutated = mutant.apply(original)
    except StaleMutant as exc:
        return Outcome(mutant, area, STALE, 0.0, str(exc))
    tests = present(tree, mutant.tests)
    if not tests:
        return Outcome(mutant, area, ERROR, 0.0, "none of its test modules exist")
    path.write_text(mutated)
    try:
        run = await run_tests(tree, tests, limit)
    finally:
        path.write_text(original)
    if run.returncode is None:
        return Outcome(mutant, area, TIMEOUT, run.seconds, f"no result within {limit:g} s")
    if run.returncode == 0:
        return Outcome(mutant, area, SURVIVED, run.seconds)
    if run.returncode in (1, 2):  # tests failed, or collection failed (an import broke)
        return Outcome(mutant, area, KILLED, run.seconds, first_failure(run.output))
    return Outcome(mutant, area, ERROR, run.seconds, first_failure(run.output))


# -- the whole run ---------------------------------------------------------------------


def selected(areas: Sequence[str], only: Sequence[str]) -> list[tuple[str, Mutant]]:
    chosen = [
        (area, mutant)
        for area, mutants in CATALOGUE.items()
        if not areas or area in areas
        for mutant in mutants
        if not only or mutant.name in only
    ]
    unknown = set(only) - {mutant.name for _, mutant in chosen}
    if unknown:
        raise SystemExit(f"no such mutant (in the chosen areas): {', '.join(sorted(unknown))}")
    return chosen


async def run_all(
    args: argparse.Namespace, chosen: list[tuple[str, Mutant]], workdir: Path
) -> list[Outcome]:
    trees = []
    for job in range(args.jobs):
        tree = workdir / f"tree{job}"
        tree.mkdir()
        copy_tree(tree, args.tree)
        trees.append(tree)
    if not args.no_baseline:
        tests = present(trees[0], sorted({t for _, m in chosen for t in m.tests}))
        print(f"baseline: {len(tests)} test modules, unmutated ...", flush=True)
        baseline = await run_tests(trees[0], tests, args.timeout * 4)
        if baseline.returncode != 0:
            print(baseline.output[-5000:])
            raise SystemExit("the unmutated tree fails its tests: fix that first")
        print(f"baseline passed in {baseline.seconds:.1f} s", flush=True)
    outcomes: dict[int, Outcome] = {}
    send, receive = trio.open_memory_channel[tuple[int, str, Mutant]](len(chosen))
    for index, (area, mutant) in enumerate(chosen):
        send.send_nowait((index, area, mutant))
    send.close()
    width = max(len(mutant.name) for _, mutant in chosen)

    async def worker(tree: Path) -> None:
        async for index, area, mutant in receive:
            outcome = await try_mutant(tree, mutant, area, args.timeout)
            outcomes[index] = outcome
            note = f"  {outcome.detail}" if outcome.detail else ""
            print(
                f"[{len(outcomes):3}/{len(chosen)}] {outcome.result:8} "
                f"{mutant.name:{width}} {outcome.seconds:6.1f} s{note}",
                flush=True,
            )

    async with trio.open_nursery() as nursery:
        for tree in trees:
            nursery.start_soon(worker, tree)
    return [outcomes[index] for index in range(len(chosen))]


def summarise(
    outcomes: list[Outcome], args: argparse.Namespace, tree: str, seconds: float
) -> tuple[dict[str, object], str]:
    counted = [o for o in outcomes if o.result in (KILLED, TIMEOUT, SURVIVED)]
    killed = sum(o.killed for o in counted)
    rate = killed / len(counted) if counted else 0.0
    survivors = [o for o in outcomes if o.result == SURVIVED]
    broken = [o for o in outcomes if o.result in (STALE, ERROR)]
    command = "python -m benchmarks.mutation " + " ".join(sys.argv[1:])
    report: dict[str, object] = {
        "command": command.strip(),
        "tree": tree,
        "mutants": len(outcomes),
        "counted": len(counted),
        "killed": killed,
        "survived": len(survivors),
        "not_run": len(broken),
        "kill_rate": round(rate, 4),
        "seconds": round(seconds, 1),
        "outcomes": [
            {
                "name": o.mutant.name,
                "area": o.area,
                "path": o.mutant.path,
                "breaks": o.mutant.breaks,
                "result": o.result,
                "seconds": round(o.seconds, 2),
                "detail": o.detail,
                "equivalent": o.mutant.equivalent,
            }
            for o in outcomes
        ],
    }
    lines = [
        "# Mutation testing",
        "",
        f"- command: `{report['command']}`",
        f"- tree: {report['tree']}",
        f"- killed {killed} of {len(counted)} mutants: **{rate:.1%}**"
        f" ({len(survivors)} survived, {len(broken)} not run), {seconds:.0f} s",
        "",
        "| area | mutant | breaks | result | killed by |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        detail = o.detail.replace("|", "\\|")
        lines.append(
            f"| {o.area} | `{o.mutant.name}` | {o.mutant.breaks} | {o.result} | {detail} |"
        )
    if survivors:
        lines += ["", "## Survivors", ""]
        for o in survivors:
            why = f" (equivalent: {o.mutant.equivalent})" if o.mutant.equivalent else ""
            lines.append(f"- `{o.mutant.name}` in `{o.mutant.path}`: {o.mutant.breaks}{why}")
    return report, "\n".join(lines) + "\n"


async def main(args: argparse.Namespace) -> int:
    chosen = selected(args.area, args.only)
    if args.list:
        for area, mutant in chosen:
            print(f"{area:11} {mutant.name:50} {mutant.breaks}")
        print(f"{len(chosen)} mutants")
        return 0
    started = time.monotonic()
    tree = describe_tree(args.tree)  # now: the copy is made now
    with tempfile.TemporaryDirectory(prefix="mutation-") as workdir:
        outcomes = await run_all(args, chosen, Path(workdir))
    report, markdown = summarise(outcomes, args, tree, time.monotonic() - started)
    print()
    print(markdown)
    print(f"report: {write_report(args.report_dir, args.report_name, report, markdown)}")
    rate = report["kill_rate"]
    assert isinstance(rate, float)
    return 0 if rate >= args.min_kill_rate and not report["not_run"] else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mutation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--area", action="append", default=[], choices=list(CATALOGUE),
                        help="only the mutants of this area (repeatable)")  # fmt: skip
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="only this mutant (repeatable)")  # fmt: skip
    parser.add_argument("--tree", metavar="REF", default=None,
                        help="test this commit's tree, not the working tree")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds a mutant's tests may take [300]")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1,
                        help="mutants tried at once, each in its own copy [1]")  # fmt: skip
    parser.add_argument("--min-kill-rate", type=float, default=0.95,
                        help="exit 1 below this kill rate [0.95]")  # fmt: skip
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the unmutated run of the tests")  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    add_report_arguments(parser, "mutation")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


if __name__ == "__main__":
    raise SystemExit(trio.run(main, parse_args()))
