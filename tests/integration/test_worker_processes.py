"""Worker processes: echo integrity, balancing, counts, supervision, stop, and the parent's death.

Every test runs real worker processes forked from the test process; the
autouse fixture in conftest.py fails any test that leaves a child process (or
a gnetpy thread) behind.  Handlers reply with ``os.getpid()`` where the test
needs to know which worker served a connection.
"""

from __future__ import annotations

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
from conftest import WAIT, WriteEcho, child_processes, connect, open_fds, recv_exact, recv_until_eof, run_echo, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BALANCERS = ["round-robin", "least-connections", "source-addr-hash", "reuse-port"]


def balancer_options(balancer: str) -> dict[str, Any]:
    return {"reuse_port": True} if balancer == "reuse-port" else {"lb": balancer}


class WhoAmI(gnetpy.EventHandler):
    """Replies to every message with "index pid started" of the worker that serves the connection."""

    def __init__(self) -> None:
        self.index = -1
        self.started = False

    def on_worker_start(self, loop_index: int) -> None:
        self.index = loop_index
        self.started = True

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.next()
        c.write(f"{self.index} {os.getpid()} {self.started}\n".encode())


def ask(s: socket.socket) -> tuple[int, int, bool]:
    s.sendall(b"?")
    return ask_after_sending(s)


