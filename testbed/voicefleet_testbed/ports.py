"""Free ports and addresses on loopback."""

from __future__ import annotations

import contextlib
import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` now (the OS picks it; a race is possible but rare)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def pick_port(preferred: int | None, host: str = "127.0.0.1") -> int:
    """`preferred` when it is free, otherwise any free port (a taken port is not fatal)."""
    if preferred and port_is_free(preferred, host):
        return preferred
    return free_port(host)
