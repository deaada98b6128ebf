"""gnetpy's echo example behind HAProxy, as one benchmark server: what HAProxy itself costs.

    python benchmarks/servers/behind_haproxy.py --addr tcp://127.0.0.1:9000

HAProxy listens on ``--addr`` (``mode tcp``, one thread) and forwards every connection to
examples/echo.py on a free loopback port, with a PROXY v2 header first (``send-proxy-v2``;
the echo server runs with ``proxy_protocol="v2"``), as in a deployment behind it. Both run
as children of this process, so the harness measures them together: the difference from
the ``gnetpy`` server is HAProxy's cost and the header's. SIGTERM stops both.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ECHO = os.path.join(HERE, "..", "..", "examples", "echo.py")

# No maxconn: HAProxy derives it from the descriptor limit it finds (each connection takes two).
CONFIG = """\
global
    nbthread 1
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend bench
    bind {front}
    default_backend gnetpy
backend gnetpy
    server echo 127.0.0.1:{port} send-proxy-v2
"""


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
                                            if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, child: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if child.poll() is not None:
                sys.exit(f"behind_haproxy: the echo server exited with status {child.returncode}")
            if time.monotonic() > deadline:
                sys.exit(f"behind_haproxy: the echo server did not listen within {timeout}s")
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gnetpy's echo behind HAProxy (send-proxy-v2)")
    parser.add_argument("--addr", required=True, help="tcp://HOST:PORT that HAProxy listens on")
    args = parser.parse_args(argv)
    binary = haproxy_binary()
    if binary is None:
        sys.exit("behind_haproxy: haproxy is not installed (apt-get install haproxy)")
    front = args.addr.removeprefix("tcp://")
    port = free_port()
    children: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the finally below stops both
    with tempfile.TemporaryDirectory(prefix="gnetpy-bench-haproxy-") as scratch:
        config = os.path.join(scratch, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(CONFIG.format(front=front, port=port))
        try:
            children.append(subprocess.Popen([sys.executable, ECHO, "--addr", f"tcp://127.0.0.1:{port}",
                                              "--proxy-protocol", "v2"]))
            wait_listening(port, children[0])
            children.append(subprocess.Popen([binary, "-db", "-f", config]))
            while all(child.poll() is None for child in children):
                time.sleep(0.2)
            return 1  # one of them exited on its own: the harness sees this process go too
        finally:
            for child in children:
                if child.poll() is None:
                    child.terminate()
            for child in children:
                try:
                    child.wait(5)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()


if __name__ == "__main__":
    sys.exit(main())
