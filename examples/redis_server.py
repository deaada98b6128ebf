"""A small Redis-compatible server: RESP parsed by hiredis, keys expired on the loop's timers.

    python examples/redis_server.py --addr tcp://127.0.0.1:6380 [--loops N]
    redis-cli -p 6380 set greeting hello EX 10
    redis-benchmark -p 6380 -t set,get -P 16 -q

What it shows:

- one ``hiredis.Reader`` per connection (``c.context``) fed with ``c.next()``;
  each complete command is executed and its reply written with ``c.write`` at
  once.  The engine sends all the writes of one ``on_traffic`` in one system
  call, so 16 pipelined commands cost one ``write`` with no batching by hand;
- inline commands (``PING`` typed in telnet): hiredis parses only RESP arrays,
  so a read that starts with anything but ``*`` at a command boundary is taken
  as lines, split on whitespace (no quoting).  Inline text after a RESP command
  in the same read is a protocol error;
- errors with Redis' wording; a malformed request gets ``-ERR Protocol error:
  ...`` and only that connection is closed;
- expiry without a timer per key: each key's deadline is stored; a key is
  removed when it is touched after its deadline (lazy), and every 100 ms one
  timer per event loop (``c.event_loop.call_later``, started by the loop's
  first connection) samples keys that have a deadline and removes the expired
  ones, like Redis' active expire cycle.

The data is a dict per event loop.  With one loop (the default) that is the
whole server.  With ``--loops N`` a client sees the keyspace of the loop its
connection landed on, and with worker processes each process has its own
keyspace: this is a showcase of the reactor, not a cluster (no persistence,
no replication, nothing shared between loops).

Commands: PING ECHO SET (EX PX NX XX KEEPTTL) GET DEL EXISTS INCR DECR EXPIRE
TTL MGET MSET DBSIZE FLUSHDB SELECT 0, MULTI/EXEC/DISCARD (redis-py's
``pipeline()``), HELLO 2|3, QUIT, and for clients that ask: COMMAND (COUNT,
DOCS), CONFIG GET (save, appendonly), CLIENT SETNAME/SETINFO/ID.
``benchmarks/servers/redis_uvloop.py`` runs the same commands on uvloop.
"""

from __future__ import annotations

import argparse
import fnmatch
import itertools
import logging
import os
import re
import sys
import time
from typing import Any, Callable

import hiredis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import gnetpy  # noqa: E402

ACTIVE_EXPIRE_PERIOD = 0.1    # seconds between active expire cycles (Redis' hz 10)
EXPIRE_SAMPLE = 20            # keys with a deadline looked at per round
EXPIRE_BUDGET = 0.005         # the most seconds one cycle may take
MAX_INLINE = 64 * 1024        # Redis' limit for an inline command line
INTEGER = re.compile(rb"-?[1-9][0-9]*|0")   # what Redis' string2ll accepts
INT64 = (-(1 << 63), (1 << 63) - 1)
CONFIG = {b"save": b"", b"appendonly": b"no", b"databases": b"1"}

OK, PONG, QUEUED = b"+OK\r\n", b"+PONG\r\n", b"+QUEUED\r\n"
NOT_INTEGER = b"-ERR value is not an integer or out of range\r\n"
SYNTAX = b"-ERR syntax error\r\n"
now = time.monotonic


class BadRequest(Exception):
    """A request that is not RESP: the connection is answered and closed."""


class Quit(Exception):
    """QUIT: reply +OK, then close."""


