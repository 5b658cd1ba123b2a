"""Helpers shared by the tests that run real processes (not a test module)."""

from __future__ import annotations

import trio


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
