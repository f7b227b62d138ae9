"""The testbed's Redis: its config file, and a minimal client for readiness and for reading
what LiveKit keeps there.

Redis is what makes livekit-server multi-node (its router, room store and psrpc message
bus all live there) and what LiveKit's SIP API stores trunks and dispatch rules in, so
the stack runs one when asked (`Stack.up(redis=True)` or `livekit_nodes > 1`). Debian's
redis-server (testbed/build/binaries.sh redis), one process per stack: loopback only, a
password, nothing written to disk.

The client speaks RESP2 over one short-lived TCP connection per call. It is enough for
PING and a few hash reads; the project does not need a Redis library for that.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Where LiveKit keeps which node hosts a room (pkg/routing/redisrouter.go, NodeRoomKey):
# a hash of room name -> node id. The nodes themselves are in the hash "nodes".
ROOM_NODE_MAP = "room_node_map"

Reply = bytes | int | list["Reply"] | None


class RedisError(RuntimeError):
    """An error reply from the server (`-ERR ...`, `-NOAUTH ...`)."""


def redis_config(*, port: int, directory: Path, password: str) -> str:
    """redis.conf for the stack's Redis. Written to a file readable by the owner only: it
    holds the password, which therefore never appears on a command line (ps) or in a log."""
    if not 0 < port < 65536:
        raise ValueError(f"port: {port} is not a port number (1-65535)")
    if not password or any(c.isspace() or c == '"' for c in password):
        raise ValueError("password: must be non-empty, without spaces or quotes")
    lines = [
        # Loopback only (not Redis's default "* -::*"), and refuse clients from elsewhere
        # even if the bind were widened.
        "bind 127.0.0.1",
        "protected-mode yes",
        f"port {port}",
        f'requirepass "{password}"',
        # No persistence: every `up` starts empty, as etcd does. LiveKit re-registers its
        # nodes on start; rooms and SIP objects of a previous run are not wanted.
        'save ""',
        "appendonly no",
        f'dir "{directory}"',
        # In the foreground, logging to stdout (the stack's log file).
        "daemonize no",
        'logfile ""',
        "loglevel notice",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RedisClient:
    host: str
    port: int
    password: str = ""
    timeout: float = 2.0

    def command(self, *args: str | bytes) -> Reply:
        """Send one command (after AUTH when there is a password) and return its reply."""
        return self.pipeline([list(args)])[-1]

    def pipeline(self, commands: list[list[str | bytes]]) -> list[Reply]:
        """Send commands on one connection, in order; an error reply raises RedisError."""
        if self.password:
            commands = [["AUTH", self.password], *commands]
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
            sock.sendall(b"".join(encode(c) for c in commands))
            with sock.makefile("rb") as f:
                replies = [read_reply(f) for _ in commands]
        return replies[1:] if self.password else replies

    def ping(self) -> bool:
        return self.command("PING") == b"PONG"

    def hgetall(self, key: str) -> dict[str, bytes]:
        """A hash's fields (text) and values (bytes: LiveKit stores protobufs in some)."""
        items = self._bulk_list("HGETALL", key)
        return {k.decode(): v for k, v in zip(items[::2], items[1::2], strict=True)}

    def hkeys(self, key: str) -> list[str]:
        return [k.decode() for k in self._bulk_list("HKEYS", key)]

    def _bulk_list(self, *args: str) -> list[bytes]:
        reply = self.command(*args)
        if not isinstance(reply, list) or not all(isinstance(r, bytes) for r in reply):
            raise RedisError(f"{' '.join(args)}: unexpected reply {reply!r}")
        return [r for r in reply if isinstance(r, bytes)]


def encode(args: list[str | bytes]) -> bytes:
    """A command as a RESP array of bulk strings."""
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def read_reply(f: BinaryIO) -> Reply:
    """One RESP2 reply: simple string, error, integer, bulk string or array."""
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise RedisError(f"connection closed mid-reply: {line!r}")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body
    if kind == b"-":
        raise RedisError(body.decode(errors="replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        n = int(body)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(body)
        return None if n < 0 else [read_reply(f) for _ in range(n)]
    raise RedisError(f"unknown reply type: {line!r}")
