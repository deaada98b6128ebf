"""Listening sockets: bind one per address (and per loop with ``reuse_port``), and clean up after.

Unix socket files get special care: a stale socket file left by a previous
run is replaced, anything else at the path is refused, and on close the file
is removed only if it is still the one this listener created.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import stat
from typing import Any

from . import inherit
from .address import Address, AddrInfo, format_addr
from .errors import UnsupportedProtocolError
from .options import Options
from .sockopts import bind, set_listener_options

# The kernel's limit is net.core.somaxconn (4096 on current Linux); asking for
# more is clamped silently, so ask for the most and let the sysctl decide.
BACKLOG = 4096


@dataclasses.dataclass(frozen=True)
class Role:
    """What a listener's connections begin with, before the handler sees them: a PROXY header
    (``proxy``: its mode, "v1", "v2" or "any"), then TLS (``tls``: the ``ssl.SSLContext``)."""

    tls: Any = None
    proxy: str | None = None


class Listener:
    """One bound, listening, non-blocking socket and the address it serves."""

    def __init__(self, address: Address, opts: Options) -> None:
        if address.network == "udp":
            raise UnsupportedProtocolError(f"address {address.text!r}: a Listener is for stream sockets "
                                           f"(tcp://, unix://); datagram sockets are udp.DatagramListener's")
        self.address = address
        self.role: Role | None = None  # what its connections begin with, set by the engine (None: plain)
        self._unix_identity: tuple[int, int] | None = None
        self.sock = _bind(address, opts)
        if address.network == "unix" and not address.path.startswith("@") and address.fd < 0:
            st = os.stat(address.path)
            self._unix_identity = (st.st_dev, st.st_ino)
        inherit.register(self)

    @property
    def fd(self) -> int:
        return self.sock.fileno()

    @property
    def addr(self) -> AddrInfo:
        return format_addr(self.sock.getsockname()) if self.address.network != "unix" else self.address.path

    @property
    def bound_text(self) -> str:
        """The address as bound, for logs: ``tcp://127.0.0.1:41234`` where ``tcp://127.0.0.1:0`` was given."""
        if self.address.network == "unix" or self.sock.fileno() < 0:
            return self.address.text
        scheme = self.address.text.partition("://")[0]
        host, port = self.sock.getsockname()[:2]
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    def close(self) -> None:
        """Close the socket and remove the unix socket file -- if it is still ours."""
        if self.sock.fileno() >= 0:
            self.sock.close()
        if self._unix_identity is not None:
            _remove_socket_file(self.address.path, self._unix_identity)
            self._unix_identity = None

    def _forget_in_child(self) -> None:
        """In a forked worker: close the worker's copy; the file stays the parent's (inherit.py)."""
        self._unix_identity = None
        self.sock.close()


class BoundSocket:
    """A bound socket the engine holds for its loops (PortHolder, udp.DatagramListener): its
    address, closing it, and dropping a forked worker's copy."""

    sock: socket.socket

    @property
    def addr(self) -> AddrInfo:
        return format_addr(self.sock.getsockname())

    def close(self) -> None:
        self.sock.close()

    def _forget_in_child(self) -> None:
        self.sock.close()


class PortHolder(BoundSocket):
    """Process mode with ``reuse_port``: a socket bound to the port the workers share, never listening.

    It turns port 0 into one real port before the first worker binds, and
    keeps that port reserved while workers restart.  A socket that does not
    listen is not in the kernel's SO_REUSEPORT group for incoming
    connections: the parent accepts none.
    """

    def __init__(self, address: Address, opts: Options) -> None:
        self.address = address
        self.sock = socket.socket(address.family, socket.SOCK_STREAM)
        try:
            set_listener_options(self.sock, address, opts)
            bind(self.sock, address)
        except BaseException:
            self.sock.close()
            raise
        inherit.register(self)


def _adopt(address: Address) -> socket.socket:
    """An inherited stream socket (activation.py): listening, non-blocking; bound by whoever passed it."""
    sock = socket.socket(fileno=address.fd)
    try:
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.detach()  # not ours to close on a failed start: the supervisor's
        raise
    return sock


def _bind(address: Address, opts: Options) -> socket.socket:
    if address.fd >= 0:
        return _adopt(address)
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        set_listener_options(sock, address, opts)
        if address.network == "unix":
            _remove_stale_socket_file(address)
        bind(sock, address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale_socket_file(address: Address) -> None:
    """Remove a socket file left by a previous run; refuse a live one, or anything else.

    A socket file whose server is still running is not stale: unlinking it
    would quietly take the address over (and leave the other server
    unreachable), so a connect is tried first -- if something accepts, this is
    ``EADDRINUSE``, as binding a live TCP port is.
    """
    path = address.path
    if path.startswith("@"):
        return
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EADDRINUSE, f"cannot bind {address.text!r}: {path} exists and is not a socket")
    if _is_served(path):
        raise OSError(errno.EADDRINUSE, f"cannot bind {address.text!r}: another server is listening on {path}")
    os.unlink(path)


def _is_served(path: str) -> bool:
    """Does something accept connections on the unix socket at ``path``?"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)  # a full backlog answers EAGAIN at once: someone is there
        try:
            probe.connect(path)
        except (BlockingIOError, InterruptedError):
            return True
        except (ConnectionRefusedError, FileNotFoundError):
            return False  # a file no one listens on: stale
        except OSError as exc:
            raise OSError(exc.errno, f"cannot tell whether {path} is in use: {exc.strerror}") from None
        return True


def _remove_socket_file(path: str, identity: tuple[int, int]) -> None:
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == identity:
            os.unlink(path)
    except FileNotFoundError:
        pass


