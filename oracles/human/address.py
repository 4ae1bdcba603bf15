"""Where the labelling page listens: binding its socket, and checking the address before any run folder.

Socket-level only (no Flask), so main.py can check ``--human_host``/``--human_port`` before a run starts
without loading the web stack.
"""
from __future__ import annotations

import socket

from config import ConfigError


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
