"""Log set-up: plain text or one JSON object a line, with ids on every line.

Code logs with ``extra=ids(...)``; the formatters put ``connection_id``,
``user_id``, ``run_id`` and ``agent_name`` on the line whenever they are
present. Message content (what users typed) is only ever logged at DEBUG.

``python -m server`` never writes a log line from the event loop's thread:
:func:`open_log_writer` installs a :class:`QueueLineHandler`, which formats the
line and puts it on a bounded queue without waiting, and a :class:`LogWriter`
thread writes the queued lines to stderr. A sink that blocks (a pipe nobody
reads, a stalled terminal) then blocks only that thread; once the queue is
full, new lines are dropped and counted (``chat_log_lines_dropped_total``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, TextIO

ID_FIELDS = ("connection_id", "user_id", "run_id", "thread_id", "agent_name", "peer", "worker")


def ids(**fields: str | None) -> dict[str, str]:
    """``extra=`` for a log call: the given ids that are not None."""
    return {k: v for k, v in fields.items() if v is not None}


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{name}={getattr(record, name)}" for name in ID_FIELDS if hasattr(record, name)
        )
        line = f"{_timestamp(record)} {record.levelname} {record.name} {record.getMessage()}"
        if fields:
            line = f"{line} {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ID_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class ProcessFields(logging.Filter):
    """Puts the same fields on every record (``worker=i`` in a worker of ``--workers N``).

    A field the record already has (an ``extra=`` of the call) is kept.
    """

    def __init__(self, fields: Mapping[str, str]) -> None:
        super().__init__()
        self.fields = dict(fields)

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in self.fields.items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def configure_logging(
    level: str = "INFO",
    log_format: str = "text",
    handler: logging.Handler | None = None,
    *,
    fields: Mapping[str, str] | None = None,
) -> None:
    """Send the project's logs to ``handler`` (default: stderr, synchronously) in
    ``log_format`` (``text`` or ``json``), with ``fields`` on every line."""
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    if fields:
        handler.addFilter(ProcessFields(fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # trio-websocket logs every frame at DEBUG; keep it quiet unless asked.
    logging.getLogger("trio-websocket").setLevel(max(logging.INFO, root.level))


#: Lines the queue holds while the writer is behind (about 2-4 MB of typical lines).
LOG_QUEUE_LINES: Final = 10_000
#: How long ``python -m server`` waits at exit for the writer to write what is queued.
LOG_DRAIN_SECONDS: Final = 2.0
#: Lines the writer joins into one write.
_WRITE_BATCH: Final = 256

_dropped_lock = threading.Lock()
_dropped_total = 0


def log_lines_dropped() -> int:
    """Log lines dropped in this process because the queue was full (a counter)."""
    return _dropped_total


def _count_dropped() -> None:
    global _dropped_total
    with _dropped_lock:  # any thread may log
        _dropped_total += 1


class QueueLineHandler(logging.Handler):
    """Formats each record on the logging thread and queues the line without waiting.

    A full queue drops the line and counts it. Formatting here, not in the
    writer, keeps records (and whatever their arguments reference) out of the
    queue, and the writer needs nothing but strings.
    """

    def __init__(self, lines: queue.Queue[str | None]) -> None:
        super().__init__()
        self._lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            # logging's own handleError prints to sys.stderr right here, on the
            # caller's thread: exactly the blocking write this handler avoids.
            line = f"logging error in {record.name}: {record.msg!r}\n{traceback.format_exc()}"
        try:
            self._lines.put_nowait(line)
        except queue.Full:
            _count_dropped()


class LogWriter:
    """The thread that writes queued lines to the log sink; the only one that may block on it."""

    def __init__(
        self,
        lines: queue.Queue[str | None],
        write: Callable[[bytes], object],
        *,
        write_limit: int | None = None,
    ) -> None:
        self._lines = lines
        self._write = write
        #: Bytes one write may hold (whole lines; a longer line goes alone), or no limit.
        self._write_limit = write_limit
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="log writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Write what is queued, for at most ``timeout`` seconds; True if everything went out.

        A daemon thread: if the sink is still blocked when the time is up, the
        process exits without it (and the unwritten lines are lost).
        """
        self._stopping = True
        with contextlib.suppress(queue.Full):
            self._lines.put_nowait(None)  # wakes the writer if it waits for a line
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            try:
                # With a timeout, so a stop whose wake-up did not fit in a full
                # queue is still seen once the queue has drained.
                first = self._lines.get(timeout=0.5)
            except queue.Empty:
                if self._stopping:
                    return
                continue
            batch = [first]
            while len(batch) < _WRITE_BATCH:
                try:
                    batch.append(self._lines.get_nowait())
                except queue.Empty:
                    break
            lines = [line for line in batch if line is not None]
            for chunk, count in self._chunks(lines):
                try:
                    self._write(chunk)
                except Exception:
                    for _ in range(count):  # the sink is broken (closed pipe): nothing goes out
                        _count_dropped()
            if len(lines) < len(batch) or (self._stopping and self._lines.empty()):
                return

    def _chunks(self, lines: list[str]) -> Iterator[tuple[bytes, int]]:
        """(bytes to write, lines in them): all at once, or in whole lines up to the limit.

        Processes that share one pipe (the parent and workers of ``--workers N``
        on one stderr) must each write at most PIPE_BUF bytes at a time: the
        kernel keeps such a write in one piece, but may interleave a longer one
        with another process's lines.
        """
        encoded = [(line + "\n").encode("utf-8", "replace") for line in lines]
        limit = self._write_limit
        if limit is None:
            if encoded:
                yield b"".join(encoded), len(encoded)
            return
        chunk: list[bytes] = []
        size = 0
        for data in encoded:
            if chunk and size + len(data) > limit:
                yield b"".join(chunk), len(chunk)
                chunk, size = [], 0
            chunk.append(data)
            size += len(data)
        if chunk:
            yield b"".join(chunk), len(chunk)