class Keyspace:
    """One event loop's data: values, and the deadlines (time.monotonic()) of keys that have one."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.expires: dict[bytes, float] = {}

    def get(self, key: bytes) -> bytes | None:
        expires = self.expires
        if expires and key in expires and expires[key] <= now():   # lazy expiry
            self.delete(key)
            return None
        return self.data.get(key)

    def set(self, key: bytes, value: bytes, deadline: float | None = None, keep_ttl: bool = False) -> None:
        self.data[key] = value
        if deadline is not None:
            self.expires[key] = deadline
        elif not keep_ttl and self.expires:
            self.expires.pop(key, None)

    def delete(self, key: bytes) -> bool:
        self.expires.pop(key, None)
        return self.data.pop(key, None) is not None

    def expire_cycle(self) -> None:
        """Redis' active expiry: sample keys with a deadline, drop the dead; again while a quarter was dead.

        Sampled keys that are still alive move to the end of ``expires`` (a
        dict keeps insertion order), so successive rounds walk all of them.
        """
        expires, start = self.expires, now()
        while expires:
            t, dead = now(), 0
            for key, deadline in list(itertools.islice(expires.items(), EXPIRE_SAMPLE)):
                del expires[key]
                if deadline <= t:
                    self.data.pop(key, None)
                    dead += 1
                else:
                    expires[key] = deadline
            if dead * 4 <= EXPIRE_SAMPLE or now() - start > EXPIRE_BUDGET:
                return


class Session:
    """A connection's state: its parser, its protocol version, its transaction."""

    __slots__ = ("reader", "db", "proto", "null", "line", "queued", "dirty", "id")
    ids = itertools.count(1)

    def __init__(self, db: Keyspace) -> None:
        self.reader = hiredis.Reader()
        self.db = db
        self.proto, self.null = 2, b"$-1\r\n"
        self.line = b""                     # an inline command still missing its end of line
        self.queued: list[list[bytes]] | None = None   # commands after MULTI
        self.dirty = False                  # a command failed to queue: EXEC aborts
        self.id = next(self.ids)


# -- replies ----------------------------------------------------------------------------------------

def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def array(s: Session, values: list[bytes | None]) -> bytes:
    return b"*%d\r\n" % len(values) + b"".join(s.null if v is None else bulk(v) for v in values)


def mapping(s: Session, pairs: list[tuple[bytes, bytes]]) -> bytes:
    head = b"%%%d\r\n" % len(pairs) if s.proto == 3 else b"*%d\r\n" % (2 * len(pairs))
    return head + b"".join(bulk(k) + v for k, v in pairs)


def err_args(name: bytes) -> bytes:
    return b"-ERR wrong number of arguments for '%b' command\r\n" % name.lower()


def err_unknown(a: list[bytes]) -> bytes:
    args = b"".join(b"'%b' " % x[:128] for x in a[1:])
    return b"-ERR unknown command '%b', with args beginning with: %b\r\n" % (a[0][:128], args)


def integer(value: bytes) -> int | None:
    """A signed 64-bit integer written as Redis writes it, else None."""
    if INTEGER.fullmatch(value) is None or not INT64[0] <= int(value) <= INT64[1]:
        return None
    return int(value)


# -- commands: f(session, args) -> the reply's bytes ---------------------------------------------

def ping(s: Session, a: list[bytes]) -> bytes:
    if len(a) > 2:
        return err_args(a[0])
    return PONG if len(a) == 1 else bulk(a[1])


def get(s: Session, a: list[bytes]) -> bytes:
    value = s.db.get(a[1])
    return s.null if value is None else bulk(value)


def set_(s: Session, a: list[bytes]) -> bytes:
    deadline, cond, keep, i = None, None, False, 3
    while i < len(a):
        opt = a[i].upper()
        if opt in (b"NX", b"XX") and cond in (None, opt):
            cond = opt
        elif opt == b"KEEPTTL" and deadline is None:
            keep = True
        elif opt in (b"EX", b"PX") and deadline is None and not keep and i + 1 < len(a):
            n, i = integer(a[i + 1]), i + 1
            if n is None:
                return NOT_INTEGER
            if n <= 0:
                return b"-ERR invalid expire time in 'set' command\r\n"
            deadline = now() + (n if opt == b"EX" else n / 1000)
        else:
            return SYNTAX
        i += 1
    if cond is not None and (s.db.get(a[1]) is None) != (cond == b"NX"):
        return s.null
    s.db.set(a[1], a[2], deadline, keep)
    return OK


def delete(s: Session, a: list[bytes]) -> bytes:
    return b":%d\r\n" % sum(s.db.get(key) is not None and s.db.delete(key) for key in a[1:])


def exists(s: Session, a: list[bytes]) -> bytes:
    return b":%d\r\n" % sum(s.db.get(key) is not None for key in a[1:])


def incr_by(s: Session, key: bytes, by_text: bytes, sign: int = 1) -> bytes:
    old, by = s.db.get(key), integer(by_text)
    n = 0 if old is None else integer(old)
    if n is None or by is None:
        return NOT_INTEGER
    by *= sign
    if not INT64[0] <= n + by <= INT64[1]:
        return b"-ERR increment or decrement would overflow\r\n"
    s.db.set(key, b"%d" % (n + by), keep_ttl=True)
    return b":%d\r\n" % (n + by)


