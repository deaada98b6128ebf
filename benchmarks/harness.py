"""Benchmark runner: gnetpy against asyncio, uvloop and a C epoll echo server.

    python benchmarks/harness.py [--quick] [--reps N] [--duration S] [--warmup S]
                                 [--workloads W1,W2,...] [--servers gnetpy,asyncio,uvloop,c]
                                 [--idle-conns N] [--unix] [--out DIR]
    python benchmarks/harness.py --scaling [options]     # benchmarks/scaling.py: 1..N cores
    python benchmarks/harness.py --replot results/results.json   # redraw results.png, run nothing

Each run starts a fresh echo server pinned to one CPU, drives it with the C
load generator (benchmarks/loadgen.c, built on first use) pinned to another,
and stops it.  Servers are interleaved (A B C D A B C D ...) so that drift on
the machine hits all of them alike.  W1-W5 are TCP (or Unix-socket) echo under
steady load and idle connections, W6 is connection churn, W7 is UDP echo, W8
is length-prefixed frames echoed frame by frame (gnetpy's codec layer against
the same framing by hand), W9 is ping-pong on 1% of 10 000 connections (gnetpy
with and without idle timeouts), W10 is W1 over TLS 1.3 and W11 a full TLS
handshake per connection (the TLS load generator benchmarks/tlsload.c; openssl
and libssl-dev are installed with apt-get where missing, as root).  W12-W14
run application servers instead of echo servers: HTTP plaintext under wrk
(W12p pipelined 16 deep as TechEmpower's rule, W12np not), RESP under
redis-benchmark (W13p with -P 16, W13np with -P 1) and WebSocket echo under
benchmarks/wsload.c (W14); `--workloads W12,W13` name both variants.  See
benchmarks/README.md for what the workloads and columns mean.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime
import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
BUILD_DIR = BENCH_DIR / "build"
GNETPY_ECHO = REPO_ROOT / "examples" / "echo.py"
GNETPY_UDP_ECHO = REPO_ROOT / "examples" / "udp_echo.py"
ASYNCIO_ECHO = BENCH_DIR / "servers" / "asyncio_echo.py"
ASYNCIO_UDP_ECHO = BENCH_DIR / "servers" / "asyncio_udp_echo.py"
FLOOR_ECHO = BENCH_DIR / "servers" / "floor_echo.py"
GNETPY_FRAMES = BENCH_DIR / "servers" / "gnetpy_frames.py"
TLS_ECHO = BENCH_DIR / "servers" / "tls_echo.py"   # W10, W11: gnetpy, asyncio and uvloop with one SSLContext
# W12-W14: application servers (HTTP, RESP, WebSocket) rather than echo servers.
GNETPY_HTTP = REPO_ROOT / "examples" / "http_server.py"     # W12 (/plaintext) and W14 (/ws)
GNETPY_REDIS = REPO_ROOT / "examples" / "redis_server.py"   # W13
HTTP_UVLOOP = BENCH_DIR / "servers" / "http_uvloop.py"      # http_server.py's handler on uvloop
REDIS_UVLOOP = BENCH_DIR / "servers" / "redis_uvloop.py"    # redis_server.py's commands on uvloop
ASGI_PLAINTEXT = BENCH_DIR / "servers" / "asgi_plaintext.py"   # uvicorn's app
RSGI_PLAINTEXT = BENCH_DIR / "servers" / "rsgi_plaintext.py"   # granian's app
WS_WEBSOCKETS = BENCH_DIR / "servers" / "ws_websockets.py"
WS_PICOWS = BENCH_DIR / "servers" / "ws_picows.py"
BEHIND_HAPROXY = BENCH_DIR / "servers" / "behind_haproxy.py"   # gnetpy's echo with HAProxy in front
DEFAULT_OUT = BENCH_DIR / "results"

READY_TIMEOUT_S = 10.0       # a server must accept a connection (and start its workers) within this
STOP_GRACE_S = 2.0           # SIGTERM, then SIGKILL after this
LOADGEN_SLACK_S = 60.0       # connection setup and exit, beyond warm-up + duration
IDLE_SETUP_TIMEOUT_S = 300.0  # W5, W9: opening all idle connections
IDLE_RELEASE_TIMEOUT_S = STOP_GRACE_S + 10   # W5, W9: the idle load generator closing them and exiting
FD_MARGIN = 100              # descriptors a server or loadgen needs besides connections
UDP_PROBE_TIMEOUT_S = 0.2    # readiness of a UDP server: one datagram echoed within this
# W6: the load generator's clients are spread over 127.0.0.1..127.0.0.N so that
# TIME_WAIT (on its side: it closes first) cannot run it out of ephemeral
# ports; see "Connection churn and TIME_WAIT" in benchmarks/README.md.
CHURN_SRC_ADDRS = 64


class HarnessError(Exception):
    """A run could not be completed; the message says why."""


class ServerRejected(HarnessError):
    """The server exited at once with a usage error: it does not accept the flags it was given.

    Such a server is skipped (for the rest of the run) with its own error message,
    like a server that is missing, instead of stopping the run.
    """


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    conns: int                 # connections; clients in W6, UDP sockets in W7
    size: int = 64             # W8: the frame's body, after its 4-byte length header
    depth: int = 1
    idle: bool = False
    mode: str = "load"         # load, idle, churn (a connection per request), udp, frames (W8), mixed (W9),
                               # tls, tls-churn (W10, W11), http, resp, ws (W12-W14)

    @property
    def udp(self) -> bool:
        return self.mode == "udp"

    @property
    def tls(self) -> bool:
        return self.mode in ("tls", "tls-churn")

    @property
    def app(self) -> bool:
        """W12-W14: an application protocol (HTTP, RESP, WebSocket), served by application servers."""
        return self.mode in APP_MODES


# W12-W14's modes: the protocol each speaks, the tool that drives it.
APP_MODES = {"http": "HTTP", "resp": "RESP (Redis)", "ws": "WebSocket"}
HTTP_CONNS = 256    # W12: wrk -c256 -t1, as TechEmpower's plaintext test
RESP_CLIENTS = 50   # W13: redis-benchmark -c 50


WORKLOADS = {
    w.name: w
    for w in (
        Workload("W1", "50 conns x 64 B ping-pong", 50),
        Workload("W2", "50 conns x 64 B, 16 in flight", 50, depth=16),
        Workload("W3", "10 conns x 16 KiB, 4 in flight", 10, size=16 * 1024, depth=4),
        Workload("W4", "1000 conns x 64 B ping-pong", 1000),
        Workload("W5", "idle conns: server RSS per connection", 10_000, idle=True, mode="idle"),
        Workload("W6", "50 clients: connect, 64 B ping-pong, close", 50, mode="churn"),
        Workload("W7", "50 UDP sockets x 64 B ping-pong", 50, mode="udp"),
        # W8: load mode's W2 with every message a frame: a 4-byte big-endian length, then the body.
        Workload("W8", "50 conns x 4+64 B frames, 16 in flight", 50, depth=16, mode="frames"),
        # W9: `conns` active connections doing W1's ping-pong while --idle-conns
        # minus them are held open, idle, by a second load generator.
        Workload("W9", "10 000 conns, 1% active", 100, mode="mixed"),
        # W10, W11: TLS 1.3 (TLS_AES_128_GCM_SHA256) through benchmarks/tlsload.c; W10 is W1
        # over TLS, W11 is W6 with a full handshake (no resumption) per connection.
        Workload("W10", "TLS echo: 50 conns x 64 B ping-pong, TLS 1.3, AES-GCM", 50, mode="tls"),
        Workload("W11", "TLS handshakes: 50 clients: connect, handshake, 64 B echo, close", 50,
                 mode="tls-churn"),
        # W12: wrk -t1 -c256 on GET /plaintext; depth = requests pipelined per write (W12p: 16, as
        # TechEmpower's plaintext test; W12np: 1, one at a time).  `size` is unused (wrk's requests).
        Workload("W12p", "wrk -c256 /plaintext, 16 pipelined", HTTP_CONNS, depth=16, mode="http"),
        Workload("W12np", "wrk -c256 /plaintext, not pipelined", HTTP_CONNS, depth=1, mode="http"),
        # W13: redis-benchmark -c 50 -t set,get; depth = -P (commands pipelined per client).
        Workload("W13p", "redis-benchmark SET+GET, -P 16", RESP_CLIENTS, depth=16, mode="resp"),
        Workload("W13np", "redis-benchmark SET+GET, -P 1", RESP_CLIENTS, depth=1, mode="resp"),
        # W14: benchmarks/wsload.c: 50 WebSocket connections x 64 B binary messages, 16 in flight (W2's shape).
        Workload("W14", "WebSocket echo 50 x 64 B, 16 in flight", 50, depth=16, mode="ws"),
    )
}
# Names that stand for several workloads on the command line: W12 and W13 are both their variants.
WORKLOAD_GROUPS = {"W12": ["W12p", "W12np"], "W13": ["W13p", "W13np"]}


@dataclass(frozen=True)
class Server:
    name: str
    command: Callable[[str], list[str]]    # listen address -> argv
    unavailable: Callable[[], str | None]  # why it cannot run here, or None
    env: Callable[[], dict[str, str]] = lambda: {}
    udp_command: Callable[[str], list[str]] | None = None   # udp://HOST:PORT -> argv (W7)
    udp_unavailable: Callable[[], str | None] = lambda: None
    workers: int = 0        # worker processes it forks: a run waits for all of them to exist
    # W8: a length-prefixed frame echo (ADDR -> argv).  A byte echo would pass W8's
    # check without framing anything, so a server without one skips W8.
    frames_command: Callable[[str], list[str]] | None = None
    frames_only: bool = False   # it is a frame echo (command = frames_command): W8 and nothing else
    # W10, W11: a TLS echo (ADDR, certificate, key -> argv); a server without one skips them.
    tls_command: Callable[[str, Path, Path], list[str]] | None = None
    tls_unavailable: Callable[[], str | None] = lambda: None
    # W12-W14: an application server (command = it) speaking these of APP_MODES, and nothing
    # else; an echo server (empty) runs none of W12-W14.
    serves: frozenset[str] = frozenset()
    # W6 only: every connection must begin with a PROXY header of this version ("v1", "v2"),
    # which the load generator then sends (loadgen --proxy).
    proxy: str | None = None

    def argv(self, addr: str, wl: Workload | None = None, tls: TlsFiles | None = None) -> list[str]:
        if addr.startswith("udp://"):
            assert self.udp_command is not None
            return self.udp_command(addr)
        if wl is not None and wl.tls:
            assert self.tls_command is not None and tls is not None
            return self.tls_command(addr, tls.cert, tls.key)
        if wl is not None and wl.mode == "frames":
            assert self.frames_command is not None
            return self.frames_command(addr)
        return self.command(addr)

    def applies_to(self, wl: Workload) -> bool:
        """Whether `wl` is for this kind of server at all: echo servers run W1-W11, application servers
        the workloads of their protocols.  A pair that does not apply is not run and not listed as
        skipped (an HTTP server in W1 is no more news than an echo server in W12)."""
        return wl.mode in self.serves if wl.app or self.serves else True

    def cannot_run(self, wl: Workload) -> str | None:
        """Why this server cannot run workload `wl` (beyond `unavailable`), or None."""
        if wl.app:
            return None
        if self.proxy is not None and wl.mode != "churn":
            churn = [w for w, x in WORKLOADS.items() if x.mode == "churn"]
            return (f"{self.name} requires a PROXY header on every connection: it runs only "
                    f"{', '.join(churn)}, where the load generator sends one per connection")
        frames = [w for w, x in WORKLOADS.items() if x.mode == "frames"]
        if self.frames_only and wl.mode != "frames":
            return f"{self.name} is a length-prefixed frame echo: it runs only {', '.join(frames)}"
        if wl.mode == "frames" and self.frames_command is None:
            return (f"{self.name} has no length-prefixed frame echo ({wl.name} echoes frame by frame; "
                    f"a byte echo would pass its check without framing anything)")
        if wl.tls:
            if self.tls_command is None:
                return f"{self.name} has no TLS server"
            return self.tls_unavailable()
        if not wl.udp:
            return None
        if self.udp_command is None:
            return f"{self.name} has no UDP server"
        return self.udp_unavailable()


def _gnetpy_missing() -> str | None:
    if GNETPY_ECHO.exists():
        return None
    return f"gnetpy server missing: {GNETPY_ECHO.relative_to(REPO_ROOT)} does not exist"


def _gnetpy_udp_missing() -> str | None:
    if GNETPY_UDP_ECHO.exists():
        return None
    return f"gnetpy UDP server missing: {GNETPY_UDP_ECHO.relative_to(REPO_ROOT)} does not exist"


def _gnetpy_frames_missing() -> str | None:
    if not GNETPY_FRAMES.exists():
        return f"gnetpy frame server missing: {GNETPY_FRAMES.relative_to(REPO_ROOT)} does not exist"
    if not (REPO_ROOT / "src" / "gnetpy" / "codec.py").exists():
        return "gnetpy has no codec module here (src/gnetpy/codec.py)"
    return None


def _uvloop_missing() -> str | None:
    if importlib.util.find_spec("uvloop") is None:
        return "uvloop is not importable in this Python (pip install uvloop)"
    return None


def _gnetpy_env() -> dict[str, str]:
    # Measure this checkout's gnetpy even where another copy is installed.
    src = str(REPO_ROOT / "src")
    old = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{src}{os.pathsep}{old}" if old else src}


def _tls_echo(loop: str) -> Callable[[str, Path, Path], list[str]]:
    """W10, W11: benchmarks/servers/tls_echo.py --loop LOOP (the same SSLContext for every loop)."""
    def argv(addr: str, cert: Path, key: Path) -> list[str]:
        return [sys.executable, str(TLS_ECHO), "--loop", loop, "--addr", addr, "--cert", str(cert),
                "--key", str(key)]
    return argv


def _gnetpy_tls_missing() -> str | None:
    if not (REPO_ROOT / "src" / "gnetpy" / "tls.py").exists():
        return "gnetpy has no TLS here (src/gnetpy/tls.py)"
    return None


def _gnetpy_pure_env() -> dict[str, str]:
    # The same checkout with its compiled accelerator switched off (README "Compiled accelerator").
    return {**_gnetpy_env(), "GNETPY_NO_EXTENSIONS": "1"}


SERVERS = {
    s.name: s
    for s in (
        Server(
            "gnetpy",
            lambda addr: [sys.executable, str(GNETPY_ECHO), "--addr", addr, "--loops", "1"],
            _gnetpy_missing,
            _gnetpy_env,
            lambda addr: [sys.executable, str(GNETPY_UDP_ECHO), "--addr", addr],
            _gnetpy_udp_missing,
            tls_command=_tls_echo("gnetpy"),
            tls_unavailable=_gnetpy_tls_missing,
        ),
        Server(
            "gnetpy-pure",
            lambda addr: [sys.executable, str(GNETPY_ECHO), "--addr", addr, "--loops", "1"],
            _gnetpy_missing,
            _gnetpy_pure_env,
            lambda addr: [sys.executable, str(GNETPY_UDP_ECHO), "--addr", addr],
            _gnetpy_udp_missing,
            tls_command=_tls_echo("gnetpy"),
            tls_unavailable=_gnetpy_tls_missing,
        ),
        Server(
            "asyncio",
            lambda addr: [sys.executable, str(ASYNCIO_ECHO), "--addr", addr],
            lambda: None,
            udp_command=lambda addr: [sys.executable, str(ASYNCIO_UDP_ECHO), "--addr", addr],
            frames_command=lambda addr: [sys.executable, str(ASYNCIO_ECHO), "--addr", addr, "--frames"],
            tls_command=_tls_echo("asyncio"),
        ),
        Server(
            "uvloop",
            lambda addr: [sys.executable, str(ASYNCIO_ECHO), "--addr", addr, "--uvloop"],
            _uvloop_missing,
            udp_command=lambda addr: [sys.executable, str(ASYNCIO_UDP_ECHO), "--addr", addr, "--uvloop"],
            frames_command=lambda addr: [sys.executable, str(ASYNCIO_ECHO), "--addr", addr, "--uvloop",
                                         "--frames"],
            tls_command=_tls_echo("uvloop"),
        ),
        Server(
            "c",
            lambda addr: [str(BUILD_DIR / "c_echo"), "--addr", addr],
            lambda: None,
            udp_command=lambda addr: [str(BUILD_DIR / "c_echo"), "--addr", addr],
        ),
        Server(
            "floor",
            lambda addr: [sys.executable, str(FLOOR_ECHO), "--addr", addr],
            lambda: None,
        ),
    )
}


def _gnetpy_variant(name: str, loops: int, *flags: str) -> Server:
    """gnetpy's examples/echo.py with more loops, threads or worker processes (TCP only)."""
    return Server(
        name,
        lambda addr: [sys.executable, str(GNETPY_ECHO), "--addr", addr, "--loops", str(loops), *flags],
        _gnetpy_missing,
        _gnetpy_env,
        workers=loops if "--processes" in flags else 0,
    )


