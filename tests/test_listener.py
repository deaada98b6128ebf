"""listener.py: address parsing, listening sockets and the socket options gnetpy applies.

``parse_address`` is checked for every scheme and for each way an address can
be wrong (the error must quote the address).  ``Listener`` is checked on real
sockets: ports, unix socket files (created, replaced when stale, refused when
not a socket, removed on close), abstract names and the listener options,
read back with ``getsockopt``.  ``configure_accepted`` and the ``set_*``
helpers are checked on real connected sockets, and once end to end through
``gnetpy.start`` on a connection the engine accepted.

Buffer sizes read back doubled: Linux reserves as much again for bookkeeping
and ``getsockopt(SO_RCVBUF)`` reports the doubled value.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
import uuid
from typing import Any, Iterator

import pytest

import gnetpy
from conftest import connect, has_ipv6_loopback, open_fds, wait_for
from gnetpy import InvalidAddressError, Options, UnsupportedProtocolError
from gnetpy.listener import (
    Listener,
    configure_accepted,
    parse_address,
    set_bind_to_device,
    set_keep_alive,
    set_read_buffer,
    set_write_buffer,
)

needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="SO_BINDTODEVICE needs CAP_NET_RAW")


def kernel_size(requested: int) -> int:
    """What getsockopt reports for a SO_RCVBUF/SO_SNDBUF of ``requested`` (below the sysctl caps)."""
    return 2 * requested


def sockopt(sock: socket.socket, level: int, name: int) -> int:
    return sock.getsockopt(level, name)


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


def test_address_errors_are_value_errors_and_gnet_errors() -> None:
    # Callers validating input with ``except ValueError`` keep working.
    for text in ("nonsense", "http://x:1"):
        with pytest.raises(ValueError):
            parse_address(text)
        with pytest.raises(gnetpy.GnetError):
            parse_address(text)


# -- Listener ------------------------------------------------------------------------------


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    """Listeners made by a test; all closed at its end."""
    made: list[Listener] = []
    yield made
    for listener in made:
        listener.close()


def listen(made: list[Listener], text: str, **options: Any) -> Listener:
    listener = Listener(parse_address(text), Options(**options))
    made.append(listener)
    return listener


def test_tcp_listener_reports_the_real_port(listeners: list[Listener]) -> None:
    listener = listen(listeners, "tcp://127.0.0.1:0")
    host, port = listener.addr  # type: ignore[misc]
    assert host == "127.0.0.1" and 0 < port < 65536
    assert listener.sock.getsockname() == (host, port)


def test_listener_listens_non_blocking_and_accepts(listeners: list[Listener]) -> None:
    listener = listen(listeners, "tcp://127.0.0.1:0")
    assert sockopt(listener.sock, socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    assert listener.sock.getblocking() is False
    assert listener.fd == listener.sock.fileno()
    with connect(listener.addr):
        conn, _ = wait_for(lambda: _try_accept(listener.sock))
        conn.close()


def _try_accept(sock: socket.socket) -> Any:
    try:
        return sock.accept()
    except BlockingIOError:
        return None


def test_close_closes_the_socket_and_is_idempotent(listeners: list[Listener]) -> None:
    listener = listen(listeners, "tcp://127.0.0.1:0")
    listener.close()
    assert listener.sock.fileno() == -1
    listener.close()


@needs_ipv6
def test_tcp6_listener_is_ipv6_only(listeners: list[Listener]) -> None:
    listener = listen(listeners, "tcp6://[::1]:0")
    assert sockopt(listener.sock, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    host, port = listener.addr  # type: ignore[misc]
    assert host == "::1" and port > 0


@needs_ipv6
def test_tcp_on_the_ipv6_wildcard_accepts_ipv4_too(listeners: list[Listener]) -> None:
    listener = listen(listeners, "tcp://[::]:0")
    assert sockopt(listener.sock, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    port = listener.addr[1]  # type: ignore[index]
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        conn, _ = wait_for(lambda: _try_accept(listener.sock))
        conn.close()


def test_udp_listener_is_not_available_in_this_version() -> None:
    before = open_fds()
    with pytest.raises(UnsupportedProtocolError, match="UDP serving is not available"):
        Listener(parse_address("udp://127.0.0.1:0"), Options())
    assert open_fds() == before


def test_bind_failure_names_the_address_and_leaks_nothing(listeners: list[Listener]) -> None:
    taken = listen(listeners, "tcp://127.0.0.1:0")
    text = f"tcp://127.0.0.1:{taken.addr[1]}"  # type: ignore[index]
    before = open_fds()
    with pytest.raises(OSError) as info:
        Listener(parse_address(text), Options())
    assert info.value.errno == errno.EADDRINUSE
    assert repr(text) in str(info.value)
    assert open_fds() == before


def test_reuse_port_lets_two_listeners_share_a_port(listeners: list[Listener]) -> None:
    first = listen(listeners, "tcp://127.0.0.1:0", reuse_port=True)
    second = listen(listeners, f"tcp://127.0.0.1:{first.addr[1]}", reuse_port=True)  # type: ignore[index]
    assert second.addr == first.addr


# -- unix listeners -------------------------------------------------------------------------


def test_unix_listener_creates_the_file_and_close_removes_it(listeners: list[Listener], tmp_path: Any) -> None:
    path = str(tmp_path / "app.sock")
    listener = listen(listeners, f"unix://{path}")
    assert listener.addr == path
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    with connect(path):
        conn, _ = wait_for(lambda: _try_accept(listener.sock))
        conn.close()
    listener.close()
    assert not os.path.exists(path)


def test_a_stale_socket_file_is_replaced(listeners: list[Listener], tmp_path: Any) -> None:
    path = str(tmp_path / "stale.sock")
    old = socket.socket(socket.AF_UNIX)
    old.bind(path)
    old.close()  # a crashed server leaves its file behind
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    listener = listen(listeners, f"unix://{path}")
    with connect(path):
        wait_for(lambda: _try_accept(listener.sock))[0].close()


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_path_that_is_not_a_socket_is_refused_and_left_intact(tmp_path: Any, kind: str) -> None:
    path = tmp_path / "precious"
    if kind == "file":
        path.write_text("keep me")
    else:
        path.mkdir()
    before = open_fds()
    with pytest.raises(OSError) as info:
        Listener(parse_address(f"unix://{path}"), Options())
    assert info.value.errno == errno.EADDRINUSE
    assert "is not a socket" in str(info.value)
    assert open_fds() == before
    if kind == "file":
        assert path.read_text() == "keep me"
    else:
        assert path.is_dir()


def test_close_leaves_a_file_that_replaced_ours(listeners: list[Listener], tmp_path: Any) -> None:
    path = tmp_path / "taken-over.sock"
    listener = listen(listeners, f"unix://{path}")
    os.unlink(path)
    path.write_text("someone else's")
    listener.close()
    assert path.read_text() == "someone else's"


def test_close_tolerates_a_file_already_removed(listeners: list[Listener], tmp_path: Any) -> None:
    path = tmp_path / "gone.sock"
    listener = listen(listeners, f"unix://{path}")
    os.unlink(path)
    listener.close()
    assert not path.exists()


def test_abstract_unix_names_leave_no_file(listeners: list[Listener], tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    name = f"@gnetpy-test-{uuid.uuid4().hex}"
    listener = listen(listeners, f"unix://{name}")
    assert listener.addr == name
    assert os.listdir(tmp_path) == []
    with connect("\0" + name[1:]):
        wait_for(lambda: _try_accept(listener.sock))[0].close()
    listener.close()
    assert os.listdir(tmp_path) == []
    # The name is free again once closed.
    listen(listeners, f"unix://{name}")


def test_an_abstract_name_in_use_is_refused(listeners: list[Listener]) -> None:
    name = f"@gnetpy-test-{uuid.uuid4().hex}"
    listen(listeners, f"unix://{name}")
    with pytest.raises(OSError) as info:
        listen(listeners, f"unix://{name}")
    assert info.value.errno == errno.EADDRINUSE


def test_reuse_port_is_ignored_for_unix_sockets(listeners: list[Listener], tmp_path: Any) -> None:
    listener = listen(listeners, f"unix://{tmp_path}/r.sock", reuse_port=True)
    assert sockopt(listener.sock, socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0


# -- listener socket options ---------------------------------------------------------------


def test_listener_options_off_by_default(listeners: list[Listener]) -> None:
    sock = listen(listeners, "tcp://127.0.0.1:0").sock
    assert sockopt(sock, socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
    assert sockopt(sock, socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0") == b""


def test_reuse_addr_and_reuse_port_are_set(listeners: list[Listener]) -> None:
    sock = listen(listeners, "tcp://127.0.0.1:0", reuse_addr=True, reuse_port=True).sock
    assert sockopt(sock, socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
    assert sockopt(sock, socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1


def test_socket_buffers_are_set_on_the_listener(listeners: list[Listener]) -> None:
    sock = listen(listeners, "tcp://127.0.0.1:0", socket_recv_buffer=40_000, socket_send_buffer=30_000).sock
    assert sockopt(sock, socket.SOL_SOCKET, socket.SO_RCVBUF) == kernel_size(40_000)
    assert sockopt(sock, socket.SOL_SOCKET, socket.SO_SNDBUF) == kernel_size(30_000)


@needs_root
def test_bind_to_device_is_set_on_the_listener(listeners: list[Listener]) -> None:
    sock = listen(listeners, "tcp://127.0.0.1:0", bind_to_device="lo").sock
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0") == b"lo"


@needs_root
def test_bind_to_an_unknown_device_names_the_option_and_leaks_nothing() -> None:
    before = open_fds()
    with pytest.raises(OSError) as info:
        Listener(parse_address("tcp://127.0.0.1:0"), Options(bind_to_device="nosuchdev0"))
    assert info.value.errno == errno.ENODEV
    assert "bind_to_device='nosuchdev0'" in str(info.value)
    assert open_fds() == before


# -- options of connected sockets --------------------------------------------------------------


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client, accepted): a connected TCP pair on 127.0.0.1, both ends with default options."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=5)
        accepted, _ = server.accept()
    yield client, accepted
    client.close()
    accepted.close()


def keepalive_settings(sock: socket.socket) -> tuple[int, int, int, int]:
    return (sockopt(sock, socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sockopt(sock, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sockopt(sock, socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sockopt(sock, socket.IPPROTO_TCP, socket.TCP_KEEPCNT))


def test_configure_accepted_defaults(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    _, sock = tcp_pair
    assert sockopt(sock, socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    configure_accepted(sock, Options(), is_tcp=True)
    assert sock.getblocking() is False
    assert sockopt(sock, socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert sockopt(sock, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


def test_configure_accepted_without_no_delay(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    _, sock = tcp_pair
    configure_accepted(sock, Options(tcp_no_delay=False), is_tcp=True)
    assert sockopt(sock, socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0


def test_configure_accepted_keepalive_defaults(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    _, sock = tcp_pair
    configure_accepted(sock, Options(tcp_keepalive=7), is_tcp=True)
    assert keepalive_settings(sock) == (1, 7, 2, 5)  # interval idle/5 = 1.4 -> 2; count 5


def test_configure_accepted_keepalive_explicit(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    _, sock = tcp_pair
    configure_accepted(sock, Options(tcp_keepalive=30, tcp_keep_interval=3, tcp_keep_count=4), is_tcp=True)
    assert keepalive_settings(sock) == (1, 30, 3, 4)


def test_configure_accepted_on_a_unix_socket_sets_only_non_blocking() -> None:
    a, b = socket.socketpair()
    with a, b:
        configure_accepted(a, Options(tcp_keepalive=10), is_tcp=False)  # must not try TCP options
        assert a.getblocking() is False


@pytest.mark.parametrize("idle, interval, expected", [
    (10, None, (10, 2)),  # default interval: idle/5
    (12, None, (12, 3)),  # 2.4 rounds up
    (0.2, None, (1, 1)),  # fractions round up, never to 0
    (10.5, None, (11, 3)),
    (60, 0.5, (60, 1)),
    (60, 0, (60, 1)),  # the kernel refuses 0: the smallest interval instead
    (32767, 32767, (32767, 32767)),
])
def test_set_keep_alive_rounds_up_to_whole_seconds(tcp_pair: tuple[socket.socket, socket.socket], idle: float,
                                                   interval: float | None, expected: tuple[int, int]) -> None:
    _, sock = tcp_pair
    set_keep_alive(sock, idle, interval)
    assert keepalive_settings(sock) == (1, *expected, 5)


def test_set_keep_alive_count(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    _, sock = tcp_pair
    set_keep_alive(sock, 5, 1, 9)
    assert keepalive_settings(sock) == (1, 5, 1, 9)


def test_set_keep_alive_zero_disables(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    _, sock = tcp_pair
    set_keep_alive(sock, 5)
    assert sockopt(sock, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    set_keep_alive(sock, 0)
    assert sockopt(sock, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


@pytest.mark.parametrize("args, name", [
    ((-1,), "idle"), ((float("nan"),), "idle"), ((float("inf"),), "idle"), ((32768,), "idle"), (("5",), "idle"),
    ((None,), "idle"), ((True,), "idle"),
    ((5, -1), "interval"), ((5, float("nan")), "interval"), ((5, 40000), "interval"),
    ((5, None, 0), "count"), ((5, None, 128), "count"), ((5, None, 2.5), "count"),
])
def test_set_keep_alive_bad_values_name_the_parameter(tcp_pair: tuple[socket.socket, socket.socket],
                                                      args: tuple[Any, ...], name: str) -> None:
    _, sock = tcp_pair
    before = keepalive_settings(sock)
    with pytest.raises(ValueError) as info:
        set_keep_alive(sock, *args)
    assert str(info.value).startswith(f"set_keep_alive: {name}=")
    assert keepalive_settings(sock) == before  # nothing half-applied


def test_set_read_and_write_buffer(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    _, sock = tcp_pair
    set_read_buffer(sock, 50_000)
    set_write_buffer(sock, 20_000)
    assert sockopt(sock, socket.SOL_SOCKET, socket.SO_RCVBUF) == kernel_size(50_000)
    assert sockopt(sock, socket.SOL_SOCKET, socket.SO_SNDBUF) == kernel_size(20_000)


@pytest.mark.parametrize("size", [0, -1, True, 1.5, "4096", None, 2**31])
def test_bad_buffer_sizes_name_the_option(tcp_pair: tuple[socket.socket, socket.socket], size: Any) -> None:
    _, sock = tcp_pair
    with pytest.raises(ValueError, match="^socket_recv_buffer: "):
        set_read_buffer(sock, size)
    with pytest.raises(ValueError, match="^socket_send_buffer: "):
        set_write_buffer(sock, size)


@needs_root
def test_set_bind_to_device() -> None:
    with socket.socket() as sock:
        set_bind_to_device(sock, "lo")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0") == b"lo"
        with pytest.raises(OSError, match="bind_to_device='nosuchdev0'"):
            set_bind_to_device(sock, "nosuchdev0")


# -- end to end: the options an engine gives its accepted connections ----------------------------


class OptionProbe(gnetpy.EventHandler):
    """Reads the socket options of each accepted connection inside on_open, through a dup."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def on_open(self, c: gnetpy.Conn) -> Any:
        with socket.socket(fileno=os.dup(c.fd)) as dup:  # closing the dup leaves c's fd open
            seen = {
                "family": dup.family,
                "blocking": os.get_blocking(dup.fileno()),  # the flag is shared with c.fd
                "nodelay": sockopt(dup, socket.IPPROTO_TCP, socket.TCP_NODELAY),
                "keepalive": keepalive_settings(dup),
                "rcvbuf": sockopt(dup, socket.SOL_SOCKET, socket.SO_RCVBUF),
                "sndbuf": sockopt(dup, socket.SOL_SOCKET, socket.SO_SNDBUF),
            }
        with self.lock:
            self.seen.append(seen)


