"""``engine.stats()`` and ``metrics_addr`` end to end: known traffic in, exact figures out.

Engines in threads and in worker processes serve real clients on loopback; the tests
wait (bounded) for the figures a worker publishes every half second, then require
them exact: bytes, connections, closes by cause.  The ``/metrics`` page is fetched
over HTTP, parsed with ``prometheus_client``'s parser, and fetched with curl.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

import gnetpy
from conftest import WAIT, WriteEcho, connect, exchange, recv_exact, recv_until_eof
from gnetpy import metricsserver

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODES = {"threads": {"num_event_loop": 2, "processes": False},
         "processes": {"num_event_loop": 2, "processes": True}}


def settled(engine: gnetpy.Engine, ready: Callable[[gnetpy.Stats], bool], timeout: float = WAIT) -> gnetpy.Stats:
    """``engine.stats()`` once ``ready`` says so (a worker publishes every 0.5 s); fail with the last one."""
    deadline = time.monotonic() + timeout
    while True:
        stats = engine.stats()
        if ready(stats):
            return stats
        if time.monotonic() > deadline:
            pytest.fail(f"the figures did not settle in {timeout}s: {stats}")
        time.sleep(0.02)


def fetch(engine: gnetpy.Engine, path: str = "/metrics") -> tuple[int, dict[str, str], str]:
    host, port = engine.metrics_addr  # type: ignore[misc]
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=WAIT) as reply:
            return reply.status, dict(reply.headers), reply.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read().decode()


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def per_worker(family: Any, **labels: str) -> dict[int, float]:
    return {int(s.labels["worker"]): s.value for s in family.samples
            if all(s.labels.get(k) == v for k, v in labels.items())}


# -- stats(): bytes and connections ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_bytes_and_connections_are_exact_after_known_traffic(serve: Any, mode: str) -> None:
    engine = serve(WriteEcho(), **MODES[mode])
    sizes = [1, 100, 4096, 65536, 300_000, 7]
    payloads = [[bytes([65 + i]) * size] for i, size in enumerate(sizes)]
    assert exchange(engine.addrs[0], payloads) == [p[0] for p in payloads]  # and the clients close
    total = sum(sizes)
    stats = settled(engine, lambda s: s.closed.eof == len(sizes) and s.bytes_sent == total)
    assert stats.bytes_received == stats.bytes_sent == total
    assert stats.accepted == len(sizes) and stats.connections_open == 0
    assert stats.closed.total == stats.closed.eof == len(sizes)
    assert len(stats.workers) == 2 and [w.index for w in stats.workers] == [0, 1]
    assert sum(w.bytes_received for w in stats.workers) == total
    assert all(w.accepted >= 1 for w in stats.workers)  # round robin: both served
    assert stats.worker_restarts == stats.tls_handshakes == stats.datagrams_received == 0


class Causes(gnetpy.EventHandler):
    """Echoes, except: "boom..." raises, "keep..." is left unconsumed (max_inbound_buffered closes it)."""

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        head = bytes(c.peek()[:4])
        if head == b"boom":
            raise RuntimeError("boom, as the test asked")
        if head != b"keep":
            c.write(c.next())


@pytest.mark.parametrize("mode", MODES)
def test_closes_are_counted_by_cause(serve: Any, mode: str) -> None:
    engine = serve(Causes(), idle_timeout=0.5, max_inbound_buffered=1024, **MODES[mode])
    addr = engine.addrs[0]
    with connect(addr) as s:  # eof
        s.sendall(b"hello")
        assert recv_exact(s, 5) == b"hello"
    for request in (b"boom", b"keep" + b"k" * 4000):  # handler_error, limit: the server closes
        with connect(addr) as s:
            s.sendall(request)
            assert recv_until_eof(s) == b""
    with connect(addr) as s:  # idle_timeout: says nothing, and is closed
        assert recv_until_eof(s) == b""
    stats = settled(engine, lambda s: s.closed.total == 4)
    assert (stats.closed.eof, stats.closed.handler_error, stats.closed.limit, stats.closed.idle_timeout) == (1, 1, 1, 1)
    assert stats.accepted == 4 and stats.connections_open == 0
    assert stats.bytes_sent == 5


def test_a_close_cut_short_and_backpressure_are_counted(serve: Any) -> None:
    class Flood(gnetpy.EventHandler):
        def on_open(self, c: gnetpy.Conn) -> Any:
            c.write(b"f" * (16 << 20))  # far more than the socket buffers take from a reader that does not read
            return gnetpy.Action.CLOSE

    engine = serve(Flood(), close_timeout=0.3)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(engine.addrs[0])
        stats = settled(engine, lambda s: s.closed.close_timeout == 1)
    assert stats.backpressure_pauses == 1
    assert 0 < stats.bytes_sent < 16 << 20
    assert stats.closed.total == 1


def test_datagrams_are_counted(serve: Any) -> None:
    engine = serve(WriteEcho(), "udp://127.0.0.1:0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(WAIT)
        for i in range(5):
            s.sendto(b"d" * (i + 1), engine.addrs[0])
            assert s.recv(100) == b"d" * (i + 1)
    stats = settled(engine, lambda s: s.datagrams_sent == 5)
    assert stats.datagrams_received == 5 and stats.datagrams_dropped == 0
    assert stats.bytes_received == stats.bytes_sent == 15
    assert stats.accepted == 0 and stats.closed.total == 0  # UDP has no connections to accept or close


def test_tls_handshakes_done_and_failed_are_counted(serve: Any) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    engine = serve(WriteEcho(), ssl_context=server)
    with client.wrap_socket(connect(engine.addrs[0]), server_hostname="localhost") as s:
        s.sendall(b"secret")
        assert recv_exact(s, 6) == b"secret"
    with connect(engine.addrs[0]) as s:  # not TLS: the handshake fails
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        recv_until_eof(s)
    stats = settled(engine, lambda s: s.closed.total == 2)
    assert (stats.tls_handshakes, stats.tls_failures, stats.closed.tls_failure) == (1, 1, 1)
    assert stats.tls_failures == engine.count_tls_failures()
    assert stats.bytes_received > 6 and stats.bytes_sent > 6  # records: the bytes on the wire


def test_refused_proxy_headers_are_counted(serve: Any) -> None:
    engine = serve(WriteEcho(), proxy_protocol="v1")
    with connect(engine.addrs[0]) as s:
        s.sendall(b"no header here\r\n")
        recv_until_eof(s)
    stats = settled(engine, lambda s: s.closed.total == 1)
    assert stats.proxy_refused == stats.closed.proxy_refused == engine.count_proxy_refused() == 1


def test_a_restarted_worker_goes_on_from_its_predecessors_figures(serve: Any) -> None:
    engine = serve(WriteEcho(), num_event_loop=2, processes=True)
    for _ in range(4):
        with connect(engine.addrs[0]) as s:
            s.sendall(b"y" * 1000)
            recv_exact(s, 1000)
    before = settled(engine, lambda s: s.bytes_sent == 4000 and s.closed.eof == 4)
    victim: Any = engine._loops[0]  # its WorkerProcess: the pid, and whether it serves
    os.kill(victim.pid, signal.SIGKILL)
    after = settled(engine, lambda s: s.worker_restarts == 1 and victim.state == "serving")
    assert after.workers[0].worker_restarts == 1 and after.workers[1].worker_restarts == 0
    assert after.workers[0].bytes_received == before.workers[0].bytes_received > 0
    assert after.bytes_received == 4000 and after.closed.eof == 4
    with connect(engine.addrs[0]) as s:  # and both serve, and count, again
        s.sendall(b"z" * 10)
        recv_exact(s, 10)
    settled(engine, lambda s: s.bytes_sent == 4010)


# -- the /metrics page --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_the_page_has_what_stats_has(serve: Any, mode: str) -> None:
    engine = serve(WriteEcho(), metrics_addr="tcp://127.0.0.1:0", **MODES[mode])
    assert engine.metrics_addr is not None and engine.metrics_addr not in engine.addrs
    for _ in range(3):
        with connect(engine.addrs[0]) as s:
            s.sendall(b"m" * 300)
            recv_exact(s, 300)
    stats = settled(engine, lambda s: s.bytes_sent == 900 and s.closed.eof == 3)
    status, headers, text = fetch(engine)
    assert status == 200 and headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    found = families(text)
    assert per_worker(found["gnetpy_bytes_received"]) == {w.index: w.bytes_received for w in stats.workers}
    assert sum(per_worker(found["gnetpy_bytes_sent"]).values()) == 900
    assert sum(per_worker(found["gnetpy_connections_closed"], cause="eof").values()) == 3
    assert per_worker(found["gnetpy_connections_open"]) == {0: 0, 1: 0}
    assert found["gnetpy_connections_open"].type == "gauge"
    assert found["gnetpy_connections_accepted"].type == "counter"
    assert stats.accepted == 3  # the scrape is not a connection of the engine's
    assert fetch(engine, "/")[0] == 404
    assert engine.stats().accepted == 3


def test_the_page_answers_only_what_it_should(serve: Any) -> None:
    engine = serve(WriteEcho(), metrics_addr="tcp://127.0.0.1:0")

    def ask(request: bytes) -> bytes:
        with connect(engine.metrics_addr) as s:
            s.sendall(request)
            return recv_until_eof(s)  # one request per connection: closed after the reply

    assert ask(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert ask(b"GET /other HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert ask(b"hello\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    head = ask(b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert ask(b"GET /metrics HTTP/1.1\r\nX-Long: " + b"a" * 10_000).startswith(b"HTTP/1.1 431 ")
    with connect(engine.metrics_addr) as s:  # arriving in pieces
        for piece in (b"GET /met", b"rics HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
            s.sendall(piece)
            time.sleep(0.01)
        assert b"gnetpy_bytes_sent_total" in recv_until_eof(s)


def test_scrapes_are_bounded_in_number_and_time(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metricsserver, "EXCHANGE_TIMEOUT", 0.3)
    engine = serve(WriteEcho(), metrics_addr="tcp://127.0.0.1:0")
    idle = [connect(engine.metrics_addr) for _ in range(metricsserver.MAX_CLIENTS)]
    try:
        time.sleep(0.1)  # accepted
        with connect(engine.metrics_addr) as extra:  # one too many: closed at once
            assert recv_until_eof(extra) == b""
        started = time.monotonic()
        for s in idle:  # silent ones: closed at the deadline
            assert recv_until_eof(s) == b""
        assert time.monotonic() - started < 2.0
    finally:
        for s in idle:
            s.close()
    assert fetch(engine)[0] == 200


def test_curl_reads_the_page(serve: Any) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (CI installs it: .ci/run)")
    engine = serve(WriteEcho(), metrics_addr="tcp://127.0.0.1:0", num_event_loop=2, processes=True)
    host, port = engine.metrics_addr
    url = f"http://{host}:{port}/metrics"
    result = subprocess.run(["curl", "-sS", "--fail", "-i", url], capture_output=True, text=True, timeout=WAIT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 200 OK")
    assert "content-type: text/plain; version=0.0.4" in result.stdout.lower()
    assert 'gnetpy_connections_open{worker="1"} 0' in result.stdout
    body = result.stdout.split("\n\n", 1)[1]  # text=True: the CRLFs read as line feeds
    assert "gnetpy_worker_restarts" in families(body)
    missing = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{host}:{port}/"],
                             capture_output=True, text=True, timeout=WAIT)
    assert missing.stdout == "404"


def test_a_metrics_port_in_use_fails_the_start_and_leaves_nothing(serve: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot bind 'tcp://127.0.0.1:{port}'"):
            gnetpy.start(WriteEcho(), "tcp://127.0.0.1:0", metrics_addr=f"tcp://127.0.0.1:{port}")


def test_the_echo_command_serves_metrics() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "gnetpy", "echo", "--addr", "tcp://127.0.0.1:0",
                             "--metrics-addr", "tcp://127.0.0.1:0"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    # A thread reads the lines: select() on the pipe would miss a line readline() already buffered.
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True)
    reader.start()
    try:
        echo = metrics = None
        while echo is None or metrics is None:
            line = lines.get(timeout=WAIT)
            if match := re.search(r"echo server on \[\('([\d.]+)', (\d+)\)\]", line):
                echo = (match.group(1), int(match.group(2)))
            if match := re.search(r"metrics on (http://\S+/metrics)", line):
                metrics = match.group(1)
        with socket.create_connection(echo, timeout=WAIT) as s:
            s.sendall(b"ping")
            assert recv_exact(s, 4) == b"ping"
        deadline = time.monotonic() + WAIT
        while True:  # the connection's close reaches the figures a moment after the echo
            with urllib.request.urlopen(metrics, timeout=WAIT) as reply:
                found = families(reply.read().decode())
            if per_worker(found["gnetpy_bytes_sent"]) == {0: 4.0} or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert per_worker(found["gnetpy_bytes_sent"]) == {0: 4.0}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(WAIT)  # the pipe's end: the server has exited
            proc.stdout.close()  # type: ignore[union-attr]
    assert proc.returncode == 0
