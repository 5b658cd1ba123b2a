"""The server internals the benchmarks measure, found where they live.

The event path's functions are moving (issue 11): ``server._protocol`` to
``server.protocol``, ``server._wire`` to ``server.transport``,
``server._outbound`` to ``server.session._outbound``, ``server._runs`` to
``server.runs``. This is the one place that knows both: each name is taken
from the first module in its list that exists and has it, so the benchmarks
and their tests work before and after the move. :data:`SOURCES` records where
each name was found (printed by ``benchmarks.breakdown``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

#: Name -> the modules to look in, the new location first.
LOCATIONS: dict[str, tuple[str, ...]] = {
    "decode_client_message": ("server.protocol", "server._protocol"),
    "encode_run_event": ("server.protocol", "server._protocol"),
    "encode_json": ("server.protocol", "server._protocol"),
    "utc_timestamp": ("server.protocol", "server._protocol"),
    "frame_text": ("server.transport", "server._wire"),
    "OutboundQueue": ("server.session._outbound", "server._outbound"),
    "EVENT": ("server.session._outbound", "server._outbound"),
    "Run": ("server.runs", "server._runs"),
}

#: Name -> the module it was taken from.
SOURCES: dict[str, str] = {}


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # Only "this module (or a package above it) does not exist" means "try
        # the next"; a missing import inside an existing module is a real error.
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            return None
        raise


def find(name: str) -> Any:
    """``name`` from the first of its :data:`LOCATIONS` that defines it."""
    for module_name in LOCATIONS[name]:
        module = _module(module_name)
        if module is not None and hasattr(module, name):
            SOURCES[name] = module_name
            return getattr(module, name)
    raise ImportError(f"{name} is in none of {', '.join(LOCATIONS[name])}")


decode_client_message: Callable[[str], Any] = find("decode_client_message")
encode_run_event: Callable[..., bytes] = find("encode_run_event")
encode_json: Callable[[Any], bytes] = find("encode_json")
utc_timestamp: Callable[..., str] = find("utc_timestamp")
frame_text: Callable[[bytes], bytes] = find("frame_text")
OutboundQueue: Any = find("OutboundQueue")
EVENT: int = find("EVENT")
Run: Any = find("Run")