# W6 "threads vs processes, main reactor vs reuse_port": all pinned to the one
# server CPU like every other server (worker processes inherit the pinning), so
# the difference is the cost of each arrangement, not more cores.  gnetpy-procs2
# against gnetpy-procs2-rp is what handing a connection's descriptor to a worker
# costs per connection.  A variant whose flags examples/echo.py does not accept
# yet is skipped with the example's own error.
GNETPY_VARIANTS = {
    s.name: s
    for s in (
        _gnetpy_variant("gnetpy-threads2", 2, "--threads"),
        _gnetpy_variant("gnetpy-procs1", 1, "--processes"),
        _gnetpy_variant("gnetpy-procs2", 2, "--processes"),
        _gnetpy_variant("gnetpy-procs2-rp", 2, "--processes", "--reuse-port"),
    )
}
SERVERS.update(GNETPY_VARIANTS)

# W9 "what idle-timeout bookkeeping costs": the gnetpy server with idle timeouts
# on, against plain gnetpy (off) under the same load.  60 s: nothing times out
# during a run (the idle load generator fails the run if a connection is closed).
IDLE_TIMEOUT_S = 60
GNETPY_IDLE = _gnetpy_variant("gnetpy-idle", 1, "--idle-timeout", str(IDLE_TIMEOUT_S))
SERVERS[GNETPY_IDLE.name] = GNETPY_IDLE

# W6 "what a PROXY header costs per connection": gnetpy requiring one (each version), the
# load generator sending it with the connection's message; against plain gnetpy.  And W1
# (or any TCP workload) "what HAProxy in front costs": gnetpy-haproxy is HAProxy (one
# thread, send-proxy-v2) and gnetpy's echo measured together (servers/behind_haproxy.py).
GNETPY_PROXY = {
    s.name: s
    for s in (
        dataclasses.replace(_gnetpy_variant("gnetpy-proxy-v1", 1, "--proxy-protocol", "v1"), proxy="v1"),
        dataclasses.replace(_gnetpy_variant("gnetpy-proxy-v2", 1, "--proxy-protocol", "v2"), proxy="v2"),
    )
}
SERVERS.update(GNETPY_PROXY)


def _haproxy_missing() -> str | None:
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        return "haproxy is not installed (apt-get install haproxy)"
    return _gnetpy_missing()


GNETPY_HAPROXY = Server("gnetpy-haproxy", lambda addr: [sys.executable, str(BEHIND_HAPROXY), "--addr", addr],
                        _haproxy_missing, _gnetpy_env)
SERVERS[GNETPY_HAPROXY.name] = GNETPY_HAPROXY


def _gnetpy_frames(name: str, mode: str) -> Server:
    """W8's gnetpy servers: benchmarks/servers/gnetpy_frames.py --mode codec|hand (frames only)."""
    def argv(addr: str) -> list[str]:
        return [sys.executable, str(GNETPY_FRAMES), "--addr", addr, "--mode", mode]
    return Server(name, argv, _gnetpy_frames_missing, _gnetpy_env, frames_command=argv, frames_only=True)


# W8 "what the codec layer costs": the same length-prefixed frame echo through the
# codec option and on_frame (gnetpy-codec), and framed by hand in on_traffic
# (gnetpy-frames).  Frame echoes only; W8's default server set includes them.
GNETPY_FRAMES_SERVERS = {
    s.name: s
    for s in (
        _gnetpy_frames("gnetpy-codec", "codec"),
        _gnetpy_frames("gnetpy-frames", "hand"),
    )
}
SERVERS.update(GNETPY_FRAMES_SERVERS)


# ---- W12-W14: application servers -----------------------------------------


def host_port(addr: str) -> tuple[str, str]:
    """tcp://HOST:PORT -> (HOST, PORT)."""
    host, _, port = addr.removeprefix("tcp://").rpartition(":")
    return host, port


def _missing(*modules: str, files: Sequence[Path] = (), programs: Sequence[str] = ()) -> Callable[[], str | None]:
    """An `unavailable` check: the files must exist, the modules be importable, the programs on PATH."""
    def why() -> str | None:
        for path in files:
            if not path.exists():
                return f"{path.relative_to(REPO_ROOT)} does not exist"
        gone = [m for m in modules if importlib.util.find_spec(m) is None]
        if gone:
            return f"{', '.join(gone)} not importable in this Python (pip install {' '.join(gone)})"
        for program in programs:
            if shutil.which(program) is None:
                return f"{program} is not on PATH"
        return None
    return why


def _gnetpy_http(addr: str) -> list[str]:
    return [sys.executable, str(GNETPY_HTTP), "--addr", addr, "--loops", "1"]


def _gnetpy_redis(addr: str) -> list[str]:
    return [sys.executable, str(GNETPY_REDIS), "--addr", addr, "--loops", "1"]


def _uvicorn(addr: str) -> list[str]:
    host, port = host_port(addr)
    return [sys.executable, "-m", "uvicorn", f"{ASGI_PLAINTEXT.stem}:app", "--app-dir", str(ASGI_PLAINTEXT.parent),
            "--host", host, "--port", port, "--loop", "uvloop", "--http", "httptools", "--workers", "1",
            "--no-access-log", "--log-level", "warning"]


def _granian(addr: str) -> list[str]:
    host, port = host_port(addr)
    return [sys.executable, "-m", "granian", "--interface", "rsgi", "--workers", "1", "--runtime-threads", "1",
            "--blocking-threads", "1", "--http", "1", "--no-ws", "--log-level", "warning",
            "--working-dir", str(RSGI_PLAINTEXT.parent), "--host", host, "--port", port,
            f"{RSGI_PLAINTEXT.stem}:app"]


def _redis_server(addr: str) -> list[str]:
    host, port = host_port(addr)
    # No persistence (and a scratch directory, should it write anything), one I/O thread (the default).
    return ["redis-server", "--port", port, "--bind", host, "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", tempfile.gettempdir()]


_GNETPY_HTTP_MISSING = _missing("httptools", "websockets", files=(GNETPY_HTTP,))
_GNETPY_REDIS_MISSING = _missing("hiredis", files=(GNETPY_REDIS,))
APP_SERVERS = {
    s.name: s
    for s in (
        # W12 (HTTP plaintext) and W14 (WebSocket echo): one example, one port; compiled and pure.
        Server("gnetpy-http", _gnetpy_http, _GNETPY_HTTP_MISSING, _gnetpy_env, serves=frozenset({"http", "ws"})),
        Server("gnetpy-http-pure", _gnetpy_http, _GNETPY_HTTP_MISSING, _gnetpy_pure_env,
               serves=frozenset({"http", "ws"})),
        Server("http-uvloop", lambda addr: [sys.executable, str(HTTP_UVLOOP), "--addr", addr.removeprefix("tcp://")],
               _missing("httptools", "uvloop", files=(HTTP_UVLOOP,)), serves=frozenset({"http"})),
        Server("uvicorn", _uvicorn, _missing("uvicorn", "uvloop", "httptools", files=(ASGI_PLAINTEXT,)),
               serves=frozenset({"http"})),
        # granian forks its worker: a parent and one worker process (both pinned, both measured).
        Server("granian", _granian, _missing("granian", files=(RSGI_PLAINTEXT,)), workers=1,
               serves=frozenset({"http"})),
        # W13 (RESP): the gnetpy example, compiled and pure, its commands on uvloop, and Redis itself.
        Server("gnetpy-redis", _gnetpy_redis, _GNETPY_REDIS_MISSING, _gnetpy_env, serves=frozenset({"resp"})),
        Server("gnetpy-redis-pure", _gnetpy_redis, _GNETPY_REDIS_MISSING, _gnetpy_pure_env,
               serves=frozenset({"resp"})),
        Server("redis-uvloop", lambda addr: [sys.executable, str(REDIS_UVLOOP), "--addr", addr.removeprefix("tcp://")],
               _missing("hiredis", "uvloop", files=(REDIS_UVLOOP, GNETPY_REDIS)), serves=frozenset({"resp"})),
        Server("redis-server", _redis_server, _missing(programs=("redis-server",)), serves=frozenset({"resp"})),
        # W14 (WebSocket echo): websockets' asyncio server and picows (on uvloop).
        Server("websockets", lambda addr: [sys.executable, str(WS_WEBSOCKETS), "--addr", addr.removeprefix("tcp://")],
               _missing("websockets", files=(WS_WEBSOCKETS,)), serves=frozenset({"ws"})),
        Server("picows", lambda addr: [sys.executable, str(WS_PICOWS), "--addr", addr.removeprefix("tcp://")],
               _missing("picows", "uvloop", files=(WS_PICOWS,)), serves=frozenset({"ws"})),
    )
}
SERVERS.update(APP_SERVERS)
# On request only: websockets' server on uvloop, to tell the event loop's share from websockets' own.
WEBSOCKETS_UVLOOP = Server(
    "websockets-uvloop",
    lambda addr: [sys.executable, str(WS_WEBSOCKETS), "--addr", addr.removeprefix("tcp://"), "--uvloop"],
    _missing("websockets", "uvloop", files=(WS_WEBSOCKETS,)), serves=frozenset({"ws"}))
SERVERS[WEBSOCKETS_UVLOOP.name] = WEBSOCKETS_UVLOOP


def add_baseline_server(checkout: Path) -> None:
    """Register server 'baseline': the echo examples of another checkout, with its own src/."""
    udp_echo = checkout / "examples" / "udp_echo.py"
    SERVERS["baseline"] = Server(   # no frame echo: W8 skips it
        "baseline",
        lambda addr: [sys.executable, str(checkout / "examples" / "echo.py"), "--addr", addr, "--loops", "1"],
        lambda: None,
        lambda: {"PYTHONPATH": str(checkout / "src")},
        lambda addr: [sys.executable, str(udp_echo), "--addr", addr],
        lambda: None if udp_echo.exists() else f"baseline UDP server missing: {udp_echo} does not exist",
    )


# Run only when named: a measuring stick, not a contender (see servers/floor_echo.py),
# gnetpy's multi-loop arrangements (one CPU for all of them; see GNETPY_VARIANTS), and
# gnetpy with idle timeouts on (W9's question; see GNETPY_IDLE), and W8's frame echoes,
# which do run by default when W8 does (see default_servers).
ON_REQUEST = ("floor", *GNETPY_VARIANTS, GNETPY_IDLE.name, *GNETPY_PROXY, GNETPY_HAPROXY.name, *GNETPY_FRAMES_SERVERS, WEBSOCKETS_UVLOOP.name)
# The echo servers run by default; W12-W14's application servers join them when those workloads run.
DEFAULT_SERVERS = [name for name in SERVERS if name not in ON_REQUEST and name not in APP_SERVERS]


def default_servers(workloads: Sequence[str]) -> list[str]:
    """The servers run when --servers is not given: DEFAULT_SERVERS, W8's gnetpy servers with W8,
    and the application servers of W12-W14's protocols with those workloads."""
    modes = {WORKLOADS[w].mode for w in workloads}
    echo = any(not WORKLOADS[w].app for w in workloads)
    frames = "frames" in modes
    apps = [name for name, s in APP_SERVERS.items() if s.serves & modes]
    return [*(DEFAULT_SERVERS if echo else ()), *(GNETPY_FRAMES_SERVERS if frames else ()), *apps]

LOAD_METRICS = (
    "msgs_per_s",
    "mb_per_s",
    "rtt_p50_us",
    "rtt_p99_us",
    "server_user_us_per_msg",
    "server_sys_us_per_msg",
    "server_cpu_util",
    "loadgen_cpu_util",
)
IDLE_METRICS = ("kib_per_conn",)
CHURN_METRICS = (
    "conns_per_s",
    "rtt_p50_us",
    "rtt_p99_us",
    "server_user_us_per_conn",
    "server_sys_us_per_conn",
    "server_cpu_util",
    "loadgen_cpu_util",
)
UDP_METRICS = (*LOAD_METRICS, "lost")   # a message is a datagram
MIXED_METRICS = ("idle_conns", *LOAD_METRICS)   # W9: the active connections' figures
FRAMES_METRICS = LOAD_METRICS   # W8: a message is a frame
TLS_METRICS = LOAD_METRICS            # W10: a message over TLS (plaintext bytes for MB/s)
TLS_CHURN_METRICS = CHURN_METRICS     # W11: a connection is one full TLS handshake
# W12 (wrk) and W13 (redis-benchmark): requests completed, the server's CPU per request, and the
# load generator's CPU use; W12 also the responses that were not 2xx/3xx and the socket errors.
HTTP_METRICS = ("reqs_per_s", "server_user_us_per_req", "server_sys_us_per_req", "server_cpu_util",
                "loadgen_cpu_util", "errors")
RESP_METRICS = ("reqs_per_s", "set_per_s", "get_per_s", "server_user_us_per_req", "server_sys_us_per_req",
                "server_cpu_util", "loadgen_cpu_util")
WS_METRICS = LOAD_METRICS   # W14: a message is one WebSocket binary frame each way
METRICS = {"load": LOAD_METRICS, "idle": IDLE_METRICS, "churn": CHURN_METRICS, "udp": UDP_METRICS,
           "frames": FRAMES_METRICS, "mixed": MIXED_METRICS, "tls": TLS_METRICS,
           "tls-churn": TLS_CHURN_METRICS, "http": HTTP_METRICS, "resp": RESP_METRICS, "ws": WS_METRICS}
# Per mode: the throughput and the server CPU figure that get ratios, tables and charts.
COMPARED = {
    "load": ("msgs_per_s", "server_user_us_per_msg"),
    "idle": ("kib_per_conn",),
    "churn": ("conns_per_s", "server_user_us_per_conn"),
    "udp": ("msgs_per_s", "server_user_us_per_msg"),
    "frames": ("msgs_per_s", "server_user_us_per_msg"),
    "mixed": ("msgs_per_s", "server_user_us_per_msg"),
    "tls": ("msgs_per_s", "server_user_us_per_msg"),
    "tls-churn": ("conns_per_s", "server_user_us_per_conn"),
    "http": ("reqs_per_s", "server_user_us_per_req"),
    "resp": ("reqs_per_s", "server_user_us_per_req"),
    "ws": ("msgs_per_s", "server_user_us_per_msg"),
}
REFERENCES = ("uvloop", "c")
# W8 also compares with gnetpy-frames (framing by hand): gnetpy-codec's ratio to it is the
# price of the codec layer.  W9 compares with plain gnetpy: gnetpy-idle's ratio to it is the
# price of idle timeouts.  W10 and W11 compare with uvloop only (the C server has no TLS).
# W12-W14 compare with the application servers' counterparts of uvloop and C: W12 with
# http-uvloop (examples/http_server.py's handler on uvloop), W13 with redis-uvloop (the same
# commands on uvloop) and redis-server, W14 with websockets (the same sans-I/O framing as the
# gnetpy example, on its asyncio server) and picows.
MODE_REFERENCES = {"frames": ("gnetpy-frames", *REFERENCES), "mixed": ("gnetpy", *REFERENCES),
                   "tls": ("uvloop",), "tls-churn": ("uvloop",), "http": ("http-uvloop",),
                   "resp": ("redis-uvloop", "redis-server"), "ws": ("websockets", "picows")}
