"""Addresses, listening sockets and the socket options gnetpy sets.

``parse_address`` turns ``tcp://host:port``-style strings into an
:class:`Address`; ``Listener`` binds one; ``configure_accepted`` and the
``set_*`` helpers are the single place where socket options are applied, for
listeners, accepted connections and ``Conn.set_*`` alike.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import math
import os
import socket
import stat
from typing import Any, Union

from .errors import InvalidAddressError, UnsupportedProtocolError
from .options import MAX_SOCKET_BUFFER, Options, check_keepalive

AddrInfo = Union[tuple[str, int], str]

_STREAM_SCHEMES = {"tcp": socket.AF_UNSPEC, "tcp4": socket.AF_INET, "tcp6": socket.AF_INET6}
_DGRAM_SCHEMES = {"udp": socket.AF_UNSPEC, "udp4": socket.AF_INET, "udp6": socket.AF_INET6}
SCHEMES = (*_STREAM_SCHEMES, *_DGRAM_SCHEMES, "unix")

# The kernel's limit is net.core.somaxconn (4096 on current Linux); asking for
# more is clamped silently, so ask for the most and let the sysctl decide.
BACKLOG = 4096


@dataclasses.dataclass(frozen=True)
class Address:
    """A parsed address: ``network`` is "tcp", "udp" or "unix"."""

    text: str
    network: str
    family: int
    host: str = ""
    port: int = 0
    path: str = ""
    # tcp6/udp6 bind IPv6 only; tcp/udp on an IPv6 host accept IPv4 too (like Go).
    v6only: bool = False

    @property
    def sockaddr(self) -> Any:
        return self.path_sockaddr if self.network == "unix" else (self.host, self.port)

    @property
    def path_sockaddr(self) -> str | bytes:
        # "@name" is Linux's abstract namespace: no file on disk.
        return "\0" + self.path[1:] if self.path.startswith("@") else self.path


def parse_address(text: str) -> Address:
    """Parse ``scheme://host:port`` or ``unix:///path``; raise naming what is wrong."""
    if not isinstance(text, str):
        raise InvalidAddressError(f"address {text!r}: expected a string like 'tcp://127.0.0.1:9000'")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise InvalidAddressError(f"address {text!r}: no scheme; write it as tcp://host:port, "
                                  f"udp://host:port or unix:///path")
    scheme = scheme.lower()
    if scheme == "unix":
        if not rest:
            raise InvalidAddressError(f"address {text!r}: a unix address needs a path (unix:///tmp/app.sock)")
        if "\0" in rest:
            raise InvalidAddressError(f"address {text!r}: a unix path cannot contain NUL")
        return Address(text, "unix", socket.AF_UNIX, path=rest)
    if scheme in _STREAM_SCHEMES:
        return _parse_inet(text, "tcp", _STREAM_SCHEMES[scheme], rest, scheme.endswith("6"))
    if scheme in _DGRAM_SCHEMES:
        return _parse_inet(text, "udp", _DGRAM_SCHEMES[scheme], rest, scheme.endswith("6"))
    raise UnsupportedProtocolError(f"address {text!r}: unsupported scheme {scheme!r}; "
                                   f"accepted: {', '.join(s + '://' for s in SCHEMES)}")


def _parse_inet(text: str, network: str, family: int, rest: str, v6only: bool) -> Address:
    host, port = _split_host_port(text, rest)
    if not host:
        # An empty host means every interface of the requested family.
        host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    host, family = _resolve(text, host, port, family)
    return Address(text, network, family, host=host, port=port, v6only=v6only)


def _split_host_port(text: str, rest: str) -> tuple[str, int]:
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise InvalidAddressError(f"address {text!r}: missing ']' after the IPv6 literal")
        host, after = rest[1:end], rest[end + 1:]
        if not after.startswith(":"):
            raise InvalidAddressError(f"address {text!r}: expected ':port' after ']'")
        port_text = after[1:]
    else:
        host, sep, port_text = rest.rpartition(":")
        if not sep:
            raise InvalidAddressError(f"address {text!r}: missing ':port'")
        if ":" in host:
            raise InvalidAddressError(f"address {text!r}: an IPv6 host must be in brackets, "
                                      f"as in tcp://[::1]:9000")
    # isascii: str.isdigit() is also true for "²", which int() refuses, and for "٨٠".
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise InvalidAddressError(f"address {text!r}: port {port_text!r} is not a number from 0 to 65535")
    return host, int(port_text)


def _resolve(text: str, host: str, port: int, family: int) -> tuple[str, int]:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        ip = None
    if ip is not None:
        literal_family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        if family not in (socket.AF_UNSPEC, literal_family):
            raise InvalidAddressError(f"address {text!r}: {host} is not an IPv{6 if family == socket.AF_INET6 else 4} "
                                      f"address, as the scheme requires")
        return host, literal_family
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InvalidAddressError(f"address {text!r}: cannot resolve host {host!r}: {exc.strerror}") from None
    # Prefer IPv4 for names like "localhost" that resolve to both: it is what
    # clients given the same name try first on most systems.
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    found_family, _, _, _, sockaddr = infos[0]
    return str(sockaddr[0]), int(found_family)


