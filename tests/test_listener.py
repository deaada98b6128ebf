"""listener.py: listening sockets on real ports and paths.

Ports, unix socket files (created, replaced when stale, refused when not a
socket, removed on close), abstract names, and the options set on listeners,
read back with ``getsockopt``.

Buffer sizes read back doubled: Linux reserves as much again for bookkeeping
and ``getsockopt(SO_RCVBUF)`` reports the doubled value.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import uuid
from typing import Any, Iterator

import pytest

from conftest import (
    connect,
    kernel_size,
    needs_ipv6,
    needs_root,
    open_fds,
    sockopt,
    wait_for,
)
from gnetpy import Options, UnsupportedProtocolError
from gnetpy.address import parse_address
from gnetpy.listener import Listener

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


def test_a_stream_listener_refuses_a_udp_address() -> None:
    before = open_fds()
    with pytest.raises(UnsupportedProtocolError, match="datagram sockets are udp.DatagramListener's"):
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


def test_a_live_unix_socket_is_not_taken_over(listeners: list[Listener], tmp_path: Any) -> None:
    """A second server on a path another one serves gets EADDRINUSE; the first keeps its file and clients."""
    path = str(tmp_path / "live.sock")
    first = listen(listeners, f"unix://{path}")
    with pytest.raises(OSError) as info:
        Listener(parse_address(f"unix://{path}"), Options())
    assert info.value.errno == errno.EADDRINUSE and path in str(info.value)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    with connect(path):
        wait_for(lambda: _try_accept(first.sock))[0].close()


def test_a_live_unix_socket_with_a_full_backlog_is_still_live(tmp_path: Any) -> None:
    path = str(tmp_path / "busy.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(0)
        waiting = []
        try:
            for _ in range(8):  # fill the backlog: further connects would block
                c = socket.socket(socket.AF_UNIX)
                c.setblocking(False)
                try:
                    c.connect(path)
                except BlockingIOError:
                    c.close()
                    break
                waiting.append(c)
            with pytest.raises(OSError) as info:
                Listener(parse_address(f"unix://{path}"), Options())
            assert info.value.errno == errno.EADDRINUSE
        finally:
            for c in waiting:
                c.close()


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
