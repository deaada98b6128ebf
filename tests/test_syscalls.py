"""syscalls.read/write (``_sysio`` where built): the same results and errors as os.read/os.write."""

from __future__ import annotations

import errno
import os
import socket
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
