"""Inherited listeners: fd://N and systemd:// (socket activation), with Debian's systemd-socket-activate.

A supervisor binds the socket and passes it on; gnetpy serves it as it is -- stream or
datagram, inet or unix, read from the descriptor -- and never removes a unix socket file it
did not create.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

import gnetpy
from conftest import WAIT, WriteEcho, connect, recv_exact

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def listening(family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM, where: Any = ("127.0.0.1", 0)) -> int:
    """A bound (and, for a stream, listening) socket's descriptor, handed over: the engine owns it now."""
    sock = socket.socket(family, kind)
    sock.bind(where)
    if kind == socket.SOCK_STREAM:
        sock.listen(16)
    return sock.detach()


def test_fd_serves_an_inherited_tcp_listener(serve: Any) -> None:
    fd = listening()
    engine = serve(WriteEcho(), f"fd://{fd}")
    host, port = engine.addrs[0]
    assert host == "127.0.0.1" and port > 0
    with connect(engine.addrs[0]) as s:
        s.sendall(b"inherited")
        assert recv_exact(s, 9) == b"inherited"


def test_fd_serves_an_inherited_unix_listener_and_leaves_its_file(serve: Any, tmp_path: Any) -> None:
    path = str(tmp_path / "passed.sock")
    engine = serve(WriteEcho(), f"fd://{listening(socket.AF_UNIX, where=path)}")
    assert engine.addrs == [path]
    with connect(path) as s:
        s.sendall(b"unix")
        assert recv_exact(s, 4) == b"unix"
    engine.stop()
    assert os.path.exists(path)  # the file is whoever bound it's, not ours to remove


def test_fd_serves_an_inherited_udp_socket(serve: Any) -> None:
    engine = serve(WriteEcho(), f"fd://{listening(kind=socket.SOCK_DGRAM)}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(WAIT)
        s.sendto(b"datagram", engine.addrs[0])
        assert s.recv(100) == b"datagram"


def test_an_inherited_listener_in_worker_processes(serve: Any) -> None:
    engine = serve(WriteEcho(), f"fd://{listening()}", num_event_loop=2, processes=True)
    for _ in range(4):
        with connect(engine.addrs[0]) as s:
            s.sendall(b"w")
            assert recv_exact(s, 1) == b"w"


@pytest.mark.parametrize("text, options, message", [
    ("fd://x1", {}, "expected fd://N"),
    ("fd://987654", {}, "descriptor 987654 is not open"),
    ("systemd://", {}, "LISTEN_FDS is not set"),
])
def test_bad_inherited_addresses_are_named(text: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(gnetpy.InvalidAddressError, match=message):
        gnetpy.start(WriteEcho(), text, **options)


def test_a_descriptor_that_is_not_a_socket_is_refused(tmp_path: Any) -> None:
    with open(tmp_path / "file", "w") as f:
        with pytest.raises(gnetpy.InvalidAddressError, match="is not a socket"):
            gnetpy.start(WriteEcho(), f"fd://{f.fileno()}")


def test_sockets_passed_to_another_process_are_not_taken(monkeypatch: Any) -> None:
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    with pytest.raises(gnetpy.InvalidAddressError, match="LISTEN_PID does not match"):
        gnetpy.start(WriteEcho(), "systemd://")


@pytest.mark.parametrize("options, message", [
    ({"reuse_port": True}, "reuse_port.*needs an address to bind"),
    ({"num_event_loop": 2, "processes": True}, "inherited udp socket"),
])
def test_what_an_inherited_socket_cannot_do_is_named(options: dict[str, Any], message: str) -> None:
    kind = socket.SOCK_DGRAM if "processes" in options else socket.SOCK_STREAM
    fd = listening(kind=kind)
    try:
        with pytest.raises(ValueError, match=message):
            gnetpy.start(WriteEcho(), f"fd://{fd}", **options)
    finally:
        os.close(fd)


ACTIVATED = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {src!r})
    import gnetpy

    class Echo(gnetpy.EventHandler):
        def on_boot(self, engine):
            print("serving", engine.addrs, os.environ.get("LISTEN_FDS"), flush=True)
        def on_traffic(self, c):
            c.write(c.next())

    gnetpy.run(Echo(), {address!r})
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate is not installed (Debian's systemd package)")
@pytest.mark.parametrize("names", [None, "other:web"])
def test_systemd_socket_activation_serves_the_first_connection(tmp_path: Any, names: str | None) -> None:
    script = tmp_path / "server.py"
    script.write_text(ACTIVATED.format(src=os.path.join(ROOT, "src"),
                                       address="systemd://web" if names else "systemd://"))
    ports = [free_port() for _ in range(2 if names else 1)]
    args = ["systemd-socket-activate", *[f"-l127.0.0.1:{p}" for p in ports]]
    if names:
        args.append(f"--fdname={names}")
    proc = subprocess.Popen([*args, sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + WAIT
        lines: list[str] = []
        while len([line for line in lines if line.startswith("Listening")]) < len(ports):
            assert time.monotonic() < deadline, lines
            lines.append(proc.stdout.readline())
        served = ports[-1]  # "web" is the second with names; the only one without
        # The program starts at this first connection: it must be the one to answer it, nothing refused.
        with socket.create_connection(("127.0.0.1", served), timeout=WAIT) as s:
            s.sendall(b"first")
            assert recv_exact(s, 5) == b"first"
        serving = next(line for line in iter(proc.stdout.readline, "") if line.startswith("serving"))
        assert f"('127.0.0.1', {served})" in serving and serving.rstrip().endswith("None")  # variables cleared
        assert re.search(r"\[\('127\.0\.0\.1', \d+\)\]", serving)  # one listener: only "web" with names
    finally:
        proc.terminate()
        proc.wait(WAIT)
        proc.stdout.close()
