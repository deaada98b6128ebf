"""examples/redis_server.py against real clients: redis-py, redis-cli, redis-benchmark, raw sockets.

The server runs in-process (``serve``) on an ephemeral port, except where the
program itself is tested (the example's CLI and benchmarks/servers/redis_uvloop.py,
which shares its command handling).  Tests that need redis-cli or
redis-benchmark are skipped only when the tool is not installed.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from conftest import WAIT, connect, recv_until_eof, wait_for

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("redis_server_example", ROOT / "examples" / "redis_server.py")
assert _spec is not None and _spec.loader is not None
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)


@pytest.fixture
def server(serve: Any) -> Any:
    """The example's handler on 127.0.0.1:<ephemeral>, one loop; yields (handler, (host, port))."""
    handler = example.RedisServer()
    return handler, serve(handler, "tcp://127.0.0.1:0").addrs[0]


def client(addr: Any, **kwargs: Any) -> redis.Redis:
    return redis.Redis(host=addr[0], port=addr[1], socket_timeout=WAIT, **kwargs)


@pytest.fixture
def r(server: Any) -> Iterator[redis.Redis]:
    with client(server[1]) as c:
        yield c


def request(addr: Any, data: bytes, expect: int) -> bytes:
    """Send raw bytes on a new connection; read until ``expect`` bytes came back."""
    with connect(addr) as s:
        s.sendall(data)
        got = b""
        while len(got) < expect and (chunk := s.recv(65536)):
            got += chunk
        return got


def test_commands_with_redis_py(r: redis.Redis) -> None:
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    assert r.set("k", "v") is True and r.get("k") == b"v" and r.get("missing") is None
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.mget("a", "missing", "b") == [b"1", None, b"2"]
    assert r.exists("a", "b", "a", "missing") == 3
    assert r.delete("a", "missing", "k") == 2 and r.exists("a") == 0
    assert [r.incr("n"), r.incr("n"), r.decr("n"), r.incrby("n", 10), r.decrby("n", 3)] == [1, 2, 1, 11, 8]
    assert r.get("n") == b"8"
    for bad in ("v", "1.5", " 1", "01", "99999999999999999999"):
        r.set("s", bad)
        with pytest.raises(redis.ResponseError, match="^value is not an integer or out of range$"):
            r.incr("s")
    r.set("max", str(2**63 - 1))
    with pytest.raises(redis.ResponseError, match="increment or decrement would overflow"):
        r.incr("max")
    assert r.dbsize() == 4
    assert r.flushdb() is True and r.dbsize() == 0 and r.get("n") is None
    assert r.execute_command("SELECT", 0) is True
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        r.execute_command("SELECT", 1)


def test_set_options(r: redis.Redis) -> None:
    assert r.set("k", "1", nx=True) is True
    assert r.set("k", "2", nx=True) is None and r.get("k") == b"1"
    assert r.set("k", "3", xx=True) is True and r.get("k") == b"3"
    assert r.set("new", "1", xx=True) is None and r.exists("new") == 0
    assert r.set("k", "4", ex=100) is True and 99 <= r.ttl("k") <= 100
    assert r.set("k", "5", px=30_000) is True and 29 <= r.ttl("k") <= 30
    assert r.set("k", "6", keepttl=True) is True and 29 <= r.ttl("k") <= 30
    assert r.incr("k") == 7 and 29 <= r.ttl("k") <= 30          # INCR keeps the deadline
    assert r.set("k", "7") is True and r.ttl("k") == -1            # a plain SET clears it
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        r.execute_command("SET", "k", "v", "NX", "XX")
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        r.execute_command("SET", "k", "v", "EX")
    with pytest.raises(redis.ResponseError, match="^value is not an integer or out of range$"):
        r.execute_command("SET", "k", "v", "EX", "ten")
    with pytest.raises(redis.ResponseError, match="^invalid expire time in 'set' command$"):
        r.execute_command("SET", "k", "v", "PX", "0")
    assert r.get("k") == b"7"


