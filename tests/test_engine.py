"""Engine: start/stop/wait, addresses, counts, boot and shutdown hooks, the ticker, signals."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

import gnetpy
from conftest import WAIT, Recorder, connect, gnetpy_threads, open_fds, recv_exact, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_start_returns_a_running_engine(serve: Any, tmp_path: Any) -> None:
    engine = serve(Recorder(), ["tcp://127.0.0.1:0", f"unix://{tmp_path}/e.sock", "tcp6://[::1]:0"])
    assert engine.is_running
    tcp, unix, tcp6 = engine.addrs
    assert tcp[0] == "127.0.0.1" and tcp[1] > 0
    assert unix == f"{tmp_path}/e.sock"
    assert tcp6[0] == "::1" and tcp6[1] > 0
    for addr in engine.addrs:
        with connect(addr) as s:
            s.sendall(b"hello")
            assert recv_exact(s, 5) == b"hello"


def test_count_connections_across_loops(serve: Any) -> None:
    engine = serve(Recorder(), num_event_loop=3)
    clients = [connect(engine.addrs[0]) for _ in range(7)]
    wait_for(lambda: engine.count_connections() == 7)
    for s in clients[:4]:
        s.close()
    wait_for(lambda: engine.count_connections() == 3)
    for s in clients[4:]:
        s.close()
    wait_for(lambda: engine.count_connections() == 0)


def test_stop_is_idempotent_and_wait_returns(serve: Any) -> None:
    engine = serve(Recorder())
    assert not engine.wait(0.05)
    engine.stop()
    engine.stop()
    assert engine.wait(0) and not engine.is_running
    assert "stopped" in repr(engine)


def test_context_manager_stops_on_exit() -> None:
    with gnetpy.start(Recorder(), "tcp://127.0.0.1:0") as engine:
        addr = engine.addrs[0]
    assert not engine.is_running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(addr, timeout=WAIT)


def test_stop_from_a_callback_does_not_deadlock(serve: Any) -> None:
    class StopOnTraffic(Recorder):
        def __init__(self, engine_ref: list[gnetpy.Engine]) -> None:
            super().__init__()
            self.engine_ref = engine_ref

        def on_traffic(self, c: gnetpy.Conn) -> Any:
            self.engine_ref[0].stop()  # from the loop itself: starts the stop, returns
            c.write(b"still writing")

    ref: list[gnetpy.Engine] = []
    engine = serve(StopOnTraffic(ref))
    ref.append(engine)
    with connect(engine.addrs[0]) as s:
        s.sendall(b"x")
        assert recv_exact(s, 13) == b"still writing"
    assert engine.wait(WAIT)


def test_boot_and_shutdown_hooks(serve: Any) -> None:
    events: list[Any] = []

    class Hooks(Recorder):
        def on_boot(self, engine: gnetpy.Engine) -> Any:
            events.append(("boot", engine.addrs[0][1] > 0, engine.is_running))

        def on_close(self, c: gnetpy.Conn, err: Any) -> Any:
            events.append(("close", err))

        def on_shutdown(self, engine: gnetpy.Engine) -> None:
            events.append(("shutdown", threading.current_thread().name))

    engine = serve(Hooks())
    s = connect(engine.addrs[0])
    wait_for(lambda: engine.count_connections() == 1)
    engine.stop()
    s.close()
    # on_shutdown runs last, after every connection was closed (err None: a local close).
    assert events == [("boot", True, False), ("close", None), ("shutdown", "gnetpy-stop")]


def test_on_boot_error_propagates_and_releases_everything(tmp_path: Any) -> None:
    class Broken(gnetpy.EventHandler):
        def on_boot(self, engine: gnetpy.Engine) -> Any:
            raise RuntimeError("no config")

    fds = open_fds()
    with pytest.raises(RuntimeError, match="no config"):
        gnetpy.start(Broken(), ["tcp://127.0.0.1:0", f"unix://{tmp_path}/b.sock"], num_event_loop=2)
    assert open_fds() == fds
    assert not (tmp_path / "b.sock").exists()
    assert gnetpy_threads() == []


def test_bind_failure_releases_earlier_listeners(tmp_path: Any) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    fds = open_fds()
    try:
        with pytest.raises(OSError, match="cannot bind"):
            gnetpy.start(Recorder(), [f"unix://{tmp_path}/first.sock", f"tcp://127.0.0.1:{taken.getsockname()[1]}"])
        assert open_fds() == fds
        assert not (tmp_path / "first.sock").exists()
    finally:
        taken.close()


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="EventHandler"):
        gnetpy.start(object(), "tcp://127.0.0.1:0")  # type: ignore[arg-type]
    with pytest.raises(gnetpy.InvalidAddressError, match="nowhere"):
        gnetpy.start(Recorder(), "tcp://nowhere")
    with pytest.raises(gnetpy.UnsupportedProtocolError, match="http://x:1"):
        gnetpy.start(Recorder(), "http://x:1")
    with pytest.raises(ValueError, match="at least one address"):
        gnetpy.start(Recorder(), [])
    with pytest.raises(TypeError, match="rotate"):
        gnetpy.run(Recorder(), ["tcp://127.0.0.1:0"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown option"):
        gnetpy.start(Recorder(), "tcp://127.0.0.1:0", num_loops=2)


def test_options_object(serve: Any) -> None:
    opts = gnetpy.Options(num_event_loop=2, lb="least-connections", processes=False)
    engine = serve(Recorder(), options=opts, reuse_addr=True)
    assert len(engine.event_loops) == 2


class Ticker(gnetpy.EventHandler):
    def __init__(self, results: list[Any]) -> None:
        self.results = results
        self.ticks: list[str] = []

    def on_tick(self) -> Any:
        self.ticks.append(threading.current_thread().name)
        if not self.results:
            return 0.01
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


def test_ticker_runs_on_loop_zero_first_at_start(serve: Any) -> None:
    handler = Ticker([0.01] * 5)
    serve(handler, ticker=True, num_event_loop=3, processes=False)
    wait_for(lambda: len(handler.ticks) >= 5)
    assert set(handler.ticks) == {"gnetpy-loop-0"}


def test_ticker_delay_is_respected(serve: Any) -> None:
    handler = Ticker([0.3, 0.3])
    started = time.monotonic()
    serve(handler, ticker=True)
    wait_for(lambda: len(handler.ticks) >= 3)
    assert time.monotonic() - started >= 0.55


def test_ticker_survives_errors_and_bad_results(serve: Any, caplog: Any) -> None:
    handler = Ticker([RuntimeError("tick failed"), "soon", (0.01, gnetpy.Action.NONE)])
    with caplog.at_level(logging.ERROR, logger="gnetpy"):
        serve(handler, ticker=True)
        # After an error the ticker retries after 1 s; the third tick proves it went on.
        wait_for(lambda: len(handler.ticks) >= 4, timeout=5)
    messages = [r.getMessage() for r in caplog.records]
    assert any("on_tick raised" in m for m in messages)
    assert any("expected seconds" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_ticker_shutdown_flushes_queued_writes(serve: Any) -> None:
    """Action.SHUTDOWN from on_tick stops the engine after queued writes are flushed."""
    size = 8 << 20
    conns: list[gnetpy.Conn] = []

    class TickStop(Recorder):
        def on_open(self, c: gnetpy.Conn) -> Any:
            conns.append(c)
            c.write(b"t" * size)

        def on_tick(self) -> Any:
            return (0.01, gnetpy.Action.SHUTDOWN if conns else gnetpy.Action.NONE)

    engine = serve(TickStop(), ticker=True)
    with connect(engine.addrs[0]) as s:
        got = bytearray()
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
    assert len(got) == size
    assert engine.wait(WAIT)


SIGNAL_SERVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {src!r})
    import gnetpy

    class Echo(gnetpy.EventHandler):
        def on_boot(self, engine):
            print(engine.addrs[0][1], flush=True)
        def on_traffic(self, c):
            c.write(c.next())
        def on_shutdown(self, engine):
            print("shutdown", flush=True)

    gnetpy.run(Echo(), "tcp://127.0.0.1:0", num_event_loop=2)
    print("returned", flush=True)
""")