CODEC_TARGET = 1.3   # W8: gnetpy-codec / gnetpy-frames user µs per frame should stay at or under this
TLS_TARGET = 1.0     # W10: gnetpy / uvloop server user µs per message should stay at or under this


@dataclass
class Config:
    quick: bool
    reps: int
    duration: float
    warmup: float
    idle_conns: int
    workloads: list[str]
    servers: list[str]
    unix: bool
    out: Path


# ---- building -------------------------------------------------------------


_LOCAL_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"', re.MULTILINE)


def build_sources(name: str) -> list[Path]:
    """benchmarks/NAME.c and the headers it includes with `#include "..."` (loadgen.c and
    tlsload.c: loadcommon.h), transitively, each found relative to the including file."""
    sources = [BENCH_DIR / f"{name}.c"]
    for src in sources:   # grows as headers are found
        for include in _LOCAL_INCLUDE.findall(src.read_text(errors="replace")):
            header = (src.parent / include).resolve()
            if header.is_file() and header not in sources:
                sources.append(header)
    return sources


def is_built(name: str) -> bool:
    """benchmarks/build/NAME exists and is newer than benchmarks/NAME.c and its local headers."""
    binary = BUILD_DIR / name
    return binary.exists() and binary.stat().st_mtime >= max(
        src.stat().st_mtime for src in build_sources(name))


def ensure_built(name: str, libs: Sequence[str] = ()) -> Path:
    """Compile benchmarks/NAME.c (linked with -lm and `libs`) into benchmarks/build/NAME if it is stale."""
    src = BENCH_DIR / f"{name}.c"
    binary = BUILD_DIR / name
    if is_built(name):
        return binary
    cc = shutil.which("cc")
    if cc is None:
        raise HarnessError(f"no C compiler: `cc` is not on PATH (needed to build {src.name})")
    BUILD_DIR.mkdir(exist_ok=True)
    # Build under a private name and rename, so a concurrent run never sees half a binary.
    tmp = BUILD_DIR / f".{name}.{os.getpid()}.tmp"
    proc = subprocess.run(
        [cc, "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(src), *libs, "-lm"],
        capture_output=True, text=True, timeout=120,
    )
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise HarnessError(f"compiling {src} failed:\n{proc.stderr}")
    if proc.stderr:
        print(proc.stderr, file=sys.stderr)
    os.replace(tmp, binary)
    return binary


# ---- TLS (W10, W11) -------------------------------------------------------

TLS_LIBS = ("-lssl", "-lcrypto")
TLS_PACKAGES = {"openssl": "the openssl command (the throwaway certificate)",
                "libssl-dev": "OpenSSL's headers and libraries (to build benchmarks/tlsload.c)"}
# The throwaway server certificate: self-signed, ECDSA on P-256, valid for a day.  The key
# type sets what a handshake costs (W11): an ECDSA P-256 signature is ~20 µs of server CPU,
# an RSA-2048 one ~1 ms.
TLS_CERT_KIND = "ECDSA P-256 (prime256v1), self-signed"
TLS_CERT_ARGS = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")
APT_TIMEOUT_S = 600


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class TlsSetup:
    """What W10 and W11 run with: the TLS load generator and the server's certificate."""
    tlsload: Path
    files: TlsFiles


def have_openssl_headers() -> bool:
    """Whether `cc` finds <openssl/ssl.h>."""
    cc = shutil.which("cc")
    if cc is None:
        return False
    proc = subprocess.run([cc, "-E", "-x", "c", "-", "-o", os.devnull], input="#include <openssl/ssl.h>\n",
                          capture_output=True, text=True, timeout=60, check=False)
    return proc.returncode == 0


def missing_tls_packages() -> list[str]:
    """The Debian packages W10/W11 need that are not here (libssl-dev only while tlsload is unbuilt)."""
    missing = []
    if shutil.which("openssl") is None:
        missing.append("openssl")
    if not is_built("tlsload") and not have_openssl_headers():
        missing.append("libssl-dev")
    return missing


def install_tls_packages() -> str | None:
    """Install what W10/W11 lack (apt-get, as root only); why they cannot run, or None."""
    missing = missing_tls_packages()
    if not missing:
        return None
    what = "; ".join(f"{p}: {TLS_PACKAGES[p]}" for p in missing)
    hint = f"`apt-get install -y {' '.join(missing)}`"
    if os.geteuid() != 0:
        return f"missing {what}; not installed automatically (not root): install with {hint}"
    if shutil.which("apt-get") is None:
        return f"missing {what}; no apt-get here to install it with"
    print(f"W10/W11: installing {' '.join(missing)} (apt-get) ...", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT_S,
                                  check=False)
        except subprocess.TimeoutExpired:
            return f"missing {what}; `{' '.join(argv)}` did not finish in {APT_TIMEOUT_S} s"
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-500:]
            return f"missing {what}; `{' '.join(argv)}` failed (exit {proc.returncode}): {tail}"
    still = missing_tls_packages()
    return f"still missing after apt-get install: {', '.join(still)}" if still else None


def make_certificate(workdir: Path) -> TlsFiles:
    """A throwaway self-signed certificate and key for CN=localhost (TLS_CERT_KIND) in `workdir`."""
    files = TlsFiles(workdir / "tls-cert.pem", workdir / "tls-key.pem")
    argv = ["openssl", "req", "-x509", *TLS_CERT_ARGS, "-nodes", "-days", "1", "-subj", "/CN=localhost",
            "-keyout", str(files.key), "-out", str(files.cert)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"making the TLS certificate failed ({' '.join(argv)}):\n{proc.stderr.strip()}")
    return files


def prepare_tls(workdir: Path, workloads: Sequence[str], servers: Sequence[str],
                skipped_workloads: dict[str, dict[str, str]]) -> TlsSetup | None:
    """W10/W11's load generator and certificate, when a server is to run one of them.

    Installs openssl and libssl-dev first where they are missing (root only).  Where
    that cannot be done, every server skips W10 and W11 with the reason (in
    `skipped_workloads`, as a server without TLS does) and the rest of the run goes on.
    """
    tls = [w for w in workloads if WORKLOADS[w].tls]
    if not any(srv not in skipped_workloads.get(w, {}) for w in tls for srv in servers):
        return None
    if why := install_tls_packages():
        why = f"TLS workloads cannot run here: {why}"
        print(f"SKIPPING {', '.join(tls)}: {why}", file=sys.stderr)
        for w in tls:
            for srv in servers:
                skipped_workloads.setdefault(w, {}).setdefault(srv, why)
        return None
    return TlsSetup(ensure_built("tlsload", TLS_LIBS), make_certificate(workdir))


# ---- processes ------------------------------------------------------------