def test_engine_applies_the_socket_options_to_accepted_connections(serve: Any) -> None:
    probe = OptionProbe()
    engine = serve(probe, "tcp://127.0.0.1:0", tcp_keepalive=7, tcp_keep_count=3,
                   socket_recv_buffer=48_000, socket_send_buffer=24_000)
    with connect(engine.addrs[0]):
        wait_for(lambda: probe.seen)
    seen = probe.seen[0]
    assert seen["family"] == socket.AF_INET
    assert seen["blocking"] is False
    assert seen["nodelay"] == 1
    assert seen["keepalive"] == (1, 7, 2, 3)
    assert seen["rcvbuf"] == kernel_size(48_000)
    assert seen["sndbuf"] == kernel_size(24_000)


def test_engine_defaults_on_accepted_connections(serve: Any) -> None:
    probe = OptionProbe()
    engine = serve(probe, "tcp://127.0.0.1:0")
    with connect(engine.addrs[0]):
        wait_for(lambda: probe.seen)
    seen = probe.seen[0]
    assert seen["nodelay"] == 1
    assert seen["keepalive"][0] == 0


def test_engine_with_tcp_no_delay_off(serve: Any) -> None:
    probe = OptionProbe()
    engine = serve(probe, "tcp://127.0.0.1:0", tcp_no_delay=False)
    with connect(engine.addrs[0]):
        wait_for(lambda: probe.seen)
    assert probe.seen[0]["nodelay"] == 0


@pytest.mark.parametrize("addr", ["udp://127.0.0.1:0", "udp4://127.0.0.1:0", "udp6://[::1]:0"])
def test_start_refuses_udp_in_this_version(addr: str) -> None:
    before = open_fds()
    with pytest.raises(UnsupportedProtocolError, match="UDP serving is not available"):
        gnetpy.start(gnetpy.EventHandler(), addr)
    assert open_fds() == before


def test_start_refuses_udp_among_other_addresses_and_releases_them(tmp_path: Any) -> None:
    before = open_fds()
    path = tmp_path / "first.sock"
    with pytest.raises(UnsupportedProtocolError):
        gnetpy.start(gnetpy.EventHandler(), [f"unix://{path}", "tcp://127.0.0.1:0", "udp://127.0.0.1:0"])
    assert open_fds() == before
    assert not path.exists()


def test_start_with_a_bad_address_binds_nothing(tmp_path: Any) -> None:
    path = tmp_path / "never.sock"
    with pytest.raises(InvalidAddressError):
        gnetpy.start(gnetpy.EventHandler(), [f"unix://{path}", "tcp://127.0.0.1"])
    assert not path.exists()  # every address is checked before any bind
