"""idle_timeout end to end: idle connections close with TimeoutError, busy ones stay -- and many cost nothing per iteration."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

from conftest import WAIT, Recorder, connect, recv_exact, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_only_the_idle_connections_close_each_with_a_timeout_error(serve: Any) -> None:
    handler = Recorder()
    engine = serve(handler, idle_timeout=0.5)
    idle = [connect(engine.addrs[0]) for _ in range(100)]
    active = [connect(engine.addrs[0]) for _ in range(10)]
    try:
        wait_for(lambda: engine.count_connections() == 110)
        started = time.monotonic()
        while len(handler.closed) < 100:  # the active ones keep talking meanwhile
            assert time.monotonic() - started < WAIT, f"{len(handler.closed)} closed"
            talk(active)
        took = time.monotonic() - started
        until = time.monotonic() + 1.0  # twice the timeout more: none of the active ones may go
        while time.monotonic() < until:
            talk(active)
        assert len(handler.closed) == 100 and engine.count_connections() == 10
        assert all(isinstance(err, TimeoutError) and "idle_timeout" in str(err) for _, err in handler.closed)
        for s in idle:
            assert s.recv(10) == b""  # each saw a clean end of stream
        assert 0.45 <= took < 3
    finally:
        for s in idle + active:
            s.close()


def talk(active: list[socket.socket]) -> None:
    for s in active:
        s.sendall(b"ping")
        assert recv_exact(s, 4) == b"ping"
    time.sleep(0.05)


WATCHED_SERVER = textwrap.dedent("""
    import resource, sys
    sys.path.insert(0, {src!r})
    import gnetpy
    resource.setrlimit(resource.RLIMIT_NOFILE, (12000, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    class Stats(gnetpy.EventHandler):
        def on_boot(self, engine):
            self.engine = engine
            loop = engine.event_loops[0]
            self.iterations = 0
            poll = loop._poller.poll
            def counted(timeout, maxevents):  # count the loop's iterations
                self.iterations += 1
                return poll(timeout, maxevents)
            loop._poller.poll = counted
            print(engine.addrs[0][1], flush=True)

        def on_traffic(self, c):
            command = c.next()
            loop = c.event_loop
            if command == b"stats":
                c.write(f"{{self.iterations}} {{loop._idle.examined}} {{len(loop._timers)}} "
                        f"{{self.engine.count_connections()}}\\n".encode())
            else:
                c.write(command)

    gnetpy.run(Stats(), "tcp://127.0.0.1:0", idle_timeout=60)
""")


def stats(s: socket.socket) -> tuple[int, int, int, int]:
    """(iterations, wheel visits, timers in the heap, connections) of the server's loop."""
    s.sendall(b"stats")
    line = b""
    while not line.endswith(b"\n"):
        line += s.recv(100)
    iterations, examined, timers, connections = map(int, line.split())
    return iterations, examined, timers, connections


def timer_work(tmp_path: Any, connections: int) -> tuple[int, int, int]:
    """(loop iterations, idle-wheel visits, timers in the heap) while one client talks and ``connections`` idle."""
    script = tmp_path / "server.py"
    script.write_text(WATCHED_SERVER.format(src=os.path.join(ROOT, "src")))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    held: list[socket.socket] = []
    try:
        port = int(proc.stdout.readline())
        for _ in range(connections):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=WAIT))
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
            wait_for(lambda: stats(s)[3] == connections + 1)  # every one accepted and watched
            before = stats(s)
            for _ in range(500):
                s.sendall(b"x")
                assert s.recv(1) == b"x"
            after = stats(s)
        return after[0] - before[0], after[1] - before[1], after[2]
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(WAIT)


def test_ten_thousand_idle_connections_add_no_timer_and_no_wheel_visit_per_iteration(tmp_path: Any) -> None:
    few = timer_work(tmp_path, 10)
    many = timer_work(tmp_path, 10_000)
    for iterations, examined, timers in (few, many):
        assert iterations >= 500
        assert examined == 0  # no scan, no visit: nobody is near its deadline
        assert timers <= 2  # the wheel's one timer: none per connection
