"""sockopts.py: ``configure_accepted`` and the ``set_*`` helpers on real connected sockets, and end to end.

The end-to-end tests check the options an engine gives the connections it
accepts, through ``gnetpy.start``.  Buffer sizes read back doubled (Linux
reserves as much again for bookkeeping).
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any, Iterator

import pytest

import gnetpy
from conftest import (
    connect,
    kernel_size,
    needs_root,
    open_fds,
    sockopt,
    wait_for,
)
from gnetpy import InvalidAddressError, Options
from gnetpy.sockopts import (
    configure_accepted,
    set_bind_to_device,
    set_keep_alive,
    set_read_buffer,
    set_write_buffer,
)

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


def test_a_udp_port_in_use_fails_the_start_and_releases_the_other_addresses(tmp_path: Any) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_REUSEPORT: nobody may share it
    taken.bind(("127.0.0.1", 0))
    try:
        before = open_fds()
        path = tmp_path / "first.sock"
        with pytest.raises(OSError, match="cannot bind 'udp://127.0.0.1:"):
            gnetpy.start(gnetpy.EventHandler(), [f"unix://{path}", "tcp://127.0.0.1:0",
                                                 f"udp://127.0.0.1:{taken.getsockname()[1]}"])
        assert open_fds() == before
        assert not path.exists()
    finally:
        taken.close()


def test_start_with_a_bad_address_binds_nothing(tmp_path: Any) -> None:
    path = tmp_path / "never.sock"
    with pytest.raises(InvalidAddressError):
        gnetpy.start(gnetpy.EventHandler(), [f"unix://{path}", "tcp://127.0.0.1"])
    assert not path.exists()  # every address is checked before any bind
