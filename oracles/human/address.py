"""Where the labelling page listens: its socket, the address check before any run folder, and who may call.

Socket-level only (no Flask), so main.py can check ``--human_host``/``--human_port`` before a run starts
without loading the web stack.
"""
from __future__ import annotations

import ipaddress
import socket

from config import ConfigError

# The names a browser on this machine gives a page bound to a loopback address.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def listen(host: str, port: int) -> socket.socket:
    """A listening socket at host:port (port 0: any free one); OSError when the address cannot be used.

    Bound here rather than by werkzeug, whose make_server prints to stderr and exits on a busy port.
    """
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=64)


def check_address(host: str, port: int) -> None:
    """ConfigError (one line, before any run folder) when the page could not listen at host:port."""
    try:
        listen(host, port).close()
    except OSError as err:
        raise ConfigError(f"--oracle human: cannot listen on {host}:{port} ({err.strerror or err}); choose "
                          "another --human_port (0 = any free port) or --human_host") from None


def _ip(bound: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(bound.partition("%")[0])  # an IPv6 link-local address may carry %interface


def is_loopback(bound: str) -> bool:
    """Whether a socket bound to this IP address can be reached from this machine only."""
    return _ip(bound).is_loopback


def accepted_hosts(host: str, bound: str) -> frozenset | None:
    """The names a request's Host header may carry, for a page asked to listen on ``host`` and bound to IP
    ``bound``: that name and that address (and localhost's names on a loopback address); None (any) when
    bound to every interface, where the machine's LAN address or name cannot be known in advance.

    A browser sends the name it resolved, so a site whose name re-resolves to this address (DNS rebinding)
    is told apart by its Host header; the port is not compared, so an SSH tunnel's local port still works.
    """
    ip = _ip(bound)
    if ip.is_unspecified:
        return None
    names = {host.lower().strip("[]"), ip.compressed}
    return frozenset(names | LOOPBACK_NAMES) if ip.is_loopback else frozenset(names)


def host_name(header: str) -> str:
    """The name in a Host header, lower case, without its port or an IPv6 address's brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.partition(":")[0]
