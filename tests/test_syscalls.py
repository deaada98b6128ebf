"""syscalls (``_sysio`` where built): read/write with the results and errors of os.read/os.write;
recvfrom_raw/sendto_raw with those of socket.recvfrom/sendto, the peer kept as sockaddr bytes."""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import struct
import threading
import time
from typing import Any, Callable

import pytest

from gnetpy import _compiled, syscalls

try:
    from gnetpy import _sysio
except ImportError:
    _sysio = None  # type: ignore[assignment]


def test_syscalls_are_the_helper_where_it_is_built_and_the_os_module_otherwise() -> None:
    if _compiled.disabled() or _sysio is None:
        assert (syscalls.read, syscalls.write) == (os.read, os.write)
    else:
        assert (syscalls.read, syscalls.write) == (_sysio.read, _sysio.write)


def test_raw_datagram_calls_exist_only_with_the_helper() -> None:
    if _compiled.disabled() or _sysio is None:
        assert syscalls.recvfrom_raw is None and syscalls.sendto_raw is None
    else:
        assert (syscalls.recvfrom_raw, syscalls.sendto_raw) == (_sysio.recvfrom, _sysio.sendto)


IMPLEMENTATIONS = [pytest.param((os.read, os.write), id="os")]
if _sysio is not None:
    IMPLEMENTATIONS.append(pytest.param((_sysio.read, _sysio.write), id="_sysio"))


@pytest.fixture
def pair() -> Any:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def outcome(fn: Callable[[], Any]) -> Any:
    try:
        return ("ok", fn())
    except Exception as exc:  # compared: type and errno
        return (type(exc), getattr(exc, "errno", None))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_read_and_write_match_the_os_module(impl: Any, pair: Any) -> None:
    read, write = impl
    a, b = pair
    assert outcome(lambda: read(a.fileno(), 100)) == (BlockingIOError, errno.EAGAIN)
    assert write(b.fileno(), b"hello") == 5
    assert write(b.fileno(), memoryview(b"xhello world")[1:]) == 11
    assert write(b.fileno(), bytearray(b"!")) == 1
    assert read(a.fileno(), 3) == b"hel"          # a short buffer: what fits
    assert read(a.fileno(), 1000) == b"lohello world!"  # a large one: what there is, trimmed
    assert read(a.fileno(), 0) == b""
    assert outcome(lambda: read(a.fileno(), -1)) == outcome(lambda: os.read(a.fileno(), -1))
    assert outcome(lambda: write(b.fileno(), "text"))[0] is TypeError
    sent = 0
    while True:  # a full socket buffer: partial writes, then EAGAIN
        result = outcome(lambda: write(b.fileno(), b"x" * 65536))
        if result[0] != "ok":
            assert result == (BlockingIOError, errno.EAGAIN)
            break
        sent += result[1]
    assert sent > 0


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_errors_match_the_os_module(impl: Any, pair: Any) -> None:
    read, write = impl
    a, b = pair
    b.close()
    assert read(a.fileno(), 10) == b""  # the peer closed: end of file
    assert outcome(lambda: write(a.fileno(), b"x")) == (BrokenPipeError, errno.EPIPE)
    bad = os.open(os.devnull, os.O_RDONLY)
    os.close(bad)
    assert outcome(lambda: read(bad, 1)) == (OSError, errno.EBADF)
    assert outcome(lambda: write(bad, b"x")) == (OSError, errno.EBADF)
    assert outcome(lambda: read(-1, 1)) == outcome(lambda: os.read(-1, 1)) == (OSError, errno.EBADF)
    assert outcome(lambda: write(-1, b"x")) == outcome(lambda: os.write(-1, b"x")) == (OSError, errno.EBADF)
    assert outcome(lambda: read(a.fileno(), "1"))[0] is outcome(lambda: os.read(a.fileno(), "1"))[0] is TypeError


# -- datagrams ---------------------------------------------------------------------------------