def run_script(tmp_path: Any, source: str) -> subprocess.Popen[str]:
    """Run ``source`` (with ``{src}`` for this checkout's src/) as a script; it prints its port first."""
    script = tmp_path / "server.py"
    script.write_text(source.format(src=os.path.join(ROOT, "src")))
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_run_stops_gracefully_on_signal(tmp_path: Any, sig: signal.Signals) -> None:
    proc = run_script(tmp_path, SIGNAL_SERVER)
    try:
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
            s.sendall(b"ping")
            assert recv_exact(s, 4) == b"ping"
            proc.send_signal(sig)
            assert s.recv(10) == b""  # closed by the graceful stop
        out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert out.split() == ["shutdown", "returned"]


def test_rotate_serves_several_addresses_until_stopped(tmp_path: Any) -> None:
    class StopViaConn(Recorder):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.write(c.next())
            return gnetpy.Action.SHUTDOWN

    path = tmp_path / "r.sock"
    port_holder = socket.socket()
    port_holder.bind(("127.0.0.1", 0))
    port = port_holder.getsockname()[1]
    port_holder.close()
    done = threading.Event()
    thread = threading.Thread(target=lambda: (gnetpy.rotate(StopViaConn(), [f"tcp://127.0.0.1:{port}",
                                                                           f"unix://{path}"]), done.set()))
    thread.start()
    try:
        wait_for(path.exists)
        with connect(str(path)) as s:
            s.sendall(b"bye")
            assert recv_exact(s, 3) == b"bye"
        assert done.wait(WAIT)
    finally:
        thread.join(WAIT)
    assert not path.exists()