def test_ttl_and_expire(r: redis.Redis) -> None:
    assert r.ttl("missing") == -2 and r.expire("missing", 10) is False
    r.set("k", "v")
    assert r.ttl("k") == -1
    assert r.expire("k", 50) is True and 49 <= r.ttl("k") <= 50
    assert r.expire("k", 0) is True and r.exists("k") == 0 and r.ttl("k") == -2


def test_lazy_expiry(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(example, "ACTIVE_EXPIRE_PERIOD", 3600.0)   # no active cycle during the test
    with client(server[1]) as r:
        r.set("k", "v", px=50)
        r.set("keep", "v")
        time.sleep(0.2)
        assert r.dbsize() == 2             # expired, but nothing removed it yet
        assert r.get("k") is None          # touching it removes it
        assert r.dbsize() == 1 and r.ttl("k") == -2


def test_active_expiry_removes_untouched_keys(r: redis.Redis) -> None:
    with r.pipeline(transaction=False) as p:
        for i in range(30):
            p.set(f"long:{i}", "v", ex=100)      # sampled first; must not hide the others
        for i in range(200):
            p.set(f"short:{i}", "v", px=50)
        for i in range(5):
            p.set(f"plain:{i}", "v")
        p.execute()
    assert r.dbsize() == 235
    wait_for(lambda: r.dbsize() == 35, timeout=5)   # DBSIZE touches no key
    assert r.exists(*[f"long:{i}" for i in range(30)]) == 30


def test_pipelines(r: redis.Redis) -> None:
    with r.pipeline(transaction=False) as p:
        for i in range(500):
            p.set(f"k{i}", i)
            p.get(f"k{i}")
        replies = p.execute()
    assert replies == [x for i in range(500) for x in (True, str(i).encode())]
    with r.pipeline() as p:                      # redis-py's default: MULTI ... EXEC
        for _ in range(1000):
            p.incr("n")
        assert p.execute() == list(range(1, 1001))
    with pytest.raises(redis.ResponseError, match="EXEC without MULTI"):
        r.execute_command("EXEC")


@pytest.mark.parametrize("protocol", [2, 3])
def test_handshakes(server: Any, protocol: int) -> None:
    with client(server[1], protocol=protocol, client_name="t") as r:
        assert r.get("missing") is None and r.mget("missing") == [None]
        assert r.config_get("save") == {"save": ""} and r.config_get("append*") == {"appendonly": "no"}
        assert r.command_count() == len(example.COMMANDS)
    assert request(server[1], b"*2\r\n$5\r\nHELLO\r\n$1\r\n4\r\n", 7).startswith(b"-NOPROTO")


def test_errors_and_inline_commands(server: Any) -> None:
    addr = server[1]
    assert request(addr, b"PING\r\n", 7) == b"+PONG\r\n"
    replies = b"+OK\r\n$5\r\nhello\r\n:1\r\n+PONG\r\n"
    assert request(addr, b"SET k hello\r\nget k\n\r\nEXISTS k\r\n*1\r\n$4\r\nPING\r\n", len(replies)) == replies
    with connect(addr) as s:                     # an inline line split over two sends
        s.sendall(b"PI")
        time.sleep(0.05)
        s.sendall(b"NG\r\n")
        assert s.recv(100) == b"+PONG\r\n"
    wrong = b"-ERR wrong number of arguments for 'get' command\r\n"
    assert request(addr, b"GET\r\n", len(wrong)) == wrong
    unknown = b"-ERR unknown command 'NOPE', with args beginning with: 'a' 'b c' \r\n"
    assert request(addr, b"*3\r\n$4\r\nNOPE\r\n$1\r\na\r\n$3\r\nb c\r\n", len(unknown)) == unknown


@pytest.mark.parametrize("bad", [b"*1\r\n$x\r\n", b"*1\r\n:5\r\n", b"*1\r\n*1\r\n$1\r\na\r\n"])
def test_protocol_error_closes_only_that_connection(server: Any, r: redis.Redis, bad: bytes) -> None:
    assert r.set("k", "v") is True
    with connect(server[1]) as other, connect(server[1]) as s:
        s.sendall(b"*1\r\n$4\r\nPING\r\n" + bad)
        reply = recv_until_eof(s)                # the server closes it
        assert reply.startswith(b"+PONG\r\n-ERR Protocol error: ") and reply.endswith(b"\r\n"), reply
        other.sendall(b"PING\r\n")
        assert other.recv(100) == b"+PONG\r\n"
    assert r.get("k") == b"v"


def run_tool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_redis_cli(server: Any) -> None:
    cli = ("redis-cli", "-h", server[1][0], "-p", str(server[1][1]))
    outputs = [run_tool(*cli, *cmd).stdout for cmd in (
        ["PING"], ["SET", "k", "hello world"], ["GET", "k"], ["INCR", "n"], ["SET", "t", "v", "EX", "60"],
        ["TTL", "t"], ["MGET", "k", "missing"], ["DBSIZE"], ["NOPE"])]
    assert outputs == ["PONG\n", "OK\n", "hello world\n", "1\n", "OK\n", "60\n", "hello world\n\n", "3\n",
                       "ERR unknown command 'NOPE', with args beginning with: \n\n"]  # as for redis-server


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="redis-benchmark is not installed")
@pytest.mark.parametrize("pipeline,requests", [(16, 20_000), (1, 2_000)])
def test_redis_benchmark_completes_every_request(server: Any, r: redis.Redis, monkeypatch: pytest.MonkeyPatch,
                                                 pipeline: int, requests: int) -> None:
    # redis-benchmark itself is no proof: a client missing a reply spins until a counter of
    # requests issued overflows, then issues more and exits 0.  Issued == executed == n is.
    executed: collections.Counter[bytes] = collections.Counter()
    for name in (b"SET", b"GET"):
        fn, arity = example.COMMANDS[name]
        monkeypatch.setitem(example.COMMANDS, name, (lambda s, a, fn=fn: executed.update(a[:1]) or fn(s, a), arity))
    done = run_tool("redis-benchmark", "-h", server[1][0], "-p", str(server[1][1]), "-t", "set,get",
                    "-n", str(requests), "-P", str(pipeline), "-q")
    assert done.returncode == 0, done.stderr
    lines = re.split(r"[\r\n]+", done.stdout)
    for test in ("SET", "GET"):
        assert any(re.match(rf"{test}: [0-9.]+ requests per second", line) for line in lines), done.stdout
    assert "WARNING" not in done.stdout + done.stderr      # it read CONFIG GET save/appendonly
    assert executed == {b"SET": requests, b"GET": requests}
    assert len(r.get("key:__rand_int__") or b"") == 3           # what the SETs stored (-d 3)