def _fd_writer(stream: TextIO) -> Callable[[bytes], object]:
    """A function that writes bytes to ``stream``'s file descriptor (or the stream itself).

    Writing to the descriptor with ``os.write`` holds no lock of the stream's
    buffer, so a writer blocked on a full pipe cannot stall a flush of
    ``sys.stderr`` elsewhere (at interpreter exit, say).
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):

        def write_stream(data: bytes) -> None:
            stream.write(data.decode("utf-8", "replace"))
            stream.flush()

        return write_stream
    stream.flush()

    def write_fd(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    return write_fd


@contextlib.contextmanager
def open_log_writer(
    level: str = "INFO",
    log_format: str = "text",
    *,
    stream: TextIO | None = None,
    capacity: int = LOG_QUEUE_LINES,
    drain_timeout: float = LOG_DRAIN_SECONDS,
    fields: Mapping[str, str] | None = None,
    write_limit: int | None = None,
) -> Iterator[LogWriter]:
    """Log to ``stream`` (default stderr) through a bounded queue and a writer thread.

    Logging never waits for the sink: when ``capacity`` lines are queued,
    further lines are dropped and counted (:func:`log_lines_dropped`). On exit
    the writer gets ``drain_timeout`` seconds to write what is queued; lines
    logged after that are queued until the queue is full, then dropped.
    Warnings go through the same path. ``fields`` go on every line;
    ``write_limit`` bounds each write (see :meth:`LogWriter._chunks`).
    """
    lines: queue.Queue[str | None] = queue.Queue(maxsize=capacity)
    sink = _fd_writer(stream if stream is not None else sys.stderr)
    writer = LogWriter(lines, sink, write_limit=write_limit)
    configure_logging(level, log_format, QueueLineHandler(lines), fields=fields)
    logging.captureWarnings(True)
    writer.start()
    try:
        yield writer
    finally:
        writer.stop(drain_timeout)