# -- hardening: what careless callers and handlers find ---------------------------------------------


@pytest.mark.parametrize("addrs, fragment", [(None, "NoneType"), (b"tcp://127.0.0.1:0", "is bytes"),
                                            (9000, "int"), (bytearray(b"tcp://x:1"), "is bytes")])
def test_addrs_of_the_wrong_type_name_the_argument(addrs: Any, fragment: str) -> None:
    with pytest.raises(TypeError, match="addrs") as info:
        gnetpy.start(Recorder(), addrs)
    assert fragment in str(info.value)
    with pytest.raises(TypeError, match="addrs"):
        gnetpy.rotate(Recorder(), addrs)


def test_on_boot_returning_something_else_than_an_action_is_refused(tmp_path: Any) -> None:
    class Boots(gnetpy.EventHandler):
        def on_boot(self, engine: gnetpy.Engine) -> Any:
            return True

    path = tmp_path / "b.sock"
    with pytest.raises(TypeError, match="on_boot returned True"):
        gnetpy.start(Boots(), f"unix://{path}")
    assert not path.exists()


def test_a_second_engine_does_not_take_over_a_live_unix_socket(serve: Any, tmp_path: Any) -> None:
    path = str(tmp_path / "shared.sock")
    first = serve(Recorder(), f"unix://{path}")
    with pytest.raises(OSError) as info:
        gnetpy.start(Recorder(), f"unix://{path}")
    assert info.value.errno == errno.EADDRINUSE and path in str(info.value)
    with connect(path) as s:  # the first one still serves, on its own file
        s.sendall(b"still here")
        assert recv_exact(s, 10) == b"still here"
    first.stop()
    assert not os.path.exists(path)


FD_LIMIT_SERVER = textwrap.dedent("""
    import os, resource, sys
    sys.path.insert(0, {src!r})
    import gnetpy
    resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, 4096))
    before = sorted(os.listdir("/proc/self/fd"))
    try:
        gnetpy.start(gnetpy.EventHandler(), "tcp://127.0.0.1:0", num_event_loop={loops}, processes={processes})
    except OSError as exc:
        print("error:", type(exc).__name__, exc.errno, exc)
    print("leaked:", sorted(set(os.listdir("/proc/self/fd")) - set(before)))
    with open("/proc/self/task/%d/children" % os.getpid()) as f:
        print("children:", f.read().split())
""")


@pytest.mark.parametrize("processes, loops, limit", [(False, 150, 'len(os.listdir("/proc/self/fd")) + 40'),
                                                     (True, 8, "12")], ids=["threads", "worker processes"])
def test_a_start_that_runs_out_of_descriptors_says_so_and_releases_everything(tmp_path: Any, processes: bool,
                                                                              loops: int, limit: str) -> None:
    script = tmp_path / "server.py"
    script.write_text(FD_LIMIT_SERVER.format(src=os.path.join(ROOT, "src"), limit=limit, loops=loops,
                                             processes=processes))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=WAIT * 3)
    assert out.returncode == 0, out.stderr
    error, leaked, children = out.stdout.splitlines()
    # One message in both modes: what ran out, how many loops, where they run, the limit.
    where = "worker processes" if processes else "threads"
    assert error.startswith("error: OSError 24 [Errno 24] out of file descriptors starting "), error
    assert f"{loops} event loop(s) in {where}" in error and "RLIMIT_NOFILE" in error, error
    assert leaked == "leaked: []"
    assert children == "children: []"