PROGRAMS = {
    "example": [sys.executable, str(ROOT / "examples" / "redis_server.py"), "--addr", "tcp://127.0.0.1:0"],
    "uvloop": [sys.executable, str(ROOT / "benchmarks" / "servers" / "redis_uvloop.py"), "--addr", "127.0.0.1:0"],
}


@pytest.mark.parametrize("name", PROGRAMS)
def test_programs(name: str) -> None:
    if name == "uvloop" and importlib.util.find_spec("uvloop") is None:
        pytest.skip("uvloop is not installed")
    proc = subprocess.Popen(PROGRAMS[name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        port, out, deadline = None, b"", time.monotonic() + WAIT
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            if select.select([proc.stdout], [], [], 0.1)[0]:
                out += os.read(proc.stdout.fileno(), 4096)  # type: ignore[union-attr]
                match = re.search(rb"127\.0\.0\.1'?[:,] ?(\d+)", out)
                port = int(match.group(1)) if match else None
        assert port is not None, f"{name} printed no address: {out!r}"
        with client(("127.0.0.1", port)) as r:
            assert r.set("k", "v", px=50) and r.get("k") == b"v" and r.incr("n") == 1
            wait_for(lambda: r.dbsize() == 1, timeout=5)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(WAIT) == 0
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