def format_addr(sockaddr: Any) -> AddrInfo:
    """``(host, port)`` for inet sockets (IPv6's flow info and scope dropped), the path for unix."""
    if isinstance(sockaddr, tuple):
        return (sockaddr[0], sockaddr[1])
    if isinstance(sockaddr, bytes):  # abstract unix names come back as bytes
        return "@" + sockaddr[1:].decode(errors="replace") if sockaddr[:1] == b"\0" else sockaddr.decode()
    return sockaddr


class Listener:
    """One bound, listening, non-blocking socket and the address it serves."""

    def __init__(self, address: Address, opts: Options) -> None:
        if address.network == "udp":
            raise UnsupportedProtocolError(f"address {address.text!r}: UDP serving is not available in this "
                                           f"version (tcp://, tcp4://, tcp6:// and unix:// are)")
        self.address = address
        self._unix_identity: tuple[int, int] | None = None
        self.sock = _bind(address, opts)
        if address.network == "unix" and not address.path.startswith("@"):
            st = os.stat(address.path)
            self._unix_identity = (st.st_dev, st.st_ino)

    @property
    def fd(self) -> int:
        return self.sock.fileno()

    @property
    def addr(self) -> AddrInfo:
        return format_addr(self.sock.getsockname()) if self.address.network != "unix" else self.address.path

    def close(self) -> None:
        """Close the socket and remove the unix socket file -- if it is still ours."""
        if self.sock.fileno() >= 0:
            self.sock.close()
        if self._unix_identity is not None:
            _remove_socket_file(self.address.path, self._unix_identity)
            self._unix_identity = None


def _bind(address: Address, opts: Options) -> socket.socket:
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        _set_listener_options(sock, address, opts)
        if address.network == "unix":
            _remove_stale_socket_file(address)
        try:
            sock.bind(address.sockaddr)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot bind {address.text!r}: {exc.strerror}") from None
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _set_listener_options(sock: socket.socket, address: Address, opts: Options) -> None:
    if opts.reuse_addr:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if opts.reuse_port and address.network != "unix":
        # Linux has no SO_REUSEPORT for unix sockets: those are shared instead
        # (see EventLoop and docs/architecture.md).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if address.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if address.v6only else 0)
    if opts.bind_to_device:
        set_bind_to_device(sock, opts.bind_to_device)
    # Accepted sockets inherit the buffer sizes set on the listener, and a
    # receive buffer above 64 KiB must be set before listen() to be advertised
    # in the TCP window scale of the SYN-ACK.
    if opts.socket_recv_buffer:
        set_read_buffer(sock, opts.socket_recv_buffer)
    if opts.socket_send_buffer:
        set_write_buffer(sock, opts.socket_send_buffer)


def _remove_stale_socket_file(address: Address) -> None:
    """Remove a socket file left by a previous run; refuse to remove anything else."""
    path = address.path
    if path.startswith("@"):
        return
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EADDRINUSE, f"cannot bind {address.text!r}: {path} exists and is not a socket")
    os.unlink(path)


def _remove_socket_file(path: str, identity: tuple[int, int]) -> None:
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == identity:
            os.unlink(path)
    except FileNotFoundError:
        pass


def configure_accepted(sock: socket.socket, opts: Options, is_tcp: bool) -> None:
    """Options every accepted (or enrolled) connection gets."""
    sock.setblocking(False)
    if not is_tcp:
        return
    if opts.tcp_no_delay:
        # Request/response protocols want each write on the wire now; Nagle's
        # algorithm would hold small replies back for up to one RTT.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if opts.tcp_keepalive:
        set_keep_alive(sock, opts.tcp_keepalive, opts.tcp_keep_interval, opts.tcp_keep_count)


def set_keep_alive(sock: socket.socket, idle: float, interval: float | None = None, count: int | None = None) -> None:
    """Enable TCP keep-alive probes after ``idle`` seconds (``idle`` 0 disables them).

    The kernel counts whole seconds; fractions round up so that a short
    positive idle time never becomes 0 (which the kernel rejects).
    """
    check_keepalive(idle, interval, count, ("set_keep_alive: idle=", "set_keep_alive: interval=",
                                            "set_keep_alive: count="))
    if not idle:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
        return
    interval = idle / 5 if interval is None else interval
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, math.ceil(idle)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, math.ceil(interval)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 5 if count is None else count)


def set_read_buffer(sock: socket.socket, size: int) -> None:
    _check_size("socket_recv_buffer", size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def set_write_buffer(sock: socket.socket, size: int) -> None:
    _check_size("socket_send_buffer", size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def set_bind_to_device(sock: socket.socket, device: str) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
    except OSError as exc:
        raise OSError(exc.errno, f"bind_to_device={device!r}: {exc.strerror}") from None


def _check_size(name: str, size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_SOCKET_BUFFER:
        raise ValueError(f"{name}: {size!r}; accepted: a number of bytes from 1 to {MAX_SOCKET_BUFFER}")
