"""Helpers shared by the tests that run real processes (not a test module)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

#: The checkout: benchmark scripts run with it as their working directory.
ROOT = Path(__file__).resolve().parent.parent


def server_env(**overrides: str) -> dict[str, str]:
    """The test's environment for a ``python -m server`` child: no CHAT_* variable
    of the caller's, the history store in memory (never ``./data/`` in the
    checkout), plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env["CHAT_STORE"] = "memory:"
    env.update(overrides)
    return env


async def run_script(module: str, *args: str, seconds: float = 180) -> str:
    """Run ``python -m module args`` from the checkout; its stdout, or fail with its output."""
    with trio.fail_after(seconds):
        result: subprocess.CompletedProcess[bytes] = await trio.run_process(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, (result.stdout.decode()[-3000:], result.stderr.decode()[-3000:])
    return result.stdout.decode()


def read_report(directory: Path, name: str) -> dict[str, Any]:
    """The JSON report, after checking that the Markdown one was written beside it."""
    assert (directory / f"{name}.md").read_text().startswith("# ")
    report: dict[str, Any] = json.loads((directory / f"{name}.json").read_text())
    return report


async def reap(processes: list[trio.Process], wait_each: float) -> None:
    """Kill those still running, wait for each (at most ``wait_each`` s), close their pipes."""
    for process in processes:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(wait_each) as cleanup:
            cleanup.shield = True
            await process.wait()
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                await pipe.aclose()


class LineReader:
    """Lines from a process pipe, read on demand."""

    def __init__(self, stream: trio.abc.ReceiveStream, *, errors: str = "strict") -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._errors = errors
        self.eof = False

    async def readline(self) -> str | None:
        """The next line without its line ending, or None at end of file."""
        while b"\n" not in self._buffer and not self.eof:
            chunk = await self._stream.receive_some(65536)
            self.eof = not chunk
            self._buffer += chunk
        if not self._buffer:
            return None
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return line.decode("utf-8", self._errors).removesuffix("\r")

    async def read_rest(self) -> list[str]:
        lines = []
        while (line := await self.readline()) is not None:
            lines.append(line)
        return lines