def ask_after_sending(s: socket.socket) -> tuple[int, int, bool]:
    """The answer to a "?" already sent."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = s.recv(100)
        if not chunk:
            raise EOFError("closed")
        line += chunk
    index, pid, started = line.split()
    return int(index), int(pid), started == b"True"


# -- echo integrity -------------------------------------------------------------------------------


@pytest.mark.parametrize("trigger", ["level", "edge"])
@pytest.mark.parametrize("balancer", BALANCERS)
@pytest.mark.parametrize("workers", [2, 4])
@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_echo_integrity_across_worker_processes(serve: Any, tmp_path: Any, transport: str, workers: int,
                                                balancer: str, trigger: str) -> None:
    addr = "tcp://127.0.0.1:0" if transport == "tcp" else f"unix://{tmp_path}/w.sock"
    run_echo(serve, WriteEcho(), addr, seed=hash((transport, workers, balancer, trigger)), num_event_loop=workers,
             processes=True, edge_triggered=trigger == "edge", **balancer_options(balancer))


class ExecutorEcho(gnetpy.EventHandler):
    """async_write from a thread pool made per worker, in on_worker_start: the documented way."""

    def on_worker_start(self, loop_index: int) -> None:
        import concurrent.futures
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def on_worker_stop(self, loop_index: int) -> None:
        self.pool.shutdown(wait=True)

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        self.pool.submit(c.async_write, c.next())


def test_async_write_from_a_thread_pool_made_in_on_worker_start(serve: Any) -> None:
    run_echo(serve, ExecutorEcho(), "tcp://127.0.0.1:0", seed=3, num_event_loop=2, processes=True)


# -- balancing and counts -----------------------------------------------------------------------


@pytest.mark.parametrize("balancer", BALANCERS)
def test_connections_spread_over_the_workers(serve: Any, balancer: str) -> None:
    engine = serve(WhoAmI(), num_event_loop=4, processes=True, **balancer_options(balancer))
    clients = [connect(engine.addrs[0]) for _ in range(40)]
    try:
        served = [ask(s) for s in clients]
        pids = [pid for _, pid, _ in served]
        per_worker = {pid: pids.count(pid) for pid in set(pids)}
        assert all(started for *_, started in served)
        # One client address: source-addr-hash keeps it on one worker (the next test spreads addresses).
        assert len(per_worker) == (1 if balancer == "source-addr-hash" else 4)
        assert os.getpid() not in per_worker  # workers, not the parent
        if balancer in ("round-robin", "least-connections"):
            assert sorted(per_worker.values()) == [10, 10, 10, 10]
        wait_for(lambda: engine.count_connections() == 40)
    finally:
        for s in clients:
            s.close()
    wait_for(lambda: engine.count_connections() == 0)


def test_source_address_hash_keeps_a_client_address_on_one_worker(serve: Any) -> None:
    engine = serve(WhoAmI(), num_event_loop=4, processes=True, lb="source-addr-hash")
    port = engine.addrs[0][1]
    where: dict[str, set[int]] = {}
    for n in range(2, 18):
        source = f"127.0.0.{n}"
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT, source_address=(source, 0)) as s:
                where.setdefault(source, set()).add(ask(s)[1])
    assert all(len(pids) == 1 for pids in where.values()), where
    assert len(set().union(*where.values())) > 1  # and the addresses do not all land on one worker


def test_count_connections_sums_every_worker(serve: Any) -> None:
    engine = serve(WhoAmI(), num_event_loop=2, processes=True)
    clients = [connect(engine.addrs[0]) for _ in range(9)]
    try:
        wait_for(lambda: engine.count_connections() == 9)
        for s in clients[:5]:
            s.close()
        wait_for(lambda: engine.count_connections() == 4)
    finally:
        for s in clients:
            s.close()
    wait_for(lambda: engine.count_connections() == 0)


# -- where callbacks run ---------------------------------------------------------------------------


class Tracer(gnetpy.EventHandler):
    """Writes what ran where to a file: one line per event, "event index pid"."""

    def __init__(self, path: str) -> None:
        self.path = path

    def note(self, *what: Any) -> None:
        with open(self.path, "a") as f:
            f.write(" ".join(map(str, what)) + "\n")

    def on_boot(self, engine: gnetpy.Engine) -> None:
        self.note("boot", -1, os.getpid())

    def on_shutdown(self, engine: gnetpy.Engine) -> None:
        self.note("shutdown", -1, os.getpid())

    def on_worker_start(self, loop_index: int) -> None:
        self.index = loop_index
        self.note("worker_start", loop_index, os.getpid())

    def on_worker_stop(self, loop_index: int) -> None:
        self.note("worker_stop", loop_index, os.getpid())

    def on_tick(self) -> Any:
        self.note("tick", self.index, os.getpid())
        return 0.05

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.next()
        # The loop's own facilities work in a worker as in thread mode.
        c.event_loop.execute(lambda: c.write(b"executed "))
        c.event_loop.call_later(0.01, lambda: c.write(b"later\n"))


def test_callbacks_run_where_the_design_says(tmp_path: Any) -> None:
    path = str(tmp_path / "trace")
    engine = gnetpy.start(Tracer(path), "tcp://127.0.0.1:0", num_event_loop=2, processes=True, ticker=True)
    try:
        with connect(engine.addrs[0]) as s:
            s.sendall(b"x")
            assert recv_exact(s, len(b"executed later\n")) == b"executed later\n"
        wait_for(lambda: "tick" in open(path).read())
    finally:
        engine.stop()
    events = [line.split() for line in open(path)]
    parent = str(os.getpid())
    assert [e for e in events if e[0] in ("boot", "shutdown")] == [["boot", "-1", parent], ["shutdown", "-1", parent]]
    starts = {e[1]: e[2] for e in events if e[0] == "worker_start"}
    stops = {e[1]: e[2] for e in events if e[0] == "worker_stop"}
    assert sorted(starts) == ["0", "1"] and starts == stops and parent not in starts.values()
    assert {(e[1], e[2]) for e in events if e[0] == "tick"} == {("0", starts["0"])}  # worker 0 only
    assert events[-1][0] == "shutdown"  # after every worker stopped


def test_the_engine_says_how_it_runs_its_loops(serve: Any, caplog: Any) -> None:
    with caplog.at_level(logging.INFO, logger="gnetpy"):
        serve(WhoAmI(), num_event_loop=2)
        serve(WhoAmI(), num_event_loop=2, processes=False)
        serve(WhoAmI(), processes=True)
    lines = [r.getMessage() for r in caplog.records if "serving" in r.getMessage()]
    assert lines[0].endswith("with 2 event loops in 2 worker processes")  # the default on a GIL build
    assert lines[1].endswith("with 2 event loops in 2 threads")
    assert lines[2].endswith("with 1 event loop in 1 worker process")


def test_cpu_affinity_pins_worker_i_to_the_ith_allowed_cpu(serve: Any) -> None:
    class Where(gnetpy.EventHandler):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.next()
            c.write(f"{sorted(os.sched_getaffinity(0))}\n".encode())

    allowed = sorted(os.sched_getaffinity(0))
    engine = serve(Where(), num_event_loop=2, processes=True, cpu_affinity=True, lb="round-robin")
    seen = set()
    for _ in range(2):
        with connect(engine.addrs[0]) as s:
            s.sendall(b"?")
            seen.add(s.recv(100).strip().decode())
    assert seen == {str([allowed[0]]), str([allowed[1 % len(allowed)]])}


# -- supervision ---------------------------------------------------------------------------------


def test_a_killed_worker_is_replaced_and_the_others_lose_nothing(serve: Any, caplog: Any) -> None:
    engine = serve(WhoAmI(), num_event_loop=2, processes=True, lb="round-robin")
    clients = [connect(engine.addrs[0]) for _ in range(6)]
    try:
        served = [ask(s) for s in clients]
        victim = served[0][1]
        with caplog.at_level(logging.ERROR, logger="gnetpy"):
            os.kill(victim, signal.SIGKILL)
            for s, (_, pid, _) in zip(clients, served):
                if pid == victim:
                    assert recv_until_eof(s) == b""  # its clients see their connections closed
                else:
                    assert ask(s)[1] == pid  # the others keep working
            replacement = wait_for(lambda: _a_new_worker(engine, {p for _, p, _ in served}))
        index, pid, started = replacement
        assert started and pid != victim and index == served[0][0]  # same index, on_worker_start ran
        assert any("killed by SIGKILL" in r.getMessage() for r in caplog.records)
    finally:
        for s in clients:
            s.close()


def _a_new_worker(engine: gnetpy.Engine, old: set[int]) -> tuple[int, int, bool] | None:
    for _ in range(4):  # new connections are served (round robin reaches the replacement)
        with connect(engine.addrs[0]) as s:
            answer = ask(s)
        if answer[1] not in old:
            return answer
    return None


def _serving_pids(engine: gnetpy.Engine) -> list[int]:
    return [w.pid for w in engine._loops if w.state == "serving"]


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_connections_wait_in_the_backlog_while_every_worker_is_being_replaced(serve: Any, tmp_path: Any, caplog: Any,
                                                                              monkeypatch: Any, transport: str) -> None:
    # A worker killed soon after starting comes back after BACKOFF_MIN: 0.5 s with nobody serving.
    monkeypatch.setattr(gnetpy.workers, "BACKOFF_MIN", 0.5)
    addr = "tcp://127.0.0.1:0" if transport == "tcp" else f"unix://{tmp_path}/w.sock"
    engine = serve(WhoAmI(), addr, num_event_loop=2, processes=True, lb="round-robin")
    old = set(_serving_pids(engine))
    with caplog.at_level(logging.INFO, logger="gnetpy"):
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: all(w.state == "exited" for w in engine._loops))  # the parent saw both go
        clients = [connect(engine.addrs[0]) for _ in range(20)]  # the kernel's backlog takes them
        try:
            for s in clients:
                s.sendall(b"?")
            assert not _serving_pids(engine)  # they all arrived while no worker served
            served = [ask_after_sending(s) for s in clients]
        finally:
            for s in clients:
                s.close()
    assert all(started for *_, started in served)
    assert {pid for _, pid, _ in served}.isdisjoint(old)  # by the replacements (the first up may take all 20)
    assert engine.is_running
    messages = [r.getMessage() for r in caplog.records]
    assert any("no worker is serving" in m for m in messages) and any("a worker serves again" in m for m in messages)
    assert not [m for m in messages if "internal error" in m or "Traceback" in m]


def test_a_serving_worker_killed_again_and_again_is_always_replaced(serve: Any, caplog: Any,
                                                                    monkeypatch: Any) -> None:
    """Only failures to *start* count toward giving up; a crash loop of serving workers backs off instead."""
    monkeypatch.setattr(gnetpy.workers, "BACKOFF_MIN", 0.01)
    engine = serve(WhoAmI(), num_event_loop=1, processes=True)
    pids = []
    with caplog.at_level(logging.INFO, logger="gnetpy"):
        for _ in range(8):  # more than GIVE_UP_AFTER (5)
            with connect(engine.addrs[0]) as s:
                index, pid, started = ask(s)  # waits in the backlog while the replacement starts
            assert index == 0 and started and pid not in pids
            pids.append(pid)
            os.kill(pid, signal.SIGKILL)
        with connect(engine.addrs[0]) as s:
            assert ask(s)[1] not in pids
    assert engine.is_running and engine.error is None
    delays = [float(r.getMessage().rpartition(" in ")[2].rstrip("s")) for r in caplog.records
              if "starting it again in" in r.getMessage()]
    assert len(delays) == 8 and delays == sorted(delays) and delays[-1] > delays[0]  # the back-off grows
    assert not [r for r in caplog.records if "failed to start" in r.getMessage()]


def test_every_worker_failing_at_start_makes_start_raise_and_leaves_nothing(tmp_path: Any) -> None:
    class Broken(gnetpy.EventHandler):
        def on_worker_start(self, loop_index: int) -> None:
            raise ConnectionError(f"no database for worker {loop_index}")

    fds = open_fds()
    with pytest.raises(ConnectionError, match="no database for worker") as info:
        gnetpy.start(Broken(), ["tcp://127.0.0.1:0", f"unix://{tmp_path}/b.sock"], num_event_loop=2, processes=True)
    assert any("in worker" in note and "on_worker_start" in note for note in getattr(info.value, "__notes__", []))
    assert not child_processes()
    assert open_fds() == fds
    assert not (tmp_path / "b.sock").exists()


def test_replacements_that_keep_failing_back_off_then_stop_the_engine(tmp_path: Any, caplog: Any) -> None:
    flag = tmp_path / "broken"

    class BreaksLater(WhoAmI):
        def on_worker_start(self, loop_index: int) -> None:
            if flag.exists():
                raise RuntimeError("broken now")
            super().on_worker_start(loop_index)

    engine = gnetpy.start(BreaksLater(), "tcp://127.0.0.1:0", num_event_loop=2, processes=True)
    try:
        pids = set()
        for _ in range(2):
            with connect(engine.addrs[0]) as s:
                pids.add(ask(s)[1])
        flag.touch()
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="gnetpy"):
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            assert engine.wait(30), "the engine kept forking"
        elapsed = time.monotonic() - started
    finally:
        engine.stop()
    # 5 failures to start each (the kill of a serving worker does not count: it had started), with
    # back-offs of 0.1 (the kill, soon after starting), 0.2, 0.4, 0.8 and 1.6 s: not a tight fork loop.
    assert elapsed >= 1.4
    assert isinstance(engine.error, RuntimeError) and "every worker failed to start" in str(engine.error)
    failures = [r for r in caplog.records if "failed to start:" in r.getMessage()]  # each with its traceback
    assert 10 <= len(failures) <= 11  # the first to reach 5 may try a sixth time before the other does


def test_action_shutdown_in_a_worker_stops_the_engine(serve: Any) -> None:
    class Stopper(gnetpy.EventHandler):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.write(c.next())
            return gnetpy.Action.SHUTDOWN

    engine = serve(Stopper(), num_event_loop=2, processes=True)
    with connect(engine.addrs[0]) as s:
        s.sendall(b"bye")
        assert recv_exact(s, 3) == b"bye"
    assert engine.wait(WAIT)
    assert engine.error is None


def test_system_exit_in_a_worker_stops_the_engine_and_is_reported(serve: Any) -> None:
    class Exits(gnetpy.EventHandler):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            raise SystemExit(4)

    engine = serve(Exits(), num_event_loop=2, processes=True)
    with connect(engine.addrs[0]) as s:
        s.sendall(b"x")
        assert recv_until_eof(s) == b""
    assert engine.wait(WAIT)
    assert isinstance(engine.error, SystemExit) and engine.error.code == 4


# -- stop, signals, the parent's death -----------------------------------------------------------


class Streams(gnetpy.EventHandler):
    """On a message: queue 8 MiB for the client, which reads it all while the engine stops."""

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.next()
        c.write(b"s" * (8 << 20))


@pytest.mark.parametrize("reuse_port", [False, True])
def test_stop_delivers_what_was_written_and_leaves_no_process(tmp_path: Any, reuse_port: bool) -> None:
    engine = gnetpy.start(Streams(), ["tcp://127.0.0.1:0", f"unix://{tmp_path}/s.sock"], num_event_loop=2,
                          processes=True, reuse_port=reuse_port)
    clients = [connect(engine.addrs[i % 2]) for i in range(4)]
    try:
        for s in clients:
            s.sendall(b"go")
        time.sleep(0.2)  # the replies are queued in the workers
        stopper = threading.Thread(target=engine.stop, args=(WAIT,))
        stopper.start()
        for s in clients:
            assert len(recv_until_eof(s)) == 8 << 20
        stopper.join(WAIT)
    finally:
        for s in clients:
            s.close()
        engine.stop()
    assert not child_processes()
    assert not (tmp_path / "s.sock").exists()


SERVER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {src!r})
    import gnetpy

    class Streams(gnetpy.EventHandler):
        def on_boot(self, engine):
            print(engine.addrs[0][1], flush=True)
        def on_worker_start(self, index):
            # One write(2) per line: the two workers share the pipe, and print's pieces interleaved
            # ("workerworker 17290", " 17289") in one CI run.
            os.write(1, f"worker {{os.getpid()}}\\n".encode())
        def on_traffic(self, c):
            c.next()
            c.write(b"s" * (8 << 20))
        def on_shutdown(self, engine):
            print("shutdown", flush=True)

    gnetpy.run(Streams(), "tcp://127.0.0.1:0", num_event_loop=2, processes=True)
    print("returned", flush=True)
""")


