"""``python -m gnetpy`` and examples/echo.py, run as users run them."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from typing import Any

import pytest

from conftest import WAIT, recv_exact

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}


def start_server(args: list[str]) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for _ in range(20):
        ready, _, _ = select.select([proc.stdout], [], [], WAIT)
        if not ready:
            break
        line = proc.stdout.readline()
        match = re.search(r"echo server on \[\('([\d.]+)', (\d+)\)\]", line)
        if match:
            return proc, (match.group(1), int(match.group(2)))
    proc.kill()
    raise AssertionError(f"no address line from {args}: {proc.communicate(timeout=WAIT)[0]}")


def stop_server(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=WAIT)
        raise
    assert proc.returncode == 0, out
    return out


@pytest.mark.parametrize("args", [
    ["-m", "gnetpy", "echo", "--addr", "tcp://127.0.0.1:0", "--loops", "3", "--lb", "least-connections"],
    ["-m", "gnetpy", "echo", "--addr", "tcp://127.0.0.1:0", "--loops", "2", "--reuse-port", "--edge-triggered"],
    ["examples/echo.py", "--addr", "tcp://127.0.0.1:0", "--loops", "2", "--lb", "source-addr-hash"],
])
def test_echo_server_commands(args: list[str]) -> None:
    proc, addr = start_server(args)
    try:
        for _ in range(3):
            with socket.create_connection(addr, timeout=WAIT) as s:
                s.sendall(b"hello gnetpy")
                assert recv_exact(s, 12) == b"hello gnetpy"
    finally:
        out = stop_server(proc)
    assert "SIGTERM received; stopping" in out


def test_tls_echo_example_makes_a_certificate_and_echoes_over_tls(tmp_path: Any) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("examples/tls_echo.py makes its certificate with the openssl command")
    proc, addr = start_server(["examples/tls_echo.py", "--addr", "tcp://127.0.0.1:0", "--cert-dir", str(tmp_path)])
    try:
        context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))  # self-signed: its own CA
        for host in ("localhost", "127.0.0.1"):
            with context.wrap_socket(socket.create_connection(addr, timeout=WAIT), server_hostname=host) as s:
                s.sendall(b"hello over TLS")
                assert recv_exact(s, 14) == b"hello over TLS"
                assert s.version() == "TLSv1.3"
    finally:
        out = stop_server(proc)
    assert "TLSv1.3" in out  # on_open printed c.tls.version()
    assert oct((tmp_path / "key.pem").stat().st_mode & 0o777) == "0o600"


def test_bad_arguments_are_reported(tmp_path: Any) -> None:
    for args, message in ((["echo", "--lb", "random"], "invalid choice: 'random'"),
                          (["echo", "--addr", "http://x:1"], "unsupported scheme 'http'"),
                          ([], "required: command")):
        result = subprocess.run([sys.executable, "-m", "gnetpy", *args], cwd=tmp_path, env=ENV,
                                capture_output=True, text=True, timeout=WAIT)
        assert result.returncode != 0
        assert message in result.stderr, result.stderr


def test_bench_help_runs_from_the_checkout() -> None:
    result = subprocess.run([sys.executable, "-m", "gnetpy", "bench", "--help"], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=WAIT)
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout


def test_a_second_ctrl_c_stops_at_once_and_exits_130() -> None:
    """The echo server cannot flush to a client that sends and never reads; a second SIGINT gives up on it."""
    proc, addr = start_server(["-m", "gnetpy", "echo", "--addr", "tcp://127.0.0.1:0"])
    try:
        with socket.create_connection(addr, timeout=WAIT) as s:
            s.setblocking(False)
            sent, deadline = 0, time.monotonic() + 1.0
            while sent < 64 << 20 and time.monotonic() < deadline:  # fill every buffer on the way back
                try:
                    sent += s.send(b"x" * 65536)
                except BlockingIOError:
                    select.select([], [s], [], 0.05)
            assert sent > 1 << 20
            proc.send_signal(signal.SIGINT)
            select.select([], [], [], 0.5)
            assert proc.poll() is None
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)
    assert proc.returncode == 130, out
    assert "unsent output was dropped" in out and "SIGINT received again" in out
