"""Who may talk to the server from a browser: Origin and Host checks (pure).

Any web page can open ``ws://127.0.0.1:8765/ws``: the browser sends the page's
origin in the ``Origin`` header but does not stop the connection, so without
a check every site a developer visits could drive agents (and spend a model
API key). :class:`OriginPolicy` says which origins may: the admin page's own
(``http://<one of its names>:<admin port>``), those matching an
``--allowed-origin`` pattern, and handshakes without an ``Origin`` header
(programs; a check cannot stop those anyway).

The admin listener's names also guard the admin listener itself against DNS
rebinding (a hostile name that resolves to 127.0.0.1): a request whose
``Host`` is not one of its names is refused.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable

import attrs

#: Host names a wildcard-bound admin listener treats as its own besides IP literals.
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def host_name(host: str) -> str:
    """The name part of a ``Host`` header or URL authority, lowercased, without port.

    ``example.com:8766`` -> ``example.com``, ``[::1]:8766`` -> ``::1``.
    """
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() and ":" not in name else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_loopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name == "localhost"


@attrs.frozen
class HostNames:
    """The names a listener answers to."""

    names: frozenset[str]
    #: Bound to every interface: any IP literal is one of its addresses.
    any_ip: bool = False

    @classmethod
    def of(cls, bind_host: str) -> HostNames:
        """The names of a listener bound to ``bind_host``.

        A loopback address answers to every loopback spelling (``localhost``,
        ``127.0.0.1``, ``::1``); a wildcard (``0.0.0.0``, ``::``) to any IP
        literal, the loopback names and this machine's host names.
        """
        host = host_name(bind_host)
        if host in _WILDCARDS:
            machine = {socket.gethostname().lower(), socket.getfqdn().lower()}
            return cls(frozenset(_LOOPBACK_NAMES | machine), any_ip=True)
        names = {host}
        if _is_loopback(host):
            names |= _LOOPBACK_NAMES
        return cls(frozenset(names))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name in self.names or (self.any_ip and _is_ip(name))


def _glob(pattern: str) -> re.Pattern[str]:
    """``*`` matches any run of characters; everything else matches itself (case-insensitive)."""
    return re.compile(".*".join(re.escape(p) for p in pattern.lower().split("*")), re.DOTALL)


@attrs.frozen
class OriginPolicy:
    """Which ``Origin`` values may open a WebSocket (:meth:`allows`)."""

    #: ``--allowed-origin`` patterns (``*`` allows every origin).
    patterns: tuple[str, ...] = ()
    #: The admin page's names and port: its own origins are always allowed.
    page_names: HostNames | None = None
    page_port: int | None = None
    _compiled: tuple[re.Pattern[str], ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_compiled", tuple(_glob(p) for p in self.patterns))

    @classmethod
    def allow_all(cls) -> OriginPolicy:
        return cls(patterns=("*",))

    @classmethod
    def for_server(
        cls, patterns: Iterable[str], admin_host: str | None, admin_port: int | None
    ) -> OriginPolicy:
        """``patterns`` plus the origins of the admin page at ``admin_host:admin_port``."""
        if admin_host is None or admin_port is None:
            return cls(patterns=tuple(patterns))
        return cls(
            patterns=tuple(patterns), page_names=HostNames.of(admin_host), page_port=admin_port
        )

    def allows(self, origin: str | None) -> bool:
        """True for no ``Origin`` header, the admin page's origin, or a matching pattern."""
        if origin is None:
            return True
        origin = origin.strip().lower()
        if self._is_page(origin):
            return True
        return any(pattern.fullmatch(origin) for pattern in self._compiled)

    def _is_page(self, origin: str) -> bool:
        if self.page_names is None or not origin.startswith("http://"):
            return False
        authority = origin[len("http://") :]
        if "/" in authority or "@" in authority:
            return False  # an origin is scheme://host[:port], nothing more
        name = host_name(authority)
        port = authority[authority.rfind("]") + 1 :] if authority.startswith("[") else authority
        _, colon, digits = port.rpartition(":")
        if not colon:
            digits = "80"  # a browser leaves the default port out
        return digits == str(self.page_port) and name in self.page_names
