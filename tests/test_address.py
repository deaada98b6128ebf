"""address.py: parsing every scheme, each way an address can be wrong (the error must quote it)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

import gnetpy
from gnetpy import InvalidAddressError, UnsupportedProtocolError
from gnetpy.address import parse_address

# -- parse_address: good addresses -------------------------------------------------------


@pytest.mark.parametrize("text, network, family, host, port, v6only", [
    ("tcp://127.0.0.1:9000", "tcp", socket.AF_INET, "127.0.0.1", 9000, False),
    ("tcp4://127.0.0.1:0", "tcp", socket.AF_INET, "127.0.0.1", 0, False),
    ("tcp6://[::1]:80", "tcp", socket.AF_INET6, "::1", 80, True),
    ("tcp://[::1]:80", "tcp", socket.AF_INET6, "::1", 80, False),
    ("tcp://[::]:65535", "tcp", socket.AF_INET6, "::", 65535, False),
    ("tcp://[fe80::1%lo]:80", "tcp", socket.AF_INET6, "fe80::1%lo", 80, False),
    ("udp://127.0.0.1:53", "udp", socket.AF_INET, "127.0.0.1", 53, False),
    ("udp4://10.1.2.3:5353", "udp", socket.AF_INET, "10.1.2.3", 5353, False),
    ("udp6://[2001:db8::1]:53", "udp", socket.AF_INET6, "2001:db8::1", 53, True),
    ("udp://[::1]:53", "udp", socket.AF_INET6, "::1", 53, False),
    ("TCP://127.0.0.1:1", "tcp", socket.AF_INET, "127.0.0.1", 1, False),
])
def test_parse_inet_addresses(text: str, network: str, family: int, host: str, port: int, v6only: bool) -> None:
    a = parse_address(text)
    assert (a.text, a.network, a.family, a.host, a.port, a.v6only) == (text, network, family, host, port, v6only)
    assert a.sockaddr == (host, port)


@pytest.mark.parametrize("text, host, family", [
    ("tcp://:9000", "0.0.0.0", socket.AF_INET),
    ("tcp4://:9000", "0.0.0.0", socket.AF_INET),
    ("tcp6://:9000", "::", socket.AF_INET6),
    ("udp://:9000", "0.0.0.0", socket.AF_INET),
    ("udp6://:9000", "::", socket.AF_INET6),
])
def test_empty_host_means_every_interface(text: str, host: str, family: int) -> None:
    a = parse_address(text)
    assert (a.host, a.family, a.port) == (host, family, 9000)


def test_hostnames_are_resolved_preferring_ipv4() -> None:
    a = parse_address("tcp://localhost:8080")
    assert (a.host, a.family, a.port) == ("127.0.0.1", socket.AF_INET, 8080)
    assert parse_address("tcp4://localhost:1").host == "127.0.0.1"


@pytest.mark.parametrize("port", [0, 1, 65535])
def test_port_bounds(port: int) -> None:
    assert parse_address(f"tcp://127.0.0.1:{port}").port == port


def test_leading_zeros_in_the_port_are_accepted() -> None:
    assert parse_address("tcp://127.0.0.1:0080").port == 80


@pytest.mark.parametrize("text, path", [
    ("unix:///tmp/app.sock", "/tmp/app.sock"),
    ("unix://relative/app.sock", "relative/app.sock"),
    ("UNIX:///tmp/x", "/tmp/x"),
])
def test_parse_unix_paths(text: str, path: str) -> None:
    a = parse_address(text)
    assert (a.network, a.family, a.path) == ("unix", socket.AF_UNIX, path)
    assert a.sockaddr == path


def test_parse_abstract_unix_names() -> None:
    a = parse_address("unix://@gnetpy-app")
    assert a.path == "@gnetpy-app"
    assert a.sockaddr == "\0gnetpy-app"  # Linux's abstract namespace


# -- parse_address: every error quotes the address -------------------------------------------


@pytest.mark.parametrize("text, fragment", [
    ("127.0.0.1:80", "no scheme"),
    ("localhost", "no scheme"),
    ("", "no scheme"),
    ("tcp:/127.0.0.1:80", "no scheme"),
    ("tcp://127.0.0.1", "missing ':port'"),
    ("tcp://", "missing ':port'"),
    ("tcp://127.0.0.1:", "port ''"),
    ("tcp://127.0.0.1:x", "port 'x'"),
    ("tcp://127.0.0.1:70000", "port '70000'"),
    ("tcp://127.0.0.1:65536", "port '65536'"),
    ("tcp://127.0.0.1:-1", "port '-1'"),
    ("tcp://127.0.0.1:+80", "port '+80'"),
    ("tcp://127.0.0.1: 80", "port ' 80'"),
    ("tcp://127.0.0.1:80/path", "port '80/path'"),
    ("tcp://127.0.0.1:\u00b2", "is not a number"),  # "²".isdigit() is True, int() refuses it
    ("tcp://127.0.0.1:\u0668\u0660", "is not a number"),  # Arabic-Indic "80"
    ("tcp://::1:80", "must be in brackets"),
    ("tcp6://fe80::1:80", "must be in brackets"),
    ("tcp://[::1:80", "missing ']'"),
    ("tcp://[::1]80", "expected ':port' after ']'"),
    ("tcp://[::1]", "expected ':port' after ']'"),
    ("tcp4://[::1]:80", "is not an IPv4 address"),
    ("udp4://[::1]:53", "is not an IPv4 address"),
    ("tcp6://127.0.0.1:80", "is not an IPv6 address"),
    ("tcp://no-such-host.invalid:80", "cannot resolve host 'no-such-host.invalid'"),
    ("unix://", "needs a path"),
    ("unix://a\0b", "cannot contain NUL"),
])
def test_bad_address_raises_invalid_address_quoting_it(text: str, fragment: str) -> None:
    with pytest.raises(InvalidAddressError) as info:
        parse_address(text)
    message = str(info.value)
    assert repr(text) in message
    assert fragment in message


@pytest.mark.parametrize("text", ["http://127.0.0.1:80", "sctp://127.0.0.1:1", "tcp7://127.0.0.1:1", "file:///x"])
def test_unknown_scheme_raises_unsupported_protocol_listing_schemes(text: str) -> None:
    with pytest.raises(UnsupportedProtocolError) as info:
        parse_address(text)
    message = str(info.value)
    assert repr(text) in message
    for scheme in ("tcp://", "tcp4://", "tcp6://", "udp://", "udp4://", "udp6://", "unix://"):
        assert scheme in message


@pytest.mark.parametrize("value", [None, 9000, b"tcp://127.0.0.1:1", ("127.0.0.1", 1)])
def test_non_string_address_is_refused(value: Any) -> None:
    with pytest.raises(InvalidAddressError, match="expected a string"):
        parse_address(value)


def test_a_unix_path_over_the_kernels_limit_names_its_length_and_the_limit() -> None:
    path = "/tmp/" + "p" * 195  # 200 bytes
    with pytest.raises(InvalidAddressError, match="200 bytes long; the kernel's limit is 107"):
        parse_address(f"unix://{path}")
    with pytest.raises(InvalidAddressError, match="abstract name is 108 bytes"):
        parse_address("unix://@" + "a" * 108)
    assert parse_address("unix:///" + "p" * 106).path == "/" + "p" * 106  # 107 bytes: the most that fits
    assert parse_address("unix://@" + "a" * 107).path == "@" + "a" * 107


def test_address_errors_are_value_errors_and_gnet_errors() -> None:
    # Callers validating input with ``except ValueError`` keep working.
    for text in ("nonsense", "http://x:1"):
        with pytest.raises(ValueError):
            parse_address(text)
        with pytest.raises(gnetpy.GnetError):
            parse_address(text)