def start_server_process(tmp_path: Any) -> tuple[subprocess.Popen[str], int, list[int]]:
    script = tmp_path / "server.py"
    script.write_text(SERVER.format(src=os.path.join(ROOT, "src")))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []  # two workers (any order) and the port from on_boot
    while sum(line.startswith("worker") for line in lines) < 2 or all(line.startswith("worker") for line in lines):
        line = proc.stdout.readline()  # (select() would miss lines already in the reader's buffer)
        if not line or len(lines) > 10:
            proc.kill()
            out, err = proc.communicate(timeout=WAIT)
            pytest.fail(f"the server did not say it serves: {lines} {out!r} {err!r}")
        lines.append(line)
    workers = [int(line.split()[1]) for line in lines if line.startswith("worker")]
    port = next(int(line) for line in lines if not line.startswith("worker"))
    return proc, port, workers


def test_sigterm_to_the_parent_stops_everything_gracefully(tmp_path: Any) -> None:
    proc, port, workers = start_server_process(tmp_path)
    try:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        except OSError:
            proc.kill()
            pytest.fail(f"cannot connect to port {port}: {proc.communicate(timeout=WAIT)}")
        with s:
            s.sendall(b"go")
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            assert len(recv_until_eof(s)) == 8 << 20
        out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert out.split()[-2:] == ["shutdown", "returned"]
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}")]