def sockaddr_in(host: str, port: int) -> bytes:
    # struct sockaddr_in: family (host order), port (network order), address, 8 bytes of zeros.
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)


def sockaddr_in6(host: str, port: int, flowinfo: int, scope_id: int) -> bytes:
    return (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, flowinfo)
            + socket.inet_pton(socket.AF_INET6, host) + struct.pack("=I", scope_id))


def test_sockaddr_to_addr_gives_what_socket_recvfrom_gives() -> None:
    assert syscalls.sockaddr_to_addr(sockaddr_in("127.0.0.1", 5353)) == ("127.0.0.1", 5353)
    assert syscalls.sockaddr_to_addr(sockaddr_in6("fe80::1", 65535, 0x12345, 7)) == ("fe80::1", 65535, 0x12345, 7)
    assert syscalls.sockaddr_to_addr(("10.0.0.1", 1)) == ("10.0.0.1", 1)  # a tuple passes through
    with pytest.raises(ValueError, match="family"):
        syscalls.sockaddr_to_addr(struct.pack("=H", socket.AF_UNIX) + b"/tmp/x")
    with pytest.raises(ValueError, match="3 bytes"):
        syscalls.sockaddr_to_addr(sockaddr_in("127.0.0.1", 1)[:3])


needs_sysio = pytest.mark.skipif(_sysio is None, reason="_sysio is part of the compiled build; "
                                                        "pure Python uses socket.recvfrom/sendto")
FAMILIES = [pytest.param((socket.AF_INET, "127.0.0.1"), id="ipv4"),
            pytest.param((socket.AF_INET6, "::1"), id="ipv6")]


@pytest.fixture(params=FAMILIES)
def datagram_pair(request: Any) -> Any:
    family, host = request.param
    try:
        server = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:
        pytest.skip(f"no {host} sockets here: {exc}")
    client = socket.socket(family, socket.SOCK_DGRAM)
    try:
        server.bind((host, 0))
        client.bind((host, 0))
    except OSError as exc:
        server.close()
        client.close()
        pytest.skip(f"cannot bind {host}: {exc}")
    server.setblocking(False)
    client.settimeout(5)
    yield server, client
    server.close()
    client.close()


def receive(sock: socket.socket, recv: Callable[[], Any], timeout: float = 5.0) -> Any:
    """recv() once a datagram is there (the sockets are non-blocking)."""
    assert select.select([sock], [], [], timeout)[0], "no datagram within the timeout"
    return recv()


@needs_sysio
def test_recvfrom_raw_matches_socket_recvfrom_and_replies_by_sendto_raw(datagram_pair: Any) -> None:
    server, client = datagram_pair
    fd = server.fileno()
    assert outcome(lambda: _sysio.recvfrom(fd, 65536)) == (BlockingIOError, errno.EAGAIN)
    for size in (0, 1, 64, 65507):
        payload = os.urandom(size)
        client.sendto(payload, server.getsockname())
        data, raw = receive(server, lambda: _sysio.recvfrom(fd, 65536))
        assert data == payload and raw.__class__ is bytes
        client.sendto(b"again", server.getsockname())
        assert receive(server, lambda: server.recvfrom(65536)) == (b"again", syscalls.sockaddr_to_addr(raw))
        assert syscalls.sockaddr_to_addr(raw) == client.getsockname()
        assert _sysio.sendto(fd, memoryview(payload), raw) == size
        assert client.recvfrom(65536) == (payload, server.getsockname())
    client.sendto(b"0123456789", server.getsockname())
    assert receive(server, lambda: _sysio.recvfrom(fd, 4))[0] == b"0123"  # as recvfrom: the rest is gone