def expire(s: Session, a: list[bytes]) -> bytes:
    seconds = integer(a[2])
    if seconds is None:
        return NOT_INTEGER
    if s.db.get(a[1]) is None:
        return b":0\r\n"
    if seconds <= 0:
        s.db.delete(a[1])
    else:
        s.db.expires[a[1]] = now() + seconds
    return b":1\r\n"


def ttl(s: Session, a: list[bytes]) -> bytes:
    if s.db.get(a[1]) is None:
        return b":-2\r\n"
    deadline = s.db.expires.get(a[1])
    return b":-1\r\n" if deadline is None else b":%d\r\n" % int(deadline - now() + 0.5)


def mset(s: Session, a: list[bytes]) -> bytes:
    if len(a) % 2 == 0:
        return err_args(a[0])
    for i in range(1, len(a), 2):
        s.db.set(a[i], a[i + 1])
    return OK


def flushdb(s: Session, a: list[bytes]) -> bytes:
    s.db.data.clear()
    s.db.expires.clear()
    return OK


def hello(s: Session, a: list[bytes]) -> bytes:
    if len(a) > 1:
        if a[1] not in (b"2", b"3"):
            return b"-NOPROTO unsupported protocol version\r\n"
        s.proto, s.null = (3, b"_\r\n") if a[1] == b"3" else (2, b"$-1\r\n")
    info = [(b"server", bulk(b"redis")), (b"version", bulk(b"7.0.0")), (b"proto", b":%d\r\n" % s.proto),
            (b"id", b":%d\r\n" % s.id), (b"mode", bulk(b"standalone")), (b"role", bulk(b"master")),
            (b"modules", b"*0\r\n")]
    return mapping(s, info)


def command(s: Session, a: list[bytes]) -> bytes:
    if len(a) > 1 and a[1].upper() == b"COUNT":
        return b":%d\r\n" % len(COMMANDS)
    return b"%0\r\n" if s.proto == 3 and len(a) > 1 and a[1].upper() == b"DOCS" else b"*0\r\n"


def config(s: Session, a: list[bytes]) -> bytes:
    if a[1].upper() != b"GET" or len(a) < 3:
        return b"-ERR CONFIG supports only GET here\r\n"
    pats = [p.lower().decode("latin-1") for p in a[2:]]
    return mapping(s, [(k, bulk(v)) for k, v in CONFIG.items()
                       if any(fnmatch.fnmatchcase(k.decode(), p) for p in pats)])


def client(s: Session, a: list[bytes]) -> bytes:
    if a[1].upper() in (b"SETNAME", b"SETINFO"):   # what redis-py sends on connect
        return OK
    return b":%d\r\n" % s.id if a[1].upper() == b"ID" else b"-ERR unknown subcommand '%b'\r\n" % a[1][:128]


def multi(s: Session, a: list[bytes]) -> bytes:
    if s.queued is not None:
        return b"-ERR MULTI calls can not be nested\r\n"
    s.queued, s.dirty = [], False
    return OK


def exec_(s: Session, a: list[bytes]) -> bytes:
    queued, dirty, s.queued = s.queued, s.dirty, None
    if queued is None:
        return b"-ERR EXEC without MULTI\r\n"
    if dirty:
        return b"-EXECABORT Transaction discarded because of previous errors.\r\n"
    return b"*%d\r\n" % len(queued) + b"".join(execute(s, cmd) for cmd in queued)


def discard(s: Session, a: list[bytes]) -> bytes:
    if s.queued is None:
        return b"-ERR DISCARD without MULTI\r\n"
    s.queued = None
    return OK


def quit_(s: Session, a: list[bytes]) -> bytes:
    raise Quit


# name -> (function, arity): arity n means exactly n words, -n at least n (the name included)
COMMANDS: dict[bytes, tuple[Callable[[Session, list[bytes]], bytes], int]] = {
    b"PING": (ping, -1), b"ECHO": (lambda s, a: bulk(a[1]), 2),
    b"GET": (get, 2), b"SET": (set_, -3), b"DEL": (delete, -2), b"EXISTS": (exists, -2),
    b"INCR": (lambda s, a: incr_by(s, a[1], b"1"), 2), b"DECR": (lambda s, a: incr_by(s, a[1], b"-1"), 2),
    b"INCRBY": (lambda s, a: incr_by(s, a[1], a[2]), 3), b"DECRBY": (lambda s, a: incr_by(s, a[1], a[2], -1), 3),
    b"EXPIRE": (expire, 3), b"TTL": (ttl, 2),
    b"MGET": (lambda s, a: array(s, [s.db.get(k) for k in a[1:]]), -2), b"MSET": (mset, -3),
    b"DBSIZE": (lambda s, a: b":%d\r\n" % len(s.db.data), 1), b"FLUSHDB": (flushdb, -1),
    b"SELECT": (lambda s, a: OK if a[1] == b"0" else b"-ERR DB index is out of range\r\n", 2),
    b"HELLO": (hello, -1), b"COMMAND": (command, -1),
    b"CONFIG": (config, -2), b"CLIENT": (client, -2), b"QUIT": (quit_, -1),
    b"MULTI": (multi, 1), b"EXEC": (exec_, 1), b"DISCARD": (discard, 1),
}
TRANSACTION = {multi, exec_, discard, quit_}