def test_workers_exit_when_the_parent_is_killed(tmp_path: Any) -> None:
    proc, port, workers = start_server_process(tmp_path)
    try:
        assert len(workers) == 2 and all(os.path.exists(f"/proc/{pid}") for pid in workers)
        proc.kill()
        proc.wait(WAIT)
        started = time.monotonic()
        # The workers are the dead parent's children, not ours: look them up in /proc.
        wait_for(lambda: not [pid for pid in workers if _alive(pid)], timeout=2)
        assert time.monotonic() - started < 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.stdout.close()
        proc.stderr.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_lone_worker_accepts_for_itself_and_so_does_its_replacement(serve: Any, tmp_path: Any) -> None:
    """processes=True with one loop: no hand-over (nothing to balance); connections wait in the backlog meanwhile."""
    engine = serve(WhoAmI(), ["tcp://127.0.0.1:0", f"unix://{tmp_path}/l.sock"], processes=True)
    for addr in engine.addrs:
        with connect(addr) as s:
            first = ask(s)
    assert engine._main_reactor is not None and not engine._main_reactor._acceptors  # the parent accepts nothing
    os.kill(first[1], signal.SIGKILL)
    with connect(engine.addrs[0]) as s:  # queued in the backlog until the replacement serves
        index, pid, started = ask(s)
    assert (index, started) == (0, True) and pid != first[1]