def pick_cpus() -> tuple[int | None, int | None]:
    """(server CPU, loadgen CPU); (None, None) when there is only one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


CpuSet = int | frozenset[int] | set[int] | None   # one CPU, an allowed set, or no pinning


def _child_setup(cpu: CpuSet) -> None:
    # Runs in the child between fork and exec: thousands of sockets for W5,
    # and the pinning in place before the program starts any thread or worker
    # process (which inherit it).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if cpu is not None:
        os.sched_setaffinity(0, {cpu} if isinstance(cpu, int) else cpu)


class Processes:
    """Every child of a benchmark run; all are killed and reaped on exit."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self._procs):
            self.stop(proc)

    def spawn(self, argv: list[str], cpu: CpuSet, **kwargs: Any) -> subprocess.Popen[bytes]:
        # A session of its own: the terminal's Ctrl-C reaches only the harness,
        # which then stops the children in order, and killpg gets any workers.
        proc = subprocess.Popen(
            argv, preexec_fn=functools.partial(_child_setup, cpu),
            start_new_session=True, **kwargs,
        )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Whatever of its group outlived it (a worker process its parent did not
        # stop): the group id stays taken while any member lives, so this reaches
        # only them.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream:
                stream.close()
        if proc in self._procs:
            self._procs.remove(proc)


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, parents first ([] if `pid` is gone).

    Reads /proc/PID/task/TID/children (every thread's children); where the
    kernel lacks those files (CONFIG_PROC_CHILDREN off) it scans /proc once for
    everyone's parent.  The same walk as the load generator's CPU accounting.
    """
    if not Path(f"/proc/{pid}").exists():
        return []
    if not Path("/proc/thread-self/children").exists():
        return _process_tree_by_scan(pid)
    tree = [pid]
    for p in tree:   # grows while it is walked: breadth first
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    children = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                    tree.extend(int(c) for c in children if int(c) not in tree)
    return tree


def _process_tree_by_scan(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat[stat.rindex(")") + 1:].split()[1])
                parents.setdefault(ppid, []).append(int(entry))
    tree = [pid]
    for p in tree:
        tree.extend(parents.get(p, []))
    return tree


def wait_for_processes(server: RunningServer, count: int, timeout: float = READY_TIMEOUT_S) -> int:
    """Wait until the server's process tree has at least `count` processes; returns how many."""
    deadline = time.monotonic() + timeout
    while True:
        server.check_alive("while starting its worker processes")
        have = len(process_tree(server.proc.pid))
        if have >= count:
            return have
        if time.monotonic() >= deadline:
            raise HarnessError(
                f"{server.name} server has {have} processes after {timeout:g} s, expected at "
                f"least {count} (a parent and its workers); its output:\n{server.output()}")
        time.sleep(0.02)


@dataclass
class RunningServer:
    name: str
    proc: subprocess.Popen[bytes]
    addr: str
    log: Path

    def output(self, limit: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        text = text[-limit:].strip()
        return text or "(no output)"

    def check_alive(self, when: str) -> None:
        rc = self.proc.poll()
        if rc is not None:
            raise HarnessError(
                f"{self.name} server exited with code {rc} {when}; its output:\n{self.output()}"
            )


def free_tcp_addr() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def free_udp_addr() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return f"udp://127.0.0.1:{s.getsockname()[1]}"


def try_udp_echo(addr: str, timeout: float) -> bool:
    """Send one datagram to udp://HOST:PORT; True once it comes back unchanged."""
    host, _, port = addr[len("udp://"):].rpartition(":")
    probe = f"gnetpy-bench ready? {time.monotonic_ns()}".encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((host, int(port)))
            s.send(probe)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if s.recv(65536) == probe:
                    return True
        except OSError:   # timeout, or ECONNREFUSED: nothing bound to the port yet
            return False
    return False


def try_connect(addr: str, timeout: float) -> bool:
    if addr.startswith("unix://"):
        family, target = socket.AF_UNIX, addr[len("unix://"):]
    else:
        host, _, port = addr[len("tcp://"):].rpartition(":")
        family, target = socket.AF_INET, (host, int(port))
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(target)
        except OSError:
            return False
    return True


def show_argv(argv: list[str]) -> str:
    """A command line for messages: `python`, and paths inside the checkout relative to it."""
    shown = []
    for i, arg in enumerate(argv):
        if i == 0 and arg == sys.executable:
            shown.append("python")
        elif arg.startswith(str(REPO_ROOT) + os.sep):
            shown.append(os.path.relpath(arg, REPO_ROOT))
        else:
            shown.append(arg)
    return " ".join(shown)


def usage_error(rc: int | None, output: str) -> str | None:
    """The error line of an argparse usage error (exit code 2, `usage:` ... `error:`), or None."""
    if rc != 2 or "usage:" not in output:
        return None
    errors = [line.strip() for line in output.splitlines() if "error:" in line]
    return errors[-1] if errors else None


def start_server(
    procs: Processes, name: str, argv: list[str], addr: str, workdir: Path,
    cpu: CpuSet, env: dict[str, str] | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
) -> RunningServer:
    """Start a server and wait until it accepts a connection (UDP: echoes a datagram).

    A server that exits with a usage error (it does not accept these flags)
    raises ServerRejected; any other early exit, or no readiness within
    `ready_timeout`, raises HarnessError with its output.
    """
    log = workdir / f"{name}-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        proc = procs.spawn(
            argv, cpu, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
    server = RunningServer(name, proc, addr, log)
    udp = addr.startswith("udp://")
    deadline = time.monotonic() + ready_timeout
    while True:
        if (rc := proc.poll()) is not None and (why := usage_error(rc, server.output())):
            raise ServerRejected(f"it does not accept its command line ({show_argv(argv)}): {why}")
        server.check_alive("before echoing a datagram" if udp else "before accepting a connection")
        if try_udp_echo(addr, UDP_PROBE_TIMEOUT_S) if udp else try_connect(addr, timeout=0.5):
            return server
        if time.monotonic() >= deadline:
            what = "echo a datagram" if udp else "accept a connection"
            raise HarnessError(
                f"{name} server did not {what} on {addr} within "
                f"{ready_timeout:g} s; its output:\n{server.output()}"
            )
        time.sleep(0.02)


# ---- one run --------------------------------------------------------------


def loadgen_target(addr: str) -> list[str]:
    if addr.startswith("unix://"):
        return ["--unix", addr[len("unix://"):]]
    if addr.startswith("udp://"):
        return ["--udp", addr[len("udp://"):]]
    return ["--tcp", addr[len("tcp://"):]]


def mode_args(wl: Workload, addr: str) -> list[str]:
    """The load generator's options for `wl` beyond target, size and timing."""
    if wl.mode in ("churn", "tls-churn"):   # tls-churn: benchmarks/tlsload.c, always over TCP
        spread = ["--src-addrs", str(CHURN_SRC_ADDRS)] if addr.startswith("tcp://") else []
        return ["--churn", *spread]
    if wl.mode == "udp":
        return []
    if wl.mode == "frames":
        return ["--frames", "--depth", str(wl.depth)]
    return ["--depth", str(wl.depth)]


def proxy_args(server: str) -> list[str]:
    """The load generator's --proxy for a server that requires a PROXY header (W6 only: cannot_run)."""
    version = SERVERS[server].proxy if server in SERVERS else None
    return ["--proxy", version] if version else []


def read_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise HarnessError(f"no VmRSS in /proc/{pid}/status")


def read_tree_rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS summed over `pid` and its descendants, how many processes were summed)."""
    total = summed = 0
    for p in process_tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += read_rss_kib(p)
            summed += 1
    if summed == 0:
        raise HarnessError(f"cannot read the memory of server pid {pid}: it is gone")
    return total, summed


def read_line(stream: Any, timeout: float) -> bytes:
    """One line from a pipe, waiting at most `timeout` seconds."""
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        if not select.select([stream], [], [], remaining)[0]:
            continue
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
    return buf


def read_rest(stream: Any, timeout: float) -> bytes:
    """What is left in a pipe until EOF, waiting at most `timeout` seconds in all."""
    buf = b""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        if not select.select([stream], [], [], remaining)[0]:
            break
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
    return buf


def loadgen_failure(server: RunningServer, rc: int | None, stderr: bytes,
                    what: str = "load generator") -> HarnessError:
    msg = stderr.decode(errors="replace").strip() or "(no message)"
    status = "timed out" if rc is None else f"exited with code {rc}"
    return HarnessError(
        f"{what} {status} against the {server.name} server: {msg}\n"
        f"{server.name} server output:\n{server.output()}"
    )


def run_load(
    procs: Processes, loadgen: Path, server: RunningServer, wl: Workload, cfg: Config,
    cpu: int | None,
) -> dict[str, Any]:
    argv = [
        str(loadgen), *loadgen_target(server.addr),
        "--conns", str(wl.conns), "--size", str(wl.size), *mode_args(wl, server.addr),
        *proxy_args(server.name),
        "--duration", str(cfg.duration), "--warmup", str(cfg.warmup),
        "--pid", str(server.proc.pid),
    ]
    proc = procs.spawn(argv, cpu, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=cfg.warmup + cfg.duration + LOADGEN_SLACK_S)
    except subprocess.TimeoutExpired:
        raise loadgen_failure(server, None, b"") from None
    finally:
        procs.stop(proc)
    if proc.returncode != 0:
        raise loadgen_failure(server, proc.returncode, err)
    return json.loads(out)


def run_idle(
    procs: Processes, loadgen: Path, server: RunningServer, conns: int, cpu: int | None,
) -> dict[str, Any]:
    """W5: the server's resident memory per idle connection (summed over its processes)."""
    rss_before, _ = read_tree_rss_kib(server.proc.pid)
    argv = [str(loadgen), *loadgen_target(server.addr), "--idle", "--conns", str(conns)]
    proc = procs.spawn(argv, cpu, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    try:
        try:
            line = read_line(proc.stdout, IDLE_SETUP_TIMEOUT_S)
        except TimeoutError:
            raise loadgen_failure(server, None, b"") from None
        if not line:
            proc.wait(STOP_GRACE_S)
            raise loadgen_failure(server, proc.returncode, proc.stderr.read())
        report = json.loads(line)
        # Every connection has echoed once, so the server has set it up fully.
        rss_after, processes = read_tree_rss_kib(server.proc.pid)
        proc.stdin.close()  # releases the connections
        rc = proc.wait(STOP_GRACE_S + 10)
        if rc != 0:
            raise loadgen_failure(server, rc, proc.stderr.read())
    finally:
        procs.stop(proc)
    return {
        "connections": conns,
        "setup_s": report["setup_s"],
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "kib_per_conn": (rss_after - rss_before) / conns,
        "server_processes": processes,
    }


def mixed_idle_count(conns: int, wl: Workload) -> int:
    """W9's idle connections: --idle-conns (after the RLIMIT_NOFILE scaling) less the active ones."""
    return max(1, conns - wl.conns)


def run_mixed(
    procs: Processes, loadgen: Path, server: RunningServer, wl: Workload, cfg: Config,
    idle: int, cpu: int | None,
) -> dict[str, Any]:
    """W9: `idle` idle connections held open by one load generator while `wl.conns` more do
    ping-pong from a second one, whose measured window gives msgs/s and server CPU per message.

    The holder opens all of its connections (each proven served by an echo)
    before the load starts, and must still be running after the window: a
    connection the server closed (an idle timeout firing, say) ends it with an
    error naming the connection, which fails the run.  Both load generators
    are stopped and reaped on every path.
    """
    argv = [str(loadgen), *loadgen_target(server.addr), "--idle", "--conns", str(idle)]
    holder = procs.spawn(argv, cpu, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    what = "idle load generator"

    def holder_failed(rc: int | None) -> HarnessError:
        return loadgen_failure(server, rc, read_rest(holder.stderr, STOP_GRACE_S), what)

    try:
        try:
            line = read_line(holder.stdout, IDLE_SETUP_TIMEOUT_S)
        except TimeoutError:
            raise loadgen_failure(server, None, b"", what) from None
        if not line:   # it exited before its report: its error is on stderr
            with contextlib.suppress(subprocess.TimeoutExpired):
                holder.wait(STOP_GRACE_S)
            raise holder_failed(holder.poll())
        setup = json.loads(line)
        if holder.poll() is not None:
            raise holder_failed(holder.returncode)
        result = run_load(procs, loadgen, server, wl, cfg, cpu)
        if holder.poll() is not None:   # the server closed an idle connection during the run
            raise holder_failed(holder.returncode)
        assert holder.stdin is not None
        holder.stdin.close()   # releases the idle connections
        try:
            rc = holder.wait(IDLE_RELEASE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise loadgen_failure(server, None, b"", what) from None
        if rc != 0:
            raise holder_failed(rc)
    finally:
        procs.stop(holder)
    return {**result, "idle_conns": setup["connections"], "idle_setup_s": setup["setup_s"]}


# ---- W12-W14: application servers under wrk, redis-benchmark and wsload ----


class WorkloadFailed(HarnessError):
    """An application server failed a W12-W14 run: it did not start, died, or its load tool failed
    against it (wrk or redis-benchmark exiting with an error, wsload finding a wrong echo).  The
    server is shown as FAILED in that workload, with the message, and the run goes on."""


HTTP_PATH = "/plaintext"     # W12: TechEmpower's plaintext test
WS_PATH = "/ws"              # W14: examples/http_server.py's WebSocket endpoint (the others take any path)
# TechEmpower's plaintext request headers besides Host (wrk adds that): sent by wrk with -H.
WRK_HEADERS = (
    ("Accept: text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,"
     "*/*;q=0.7"),
    "Connection: keep-alive",
)
# W12p: TechEmpower's pipeline.lua: each write is DEPTH copies of the request (wrk -s ... -- DEPTH).
WRK_PIPELINE_LUA = """\
-- TechEmpower's pipeline.lua: every write carries `depth` requests (wrk ... -- depth).
init = function(args)
  local r = {}
  local depth = tonumber(args[1]) or 1
  for i = 1, depth do
    r[i] = wrk.format()
  end
  req = table.concat(r)
end

request = function()
  return req
end
"""
TOOLS = {"http": ("wrk", "apt-get install wrk"),
         "resp": ("redis-benchmark", "apt-get install redis-tools")}
RESP_TESTS = ("SET", "GET")          # redis-benchmark -t set,get: SET's run, then GET's
RESP_FIRST_REQUESTS = 1000           # W13's first warm-up run: this many x -P requests per test
RESP_MIN_REQUESTS = 1000             # per test, at least
RESP_CALIBRATION_RUNS = 5            # W13's warm-up: at most this many runs (sizing the measured one)
TOOL_POLL_S = 0.002                  # how often a running wrk/redis-benchmark is checked for its exit


def missing_tool(mode: str) -> str | None:
    """Why W12's or W13's load tool cannot run here (not on PATH), or None."""
    if mode not in TOOLS:
        return None
    tool, install = TOOLS[mode]
    if shutil.which(tool) is None:
        return f"{tool} is not installed here (its load generator; `{install}`)"
    return None


@dataclass(frozen=True)
class TreeCpu:
    """A process tree's CPU time between two samples (as loadcommon.h's tree_cpu_delta)."""
    user_s: float
    sys_s: float
    processes: int    # summed: present at both ends, or started in between
    started: int
    exited: int       # gone by the second sample: their CPU time is lost


def read_tree_cpu(pid: int) -> dict[tuple[int, int], tuple[int, int]]:
    """(pid, start time) -> (utime, stime) in clock ticks, for `pid` and all its descendants."""
    out = {}
    for p in process_tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()   # fields[0] is field 3 (the state)
            out[(p, int(fields[19]))] = (int(fields[11]), int(fields[12]))   # 22: start; 14, 15
    return out


def tree_cpu_delta(before: dict[tuple[int, int], tuple[int, int]],
                   after: dict[tuple[int, int], tuple[int, int]]) -> TreeCpu:
    """What the tree spent between the samples: a process in both counts its difference, one that
    started in between all its time, one that exited in between is lost (counted in `exited`)."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = started = 0
    for key, (u, s) in after.items():
        u0, s0 = before.get(key, (0, 0))
        started += key not in before
        user += max(0, u - u0)
        system += max(0, s - s0)
    exited = sum(key not in after for key in before)
    return TreeCpu(user / tick, system / tick, len(after), started, exited)


@dataclass(frozen=True)
class ToolRun:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    wall_s: float      # spawn to exit
    cpu_s: float       # the tool's own user + system CPU time
    server: TreeCpu    # the server's, over the same time

    def output(self, limit: int = 2000) -> str:
        text = "\n".join(t.strip() for t in (self.stderr, self.stdout) if t.strip())
        return text[-limit:] or "(no output)"


def run_tool(procs: Processes, argv: list[str], server: RunningServer, cpu: int | None, workdir: Path,
             timeout: float) -> ToolRun:
    """Run a load tool (wrk, redis-benchmark) pinned to `cpu` to its end; the server's CPU time
    (its whole process tree, from /proc) is read just before it starts and just after it exits."""
    stem = workdir / f"{Path(argv[0]).name}-{time.monotonic_ns()}"
    before = read_tree_cpu(server.proc.pid)
    with open(f"{stem}.out", "wb") as out, open(f"{stem}.err", "wb") as err:
        start = time.monotonic()
        proc = procs.spawn(argv, cpu, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    try:
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() >= deadline:
                raise HarnessError(f"{show_argv(argv)} did not finish in {timeout:g} s against the "
                                   f"{server.name} server; its output:\n{server.output()}")
            time.sleep(TOOL_POLL_S)
        wall = time.monotonic() - start
        after = read_tree_cpu(server.proc.pid)
        proc.returncode = os.waitstatus_to_exitcode(status)   # reaped here: Popen must not wait again
    finally:
        procs.stop(proc)
    return ToolRun(argv, proc.returncode, Path(f"{stem}.out").read_text(errors="replace"),
                   Path(f"{stem}.err").read_text(errors="replace"), wall, usage.ru_utime + usage.ru_stime,
                   tree_cpu_delta(before, after))


def tool_failure(run: ToolRun, server: RunningServer) -> WorkloadFailed:
    tool = Path(run.argv[0]).name
    return WorkloadFailed(f"{tool} exited with code {run.rc} against the {server.name} server: {run.output()}"
                          f"\n{server.name} server output:\n{server.output()}")


def server_cpu_fields(run: ToolRun, count: float, unit: str) -> dict[str, Any]:
    """The server's CPU per `unit` over the tool's run, and both sides' CPU use (1.0 = one CPU)."""
    cpu = run.server
    return {
        f"server_user_us_per_{unit}": cpu.user_s * 1e6 / count,
        f"server_sys_us_per_{unit}": cpu.sys_s * 1e6 / count,
        "server_cpu_util": (cpu.user_s + cpu.sys_s) / run.wall_s,
        "server_processes": cpu.processes,
        "server_processes_started": cpu.started,
        "server_processes_exited": cpu.exited,
        "loadgen_cpu_util": run.cpu_s / run.wall_s,
        "window_s": run.wall_s,
        "command": show_argv(run.argv),
    }


# -- W12: wrk --------------------------------------------------------------

_WRK_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def _wrk_us(value: str, unit: str) -> float:
    return float(value) * _WRK_UNITS[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    """wrk's report: requests, their rate, the run's length, latency, errors.

    `errors` sums the responses that were not 2xx or 3xx and the socket errors (connect, read,
    write, timeout).  With pipelining wrk times a whole batch, and its latency distribution is
    not per request (it prints zeros): the percentiles are None unless they read as one.
    Raises HarnessError when the report has no request count or rate (wrk printed something else).
    """
    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", text, re.MULTILINE)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    if not done or not rate:
        raise HarnessError(f"cannot read wrk's report (no 'N requests in T' or 'Requests/sec:' line):\n"
                           f"{text.strip()[-2000:]}")
    non_2xx = re.search(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", text, re.MULTILINE)
    sock = re.search(r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text,
                     re.MULTILINE)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()))) if sock else \
        {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    avg = re.search(r"^\s*Latency\s+([\d.]+)(us|ms|s|m|h)\b", text, re.MULTILINE)
    dist = {int(q): _wrk_us(v, u) for q, v, u in
            re.findall(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE)}
    values = [dist[q] for q in sorted(dist)]
    sane = len(values) == 4 and values[0] > 0 and values == sorted(values)
    result = {
        "requests": int(done.group(1)),
        "wrk_duration_s": _wrk_us(done.group(2), done.group(3)) / 1e6,
        "reqs_per_s": float(rate.group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket_errors,
        "latency_avg_us": _wrk_us(*avg.groups()) if avg else None,
        "latency_p50_us": dist[50] if sane else None,
        "latency_p99_us": dist[99] if sane else None,
    }
    result["errors"] = result["non_2xx"] + sum(socket_errors.values())
    return result


def whole_seconds(s: float) -> int:
    """wrk takes whole seconds (-d2s): `s` rounded, at least 1."""
    return max(1, round(s))


def wrk_argv(wl: Workload, addr: str, seconds: int, script: Path) -> list[str]:
    """wrk -t1 -cCONNS -dSECONDS, TechEmpower's headers, GET /plaintext; with DEPTH > 1 pipelined."""
    host, port = host_port(addr)
    argv = ["wrk", "-t1", f"-c{wl.conns}", f"-d{seconds}s", "--latency"]
    for header in WRK_HEADERS:
        argv += ["-H", header]
    if wl.depth > 1:
        argv += ["-s", str(script)]
    argv.append(f"http://{host}:{port}{HTTP_PATH}")
    return argv + (["--", str(wl.depth)] if wl.depth > 1 else [])


def run_wrk(procs: Processes, server: RunningServer, wl: Workload, cfg: Config, workdir: Path,
            cpu: int | None) -> dict[str, Any]:
    """W12: a warm-up run of wrk, then the measured one; the server's CPU over the measured run."""
    script = workdir / "pipeline.lua"
    if not script.exists():
        script.write_text(WRK_PIPELINE_LUA)
    if cfg.warmup > 0:
        warm = run_tool(procs, wrk_argv(wl, server.addr, whole_seconds(cfg.warmup), script), server, cpu,
                        workdir, whole_seconds(cfg.warmup) + LOADGEN_SLACK_S)
        if warm.rc != 0:
            raise tool_failure(warm, server)
    run = run_tool(procs, wrk_argv(wl, server.addr, whole_seconds(cfg.duration), script), server, cpu, workdir,
                   whole_seconds(cfg.duration) + LOADGEN_SLACK_S)
    if run.rc != 0:
        raise tool_failure(run, server)
    report = parse_wrk(run.stdout)
    if report["requests"] == 0:
        raise WorkloadFailed(f"wrk completed no request against the {server.name} server in "
                             f"{report['wrk_duration_s']:.2f} s:\n{run.output()}\n"
                             f"{server.name} server output:\n{server.output()}")
    return {"mode": "http", "connections": wl.conns, "pipeline": wl.depth, "threads": 1, "path": HTTP_PATH,
            **report, "duration_s": report["wrk_duration_s"],
            **server_cpu_fields(run, report["requests"], "req")}


# -- W13: redis-benchmark --------------------------------------------------


def parse_redis_benchmark(text: str) -> dict[str, dict[str, float]]:
    """redis-benchmark --csv's report: {test: {rps, avg_latency_ms, ..., p99_latency_ms, ...}}.

    Raises HarnessError when there is no header line or no row with a rate.
    """
    rows = list(csv.reader(line for line in text.splitlines() if line.startswith('"')))
    if not rows or rows[0][:2] != ["test", "rps"]:
        raise HarnessError("cannot read redis-benchmark's --csv report (no \"test\",\"rps\",... header):\n"
                           f"{text.strip()[-2000:]}")
    header = rows[0]
    tests = {}
    for row in rows[1:]:
        try:
            tests[row[0]] = {name: float(value) for name, value in zip(header[1:], row[1:])}
        except ValueError:
            raise HarnessError(f"cannot read redis-benchmark's --csv row {row}") from None
    return tests


def redis_benchmark_argv(wl: Workload, addr: str, requests: int) -> list[str]:
    """redis-benchmark -c CLIENTS -n REQUESTS -t set,get -P DEPTH --csv (one thread: its default)."""
    host, port = host_port(addr)
    return ["redis-benchmark", "-h", host, "-p", port, "-c", str(wl.conns), "-n", str(requests),
            "-t", ",".join(t.lower() for t in RESP_TESTS), "-P", str(wl.depth), "--csv"]


def _resp_rates(run: ToolRun, server: RunningServer) -> dict[str, float]:
    """SET's and GET's requests/s from a finished redis-benchmark run."""
    if run.rc != 0:
        raise tool_failure(run, server)
    tests = parse_redis_benchmark(run.stdout)
    missing = [t for t in RESP_TESTS if tests.get(t, {}).get("rps", 0) <= 0]
    if missing:
        raise WorkloadFailed(f"redis-benchmark reported no rate for {', '.join(missing)} against the "
                             f"{server.name} server:\n{run.output()}")
    return {t: tests[t]["rps"] for t in RESP_TESTS} | {f"{t}_p99_ms": tests[t].get("p99_latency_ms", 0.0)
                                                       for t in RESP_TESTS}


def run_redis_benchmark(procs: Processes, server: RunningServer, wl: Workload, cfg: Config, workdir: Path,
                        cpu: int | None) -> dict[str, Any]:
    """W13: redis-benchmark runs a fixed number of requests, so the warm-up also sizes the measured
    run: a first short run, then (while warm-up time is left) one sized from its rates to fill it;
    the measured run gets the requests per test that the last rates say take --duration for SET
    and GET together.  The server's CPU is read over the measured run."""
    def timed(requests: int) -> ToolRun:
        return run_tool(procs, redis_benchmark_argv(wl, server.addr, requests), server, cpu, workdir,
                        max(4 * cfg.duration, cfg.warmup) + LOADGEN_SLACK_S)

    requests, spent = RESP_FIRST_REQUESTS * wl.depth, 0.0
    for _ in range(RESP_CALIBRATION_RUNS):
        warm = timed(requests)
        rates = _resp_rates(warm, server)
        spent += warm.wall_s
        per_request_s = sum(1 / rates[t] for t in RESP_TESTS)   # one SET and one GET
        left = cfg.warmup - spent
        if left < 0.1:
            break
        requests = max(requests, int(left / per_request_s))
    requests = max(RESP_MIN_REQUESTS, int(cfg.duration / per_request_s))
    run = timed(requests)
    rates = _resp_rates(run, server)
    tool_s = sum(requests / rates[t] for t in RESP_TESTS)   # the two tests' own timings
    total = requests * len(RESP_TESTS)
    return {"mode": "resp", "clients": wl.conns, "pipeline": wl.depth, "tests": ",".join(RESP_TESTS),
            "requests_per_test": requests, "requests": total, "reqs_per_s": total / tool_s,
            "set_per_s": rates["SET"], "get_per_s": rates["GET"], "set_p99_ms": rates["SET_p99_ms"],
            "get_p99_ms": rates["GET_p99_ms"], "duration_s": tool_s, **server_cpu_fields(run, total, "req")}


# -- W14: wsload -----------------------------------------------------------


def run_ws(procs: Processes, wsload: Path, server: RunningServer, wl: Workload, cfg: Config,
           cpu: int | None) -> dict[str, Any]:
    """W14: benchmarks/wsload.c's upgrade to GET /ws, then binary messages; its JSON report."""
    host, port = host_port(server.addr)
    argv = [str(wsload), "--tcp", f"{host}:{port}", "--path", WS_PATH, "--conns", str(wl.conns),
            "--size", str(wl.size), "--depth", str(wl.depth), "--duration", str(cfg.duration),
            "--warmup", str(cfg.warmup), "--pid", str(server.proc.pid)]
    proc = procs.spawn(argv, cpu, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=cfg.warmup + cfg.duration + LOADGEN_SLACK_S)
    except subprocess.TimeoutExpired:
        raise loadgen_failure(server, None, b"", "wsload") from None
    finally:
        procs.stop(proc)
    if proc.returncode != 0:
        raise loadgen_failure(server, proc.returncode, err, "wsload")
    return json.loads(out)


def run_app(procs: Processes, workdir: Path, server_name: str, wl: Workload, cfg: Config,
            wsload: Path | None = None) -> dict[str, Any]:
    """W12-W14: a fresh application server on TCP, one measurement, the server stopped.  Anything
    that goes wrong but a usage error (ServerRejected) is WorkloadFailed: shown, not fatal."""
    server_cpu, loadgen_cpu = pick_cpus()
    addr = free_tcp_addr()   # W12-W14 are TCP whatever --unix says
    spec = SERVERS[server_name]
    try:
        server = start_server(procs, server_name, spec.command(addr), addr, workdir, server_cpu, spec.env())
    except ServerRejected:
        raise
    except HarnessError as e:
        raise WorkloadFailed(str(e)) from None
    try:
        if spec.workers:
            wait_for_processes(server, 1 + spec.workers)
        if wl.mode == "http":
            result = run_wrk(procs, server, wl, cfg, workdir, loadgen_cpu)
        elif wl.mode == "resp":
            result = run_redis_benchmark(procs, server, wl, cfg, workdir, loadgen_cpu)
        else:
            result = run_ws(procs, wsload or ensure_built("wsload"), server, wl, cfg, loadgen_cpu)
        server.check_alive("during the run")
    except WorkloadFailed:
        raise
    except HarnessError as e:
        raise WorkloadFailed(str(e)) from None
    finally:
        procs.stop(server.proc)
    return result


def run_once(
    procs: Processes, loadgen: Path, workdir: Path, server_name: str, wl: Workload,
    cfg: Config, idle_conns: int, tls: TlsSetup | None = None, wsload: Path | None = None,
) -> dict[str, Any]:
    """Fresh server, one measurement, server stopped.  W10/W11 need `tls` (prepare_tls); W12-W14
    run application servers (run_app; W14 with `wsload`, built here if not given)."""
    if wl.app:
        return run_app(procs, workdir, server_name, wl, cfg, wsload)
    server_cpu, loadgen_cpu = pick_cpus()
    if wl.tls:
        if tls is None:
            raise HarnessError(f"{wl.name} needs the TLS load generator and a certificate (prepare_tls)")
        loadgen = tls.tlsload
    if wl.udp:
        addr = free_udp_addr()   # W7 is UDP whatever --unix says
    elif cfg.unix and not wl.tls:   # W10, W11 stay TCP
        addr = f"unix://{workdir / f'{server_name}-{time.monotonic_ns()}.sock'}"
    else:
        addr = free_tcp_addr()
    spec = SERVERS[server_name]
    server = start_server(procs, server_name, spec.argv(addr, wl, tls.files if tls else None), addr,
                          workdir, server_cpu, spec.env())
    try:
        if spec.workers:
            wait_for_processes(server, 1 + spec.workers)
        if wl.idle:
            result = run_idle(procs, loadgen, server, idle_conns, loadgen_cpu)
        elif wl.mode == "mixed":
            result = run_mixed(procs, loadgen, server, wl, cfg, mixed_idle_count(idle_conns, wl),
                               loadgen_cpu)
        else:
            result = run_load(procs, loadgen, server, wl, cfg, loadgen_cpu)
        server.check_alive("during the run")
    finally:
        procs.stop(server.proc)
    return result


# ---- statistics -----------------------------------------------------------


def stat(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(runs: list[dict[str, Any]], cfg: Config) -> dict[str, dict[str, Any]]:
    """summary[workload][server] = {metric: {median, min, max}, ..., "ratios": {...}}."""
    summary: dict[str, dict[str, Any]] = {}
    for wl_name in cfg.workloads:
        mode = WORKLOADS[wl_name].mode
        metrics = METRICS[mode]
        per_server: dict[str, Any] = {}
        for srv in cfg.servers:
            mine = [r for r in runs if r["workload"] == wl_name and r["server"] == srv]
            if mine:
                per_server[srv] = {m: stat([r[m] for r in mine]) for m in metrics}
                per_server[srv]["runs"] = len(mine)
                if WORKLOADS[wl_name].idle:
                    per_server[srv]["connections"] = mine[0]["connections"]
        compared = COMPARED[mode]
        for srv, s in per_server.items():
            s["ratios"] = {
                f"{m}_vs_{ref}": ratio(s[m]["median"], per_server[ref][m]["median"])
                if ref in per_server else None
                for m in compared for ref in MODE_REFERENCES.get(mode, REFERENCES)
            }
        summary[wl_name] = per_server
    return summary


def ratio(value: float, reference: float) -> float | None:
    return value / reference if reference > 0 else None


# ---- reporting ------------------------------------------------------------


def num(v: float | None) -> str:
    """Compact number: 3 significant digits or so, k/M suffixes."""
    if v is None:
        return "-"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.2f}M"
    if a >= 1e4:
        return f"{v / 1e3:.1f}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def cell(s: dict[str, float]) -> str:
    if s["min"] == s["max"]:
        return num(s["median"])
    return f"{num(s['median'])} [{num(s['min'])}-{num(s['max'])}]"


def times(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def percent(s: dict[str, float]) -> str:
    """A CPU use's median (1.0 = one CPU) as a percentage."""
    return f"{s['median']:.0%}"


LOAD_HEADER = ["workload", "server", "msgs/s", "MB/s", "p99 µs", "user µs/msg",
               "sys µs/msg", "thr/uvloop", "thr/C", "user/uvloop", "user/C"]
IDLE_HEADER = ["workload", "server", "conns", "KiB/conn", "RSS before KiB", "RSS after KiB",
               "KiB/uvloop", "KiB/C"]
CHURN_HEADER = ["workload", "server", "conns/s", "p99 µs", "user µs/conn", "sys µs/conn",
                "thr/uvloop", "thr/C", "user/uvloop", "user/C"]
UDP_HEADER = ["workload", "server", "msgs/s", "MB/s", "p99 µs", "user µs/datagram",
              "sys µs/datagram", "lost", "thr/uvloop", "thr/C", "user/uvloop", "user/C"]
MIXED_HEADER = ["workload", "server", "idle conns", "msgs/s", "p99 µs", "user µs/msg", "sys µs/msg",
                "thr/uvloop", "thr/C", "user/uvloop", "user/C"]
# W8: no C columns (the C server has no frame echo); user/hand is relative to gnetpy-frames.
FRAMES_HEADER = ["workload", "server", "frames/s", "MB/s", "p99 µs", "user µs/frame", "sys µs/frame",
                 "user/hand", "thr/uvloop", "user/uvloop"]
# W10, W11: no C columns (the C server has no TLS); the load generator's CPU, since its
# TLS work can be what limits the throughput (W11's handshakes above all).
TLS_HEADER = ["workload", "server", "msgs/s", "MB/s", "p99 µs", "user µs/msg", "sys µs/msg",
              "loadgen CPU", "thr/uvloop", "user/uvloop"]
TLS_CHURN_HEADER = ["workload", "server", "handshakes/s", "p99 µs", "user µs/handshake",
                    "sys µs/handshake", "loadgen CPU", "thr/uvloop", "user/uvloop"]
# W12-W14: application servers.  loadgen CPU is the load tool's own (wrk, redis-benchmark,
# wsload): near 100 % the client, not the server, is the limit.  server CPU: 1.0 = one CPU.
HTTP_HEADER = ["workload", "server", "req/s", "user µs/req", "sys µs/req", "server CPU", "loadgen CPU",
               "errors", "thr/http-uvloop", "user/http-uvloop"]
RESP_HEADER = ["workload", "server", "req/s", "SET/s", "GET/s", "user µs/req", "sys µs/req", "server CPU",
               "loadgen CPU", "thr/redis-uvloop", "user/redis-uvloop", "user/redis-server"]
WS_HEADER = ["workload", "server", "msgs/s", "p99 µs", "user µs/msg", "sys µs/msg", "server CPU",
             "loadgen CPU", "thr/websockets", "user/websockets", "user/picows"]
# In this order: W1-W4, W5, W6, W7, W8, W9, W10, W11, W12, W13, W14.
HEADERS = {"load": LOAD_HEADER, "idle": IDLE_HEADER, "churn": CHURN_HEADER, "udp": UDP_HEADER,
           "frames": FRAMES_HEADER, "mixed": MIXED_HEADER, "tls": TLS_HEADER,
           "tls-churn": TLS_CHURN_HEADER, "http": HTTP_HEADER, "resp": RESP_HEADER, "ws": WS_HEADER}


def table_rows(summary: dict[str, dict[str, Any]], mode: str) -> list[list[str]]:
    rows = []
    for wl_name, per_server in summary.items():
        if WORKLOADS[wl_name].mode != mode:
            continue
        for srv, s in per_server.items():
            r = s["ratios"]
            if mode == "idle":
                rows.append([wl_name, srv, str(s["connections"]), cell(s["kib_per_conn"]),
                             "", "", times(r["kib_per_conn_vs_uvloop"]),
                             times(r["kib_per_conn_vs_c"])])
            elif mode == "churn":
                rows.append([
                    wl_name, srv, cell(s["conns_per_s"]), cell(s["rtt_p99_us"]),
                    cell(s["server_user_us_per_conn"]), cell(s["server_sys_us_per_conn"]),
                    times(r["conns_per_s_vs_uvloop"]), times(r["conns_per_s_vs_c"]),
                    times(r["server_user_us_per_conn_vs_uvloop"]),
                    times(r["server_user_us_per_conn_vs_c"]),
                ])
            elif mode == "mixed":
                rows.append([
                    wl_name, srv, cell(s["idle_conns"]), cell(s["msgs_per_s"]),
                    cell(s["rtt_p99_us"]), cell(s["server_user_us_per_msg"]),
                    cell(s["server_sys_us_per_msg"]),
                    times(r["msgs_per_s_vs_uvloop"]), times(r["msgs_per_s_vs_c"]),
                    times(r["server_user_us_per_msg_vs_uvloop"]),
                    times(r["server_user_us_per_msg_vs_c"]),
                ])
            elif mode == "frames":
                rows.append([
                    wl_name, srv, cell(s["msgs_per_s"]), cell(s["mb_per_s"]),
                    cell(s["rtt_p99_us"]), cell(s["server_user_us_per_msg"]),
                    cell(s["server_sys_us_per_msg"]),
                    times(r["server_user_us_per_msg_vs_gnetpy-frames"]),
                    times(r["msgs_per_s_vs_uvloop"]),
                    times(r["server_user_us_per_msg_vs_uvloop"]),
                ])
            elif mode == "tls":
                rows.append([
                    wl_name, srv, cell(s["msgs_per_s"]), cell(s["mb_per_s"]),
                    cell(s["rtt_p99_us"]), cell(s["server_user_us_per_msg"]),
                    cell(s["server_sys_us_per_msg"]), f"{s['loadgen_cpu_util']['median']:.0%}",
                    times(r["msgs_per_s_vs_uvloop"]),
                    times(r["server_user_us_per_msg_vs_uvloop"]),
                ])
            elif mode == "tls-churn":
                rows.append([
                    wl_name, srv, cell(s["conns_per_s"]), cell(s["rtt_p99_us"]),
                    cell(s["server_user_us_per_conn"]), cell(s["server_sys_us_per_conn"]),
                    f"{s['loadgen_cpu_util']['median']:.0%}",
                    times(r["conns_per_s_vs_uvloop"]),
                    times(r["server_user_us_per_conn_vs_uvloop"]),
                ])
            elif mode == "http":
                rows.append([
                    wl_name, srv, cell(s["reqs_per_s"]), cell(s["server_user_us_per_req"]),
                    cell(s["server_sys_us_per_req"]), percent(s["server_cpu_util"]),
                    percent(s["loadgen_cpu_util"]),
                    "0" if s["errors"]["max"] == 0 else f"{cell(s['errors'])} ERRORS",
                    times(r["reqs_per_s_vs_http-uvloop"]), times(r["server_user_us_per_req_vs_http-uvloop"]),
                ])
            elif mode == "resp":
                rows.append([
                    wl_name, srv, cell(s["reqs_per_s"]), cell(s["set_per_s"]), cell(s["get_per_s"]),
                    cell(s["server_user_us_per_req"]), cell(s["server_sys_us_per_req"]),
                    percent(s["server_cpu_util"]), percent(s["loadgen_cpu_util"]),
                    times(r["reqs_per_s_vs_redis-uvloop"]), times(r["server_user_us_per_req_vs_redis-uvloop"]),
                    times(r["server_user_us_per_req_vs_redis-server"]),
                ])
            elif mode == "ws":
                rows.append([
                    wl_name, srv, cell(s["msgs_per_s"]), cell(s["rtt_p99_us"]), cell(s["server_user_us_per_msg"]),
                    cell(s["server_sys_us_per_msg"]), percent(s["server_cpu_util"]),
                    percent(s["loadgen_cpu_util"]), times(r["msgs_per_s_vs_websockets"]),
                    times(r["server_user_us_per_msg_vs_websockets"]), times(r["server_user_us_per_msg_vs_picows"]),
                ])
            elif mode == "udp":
                rows.append([
                    wl_name, srv, cell(s["msgs_per_s"]), cell(s["mb_per_s"]),
                    cell(s["rtt_p99_us"]), cell(s["server_user_us_per_msg"]),
                    cell(s["server_sys_us_per_msg"]), cell(s["lost"]),
                    times(r["msgs_per_s_vs_uvloop"]), times(r["msgs_per_s_vs_c"]),
                    times(r["server_user_us_per_msg_vs_uvloop"]),
                    times(r["server_user_us_per_msg_vs_c"]),
                ])
            else:
                rows.append([
                    wl_name, srv, cell(s["msgs_per_s"]), cell(s["mb_per_s"]),
                    cell(s["rtt_p99_us"]), cell(s["server_user_us_per_msg"]),
                    cell(s["server_sys_us_per_msg"]),
                    times(r["msgs_per_s_vs_uvloop"]), times(r["msgs_per_s_vs_c"]),
                    times(r["server_user_us_per_msg_vs_uvloop"]),
                    times(r["server_user_us_per_msg_vs_c"]),
                ])
    return rows


def idle_rss_cells(runs: list[dict[str, Any]], rows: list[list[str]]) -> None:
    """Fill the RSS before/after columns with the medians of the raw runs."""
    for row in rows:
        mine = [r for r in runs if r["workload"] == row[0] and r["server"] == row[1]]
        row[4] = num(statistics.median(r["rss_before_kib"] for r in mine))
        row[5] = num(statistics.median(r["rss_after_kib"] for r in mine))


def render_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip()
             for line in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def failed_rows(results: dict[str, Any], mode: str, width: int) -> list[list[str]]:
    """W12-W14: a row for each server that failed every repetition of a workload (no figures)."""
    rows = []
    for wl_name, per_server in results.get("failed", {}).items():
        if _chart_mode(results, wl_name) != mode:
            continue
        for srv in per_server:
            if srv not in results["summary"].get(wl_name, {}):
                rows.append([wl_name, srv, "FAILED", *([""] * (width - 3))])
    return rows


def build_tables(results: dict[str, Any]) -> list[tuple[list[str], list[list[str]]]]:
    """One table per kind of workload: W1-W4, W5, W6, W7, W8, W9, W10, W11, W12, W13, W14."""
    tables = []
    for mode, header in HEADERS.items():
        rows = table_rows(results["summary"], mode)
        if rows and mode == "idle":
            idle_rss_cells(results["runs"], rows)
        rows += failed_rows(results, mode, len(header))
        if rows:
            rows.sort(key=lambda row: list(results["summary"]).index(row[0])
                      if row[0] in results["summary"] else len(results["summary"]))
            tables.append((header, rows))
    return tables


def notes(results: dict[str, Any]) -> list[str]:
    cfg = results["config"]
    out = [
        f"{cfg['reps']} repetition(s), {cfg['duration']:g} s measured after {cfg['warmup']:g} s "
        f"warm-up; medians, [min-max] when runs differ.",
        "thr/X: throughput relative to X (higher is better); user/X and KiB/X: server "
        "user CPU per message and memory per connection relative to X (lower is better).",
    ]
    pin = results["machine"]["pinning"]
    if pin["server_cpu"] is None:
        out.append("Not pinned: only one CPU is usable, so server and load generator share it.")
    else:
        out.append(f"Server pinned to CPU {pin['server_cpu']}, load generator to CPU "
                   f"{pin['loadgen_cpu']}.")
    if results.get("idle_note"):
        out.append(results["idle_note"])
    wls = cfg["workloads"]
    if "W6" in wls:
        spread = ("over Unix sockets" if cfg["unix"]
                  else f"clients bound to {CHURN_SRC_ADDRS} source addresses 127.0.0.1-{CHURN_SRC_ADDRS}")
        out.append(f"W6: a new connection per request (connect, 64 B ping-pong, client closes); "
                   f"conns/s and server CPU per connection; {spread}.")
    if "W7" in wls:
        out.append("W7: UDP on 127.0.0.1" + (" (--unix does not apply)" if cfg["unix"] else "")
                   + "; user/sys per datagram; lost: datagrams not echoed within the load "
                   "generator's timeout (counted, then replaced).")
    frames = [w for w in wls if WORKLOADS[w].mode == "frames"]
    for w in frames:
        wl = WORKLOADS[w]
        out.append(f"{w}: length-prefixed frames (a 4-byte big-endian length + a {wl.size} B body, "
                   f"{wl.size + 4} B on the wire, which MB/s counts), {wl.depth} in flight per "
                   f"connection, echoed frame by frame (one write per frame); per frame = per "
                   f"message.  gnetpy-codec: the codec option "
                   f"(LengthFieldBasedFrameCodec) and on_frame, replies encoded by the codec; "
                   f"gnetpy-frames: the same framing by hand in on_traffic; asyncio, uvloop: "
                   f"asyncio_echo.py --frames.  user/hand: user µs/frame relative to gnetpy-frames.")
        if cost := codec_cost(results["summary"].get(w, {}), w):
            out.append(cost)
    if "W9" in wls:
        out.append(f"W9: idle conns held open by one load generator while {WORKLOADS['W9'].conns} more "
                   f"do 64 B ping-pong from a second one (both on the load generator CPU); msgs/s, p99 "
                   f"and server CPU per message are the active connections'.  gnetpy-idle is gnetpy "
                   f"with --idle-timeout {IDLE_TIMEOUT_S}; asyncio, uvloop and c have no idle timeout "
                   f"and are there for context.")
        if cost := idle_timeout_cost(results["summary"].get("W9", {})):
            out.append(cost)
    for w in (w for w in wls if WORKLOADS[w].tls):
        out += tls_notes(w, results["summary"].get(w, {}), cfg["unix"])
    out += app_notes(results)
    for srv, reason in results["skipped"].items():
        out.append(f"SKIPPED {srv}: {reason}")
    for srv, wl_names, reason in group_skips(results.get("skipped_workloads", {})):
        out.append(f"SKIPPED {srv} in {', '.join(wl_names)}: {reason}")
    return out


def group_skips(skipped_workloads: dict[str, dict[str, str]]) -> list[tuple[str, list[str], str]]:
    """(server, [workloads], why) for each server and reason: one line, not one per workload."""
    groups: dict[tuple[str, str], list[str]] = {}
    for wl_name, per_server in skipped_workloads.items():
        for srv, reason in per_server.items():
            groups.setdefault((srv, reason), []).append(wl_name)
    return [(srv, wl_names, reason) for (srv, reason), wl_names in groups.items()]


def codec_cost(per_server: dict[str, Any], wl_name: str = "W8") -> str | None:
    """W8's note: gnetpy-codec / gnetpy-frames user µs per frame, when both ran."""
    if "gnetpy-codec" not in per_server or "gnetpy-frames" not in per_server:
        return None
    codec, hand = per_server["gnetpy-codec"], per_server["gnetpy-frames"]
    r = codec["ratios"]["server_user_us_per_msg_vs_gnetpy-frames"]
    if r is None:
        return None
    codec_us, hand_us = codec["server_user_us_per_msg"], hand["server_user_us_per_msg"]
    overlap = codec_us["min"] <= hand_us["max"] and hand_us["min"] <= codec_us["max"]
    verdict = "within" if r <= CODEC_TARGET else "OVER"
    return (f"{wl_name}: the codec layer costs {r:.2f}x: gnetpy-codec / gnetpy-frames user µs/frame = "
            f"{r:.3f} ({cell(codec_us)} against {cell(hand_us)}, medians"
            + ("; the ranges overlap" if overlap and codec["runs"] > 1 else "")
            + f"); {verdict} the target of {CODEC_TARGET:g}x.")


LOADGEN_BOUND = 0.9   # W10, W11: a load generator this busy may be what limits the throughput


def tls_notes(wl_name: str, per_server: dict[str, Any], unix: bool = False) -> list[str]:
    """W10's and W11's notes: what was measured, gnetpy against uvloop (W10: against the
    target), and the servers whose run was limited by the load generator's CPU."""
    wl = WORKLOADS[wl_name]
    churn = wl.mode == "tls-churn"
    over = " over TCP (--unix does not apply)" if unix else ""
    if churn:
        what = (f"{wl_name}: a new TCP connection and a full TLS 1.3 handshake per request{over} (no session "
                f"resumption: the client keeps no ticket and fails the run if a session is resumed), one "
                f"{wl.size} B echo, then the client sends close_notify and closes; {wl.conns} clients bound "
                f"to {CHURN_SRC_ADDRS} source addresses; handshakes/s and server CPU per handshake.")
    else:
        what = (f"{wl_name}: {wl.conns} TLS 1.3 connections{over} x {wl.size} B ping-pong after each "
                f"connection's handshake (not measured); one record each way per message; MB/s counts "
                f"plaintext.")
    out = [what + (f"  TLS 1.3 with TLS_AES_128_GCM_SHA256 (benchmarks/tlsload.c, no certificate "
                   f"verification); certificate: {TLS_CERT_KIND}; one server SSLContext "
                   f"(create_default_context(Purpose.CLIENT_AUTH) + load_cert_chain) for gnetpy, asyncio "
                   f"and uvloop (benchmarks/servers/tls_echo.py).")]
    key = "server_user_us_per_conn" if churn else "server_user_us_per_msg"
    unit = "handshake" if churn else "msg"
    if "gnetpy" in per_server and "uvloop" in per_server:
        mine, ref = per_server["gnetpy"], per_server["uvloop"]
        r = mine["ratios"].get(f"{key}_vs_uvloop")
        if r is not None:
            a, b = mine[key], ref[key]
            overlap = a["min"] <= b["max"] and b["min"] <= a["max"] and mine["runs"] > 1
            text = (f"{wl_name}: gnetpy / uvloop server user µs/{unit} = {r:.3f} ({cell(a)} against "
                    f"{cell(b)}, medians" + ("; the ranges overlap" if overlap else "") + ")")
            if churn:
                out.append(text + "; no target, reported as measured.")
            else:
                verdict = "within" if r <= TLS_TARGET else "OVER"
                out.append(text + f"; {verdict} the target of {TLS_TARGET:g}x (gnetpy's user CPU per "
                                  f"message at or under uvloop's).")
    bound = [srv for srv, s in per_server.items() if s["loadgen_cpu_util"]["median"] >= LOADGEN_BOUND]
    if bound:
        out.append(f"{wl_name}: the load generator was at >= {LOADGEN_BOUND:.0%} of its CPU against "
                   f"{', '.join(bound)}: there the {'handshakes' if churn else 'msgs'}/s are (also) limited "
                   f"by the client's TLS work, not only by the server; server CPU per {unit} still holds.")
    return out


APP_SERVER_NOTES = {
    "http": ("gnetpy-http: examples/http_server.py, one event loop (gnetpy-http-pure: GNETPY_NO_EXTENSIONS=1); "
             "http-uvloop: the same handler on uvloop (benchmarks/servers/http_uvloop.py); uvicorn: "
             "benchmarks/servers/asgi_plaintext.py, --loop uvloop --http httptools, one worker, no access log; "
             "granian: benchmarks/servers/rsgi_plaintext.py, RSGI, one worker (a parent and a worker process, "
             "both measured), one runtime thread."),
    "resp": ("gnetpy-redis: examples/redis_server.py, one event loop (gnetpy-redis-pure: "
             "GNETPY_NO_EXTENSIONS=1); redis-uvloop: its commands on uvloop (benchmarks/servers/redis_uvloop.py); "
             "redis-server: --save '' --appendonly no."),
    "ws": ("gnetpy-http: examples/http_server.py's /ws (websockets' sans-I/O protocol over gnetpy; "
           "gnetpy-http-pure: GNETPY_NO_EXTENSIONS=1); websockets: its own asyncio server on asyncio's loop "
           "(benchmarks/servers/ws_websockets.py); picows: on uvloop (benchmarks/servers/ws_picows.py)."),
}


def app_notes(results: dict[str, Any]) -> list[str]:
    """W12-W14's notes: what each ran, whose load generator was at its limit, errors and failures."""
    cfg = results["config"]
    out = []
    over = " over TCP (--unix does not apply)" if cfg.get("unix") else ""
    described: set[str] = set()
    for w in cfg["workloads"]:
        mode = _chart_mode(results, w)
        if mode not in APP_MODES:
            continue
        info = results.get("workloads", {}).get(w) or dataclasses.asdict(WORKLOADS[w])
        conns, depth, size = info["conns"], info["depth"], info["size"]
        if mode == "http":
            how = (f"{depth} requests pipelined per write (TechEmpower's pipeline.lua)" if depth > 1
                   else "one request at a time per connection")
            text = (f"{w}: wrk -t1 -c{conns} -d{whole_seconds(cfg['duration'])}s (whole seconds) GET "
                    f"{HTTP_PATH}{over} with TechEmpower's headers, {how}, after a warm-up run of wrk; "
                    f"req/s is wrk's; server CPU is read from /proc over the whole measured wrk run and "
                    f"divided by the requests wrk completed (connection setup and the requests in flight "
                    f"when it stops are in the CPU, not in the count); errors: responses not 2xx/3xx plus "
                    f"socket errors.")
        elif mode == "resp":
            text = (f"{w}: redis-benchmark -c {conns} -P {depth} -t set,get --csv (one client thread){over}, "
                    f"-n sized by its warm-up runs so that SET and GET together take about "
                    f"{cfg['duration']:g} s; req/s = their requests / the two tests' own times; server CPU "
                    f"over the measured redis-benchmark run / its requests.")
        else:
            text = (f"{w}: benchmarks/wsload.c: {conns} WebSocket connections{over} (GET {WS_PATH} upgrade, "
                    f"the 101 checked), {size} B binary messages, {depth} in flight per connection, each a "
                    f"masked client frame echoed as one server frame, every byte checked; msgs/s and server "
                    f"CPU per message over wsload's measured window.")
        if mode not in described:
            described.add(mode)
            text += "  " + APP_SERVER_NOTES[mode]
        out.append(text)
        per_server = results["summary"].get(w, {})
        bound = [srv for srv, s in per_server.items() if s["loadgen_cpu_util"]["median"] >= LOADGEN_BOUND]
        unit = "msg" if mode == "ws" else "request"
        if bound:
            out.append(f"{w}: the load generator was at >= {LOADGEN_BOUND:.0%} of its CPU against "
                       f"{', '.join(bound)}: there the {unit}s/s are (also) the client's limit; server CPU "
                       f"per {unit} still holds.")
        if mode == "http":
            for srv in per_server:
                mine = [r for r in results["runs"] if r["workload"] == w and r["server"] == srv]
                if any(r["errors"] for r in mine):
                    sock = {k: sum(r["socket_errors"][k] for r in mine) for k in ("connect", "read", "write",
                                                                               "timeout")}
                    out.append(f"ERRORS {srv} in {w}: {sum(r['non_2xx'] for r in mine)} responses not 2xx/3xx, "
                               f"socket errors " + ", ".join(f"{k} {v}" for k, v in sock.items())
                               + f" over {len(mine)} run(s); its req/s counts every response wrk completed.")
        for srv, errors in results.get("failed", {}).get(w, {}).items():
            ran = sum(1 for r in results["runs"] if r["workload"] == w and r["server"] == srv)
            first = errors[0].strip().splitlines()[0] if errors[0].strip() else "(no message)"
            out.append(f"FAILED {srv} in {w} ({len(errors)} of {len(errors) + ran} repetition(s)): {first}")
    for why in results.get("not_run", {}).values():
        out.append(f"NOT RUN: {why}")
    return out


def idle_timeout_cost(per_server: dict[str, Any]) -> str | None:
    """W9's note: gnetpy-idle / gnetpy user µs per message, when both ran."""
    if "gnetpy" not in per_server or "gnetpy-idle" not in per_server:
        return None
    on, off = per_server["gnetpy-idle"], per_server["gnetpy"]
    r = on["ratios"]["server_user_us_per_msg_vs_gnetpy"]
    if r is None:
        return None
    on_us, off_us = on["server_user_us_per_msg"], off["server_user_us_per_msg"]
    overlap = on_us["min"] <= off_us["max"] and off_us["min"] <= on_us["max"]
    return (f"W9: idle_timeout costs {(r - 1) * 100:+.1f}% per message: gnetpy-idle / gnetpy user "
            f"µs/msg = {r:.3f} ({cell(on_us)} against {cell(off_us)}, medians"
            + ("; the ranges overlap, so the difference is within the run-to-run spread)."
               if overlap and on["runs"] > 1 else ")."))


def write_markdown(path: Path, results: dict[str, Any]) -> None:
    m = results["machine"]
    parts = [
        "# gnetpy benchmark results",
        "",
        f"{m['date']} · {m['cpu_model']} ({m['cpu_count']} CPUs) · Linux {m['kernel']} · "
        f"Python {m['python']} · uvloop {m['uvloop'] or 'n/a'}",
        "",
    ]
    for header, rows in build_tables(results):
        parts += [render_markdown(header, rows), ""]
    parts += [f"- {n}" for n in notes(results)]
    path.write_text("\n".join(parts) + "\n")


def write_chart(path: Path, results: dict[str, Any]) -> str | None:
    """The chart: a summary of each server's CPU against uvloop's, then a grid of per-workload
    panels (throughput and server user CPU, or W5's KiB per connection); returns why not, if not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not importable (pip install matplotlib); no chart written"
    summary = results["summary"]
    # Workloads with a throughput and a server CPU panel first (in pairs, two to a row), then W5's one.
    wls = [w for w in summary if summary[w] and _chart_mode(results, w) != "idle"]
    wls += [w for w in summary if summary[w] and _chart_mode(results, w) == "idle"]
    if not wls:
        return "no results to chart"
    panels = [(w, metric, label) for w in wls for metric, label in CHART_PANELS[_chart_mode(results, w)]]
    ratios = summary_ratios(results)
    colors = _server_colors([s for w in wls for s in summary[w]])
    cols = CHART_COLUMNS
    rows = -(-len(panels) // cols)
    top = 1 if ratios else 0
    with plt.rc_context({"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10,
                         "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 9}):
        fig = plt.figure(figsize=(CHART_WIDTH_IN, CHART_SUMMARY_IN * top + CHART_ROW_IN * rows),
                         layout="constrained")
        grid = fig.add_gridspec(top + rows, cols,
                                height_ratios=[CHART_SUMMARY_IN] * top + [CHART_ROW_IN] * rows)
        if ratios:
            _summary_panel(fig.add_subplot(grid[0, :]), results, ratios, colors)
        for i, (w, metric, label) in enumerate(panels):
            ax = fig.add_subplot(grid[top + i // cols, i % cols])
            _bars(ax, results, w, metric, label, colors)
        m = results.get("machine", {})
        cfg = results.get("config", {})
        fig.suptitle(
            f"gnetpy {'' if any(_chart_mode(results, w) in APP_MODES for w in wls) else 'echo '}benchmarks · "
            f"{m.get('cpu_model', '?')}, {m.get('cpu_count', '?')} CPUs · "
            f"Python {m.get('python', '?')} · {_chart_date(m.get('date'))}\n"
            f"bars: median of {cfg.get('reps', '?')} run(s) of {cfg.get('duration', 0):g} s per server, "
            f"whiskers: min-max", fontsize=12)
        fig.savefig(path, dpi=CHART_DPI, pil_kwargs={"optimize": True})
        plt.close(fig)
    return None


CHART_COLUMNS = 4      # per-workload panels per row: two workloads, throughput then CPU
CHART_WIDTH_IN = 16.0
CHART_SUMMARY_IN = 5.5   # the summary panel's height
CHART_ROW_IN = 3.3       # each row of per-workload panels
CHART_DPI = 100
CHART_REFERENCE = "uvloop"   # the summary panel's yardstick
# Per mode: (metric, panel title) for the throughput panel and the server CPU panel (W5: one panel).
CHART_PANELS = {
    "load": (("msgs_per_s", "msgs/s (higher is better)"),
             ("server_user_us_per_msg", "server user CPU, µs/msg (lower is better)")),
    "churn": (("conns_per_s", "conns/s (higher is better)"),
              ("server_user_us_per_conn", "server user CPU, µs/conn (lower is better)")),
    "udp": (("msgs_per_s", "datagrams/s (higher is better)"),
            ("server_user_us_per_msg", "server user CPU, µs/datagram (lower is better)")),
    "frames": (("msgs_per_s", "frames/s (higher is better)"),
               ("server_user_us_per_msg", "server user CPU, µs/frame (lower is better)")),
    "mixed": (("msgs_per_s", "msgs/s on the 1% active (higher is better)"),
              ("server_user_us_per_msg", "server user CPU, µs/msg (lower is better)")),
    "tls": (("msgs_per_s", "TLS msgs/s (higher is better)"),
            ("server_user_us_per_msg", "server user CPU, µs/msg (lower is better)")),
    "tls-churn": (("conns_per_s", "TLS handshakes/s (higher is better)"),
                  ("server_user_us_per_conn", "server user CPU, µs/handshake (lower is better)")),
    "idle": (("kib_per_conn", "server RSS, KiB per idle conn (lower is better)"),),
    "http": (("reqs_per_s", "HTTP requests/s (higher is better)"),
             ("server_user_us_per_req", "server user CPU, µs/request (lower is better)")),
    "resp": (("reqs_per_s", "RESP requests/s, SET+GET (higher is better)"),
             ("server_user_us_per_req", "server user CPU, µs/request (lower is better)")),
    "ws": (("msgs_per_s", "WebSocket msgs/s (higher is better)"),
           ("server_user_us_per_msg", "server user CPU, µs/msg (lower is better)")),
}
# Per mode: the unit of the figure the summary panel compares (COMPARED's last metric).
SUMMARY_UNITS = {"load": "µs/msg", "idle": "KiB/conn", "churn": "µs/conn", "udp": "µs/datagram",
                 "frames": "µs/frame", "mixed": "µs/msg", "tls": "µs/msg", "tls-churn": "µs/handshake",
                 "http": "µs/req", "resp": "µs/req", "ws": "µs/msg"}
# W12-W14's yardsticks in the summary panel, in uvloop's place: the same handler (or, W14, the
# same framing) on uvloop/asyncio.
CHART_MODE_REFERENCES = {"http": "http-uvloop", "resp": "redis-uvloop", "ws": "websockets"}
# W12-W14's throughput bars also say how busy the load generator was (and W12 its errors).
CHART_CLIENT_MODES = ("http", "resp", "ws")
# The usual servers keep their colours from chart to chart; any other (W8's, W9's gnetpy-idle, the
# variants, a --baseline) takes the next free one of CHART_PALETTE in the order it appears.
CHART_COLORS = {"gnetpy": "tab:green", "gnetpy-pure": "tab:blue", "asyncio": "tab:purple",
                "uvloop": "tab:gray", "c": "tab:olive",
                # W12-W14: gnetpy's examples as gnetpy, their uvloop counterparts as uvloop, Redis as C.
                "gnetpy-http": "tab:green", "gnetpy-http-pure": "tab:blue", "gnetpy-redis": "tab:green",
                "gnetpy-redis-pure": "tab:blue", "http-uvloop": "tab:gray", "redis-uvloop": "tab:gray",
                "websockets": "tab:gray", "redis-server": "tab:olive"}
CHART_PALETTE = ("tab:orange", "tab:cyan", "tab:red", "tab:brown", "tab:pink", "gold", "black",
                 "darkseagreen", "navy", "salmon", "teal", "orchid")


def _chart_mode(results: dict[str, Any], w: str) -> str:
    """Workload w's mode, from the results themselves where they say (a replotted JSON)."""
    info = results.get("workloads", {}).get(w)
    return info["mode"] if info and "mode" in info else WORKLOADS[w].mode


def _chart_title(results: dict[str, Any], w: str) -> str:
    info = results.get("workloads", {}).get(w)
    return info["title"] if info and "title" in info else WORKLOADS[w].title


def _chart_date(date: str | None) -> str:
    """2026-11-27T23:47:25+00:00 -> 2026-11-27 23:47 UTC (anything else as it is)."""
    if not date:
        return "date unknown"
    with contextlib.suppress(ValueError):
        d = datetime.datetime.fromisoformat(date)
        if d.utcoffset() is not None:
            return d.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return d.strftime("%Y-%m-%d %H:%M")
    return date


def _server_colors(names: Sequence[str]) -> dict[str, str]:
    """A colour per server: CHART_COLORS', then CHART_PALETTE's in order of appearance."""
    others = [s for s in dict.fromkeys(names) if s not in CHART_COLORS]
    return {**CHART_COLORS, **{s: CHART_PALETTE[i % len(CHART_PALETTE)] for i, s in enumerate(others)}}


def chart_reference(mode: str) -> str:
    """The summary panel's yardstick for a mode: uvloop, or W12-W14's counterpart of it."""
    return CHART_MODE_REFERENCES.get(mode, CHART_REFERENCE)


def summary_ratios(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """ratios[workload][server]: the server's median CPU figure (COMPARED's last: user µs per
    message, connection, ...; W5's KiB per connection) over uvloop's, where uvloop ran (W12-W14:
    over http-uvloop's, redis-uvloop's, websockets', chart_reference)."""
    out: dict[str, dict[str, float]] = {}
    for w, per_server in results["summary"].items():
        mode = _chart_mode(results, w)
        metric, reference = COMPARED[mode][-1], chart_reference(mode)
        ref = per_server.get(reference, {}).get(metric, {}).get("median")
        if not ref:
            continue
        mine = {srv: s[metric]["median"] / ref for srv, s in per_server.items()
                if srv != reference and metric in s and s[metric]["median"] > 0}
        if mine:
            out[w] = mine
    return out


def _summary_panel(ax: Any, results: dict[str, Any], ratios: dict[str, dict[str, float]],
                   colors: dict[str, str]) -> None:
    """Diverging bars on a log scale from the line at 1.0 (uvloop): below it, less CPU than uvloop."""
    from matplotlib.ticker import NullFormatter

    wls = list(ratios)
    width = 0.8 / max(len(r) for r in ratios.values())
    shown: dict[str, Any] = {}
    for x, w in enumerate(wls):
        servers = list(ratios[w])
        for i, srv in enumerate(servers):
            r = ratios[w][srv]
            pos = x + (i - (len(servers) - 1) / 2) * width
            bar = ax.bar(pos, r - 1, bottom=1, width=width * 0.92, color=colors[srv],
                         label=srv if srv not in shown else None)
            shown.setdefault(srv, bar)
            ax.annotate(f"{r:.2f}" if r >= 0.1 else f"{r:.3f}", (pos, r), xytext=(0, 3 if r >= 1 else -3),
                        textcoords="offset points",
                        ha="center", va="bottom" if r >= 1 else "top", fontsize=8, rotation=90)
    refs = list(dict.fromkeys(chart_reference(_chart_mode(results, w)) for w in wls))
    ax.axhline(1.0, color="black", linewidth=1.2, linestyle="--", label=f"{' / '.join(refs)} = 1.0")
    ax.set_yscale("log")
    values = [r for per in ratios.values() for r in per.values()]
    lo, hi = min(min(values), 0.5) / 2.2, max(max(values), 2.0) * 2.2
    ax.set_ylim(lo, hi)
    ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100) if lo <= t <= hi]
    ax.set_yticks(ticks, [f"{t:g}×" for t in ticks])
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(axis="y", which="major", alpha=0.3)
    labels = []
    for w in wls:
        mode = _chart_mode(results, w)
        reference = chart_reference(mode)
        ref = results["summary"][w][reference][COMPARED[mode][-1]]["median"]
        labels.append(f"{w}\n{reference}:\n{num(ref)} {SUMMARY_UNITS[mode]}")
    ax.set_xticks(range(len(wls)), labels)
    ax.set_xlim(-0.6, len(wls) - 0.4)
    others = [r for r in refs if r != CHART_REFERENCE]
    ax.set_ylabel(f"÷ {CHART_REFERENCE}'s (log scale)" if not others else "÷ the reference's (log scale)")
    if not others:
        title = (f"Server user CPU per message (or per the unit under each workload; W5: memory per "
                 f"idle connection) ÷ {CHART_REFERENCE}'s: lower is better, below the dashed line is "
                 f"cheaper than {CHART_REFERENCE}")
    else:
        title = (f"Server user CPU per message (or per the unit under each workload; W5: memory per "
                 f"idle connection) ÷ the reference's named under each workload ({', '.join(refs)}): "
                 f"lower is better, below the dashed line is cheaper than the reference")
    ax.set_title(textwrap.fill(title, width=140) if others else title, fontsize=11, fontweight="bold")
    ax.legend(loc="center left", bbox_to_anchor=(1.005, 0.5), frameon=False)


def _bars(ax: Any, results: dict[str, Any], w: str, metric: str, label: str,
          colors: dict[str, str]) -> None:
    """One workload's figure per server: medians, whiskers min-max, each median written above."""
    per_server = results["summary"][w]
    names = [s for s in per_server if metric in per_server[s]]
    med = [per_server[s][metric]["median"] for s in names]
    lo = [med[i] - per_server[s][metric]["min"] for i, s in enumerate(names)]
    hi = [per_server[s][metric]["max"] - med[i] for i, s in enumerate(names)]
    texts = [num(v) for v in med]
    mode = _chart_mode(results, w)
    lost = mode == "udp" and metric == "msgs_per_s"
    if lost:   # W7's lost datagrams go under each server's datagrams/s
        texts = [f"{t}\n{num(per_server[s]['lost']['median'])} lost" if "lost" in per_server[s] else t
                 for t, s in zip(texts, names)]
    client = mode in CHART_CLIENT_MODES and metric == COMPARED[mode][0]
    if client:   # W12-W14: the load generator's CPU (and W12's errors) under each throughput
        texts = [f"{t}\nclient {per_server[s]['loadgen_cpu_util']['median']:.0%}"
                 + (f"\n{num(per_server[s]['errors']['median'])} ERR"
                    if per_server[s].get("errors", {}).get("max") else "")
                 for t, s in zip(texts, names)]
    ax.bar(range(len(names)), med, yerr=[lo, hi], capsize=3, color=[colors[s] for s in names],
           error_kw={"elinewidth": 1, "ecolor": "0.25"})
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", rotation_mode="anchor")
    for i, v in enumerate(med):
        ax.annotate(texts[i], (i, v + hi[i]), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8)
    top = max((v + h for v, h in zip(med, hi)), default=0)
    ax.set_ylim(0, top * (1.3 if lost or client else 1.18) if top > 0 else 1)
    ax.yaxis.set_major_formatter(lambda v, _pos: num(v))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(textwrap.fill(f"{w}: {_chart_title(results, w)}", width=44) + f"\n{label}", fontsize=10)


def replot(path: Path) -> int:
    """Redraw the chart of a results JSON (PATH.json -> PATH.png beside it) without running anything."""
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        print(f"--replot {path}: {e}", file=sys.stderr)
        return 1
    if not isinstance(results, dict) or not isinstance(results.get("summary"), dict):
        print(f"--replot {path}: not a results JSON of this harness (no 'summary')", file=sys.stderr)
        return 1
    out = path.with_suffix(".png")
    why_not = write_chart(out, results)
    if why_not:
        print(f"No chart: {why_not}", file=sys.stderr)
        return 1
    print(f"Wrote {out}")
    return 0


# ---- the whole run --------------------------------------------------------


def machine_description() -> dict[str, Any]:
    cpu_model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    try:
        uvloop_version: str | None = importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        uvloop_version = None
    server_cpu, loadgen_cpu = pick_cpus()
    return {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "uvloop": uvloop_version,
        "clk_tck": os.sysconf("SC_CLK_TCK"),
        "nofile_hard_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "pinning": {"server_cpu": server_cpu, "loadgen_cpu": loadgen_cpu},
    }


def idle_conn_count(wanted: int, workloads: Sequence[str] = ("W5",)) -> tuple[int, str | None]:
    """W5's N (W9's connections in all), scaled down if RLIMIT_NOFILE's hard limit is too low for it."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or wanted + FD_MARGIN <= hard:
        return wanted, None
    n = max(1, hard - FD_MARGIN)
    which = " and ".join(w for w in ("W5", "W9") if w in workloads) or "W5"
    return n, (f"{which} used {n} connections instead of {wanted}: the RLIMIT_NOFILE hard "
               f"limit is {hard} (raise it, e.g. `ulimit -Hn`, for the full count).")


def benchmark(cfg: Config) -> dict[str, Any]:
    skipped = {s: why for s in cfg.servers if (why := SERVERS[s].unavailable())}
    for srv, why in skipped.items():
        print(f"SKIPPING {srv}: {why}", file=sys.stderr)
    ran = dataclasses.replace(cfg, servers=[s for s in cfg.servers if s not in skipped])
    if not ran.servers:
        raise HarnessError("none of the requested servers can run here")
    # A server that runs, but not this workload (floor has no UDP; gnetpy's UDP example may be missing).
    # W8 runs frame echoes only (a byte echo cannot run it; gnetpy-codec cannot run anything else).
    # W12-W14 run application servers, W1-W11 echo servers: a pair that does not apply is not run
    # and not listed (applies_to).  W12's and W13's load tools must be installed.
    skipped_workloads: dict[str, dict[str, str]] = {}
    unserved: dict[str, str] = {}   # workloads that none of the servers given runs
    for wl_name in cfg.workloads:
        wl = WORKLOADS[wl_name]
        mine = [srv for srv in ran.servers if SERVERS[srv].applies_to(wl)]
        if not mine:
            theirs = [name for name, x in SERVERS.items() if x.applies_to(wl) and name not in ON_REQUEST]
            unserved[wl_name] = (f"{wl_name} ran no server: none of those given runs it (its servers: "
                                 f"{', '.join(theirs)})")
        for srv in mine:
            if why := SERVERS[srv].cannot_run(wl) or missing_tool(wl.mode):
                skipped_workloads.setdefault(wl_name, {})[srv] = why
    for why in unserved.values():
        print(f"NOT RUN: {why}", file=sys.stderr)
    for srv, wl_names, why in group_skips(skipped_workloads):
        print(f"SKIPPING {srv} in {', '.join(wl_names)}: {why}", file=sys.stderr)
    loadgen = ensure_built("loadgen")
    if "c" in ran.servers:
        ensure_built("c_echo")
    # W14's load generator, when a server is to run it.
    wsload = ensure_built("wsload") if any(
        SERVERS[srv].applies_to(WORKLOADS[w]) and srv not in skipped_workloads.get(w, {})
        for w in cfg.workloads if WORKLOADS[w].mode == "ws" for srv in ran.servers) else None
    idle_conns, idle_note = idle_conn_count(cfg.idle_conns, cfg.workloads)
    if not any(WORKLOADS[w].idle or WORKLOADS[w].mode == "mixed" for w in cfg.workloads):
        idle_note = None
    if idle_note:
        print(idle_note, file=sys.stderr)

    runs: list[dict[str, Any]] = []
    failed: dict[str, dict[str, list[str]]] = {}   # W12-W14: failed[workload][server] = each failure
    with Processes() as procs, tempfile.TemporaryDirectory(prefix="gnetpy-bench-") as tmp:
        tls = prepare_tls(Path(tmp), cfg.workloads, ran.servers, skipped_workloads)   # W10, W11
        for wl_name in cfg.workloads:
            wl = WORKLOADS[wl_name]
            for rep in range(cfg.reps):
                for srv in ran.servers:   # interleaved: A B C D A B C D ...
                    if srv in skipped or srv in skipped_workloads.get(wl_name, {}) or \
                            not SERVERS[srv].applies_to(wl):
                        continue
                    try:
                        result = run_once(procs, loadgen, Path(tmp), srv, wl, cfg, idle_conns, tls, wsload)
                    except ServerRejected as e:
                        # Its flags are not there yet (an example that lags behind the
                        # harness): skipped like a missing server, with its own error.
                        skipped[srv] = str(e)
                        print(f"SKIPPING {srv}: {e}", file=sys.stderr)
                        continue
                    except WorkloadFailed as e:   # an application server's failure: shown, not fatal
                        failed.setdefault(wl_name, {}).setdefault(srv, []).append(str(e))
                        print(f"{wl_name} rep {rep + 1}/{cfg.reps} {srv:8} FAILED: {e}", file=sys.stderr,
                              flush=True)
                        continue
                    runs.append({"workload": wl_name, "server": srv, "rep": rep, **result})
                    progress(runs[-1], cfg)
    ran = dataclasses.replace(ran, servers=[s for s in ran.servers if s not in skipped])
    if not ran.servers:
        raise HarnessError("none of the requested servers can run here: "
                           + "; ".join(f"{s}: {why}" for s, why in skipped.items()))
    for per_server in skipped_workloads.values():
        for srv in skipped:
            per_server.pop(srv, None)

    return {
        "machine": machine_description(),
        "config": {**dataclasses.asdict(ran), "out": str(cfg.out)},
        "workloads": {w: dataclasses.asdict(WORKLOADS[w]) for w in cfg.workloads},
        "skipped": skipped,
        "skipped_workloads": skipped_workloads,
        "failed": failed,
        "not_run": unserved,
        "idle_note": idle_note,
        "runs": runs,
        "summary": summarize(runs, ran),
    }


def progress(run: dict[str, Any], cfg: Config) -> None:
    head = f"{run['workload']} rep {run['rep'] + 1}/{cfg.reps} {run['server']:8}"
    if "kib_per_conn" in run:
        body = f"{run['kib_per_conn']:.2f} KiB/conn over {run['connections']} conns"
    elif run.get("mode") == "churn":
        body = (f"{num(run['conns_per_s'])} conns/s  p99 {num(run['rtt_p99_us'])} us  "
                f"user {num(run['server_user_us_per_conn'])} us/conn  "
                f"sys {num(run['server_sys_us_per_conn'])} us/conn  "
                f"(server CPU {run['server_cpu_util']:.0%}, loadgen CPU "
                f"{run['loadgen_cpu_util']:.0%})")
    elif run.get("mode") == "tls-churn":   # W11
        body = (f"{num(run['conns_per_s'])} handshakes/s  p99 {num(run['rtt_p99_us'])} us  "
                f"user {num(run['server_user_us_per_conn'])} us/handshake  "
                f"sys {num(run['server_sys_us_per_conn'])} us/handshake  "
                f"(server CPU {run['server_cpu_util']:.0%}, loadgen CPU "
                f"{run['loadgen_cpu_util']:.0%})")
    elif "idle_conns" in run:   # W9
        body = (f"{run['idle_conns']} idle + {run['connections']} active conns: "
                f"{num(run['msgs_per_s'])} msgs/s  p99 {num(run['rtt_p99_us'])} us  "
                f"user {num(run['server_user_us_per_msg'])} us/msg  "
                f"sys {num(run['server_sys_us_per_msg'])} us/msg  "
                f"(server CPU {run['server_cpu_util']:.0%}, loadgen CPU "
                f"{run['loadgen_cpu_util']:.0%})")
    elif run.get("mode") == "frames":
        body = (f"{num(run['msgs_per_s'])} frames/s  p99 {num(run['rtt_p99_us'])} us  "
                f"user {num(run['server_user_us_per_msg'])} us/frame  "
                f"sys {num(run['server_sys_us_per_msg'])} us/frame  "
                f"(server CPU {run['server_cpu_util']:.0%}, loadgen CPU "
                f"{run['loadgen_cpu_util']:.0%})")
    elif run.get("mode") in ("http", "resp"):   # W12, W13
        errors = f"  ERRORS {run['errors']}" if run.get("errors") else ""
        body = (f"{num(run['reqs_per_s'])} req/s  user {num(run['server_user_us_per_req'])} us/req  "
                f"sys {num(run['server_sys_us_per_req'])} us/req{errors}  (server CPU "
                f"{run['server_cpu_util']:.0%}, loadgen CPU {run['loadgen_cpu_util']:.0%})")
    elif run.get("mode") == "ws":   # W14
        body = (f"{num(run['msgs_per_s'])} msgs/s  p99 {num(run['rtt_p99_us'])} us  "
                f"user {num(run['server_user_us_per_msg'])} us/msg  "
                f"sys {num(run['server_sys_us_per_msg'])} us/msg  "
                f"(server CPU {run['server_cpu_util']:.0%}, loadgen CPU "
                f"{run['loadgen_cpu_util']:.0%})")
    elif run.get("mode") == "udp":
        body = (f"{num(run['msgs_per_s'])} msgs/s  p99 {num(run['rtt_p99_us'])} us  "
                f"user {num(run['server_user_us_per_msg'])} us/datagram  "
                f"sys {num(run['server_sys_us_per_msg'])} us/datagram  lost {run['lost']}  "
                f"(server CPU {run['server_cpu_util']:.0%}, loadgen CPU "
                f"{run['loadgen_cpu_util']:.0%})")
    else:
        body = (f"{num(run['msgs_per_s'])} msgs/s  p99 {num(run['rtt_p99_us'])} us  "
                f"user {num(run['server_user_us_per_msg'])} us/msg  "
                f"sys {num(run['server_sys_us_per_msg'])} us/msg  "
                f"(server CPU {run['server_cpu_util']:.0%}, loadgen CPU "
                f"{run['loadgen_cpu_util']:.0%})")
    print(f"{head} {body}", file=sys.stderr, flush=True)


def report(results: dict[str, Any], cfg: Config) -> None:
    """Print the tables and write OUT/{results,quick}.{json,md,png}."""
    print()
    for header, rows in build_tables(results):
        print(render_text(header, rows))
        print()
    for n in notes(results):
        print(n)
    cfg.out.mkdir(parents=True, exist_ok=True)
    stem = "quick" if cfg.quick else "results"
    (cfg.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(cfg.out / f"{stem}.md", results)
    written = [f"{stem}.json", f"{stem}.md"]
    why_not = write_chart(cfg.out / f"{stem}.png", results)
    if why_not:
        print(f"No chart: {why_not}", file=sys.stderr)
    else:
        written.append(f"{stem}.png")
    print(f"Wrote {', '.join(written)} to {cfg.out}")


# ---- command line ---------------------------------------------------------


def _names(valid: dict[str, Any], groups: dict[str, list[str]] | None = None) -> Callable[[str], list[str]]:
    """A comma-separated list of names from `valid`; a name in `groups` stands for its members."""
    groups = groups or {}

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        bad = [n for n in names if n not in valid and n not in groups]
        if bad or not names:
            choices = [*valid, *(f"{g} (= {'+'.join(members)})" for g, members in groups.items())]
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(bad) or '(empty)'}; choose from {', '.join(choices)}")
        return list(dict.fromkeys(m for n in names for m in groups.get(n, [n])))
    return parse


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def parse_args(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(
        prog="gnetpy bench",
        description="Echo benchmarks: gnetpy vs asyncio, uvloop and a C epoll server (W1-W11); "
                    "gnetpy's HTTP, RESP and WebSocket examples vs uvloop, uvicorn, granian, Redis, "
                    "websockets and picows (W12-W14).",
        epilog="--scaling runs the multi-core scaling benchmark instead (benchmarks/scaling.py; "
               "`--scaling --help` for its options).  --replot RESULTS.json redraws that run's "
               "chart (RESULTS.png beside it) without running anything.",
    )
    p.add_argument("--quick", action="store_true",
                   help="1 repetition, 2 s runs, short warm-up, 2000 idle conns; "
                        "writes quick.{json,md,png}")
    p.add_argument("--reps", type=_positive(int), help="repetitions per server (default 5)")
    p.add_argument("--duration", type=_positive(float),
                   help="measured seconds per run (default 5)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per run (default 1)")
    p.add_argument("--workloads", type=_names(WORKLOADS, WORKLOAD_GROUPS), default=list(WORKLOADS),
                   help="comma-separated subset of " + ",".join(WORKLOADS) + "; "
                   + ", ".join(f"{g} = {'+'.join(m)}" for g, m in WORKLOAD_GROUPS.items()))
    p.add_argument("--servers", type=_names(SERVERS), default=None,
                   help="comma-separated subset of " + ",".join(SERVERS)
                   + f" (default: the echo servers but {', '.join(ON_REQUEST)}, plus "
                   + f"{', '.join(GNETPY_FRAMES_SERVERS)} when W8 runs, and W12-W14's application servers "
                   + "when those run; see benchmarks/README.md)")
    p.add_argument("--idle-conns", type=_positive(int),
                   help="W5 connection count, and W9's in all: this many less its 100 active ones "
                        "are held idle (default 10000; 2000 with --quick)")
    p.add_argument("--unix", action="store_true",
                   help="Unix domain sockets instead of TCP (W1-W6, W9; W7 stays UDP, W10-W14 TCP)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="output directory (default benchmarks/results)")
    p.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                   help="also run another gnetpy checkout (e.g. a `git worktree` of main) as server "
                        "'baseline', interleaved with the others: before/after in one run")
    a = p.parse_args(argv)
    if a.servers is None:
        a.servers = default_servers(a.workloads)
    if a.baseline is not None:
        if not (a.baseline / "examples" / "echo.py").exists():
            p.error(f"--baseline {a.baseline}: no examples/echo.py there")
        add_baseline_server(a.baseline.resolve())
        a.servers = [*a.servers, "baseline"]
    if a.warmup is not None and a.warmup < 0:
        p.error("--warmup must be >= 0")

    def pick(value: Any, quick: Any, full: Any) -> Any:
        return value if value is not None else (quick if a.quick else full)

    return Config(
        quick=a.quick,
        reps=pick(a.reps, 1, 5),
        duration=pick(a.duration, 2.0, 5.0),
        warmup=pick(a.warmup, 0.5, 1.0),
        idle_conns=pick(a.idle_conns, 2000, 10_000),
        workloads=a.workloads,
        servers=[s for s in SERVERS if s in a.servers],   # fixed interleaving order
        unix=a.unix,
        out=a.out,
    )


class Terminated(BaseException):
    """SIGTERM arrived; unwinds like KeyboardInterrupt so children are stopped."""


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise Terminated

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:   # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--scaling" in argv:   # the multi-core scaling run: benchmarks/scaling.py
        argv.remove("--scaling")
        if str(REPO_ROOT) not in sys.path:
            sys.path.insert(0, str(REPO_ROOT))
        from benchmarks import scaling

        return scaling.main(argv)
    if argv[:1] == ["--replot"]:   # redraw a results JSON's chart; nothing is run
        if len(argv) != 2:
            print("usage: harness.py --replot RESULTS.json   (writes RESULTS.png beside it)", file=sys.stderr)
            return 2
        return replot(Path(argv[1]))
    cfg = parse_args(argv)
    try:
        with sigterm_unwinds():
            results = benchmark(cfg)
    except HarnessError as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated) as e:
        print("interrupted; all servers and load generators stopped", file=sys.stderr)
        return 130 if isinstance(e, KeyboardInterrupt) else 128 + signal.SIGTERM
    report(results, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