@needs_sysio
def test_raw_datagram_calls_refuse_bad_arguments_as_socket_calls_do(datagram_pair: Any) -> None:
    server, _ = datagram_pair
    fd = server.fileno()
    with pytest.raises(ValueError, match="65536"):
        _sysio.recvfrom(fd, 65537)
    with pytest.raises(ValueError):
        _sysio.recvfrom(fd, -1)
    with pytest.raises(TypeError, match="sockaddr"):
        _sysio.sendto(fd, b"x", ("127.0.0.1", 9))
    with pytest.raises(TypeError, match="sockaddr"):
        _sysio.sendto(fd, b"x", b"\x02")
    with pytest.raises(TypeError):
        _sysio.sendto(fd, "text", sockaddr_in("127.0.0.1", 9))
    bad = os.open(os.devnull, os.O_RDONLY)
    os.close(bad)
    assert outcome(lambda: _sysio.recvfrom(bad, 10)) == (OSError, errno.EBADF)
    assert outcome(lambda: _sysio.sendto(bad, b"x", sockaddr_in("127.0.0.1", 9))) == (OSError, errno.EBADF)


# -- epoll_wait ----------------------------------------------------------------------------

@pytest.fixture
def epoll_pair(pair: Any) -> Any:
    ep = select.epoll()
    a, b = pair
    ep.register(a.fileno(), select.EPOLLIN)
    yield ep, a, b
    ep.close()


@needs_sysio
def test_epoll_wait_gives_what_epoll_poll_gives(epoll_pair: Any) -> None:
    ep, a, b = epoll_pair
    fd = ep.fileno()
    assert _sysio.epoll_wait(fd, 0, 8) == ep.poll(0, 8) == []
    started = time.monotonic()
    assert _sysio.epoll_wait(fd, 0.05, 8) == []  # waited for the timeout (rounded up to ms)
    assert time.monotonic() - started >= 0.045
    b.send(b"x")
    assert _sysio.epoll_wait(fd, -1, 8) == ep.poll(-1, 8) == [(a.fileno(), select.EPOLLIN)]
    ep.register(b.fileno(), select.EPOLLOUT)
    assert len(_sysio.epoll_wait(fd, 0, 1)) == 1  # maxevents bounds one call and len(_sysio.epoll_wait(fd, 0, 8)) == 2
    assert len(_sysio.epoll_wait(fd, 0, 1000)) == 2  # more room than the stack holds: allocated
    with pytest.raises(ValueError, match="maxevents"):
        _sysio.epoll_wait(fd, 0, 0)
    bad = os.open(os.devnull, os.O_RDONLY)
    os.close(bad)
    assert outcome(lambda: _sysio.epoll_wait(bad, 0, 8)) == (OSError, errno.EBADF)


@needs_sysio
def test_epoll_wait_releases_the_gil_while_it_waits(epoll_pair: Any) -> None:
    ep, a, b = epoll_pair
    sender = threading.Timer(0.05, b.send, (b"x",))  # a Python thread: it needs the GIL to send
    sender.start()
    try:
        assert _sysio.epoll_wait(ep.fileno(), 10, 8) == [(a.fileno(), select.EPOLLIN)]
    finally:
        sender.join(10)


@needs_sysio
@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
def test_epoll_wait_runs_signal_handlers_and_goes_on_waiting_or_raises(epoll_pair: Any) -> None:
    ep, _, _ = epoll_pair
    calls: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda *_: calls.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        started = time.monotonic()
        assert _sysio.epoll_wait(ep.fileno(), 0.15, 8) == []  # EINTR at 20 ms: handler, then the rest
        assert calls == [1] and time.monotonic() - started >= 0.14

        def stop(*_: Any) -> None:
            raise KeyboardInterrupt
        signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        with pytest.raises(KeyboardInterrupt):
            _sysio.epoll_wait(ep.fileno(), 5, 8)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_the_epoll_poller_waits_with_the_helper_where_it_is_built() -> None:
    from gnetpy.poller import EpollPoller
    poller = EpollPoller()
    try:
        if syscalls.epoll_wait is None:
            assert poller.poll == poller._ep.poll
        else:
            assert poller.poll.func is syscalls.epoll_wait  # type: ignore[attr-defined]
            assert poller.poll.args == (poller._ep.fileno(),)  # type: ignore[attr-defined]
    finally:
        poller.close()