@pytest.mark.parametrize("peer", ["not reading", "hung handler"])
def test_a_second_stop_request_cuts_every_workers_drain_short(caplog: Any, peer: str) -> None:
    """What a second SIGTERM does (signals.py): request_stop(0) during a graceful stop with a long deadline."""
    class Writes(gnetpy.EventHandler):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.next()
            if peer == "hung handler":
                time.sleep(3600)
            c.write(b"s" * (16 << 20))  # far more than a peer that does not read takes

    engine = gnetpy.start(Writes(), "tcp://127.0.0.1:0", num_event_loop=2, processes=True, lb="round-robin")
    clients = [connect(engine.addrs[0]) for _ in range(4)]
    try:
        for s in clients:
            s.sendall(b"go")
        time.sleep(0.3)
        with caplog.at_level(logging.WARNING, logger="gnetpy"):
            engine.request_stop(60, reason="SIGTERM received")
            time.sleep(0.3)
            assert engine.count_connections() == 4  # the graceful stop waits for the peers, as it should
            started = time.monotonic()
            engine.request_stop(0, reason="SIGTERM received again")
            assert engine.wait(8), "the second stop request did not stop the workers"
            elapsed = time.monotonic() - started
    finally:
        for s in clients:
            s.close()
        engine.stop()
    # Not reading: the workers drop what is unsent at once.  A hung handler: killed after the grace (2 s).
    assert elapsed < (1.0 if peer == "not reading" else 4.0), elapsed
    assert not child_processes()


def test_a_worker_that_hangs_past_the_stop_deadline_is_killed(caplog: Any) -> None:
    class Hangs(gnetpy.EventHandler):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            time.sleep(3600)  # a handler that never returns

    engine = gnetpy.start(Hangs(), "tcp://127.0.0.1:0", num_event_loop=2, processes=True)
    with connect(engine.addrs[0]) as s, caplog.at_level(logging.ERROR, logger="gnetpy"):
        s.sendall(b"x")
        time.sleep(0.2)
        started = time.monotonic()
        engine.stop(timeout=0.5)
        assert time.monotonic() - started < 5  # the deadline, the grace, the kill: not an hour
    assert any("did not stop by the stop deadline; killed" in r.getMessage() for r in caplog.records)
    assert not child_processes()