def execute(s: Session, a: Any) -> bytes:
    """One parsed command -> its reply."""
    if type(a) is not list or not all(type(x) is bytes for x in a):
        raise BadRequest("expected an array of bulk strings")
    entry = COMMANDS.get(a[0]) or COMMANDS.get(a[0].upper())
    queued = s.queued
    if entry is None or (len(a) != entry[1] if entry[1] > 0 else len(a) < -entry[1]):
        if queued is not None:   # EXEC will refuse the transaction
            s.dirty = True
        return err_unknown(a) if entry is None else err_args(a[0])
    if queued is not None and entry[0] not in TRANSACTION:
        queued.append(a)
        return QUEUED
    return entry[0](s, a)


def process(s: Session, data: bytes, write: Callable[[bytes], Any]) -> bool:
    """Execute every complete command in ``data`` and write each reply; False: close the connection."""
    try:
        if s.line or (data[0] != 42 and not s.reader.has_data()):   # 42: b"*"
            data = inline(s, data, write)
            if not data:
                return True
        reader = s.reader
        reader.feed(data)
        cmd = reader.gets()
        while cmd is not False:
            if cmd:                      # Redis ignores *0 and *-1
                write(execute(s, cmd))
            cmd = reader.gets()
    except Quit:
        write(OK)
        return False
    except (BadRequest, hiredis.ProtocolError) as exc:
        write(b"-ERR Protocol error: %b\r\n" % str(exc).replace("\r\n", " ").encode())
        return False
    return True


def inline(s: Session, data: bytes, write: Callable[[bytes], Any]) -> bytes:
    """Inline commands at the front of ``data``; returns what follows them (RESP), kept whole."""
    data, s.line = s.line + data, b""
    while data and (data[0] != 42):
        end = data.find(b"\n")
        if end < 0:
            if len(data) > MAX_INLINE:
                raise BadRequest("too big inline request")
            s.line = data
            return b""
        words, data = data[:end].split(), data[end + 1:]
        if words:
            write(execute(s, words))
    return data


# -- the server -------------------------------------------------------------------------------

class RedisServer(gnetpy.EventHandler):
    def __init__(self) -> None:
        self.keyspaces: dict[int, Keyspace] = {}   # event loop index -> its data

    def on_boot(self, engine: gnetpy.Engine) -> None:
        logging.getLogger("redis").info("redis server on %s", engine.addrs)

    def on_open(self, c: gnetpy.Conn) -> None:
        loop = c.event_loop
        db = self.keyspaces.get(loop.index)
        if db is None:   # this loop's first connection: its keyspace, and its expiry timer
            db = self.keyspaces[loop.index] = Keyspace()
            start_expiry(db, loop.call_later)
        c.context = Session(db)

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        if not process(c.context, c.next(), c.write):
            return gnetpy.Action.CLOSE
        return None


def start_expiry(db: Keyspace, call_later: Callable[[float, Callable[[], Any]], Any]) -> None:
    """The active expire cycle every ACTIVE_EXPIRE_PERIOD seconds, on the loop that owns ``db``."""
    def cycle() -> None:
        db.expire_cycle()
        call_later(ACTIVE_EXPIRE_PERIOD, cycle)
    call_later(ACTIVE_EXPIRE_PERIOD, cycle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gnetpy Redis-compatible server")
    parser.add_argument("--addr", default="tcp://127.0.0.1:6380")
    parser.add_argument("--loops", type=int, default=1, help="event loops (each with its own keyspace)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--processes", dest="processes", action="store_const", const=True)
    mode.add_argument("--threads", dest="processes", action="store_const", const=False)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    gnetpy.run(RedisServer(), args.addr, num_event_loop=args.loops, processes=args.processes, reuse_addr=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
