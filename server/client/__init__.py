"""``python -m server.client URL``: the terminal chat client.

It depends on :mod:`server.protocol` and the client side of
:mod:`server.transport` only, never on the server itself, so it starts
quickly and can be shipped without the agents.
"""

from ._app import ClientOptions as ClientOptions
from ._app import Target as Target
from ._app import build_parser as build_parser
from ._app import main as main
from ._app import parse_target as parse_target
from ._app import run_client as run_client

__all__ = ["ClientOptions", "Target", "build_parser", "main", "parse_target", "run_client"]
