"""gnetpy behind a real HAProxy (Debian's): the PROXY header it sends, its health checks, and a scale-out drill.

HAProxy runs in the foreground (-db), with a config written for each test (the
drill uses examples/haproxy/haproxy.cfg itself), and is stopped in every path.
Clients connect from 127.0.0.2 and 127.0.0.3, so the address the handler sees
can only have come from the header. ``examples/haproxy/launch.py`` provides the
HAProxy and engine-process helpers.  The drill's clients live here and check
every byte they receive themselves.
"""

from __future__ import annotations

import importlib.util
import os
import selectors
import shutil
import socket
import ssl
import tempfile
import threading
import time
from typing import Any, Iterator

import pytest

import gnetpy
from conftest import WAIT, read_line, recv_exact, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "haproxy")
_spec = importlib.util.spec_from_file_location("haproxy_example_launch", os.path.join(EXAMPLE, "launch.py"))
assert _spec is not None and _spec.loader is not None
launch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launch)

pytestmark = pytest.mark.skipif(launch.haproxy_binary() is None,
                                reason="HAProxy is not installed (Debian: apt-get install haproxy)")

CHECKS = "check check-send-proxy inter 200ms fall 2 rise 1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def short_dir() -> Iterator[str]:
    """For the stats socket: a unix socket path must fit in 108 bytes, and tmp_path's may not."""
    path = tempfile.mkdtemp(prefix="gnetpy-hap-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def haproxy(tmp_path: Any, short_dir: str) -> Iterator[Any]:
    """``haproxy(config_text=None, config_path=None, env={})``: a started HAProxy, stopped when the test ends."""
    started: list[Any] = []
    log = open(tmp_path / "haproxy.log", "w")

    def start(config_text: str | None = None, config_path: str | None = None, env: Any = None) -> Any:
        stats = os.path.join(short_dir, f"stats{len(started)}.sock")
        if config_text is not None:
            config_path = str(tmp_path / f"haproxy{len(started)}.cfg")
            with open(config_path, "w") as f:
                f.write(config_text.replace("@STATS@", stats))
        proc = launch.HAProxy(config_path, {**(env or {}), "STATS_SOCKET": stats}, stats, log=log)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()
        log.close()


def one_backend_config(front: int, backend: int, send_proxy: str) -> str:
    return f"""\
global
    maxconn 256
    nbthread 1
    stats socket @STATS@ mode 600 level admin

defaults
    mode tcp
    timeout connect 1s
    timeout client 10s
    timeout server 10s

frontend fe
    bind 127.0.0.1:{front}
    default_backend be

backend be
    server s1 127.0.0.1:{backend} {send_proxy} {CHECKS}
"""


class Seen(gnetpy.EventHandler):
    """Greets each connection with the addresses on_open saw, echoes, and keeps every c.proxy."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.opened: list[tuple[Any, Any, Any]] = []

    def on_open(self, c: gnetpy.Conn) -> Any:
        with self.lock:
            self.opened.append((c.remote_addr, c.local_addr, c.proxy))
        c.write(f"{c.remote_addr!r}|{c.local_addr!r}\n".encode())

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.write(c.next())


def refused(engine: gnetpy.Engine) -> int:
    return engine.count_proxy_refused()


@pytest.mark.parametrize("version, send_proxy", [("v1", "send-proxy"), ("v2", "send-proxy-v2")])
def test_through_haproxy_the_handler_sees_the_client_and_checks_pass(serve: Any, haproxy: Any, version: str,
                                                                     send_proxy: str) -> None:
    handler = Seen()
    engine = serve(handler, proxy_protocol=version)
    front = free_port()
    hap = haproxy(one_backend_config(front, engine.addrs[0][1], send_proxy))
    hap.wait_status("s1", "UP")
    for source in ("127.0.0.2", "127.0.0.3"):
        with socket.create_connection(("127.0.0.1", front), timeout=WAIT, source_address=(source, 0)) as s:
            remote, local = read_line(s).split("|")
            assert remote == repr(s.getsockname()) and local == repr(("127.0.0.1", front))
            payload = bytes(k % 251 for k in range(100_000))
            s.sendall(payload)
            assert recv_exact(s, len(payload)) == payload
    time.sleep(1.0)  # five check intervals
    row = hap.stat()["s1"]
    assert row["status"] == "UP" and row["check_status"].removeprefix("* ") == "L4OK" and row["chkfail"] == "0", row
    assert refused(engine) == 0
    with handler.lock:
        checks = [info for remote, _, info in handler.opened if remote[0] == "127.0.0.1"]
    assert len(checks) >= 3, f"only {len(checks)} health checks reached the engine"
    if version == "v2":  # check-send-proxy with v2: LOCAL, and the socket's own addresses are kept
        assert all(info.command == "LOCAL" and info.family == "UNKNOWN" for info in checks)
    else:  # v1 has no LOCAL: HAProxy sends its own check connection's addresses
        assert all(info.command == "PROXY" and info.family == "TCP4" for info in checks)


def test_a_layer7_check_talks_through_the_header(serve: Any, haproxy: Any) -> None:
    """tcp-check send/expect: the check's bytes follow its LOCAL header, and the echo must answer them."""
    handler = Seen()
    engine = serve(handler, proxy_protocol="v2")
    front = free_port()
    config = one_backend_config(front, engine.addrs[0][1], "send-proxy-v2").replace(
        "backend be\n", 'backend be\n    option tcp-check\n    tcp-check send "PING\\r\\n"\n'
                         '    tcp-check expect string PING\n')
    hap = haproxy(config)
    hap.wait_status("s1", "UP")
    time.sleep(0.6)
    row = hap.stat()["s1"]
    # "* L7OK": the last result, with a check in progress as the stats were read.
    assert row["status"] == "UP" and row["check_status"].removeprefix("* ") == "L7OK", row
    assert refused(engine) == 0


def test_a_version_mismatch_is_refused_and_counted_while_l4_checks_still_pass(serve: Any, haproxy: Any) -> None:
    """HAProxy sends v1 to an engine expecting v2: every connection is refused, and only proxy_refused says why."""
    handler = Seen()
    engine = serve(handler, proxy_protocol="v2")
    front = free_port()
    hap = haproxy(one_backend_config(front, engine.addrs[0][1], "send-proxy"))
    hap.wait_status("s1", "UP")
    with socket.create_connection(("127.0.0.1", front), timeout=WAIT, source_address=("127.0.0.2", 0)) as s:
        s.sendall(b"hello")
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
    wait_for(lambda: refused(engine) >= 3)  # the client's connection and the checks
    assert handler.opened == []
    assert hap.status("s1") == "UP"  # a layer-4 check cannot see the mismatch


trustme: Any
try:
    import trustme  # in the test extra: installed by ./test.sh
except ImportError:  # pragma: no cover
    trustme = None


@pytest.mark.skipif(trustme is None, reason="trustme is not installed")
def test_tls_terminated_at_haproxy_reaches_c_proxy_as_tlvs(serve: Any, haproxy: Any, tmp_path: Any) -> None:
    """HAProxy's own v2 encoder: ALPN, authority (SNI), unique id, CRC32C and the SSL TLV with the client's CN."""
    ca = trustme.CA()
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    handler = Seen()
    engine = serve(handler, proxy_protocol="v2")
    front = free_port()
    config = one_backend_config(front, engine.addrs[0][1], "send-proxy-v2-ssl-cn").replace(
        f"bind 127.0.0.1:{front}",
        f"bind 127.0.0.1:{front} ssl crt {tmp_path / 'server.pem'} ca-file {tmp_path / 'ca.pem'} verify optional "
        f"alpn h2,http/1.1\n    unique-id-format %{{+X}}o%ci:%cp_%fi:%fp_%Ts_%rt").replace(
        CHECKS, "proxy-v2-options authority,crc32c,unique-id,ssl-cipher,cert-sig,cert-key " + CHECKS)
    hap = haproxy(config)
    hap.wait_status("s1", "UP")
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ca.issue_cert("client.example", common_name="client.example").configure_cert(ctx)
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", front), timeout=WAIT, source_address=("127.0.0.2", 0))
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        remote, _ = read_line(s).split("|")
        assert remote == repr(s.getsockname())
        version = s.version()
    with handler.lock:
        (info,) = [info for remote, _, info in handler.opened if remote[0] == "127.0.0.2"]
    assert (info.alpn, info.authority) == (b"h2", "localhost")
    assert info.unique_id is not None and info.unique_id.startswith(b"7F000002:")  # %{+X}o%ci: 127.0.0.2 in hex
    assert info.ssl is not None and info.ssl.client & 0x01 and info.ssl.verify == 0  # PP2_CLIENT_SSL, verified
    assert info.ssl.client & 0x02 and info.ssl.cn == "client.example"  # PP2_CLIENT_CERT_CONN
    assert info.ssl.version == version and info.ssl.cipher and info.ssl.sig_alg and info.ssl.key_alg
    assert any(kind == 0x03 for kind, _ in info.tlvs)  # HAProxy's CRC32C, checked by the parser
    assert refused(engine) == 0


# -- the scale-out drill -----------------------------------------------------------------------------

CLIENTS = 50
PATTERN = bytes(k % 251 for k in range(251 + 65536 + 251))  # byte k of every stream is k % 251
CHUNK = 2048  # per client per PERIOD: 50 clients stream about 5 MB/s each way, on a small shared machine
PERIOD = 0.02
WINDOW = 16384  # sent but not yet echoed


class Stream:
    """One client's connection through HAProxy: the greeting, then a byte stream checked as it comes back."""

    def __init__(self, index: int, front: int) -> None:
        self.index = index
        self.source = f"127.0.0.{2 + index % 2}"
        self.sock = socket.create_connection(("127.0.0.1", front), timeout=WAIT, source_address=(self.source, 0))
        self.sock.setblocking(False)
        self.sockname = self.sock.getsockname()
        self.greeting = b""
        self.worker = 0  # the pid of the worker that serves it, once greeted
        self.sent = 0
        self.received = 0
        self.next_send = 0.0

    def expected(self, offset: int, n: int) -> bytes:
        start = offset % 251
        return PATTERN[start:start + n]


class Drill:
    """Fifty streams in one selector loop on a thread of their own; every byte checked, reconnecting on a close."""

    def __init__(self, front: int) -> None:
        self.front = front
        self.lock = threading.Lock()
        self.streams: list[Stream] = []
        self.errors: list[str] = []
        self.closes: list[tuple[int, int, int, int]] = []  # (client, worker, bytes sent, bytes verified)
        self.verified = 0  # bytes checked, all connections
        self.reconnects = 0
        self.sending = True
        self.done = threading.Event()
        self.sel = selectors.DefaultSelector()
        self.thread = threading.Thread(target=self._run, name="drill-clients", daemon=True)

    def start(self) -> None:
        for i in range(CLIENTS):
            self._connect(i)
        self.thread.start()

    def _connect(self, index: int) -> None:
        stream = Stream(index, self.front)
        self.sel.register(stream.sock, selectors.EVENT_READ, stream)
        with self.lock:
            if index < len(self.streams):
                self.streams[index] = stream
            else:
                self.streams.append(stream)

    def _run(self) -> None:
        try:
            while not self.done.is_set():
                for key, _ in self.sel.select(PERIOD / 2):
                    self._readable(key.data)
                now = time.monotonic()
                if self.sending:
                    for stream in list(self.streams):
                        if stream.worker and now >= stream.next_send and stream.sent - stream.received < WINDOW:
                            self._send(stream, now)
        except BaseException as exc:  # shown by the test
            self.errors.append(f"client loop: {exc!r}")

    def _send(self, stream: Stream, now: float) -> None:
        try:
            n = stream.sock.send(stream.expected(stream.sent, CHUNK))
        except BlockingIOError:
            return
        except OSError:
            return  # the read side sees the close and reconnects
        stream.sent += n
        stream.next_send = now + PERIOD

    def _readable(self, stream: Stream) -> None:
        try:
            data = stream.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._closed(stream)
            return
        if not stream.worker:
            stream.greeting += data
            if b"\n" not in stream.greeting:
                return
            line, data = stream.greeting.split(b"\n", 1)
            fields = dict(field.split("=", 1) for field in line.decode().split()[1:])
            stream.worker = int(fields["worker"])
            if fields["client"] != f"{stream.sockname[0]}:{stream.sockname[1]}":
                self.errors.append(f"client {stream.index} is {stream.sockname}, the engine saw {fields['client']}")
            if not data:
                return
        if data != stream.expected(stream.received, len(data)):
            self.errors.append(f"client {stream.index}: wrong bytes at offset {stream.received}")
        stream.received += len(data)
        self.verified += len(data)

    def _closed(self, stream: Stream) -> None:
        self.sel.unregister(stream.sock)
        stream.sock.close()
        with self.lock:
            self.closes.append((stream.index, stream.worker, stream.sent, stream.received))
        if self.done.is_set():
            return
        for _ in range(100):
            try:
                self._connect(stream.index)
                self.reconnects += 1
                return
            except OSError:
                time.sleep(0.02)
        self.errors.append(f"client {stream.index} could not reconnect")

    def by_worker(self) -> dict[int, list[Stream]]:
        with self.lock:
            streams = list(self.streams)
        found: dict[int, list[Stream]] = {}
        for stream in streams:
            found.setdefault(stream.worker, []).append(stream)
        return found

    def drain(self, timeout: float) -> None:
        """Stop sending; wait until every byte sent has come back."""
        self.sending = False
        deadline = time.monotonic() + timeout
        while any(s.received < s.sent for s in list(self.streams)) and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join(WAIT)
        for stream in list(self.streams):
            try:
                self.sel.unregister(stream.sock)
            except (KeyError, ValueError):
                pass
            stream.sock.close()
        self.sel.close()


@pytest.fixture
def engines() -> Iterator[list[Any]]:
    """Engine processes (examples/haproxy/engine.py) that are stopped, or killed, when the test ends."""
    started: list[Any] = []
    try:
        yield started
    finally:
        for engine in started:
            engine.stop()


def test_scale_out_drill(haproxy: Any, engines: list[Any], tmp_path: Any) -> None:
    """Three engines of two workers behind HAProxy; one is killed mid-stream and replaced."""
    t_begin = time.monotonic()
    log = open(tmp_path / "engines.log", "w")
    try:
        for i in (1, 2, 3):
            engines.append(launch.Engine(0, workers=2, name=f"e{i}", log=log))
        front = free_port()
        env = {"FRONTEND": f"127.0.0.1:{front}"}
        env.update({f"ENGINE{i}": e.address for i, e in enumerate(engines, 1)})
        hap = haproxy(config_path=launch.CONFIG, env=env)
        for name in ("e1", "e2", "e3"):
            hap.wait_status(name, "UP")
        owner = {pid: e.name for e in engines for pid in e.workers}

        drill = Drill(front)
        drill.start()
        try:
            wait_for(lambda: all(s.worker and s.received >= 4 * CHUNK for s in drill.streams), timeout=WAIT)
            time.sleep(1.5)  # everyone streaming, three engines
            per_engine = {name: sum(len(v) for pid, v in drill.by_worker().items() if owner.get(pid) == name)
                          for name in ("e1", "e2", "e3")}
            assert all(per_engine.values()), f"round robin left an engine without clients: {per_engine}"
            victim = engines[1]
            on_victim = {s.index for pid in victim.workers for s in drill.by_worker().get(pid, [])}

            killed_at = time.monotonic()
            victim.kill()  # SIGKILL to its parent and both workers
            time_to_down = hap.wait_status("e2", "DOWN", timeout=5, interval=0.01)

            def moved() -> bool:
                streams = {s.index: s for s in drill.streams}
                return all(owner.get(streams[i].worker) in ("e1", "e3") for i in on_victim)

            wait_for(moved, timeout=5)
            time_to_moved = time.monotonic() - killed_at
            time.sleep(1.5)  # stream on, two engines now

            replacement = launch.Engine(victim.port, workers=2, name="e2", log=log)
            engines.append(replacement)
            time_to_up = hap.wait_status("e2", "UP", timeout=5, interval=0.01)
            served_by_new = 0
            for _ in range(6):  # round robin: one in three new connections goes to e2 again
                with socket.create_connection(("127.0.0.1", front), timeout=WAIT) as s:
                    worker = int(read_line(s).split()[2].split("=")[1])
                    if worker in replacement.workers:
                        served_by_new += 1
                        s.sendall(b"back in")
                        assert recv_exact(s, 7) == b"back in"
            time.sleep(0.3)
            drill.drain(timeout=5)
        finally:
            drill.stop()
    finally:
        log.close()

    assert drill.errors == [], drill.errors[:5]
    # A close before any greeting: HAProxy gave up on a reconnect (every retry met the dead engine); the client
    # tried again.  Only the victim's clients reconnect, so only they can meet one.
    served = [(client, owner.get(worker)) for client, worker, _, _ in drill.closes if worker]
    unserved = [client for client, worker, _, _ in drill.closes if not worker]
    assert sorted(client for client, _ in served) == sorted(on_victim), drill.closes  # each lost one connection
    assert all(engine == "e2" for _, engine in served), drill.closes  # ... and it was on the engine killed
    assert set(unserved) <= on_victim, drill.closes
    assert all(s.received == s.sent for s in drill.streams), "a live stream is missing echoed bytes"
    assert time_to_down < 3.0, f"HAProxy took {time_to_down:.2f}s to mark the dead engine DOWN"
    assert served_by_new >= 1, "the restarted engine got no new connection"
    lost_in_flight = sum(sent - got for _, _, sent, got in drill.closes)
    print(f"\nscale-out drill: {CLIENTS} clients, 3 engines x 2 workers behind HAProxy; clients per engine "
          f"{per_engine}; e2 killed: {len(on_victim)} connections closed and moved to e1/e3 in "
          f"{time_to_moved * 1000:.0f} ms ({drill.reconnects} reconnects, {lost_in_flight} bytes in flight "
          f"on them, not echoed; {len(unserved)} reconnects closed by HAProxy before a server answered); HAProxy marked e2 DOWN after {time_to_down * 1000:.0f} ms and the restarted e2 "
          f"UP {time_to_up * 1000:.0f} ms after it served ({served_by_new}/6 new connections went to it); "
          f"{drill.verified:,} bytes verified; {time.monotonic() - t_begin:.1f}s in all")
