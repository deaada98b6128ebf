"""Start three gnetpy engines and HAProxy in front of them, then report HAProxy's view of them.

    python examples/haproxy/launch.py                  # frontend 127.0.0.1:9000, engines on 9001-9003
    python examples/haproxy/launch.py --front 8000 --ports 8001 8002 8003 --workers 4

Each engine is ``engine.py`` (an echo server in worker processes that requires PROXY v2).
HAProxy runs in the foreground with ``haproxy.cfg`` from this directory, and the addresses
are passed to it in the environment. The launcher prints each engine's pids, then a line
whenever HAProxy marks an engine UP or DOWN, until Ctrl-C stops everything. README.md
describes a drill to run against it by hand.

The test suite uses ``Engine``, ``HAProxy`` and ``show_stat`` from this file
(tests/integration/test_haproxy.py).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import IO, Any

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINE = os.path.join(HERE, "engine.py")
CONFIG = os.path.join(HERE, "haproxy.cfg")


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
                                            if os.access(p, os.X_OK)), None)


class Engine:
    """One engine.py process: its port, its pid and its workers' pids, once it serves."""

    def __init__(self, port: int, workers: int = 2, name: str | None = None, host: str = "127.0.0.1",
                 proxy: str = "v2", timeout: float = 20.0, log: IO[Any] | None = None) -> None:
        cmd = [sys.executable, ENGINE, "--host", host, "--port", str(port), "--workers", str(workers),
               "--proxy", proxy] + (["--name", name] if name else [])
        # A session of its own: Ctrl-C in the launcher's terminal reaches the launcher, which stops it.
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log or subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        try:
            ready = self._ready_line(timeout)
        except BaseException:
            self.kill()
            raise
        self.name: str = ready["name"]
        self.host = host
        self.port: int = ready["port"]
        self.pid: int = ready["pid"]
        self.workers: list[int] = ready["workers"]

    def _ready_line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise TimeoutError(f"engine.py did not serve within {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"engine.py exited with status {self.proc.wait()} before serving")
        return json.loads(line)  # type: ignore[no-any-return]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def kill(self) -> None:
        """SIGKILL the parent and its workers together, as a crash of the whole host would."""
        for pid in [self.proc.pid] + list(getattr(self, "workers", [])):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reap()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: the engine stops gracefully (its workers with it); SIGKILL if it takes too long."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap()

    def _reap(self) -> None:
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(pid) for pid in getattr(self, "workers", [])):
            time.sleep(0.01)  # the workers were reparented when the parent died: wait for them to go


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class HAProxy:
    """HAProxy in the foreground (-db) with ``config``; ``env`` fills its "${VARS}"."""

    def __init__(self, config: str, env: dict[str, str], stats_socket: str, log: IO[Any] | None = None,
                 timeout: float = 10.0) -> None:
        binary = haproxy_binary()
        if binary is None:
            raise FileNotFoundError("haproxy is not installed (apt-get install haproxy)")
        self.stats_socket = stats_socket
        self.proc = subprocess.Popen([binary, "-db", "-f", config], env={**os.environ, **env},
                                     stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                show_stat(stats_socket)
                break
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"haproxy exited with status {self.proc.returncode}") from None
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"haproxy's stats socket did not answer within {timeout}s") from None
                time.sleep(0.02)

    def stat(self) -> dict[str, dict[str, str]]:
        return show_stat(self.stats_socket)

    def status(self, server: str) -> str:
        """"UP", "DOWN", "UP 1/2" (going down), "DOWN 1/1"... as ``show stat`` says it."""
        return self.stat()[server]["status"]

    def wait_status(self, server: str, want: str, timeout: float = 10.0, interval: float = 0.02) -> float:
        """Poll until ``server``'s status is ``want``; return how long that took."""
        started = time.monotonic()
        while self.status(server) != want:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{server} is {self.status(server)!r}, not {want!r}, after {timeout}s")
            time.sleep(interval)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def show_stat(stats_socket: str, proxy: str | None = None) -> dict[str, dict[str, str]]:
    """HAProxy's ``show stat`` as {server name: row}; the rows of ``proxy`` only, if given (else every backend's)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(stats_socket)
        s.sendall(b"show stat\n")
        data = bytearray()
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    if not lines or not lines[0].startswith("# "):
        raise OSError(f"unexpected answer from {stats_socket}: {bytes(data[:200])!r}")
    fields = lines[0][2:].split(",")
    rows = [dict(zip(fields, line.split(","))) for line in lines[1:] if line]
    return {row["svname"]: row for row in rows
            if row["svname"] not in ("FRONTEND", "BACKEND") and (proxy is None or row["pxname"] == proxy)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="three gnetpy engines behind HAProxy")
    parser.add_argument("--front", type=int, default=9000, help="HAProxy's port on 127.0.0.1")
    parser.add_argument("--ports", type=int, nargs=3, default=[9001, 9002, 9003], help="the engines' ports")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per engine")
    args = parser.parse_args(argv)
    if haproxy_binary() is None:
        print("haproxy is not installed (apt-get install haproxy)", file=sys.stderr)
        return 1
    stats_socket = os.path.join(tempfile.mkdtemp(prefix="gnetpy-haproxy-"), "stats.sock")
    engines: list[Engine] = []
    haproxy = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the finally below stops everything
    try:
        for i, port in enumerate(args.ports, 1):
            engines.append(Engine(port, args.workers, name=f"e{i}", log=sys.stderr))
            e = engines[-1]
            print(f"engine e{i} on {e.address}: pid {e.pid}, workers {' '.join(map(str, e.workers))}"
                  f"  (kill -9 {e.pid} {' '.join(map(str, e.workers))})")
        env = {"FRONTEND": f"127.0.0.1:{args.front}", "STATS_SOCKET": stats_socket}
        env.update({f"ENGINE{i}": e.address for i, e in enumerate(engines, 1)})
        haproxy = HAProxy(CONFIG, env, stats_socket, log=sys.stderr)
        print(f"haproxy on 127.0.0.1:{args.front} (pid {haproxy.proc.pid}); stats socket {stats_socket}")
        print("try: python -c \"import socket; s = socket.create_connection(('127.0.0.1', %d)); "
              "print(s.recv(200))\"; Ctrl-C stops everything" % args.front)
        seen: dict[str, str] = {}
        while haproxy.proc.poll() is None:
            for name, row in haproxy.stat().items():
                if seen.get(name) != row["status"]:
                    print(f"{time.strftime('%H:%M:%S')} {name} {row['addr']}: {row['status']} "
                          f"({row['check_status']}, {row['check_desc'] or 'no check yet'})", flush=True)
                    seen[name] = row["status"]
            time.sleep(0.1)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if haproxy is not None:
            haproxy.stop()
        for e in engines:
            e.stop()


if __name__ == "__main__":
    sys.exit(main())
