"""Addresses: ``tcp://host:port``-style strings parsed into :class:`Address`, and sockaddrs formatted back.

Everything about an address is checked here, before anything is bound, and
every error quotes the address and says what was wrong with it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
from typing import Any, Union

from .errors import InvalidAddressError, UnsupportedProtocolError

AddrInfo = Union[tuple[str, int], str]

_STREAM_SCHEMES = {"tcp": socket.AF_UNSPEC, "tcp4": socket.AF_INET, "tcp6": socket.AF_INET6}
_DGRAM_SCHEMES = {"udp": socket.AF_UNSPEC, "udp4": socket.AF_INET, "udp6": socket.AF_INET6}
SCHEMES = (*_STREAM_SCHEMES, *_DGRAM_SCHEMES, "unix")
# sun_path is 108 bytes on Linux: a path and its terminating NUL, or an
# abstract name after its leading NUL.
UNIX_PATH_MAX = 107

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
    # An inherited socket's descriptor (fd://, systemd://: activation.py); -1 for one to bind.
    fd: int = -1

    @property
    def sockaddr(self) -> Any:
        return self.path_sockaddr if self.network == "unix" else (self.host, self.port)

    @property
    def path_sockaddr(self) -> str | bytes:
        # "@name" is Linux's abstract namespace: no file on disk.
        return "\0" + self.path[1:] if self.path.startswith("@") else self.path


def parse_address(text: str, *, dial: bool = False) -> Address:
    """Parse ``scheme://host:port`` or ``unix:///path``; raise naming what is wrong.

    To listen (the default), a host name is resolved here and an empty host is
    every interface.  To ``dial``, a name is kept for ``dial.resolve`` to look
    up off the event loop, and an empty host is this machine (as in Go).
    """
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
        size = len(os.fsencode(rest[1:] if rest.startswith("@") else rest))
        if size > UNIX_PATH_MAX:
            what = "abstract name" if rest.startswith("@") else "path"
            raise InvalidAddressError(f"address {text!r}: the unix socket {what} is {size} bytes long; "
                                      f"the kernel's limit is {UNIX_PATH_MAX}")
        return Address(text, "unix", socket.AF_UNIX, path=rest)
    if scheme in _STREAM_SCHEMES:
        return _parse_inet(text, "tcp", _STREAM_SCHEMES[scheme], rest, scheme.endswith("6"), dial)
    if scheme in _DGRAM_SCHEMES:
        return _parse_inet(text, "udp", _DGRAM_SCHEMES[scheme], rest, scheme.endswith("6"), dial)
    if scheme in ("fd", "systemd"):
        raise UnsupportedProtocolError(f"address {text!r}: {scheme}:// names an inherited listening socket: "
                                       f"serve it (start, run), it cannot be dialed")
    raise UnsupportedProtocolError(f"address {text!r}: unsupported scheme {scheme!r}; "
                                   f"accepted: {', '.join(s + '://' for s in SCHEMES)}, fd://N, systemd://")


def _parse_inet(text: str, network: str, family: int, rest: str, v6only: bool, dial: bool) -> Address:
    host, port = _split_host_port(text, rest)
    if not host:
        # To listen: every interface of the family.  To dial: this machine.
        if dial:
            host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        else:
            host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    literal = _literal_family(text, host, family)
    if literal is not None:
        family = literal
    elif not dial:
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


def is_ip_literal(host: str) -> bool:
    """An IP address written out (nothing to look up), an IPv6 scope included."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _literal_family(text: str, host: str, family: int) -> int | None:
    """The family of an IP literal ``host`` (checked against the scheme's), None for a name."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    literal_family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    if family not in (socket.AF_UNSPEC, literal_family):
        raise InvalidAddressError(f"address {text!r}: {host} is not an IPv{6 if family == socket.AF_INET6 else 4} "
                                  f"address, as the scheme requires")
    return literal_family


def _resolve(text: str, host: str, port: int, family: int) -> tuple[str, int]:
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