def test_on_tick_returning_none_ticks_again_after_the_same_delay(serve: Any, caplog: Any) -> None:
    class Sometimes(gnetpy.EventHandler):
        def __init__(self) -> None:
            self.ticks: list[float] = []

        def on_tick(self) -> Any:
            self.ticks.append(time.monotonic())
            return 0.2 if len(self.ticks) == 1 else None

    handler = Sometimes()
    with caplog.at_level(logging.ERROR, logger="gnetpy"):
        serve(handler, ticker=True)
        wait_for(lambda: len(handler.ticks) >= 4)
    gaps = [b - a for a, b in zip(handler.ticks, handler.ticks[1:])]
    assert all(0.18 <= gap < 1.0 for gap in gaps[:3]), gaps
    assert not caplog.records


FLOODED_SERVER = textwrap.dedent("""
    import logging, sys
    sys.path.insert(0, {src!r})
    import gnetpy
    logging.basicConfig(level=logging.INFO)

    class Flood(gnetpy.EventHandler):
        def on_boot(self, engine):
            print(engine.addrs[0][1], flush=True)
        def on_traffic(self, c):
            c.next()
            c.write(b"z" * (64 << 20))  # to a client that never reads: the graceful stop cannot finish
        def on_shutdown(self, engine):
            print("shutdown", flush=True)

    gnetpy.run(Flood(), "tcp://127.0.0.1:0")
    print("returned", flush=True)
""")


# SystemExit(143) for SIGTERM; an uncaught KeyboardInterrupt makes Python exit by SIGINT itself.
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, -signal.SIGINT)])
def test_a_second_signal_during_the_stop_stops_at_once_and_exits_non_zero(tmp_path: Any, sig: signal.Signals,
                                                                         code: int) -> None:
    proc = run_script(tmp_path, FLOODED_SERVER)
    try:
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
            s.sendall(b"go")
            time.sleep(0.3)
            proc.send_signal(sig)
            time.sleep(0.5)
            assert proc.poll() is None  # still flushing to a peer that does not read (stop timeout: 10 s)
            started = time.monotonic()
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=WAIT)
            assert time.monotonic() - started < 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)
    assert proc.returncode == code, err
    assert out.split() == ["shutdown"]  # on_shutdown ran; run() did not return normally
    assert "received again" in err and "bytes unsent" in err


# -- per-loop hooks in thread mode -----------------------------------------------------------------


def test_on_worker_start_and_stop_run_on_each_loop_thread(serve: Any) -> None:
    seen: list[tuple[str, int, str]] = []

    class Hooks(gnetpy.EventHandler):
        def on_worker_start(self, loop_index: int) -> None:
            seen.append(("start", loop_index, threading.current_thread().name))

        def on_worker_stop(self, loop_index: int) -> None:
            seen.append(("stop", loop_index, threading.current_thread().name))

    engine = serve(Hooks(), num_event_loop=2, processes=False)
    assert sorted(seen) == [("start", 0, "gnetpy-loop-0"), ("start", 1, "gnetpy-loop-1")]  # before start() returned
    engine.stop()
    assert sorted(e for e in seen if e[0] == "stop") == [("stop", 0, "gnetpy-loop-0"), ("stop", 1, "gnetpy-loop-1")]


def test_on_worker_start_failing_in_a_thread_makes_start_raise_and_releases_everything(tmp_path: Any) -> None:
    class Broken(gnetpy.EventHandler):
        def on_worker_start(self, loop_index: int) -> None:
            if loop_index == 1:
                raise LookupError("no config for loop 1")

    fds = open_fds()
    with pytest.raises(LookupError, match="no config for loop 1"):
        gnetpy.start(Broken(), ["tcp://127.0.0.1:0", f"unix://{tmp_path}/w.sock"], num_event_loop=2, processes=False)
    wait_for(lambda: not gnetpy_threads())
    assert open_fds() == fds
    assert not (tmp_path / "w.sock").exists()


def test_cpu_affinity_pins_loop_thread_i_to_the_ith_allowed_cpu(serve: Any) -> None:
    pinned: dict[int, set[int]] = {}

    class Where(gnetpy.EventHandler):
        def on_worker_start(self, loop_index: int) -> None:
            pinned[loop_index] = os.sched_getaffinity(0)

    allowed = sorted(os.sched_getaffinity(0))
    serve(Where(), num_event_loop=2, processes=False, cpu_affinity=True)
    assert pinned == {0: {allowed[0]}, 1: {allowed[1 % len(allowed)]}}
    assert os.sched_getaffinity(0) == set(allowed)  # the caller's thread is left alone
