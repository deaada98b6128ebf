"""Engine: bind the listeners, build and start the loops, stop them gracefully.

The entry points that create an engine (``start``, ``run``, ``rotate``) are
in serve.py, and the SIGINT/SIGTERM handling of ``run`` in signals.py.

Topology (see docs/architecture.md):

* several loops, no ``reuse_port``: a *main reactor* thread owns the
  listeners and hands every accepted socket to the loop the load balancer
  picks;
* ``reuse_port=True``, or a single loop: every loop owns its listeners and
  accepts for itself -- no hand-over, no extra thread.

Stopping is graceful and happens on a short-lived ``gnetpy-stop`` thread so
that ``stop()`` can be requested from anywhere -- a signal handler, a
callback on one of the loops, another thread -- without a loop ever waiting
for itself: listeners stop accepting, each loop flushes and closes its
connections (bounded by the stop timeout), the threads are joined, the
listeners closed (unix socket files removed), then ``on_shutdown`` runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import resource
import socket
import threading
import time
from functools import partial
from typing import Any, Callable, Iterator, Protocol, Sequence

from . import _compiled, activation
from .address import Address, AddrInfo, parse_address
from .counters import SharedCounterTable
from .errors import UnsupportedProtocolError
from .eventloop import EventLoop
from .handler import Action, EventHandler
from .inherit import forget_inherited
from .lb import new_balancer
from .listener import Listener, PortHolder, Role
from .metrics import render
from .metricsserver import MetricsServer
from .options import Options
from .stats import Stats, WorkerStats, summed
from .udp import DatagramListener, reserve_port
from .workers import START_TIMEOUT, WorkerProcess, WorkerSpec, pick_available

# Used when stop() is given no timeout: long enough to flush any reasonable
# backlog to a live peer, short enough that a dead one cannot hold a
# deploy hostage (Kubernetes, for one, sends SIGKILL 30 s after SIGTERM).
DEFAULT_STOP_TIMEOUT = 10.0
# Beyond the flush deadline, how long to wait for a loop to exit before
# reporting it stuck (a callback that blocks): after the deadline a loop only
# drops what is left and runs the on_close callbacks.
_JOIN_GRACE = 2.0
# How often a stop waiting for a loop looks at its deadline again.
_JOIN_SLICE = 0.05


class LoopHandle(Protocol):
    """What the engine drives: an ``EventLoop`` on a thread here, or (process mode) a worker process."""

    index: int

    def start(self) -> None: ...
    def shutdown(self, deadline: float) -> None: ...
    def join(self, timeout: float | None) -> bool: ...
    def release(self) -> None: ...
    def wait_ready(self, timeout: float) -> None: ...
    def abort(self, timeout: float) -> None: ...
    def kill(self) -> bool: ...
    def runs_on(self, thread: threading.Thread) -> bool: ...
    def running_callback(self) -> str: ...
    def count_connections(self) -> int: ...
    def count_tls_failures(self) -> int: ...
    def count_proxy_refused(self) -> int: ...
    def stats(self) -> WorkerStats: ...
    def hand_over(self, sock: socket.socket, remote: Any, ssl_context: Any = None) -> None: ...


class Engine:
    """A running server; get one from ``gnetpy.start`` (or implicitly from ``run``/``rotate``)."""

    def __init__(self, handler: EventHandler, addrs: Sequence[str], opts: Options) -> None:
        if not isinstance(handler, EventHandler):
            raise TypeError(f"handler: expected a gnetpy.EventHandler subclass instance, got {type(handler).__name__}")
        self._handler = handler
        self._opts = opts
        self._logger = opts.log
        self._addresses = _addresses(addrs, opts)  # every address checked before any bind
        self._tls = _tls_by_address(self._addresses, opts.ssl_context)  # one SSLContext or None each
        self._proxy = _proxy_by_address(self._addresses, opts.proxy_protocol)  # PROXY header mode or None each
        self._listeners: list[Listener] = []
        self._primary: list[Listener] = []  # one per address, in the order given
        self._addrs: list[AddrInfo] = []  # kept: still reported after the listeners close
        self._processes = opts.use_processes()
        self._holders: list[PortHolder] = []  # process mode, reuse_port: the ports the workers bind
        self._own_addresses: list[Address] = []  # what each worker binds itself then
        self._datagram_listeners: list[list[DatagramListener]] = []  # thread mode: one per loop, per udp address
        self._loops: list[LoopHandle] = []
        # Accepts and hands over in main-reactor mode; in process mode, also supervises the workers.
        self._main_reactor: EventLoop | None = None
        self._metrics: MetricsServer | None = None  # metrics_addr: the /metrics page, on one of the loops
        self._accepting_held = False  # process mode: no worker serves, the main reactor accepts nothing
        self._lock = threading.RLock()  # reentrant: a signal handler may run while it is held
        self._stop_requested = False
        self._deadline = 0.0  # of the stop under way
        self._stopper: threading.Thread | None = None
        self._stopped = threading.Event()
        self._booted = threading.Event()  # every loop started (or the boot failed): a stop may join them
        self._started = False
        self._error: BaseException | None = None

    # -- public API ----------------------------------------------------------

    @property
    def addrs(self) -> list[AddrInfo]:
        """One entry per address given: ``(host, port)`` for tcp, the path for unix."""
        return list(self._addrs)

    @property
    def is_running(self) -> bool:
        """True from a successful start until a stop is requested."""
        return self._started and not self._stop_requested

    @property
    def error(self) -> BaseException | None:
        """The ``SystemExit``/``KeyboardInterrupt``-like exception a callback raised, which stopped the engine.

        ``run()``/``rotate()`` re-raise it in their caller's thread once the
        engine has stopped; with ``start()`` it is here to look at.
        """
        return self._error

    @property
    def event_loops(self) -> list[EventLoop]:
        """The event loops of this process (thread mode); in process mode they live in the workers."""
        return [loop for loop in self._loops if isinstance(loop, EventLoop)]

    def count_connections(self) -> int:
        return sum(loop.count_connections() for loop in self._loops)

    def stats(self) -> Stats:
        """A snapshot of the engine's counters, summed over its loops or worker processes, and per
        worker (``.workers``): connections, closes by cause, bytes, ... (``gnetpy.Stats``).

        Safe from any thread, and cheap (integers read, nothing locked); in process mode a
        worker's byte and close figures are at most half a second old (stats.py).
        """
        return summed([loop.stats() for loop in self._loops])

    @property
    def metrics_addr(self) -> AddrInfo | None:
        """Where the ``/metrics`` page is served, with the real port (``metrics_addr=...:0``); None without it."""
        return self._metrics.addr if self._metrics is not None else None

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully: flush (at most ``timeout`` s, default 10), close everything, return when done.

        Safe from any thread and idempotent.  Called from one of the
        engine's own loops (a callback), it only starts the stop.
        """
        self.request_stop(timeout)
        if not self._is_engine_thread():
            self.wait()

    def request_stop(self, timeout: float | None = None, *, reason: str | None = None) -> None:
        """Start a graceful stop and return at once (safe in signal handlers and callbacks).

        During a stop, a shorter ``timeout`` brings its deadline forward
        (``request_stop(0)``: drop what is unsent now).  ``reason``, if given,
        is logged (at INFO).
        """
        with self._lock:
            if self._stop_requested:
                self._hasten_stop(timeout, reason)
                return
            if reason:
                self._logger.info("gnetpy: %s; stopping", reason)
            self._deadline = time.monotonic() + (DEFAULT_STOP_TIMEOUT if timeout is None else max(0.0, timeout))
            self._stop_requested = True
            self._stopper = threading.Thread(target=self._shutdown, name="gnetpy-stop")
            self._stopper.start()

    def _hasten_stop(self, timeout: float | None, reason: str | None) -> None:
        if timeout is None or not self._started:
            return
        deadline = time.monotonic() + max(0.0, timeout)
        if deadline < self._deadline:
            if reason:
                self._logger.warning("gnetpy: %s; stopping within %gs, dropping what is unsent then", reason, timeout)
            self._deadline = deadline
            for loop in self._all_loops():
                loop.shutdown(deadline)

    def _loop_wants_stop(self, error: BaseException | None = None) -> None:
        """A loop's ``Action.SHUTDOWN`` (no error), or a ``SystemExit`` & co. from a callback."""
        if error is not None and self._error is None:
            self._error = error
        self.request_stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the engine has stopped; False if ``timeout`` expired first."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else ("stopped" if self._stopped.is_set() else "stopping")
        return f"<Engine {state} addrs={self.addrs!r} loops={len(self._loops)}>"

    # -- boot ------------------------------------------------------------------

    def _boot(self) -> None:
        try:
            self._boot_loops()
        finally:
            self._booted.set()

    def _boot_loops(self) -> None:
        """Bind, build, ``on_boot``, start -- in thread mode; process mode starts the workers before on_boot.

        ``on_boot`` means "ready": in thread mode the listeners are bound and
        listening (connections wait in the backlog until the loops run); in
        process mode with ``reuse_port`` nothing listens until the workers do,
        so the workers are started -- forked -- first, and ``on_boot`` runs once
        they serve.  Either way it runs once, in this process.
        """
        try:
            with self._naming_descriptor_shortage():
                self._bind_all()
                self._build_loops()
                self._serve_metrics()
                if self._processes:
                    self._start_loops()  # forks the workers: a channel each, and their own loops
            action = self._handler.on_boot(self)
            if action is not None and action.__class__ is not Action:
                raise TypeError(f"on_boot returned {action!r}; expected None or a gnetpy.Action")
            if action == Action.SHUTDOWN:
                self._stop_requested = True
                self._release()
                return
            if not self._processes:
                with self._naming_descriptor_shortage():
                    self._start_loops()
        except BaseException:
            self._release()
            raise
        self._started = True
        count = len(self._loops)
        where = (f"{count} worker process{'es' if count > 1 else ''}" if self._processes
                 else f"{count} thread{'s' if count > 1 else ''}")
        what = f"serving {', '.join(map(str, self._addrs))}" if self._addrs else "client"
        self._logger.info("gnetpy (%s): %s with %d event loop%s in %s", _backend_name(), what, count,
                          "s" if count > 1 else "", where)

    @contextlib.contextmanager
    def _naming_descriptor_shortage(self) -> Iterator[None]:
        """EMFILE/ENFILE while building (threads or workers, here or in a worker) says what needed them."""
        try:
            yield
        except OSError as exc:
            raise _out_of_descriptors(exc, self._opts.event_loop_count(), len(self._addresses),
                                      self._processes) from None

    def _start_loops(self) -> None:
        """Start every loop (thread mode) or fork every worker, then wait until all serve."""
        for loop in self._loops:
            loop.start()
        for loop in self._loops:
            loop.wait_ready(START_TIMEOUT)
        if self._main_reactor is not None:  # last: forks must not happen while a gnetpy thread runs
            self._main_reactor.start()
            self._main_reactor.wait_ready(START_TIMEOUT)

    def _bind_all(self) -> None:
        count = self._opts.event_loop_count()
        for address in self._addresses:
            if address.network == "udp":
                self._bind_datagrams(address, count)
                continue
            if self._processes and self._opts.reuse_port and address.network == "tcp":
                # Each worker binds its own listener; the parent only fixes the
                # port (port 0 included) with a socket that never listens.
                holder = PortHolder(address, self._opts)
                self._holders.append(holder)
                self._addrs.append(holder.addr)
                self._own_addresses.append(dataclasses.replace(address, port=int(holder.addr[1])))
                continue
            first = self._listener(address)
            self._listeners.append(first)
            self._primary.append(first)
            self._addrs.append(first.addr)
            if self._per_loop_listeners(address, count):
                # Every loop binds the port the first one got (port 0 included).
                port = int(first.addr[1])
                same_port = dataclasses.replace(address, port=port)
                for _ in range(count - 1):
                    self._listeners.append(self._listener(same_port))

    def _serve_metrics(self) -> None:
        """``metrics_addr``: bind it, and serve it on the main reactor (the parent's, in process mode) or loop 0."""
        if self._opts.metrics_addr is None:
            return
        self._metrics = MetricsServer(parse_address(self._opts.metrics_addr), lambda: render(self.stats()),
                                      self._logger)
        host = self._main_reactor if self._main_reactor is not None else self.event_loops[0]
        self._metrics.serve_on(host)

    def _listener(self, address: Address) -> Listener:
        listener = Listener(address, self._opts)
        tls, proxy = self._tls.get(address.text), self._proxy.get(address.text)
        listener.role = Role(tls, proxy) if tls is not None or proxy is not None else None
        return listener

    def _bind_datagrams(self, address: Address, count: int) -> None:
        """UDP: every loop owns a socket on the port (SO_REUSEPORT); in process mode each worker binds its own."""
        if self._processes:
            port = reserve_port(address)
            self._own_addresses.append(dataclasses.replace(address, port=port))
            self._addrs.append((address.host, port))
            return
        first = DatagramListener(address, self._opts)
        same_port = dataclasses.replace(address, port=int(first.addr[1]))
        group = [first] + [DatagramListener(same_port, self._opts) for _ in range(count - 1)]
        self._datagram_listeners.append(group)
        self._addrs.append(first.addr)

    def _per_loop_listeners(self, address: Address, count: int) -> bool:
        # Linux has no SO_REUSEPORT for unix sockets: one socket, shared by the loops.
        return self._opts.reuse_port and count > 1 and address.network != "unix" and not self._processes

    def _build_loops(self) -> None:
        count = self._opts.event_loop_count()
        if self._processes:
            self._build_workers(count)
            return
        loops: list[EventLoop] = []
        for i in range(count):
            loops.append(EventLoop(i, self._opts, self._handler, self._loop_wants_stop))
            self._loops = list(loops)  # as each is built: a failure releases the ones before
        counts = [loop.counts for loop in loops]
        for loop in loops:  # max_inbound_total is over the engine: each loop sees every loop's count
            loop.share_counts(loop.counts, counts)
        for udp_group in self._datagram_listeners:
            for loop, datagrams in zip(loops, udp_group):
                loop.add_datagram(datagrams)
        if count > 1 and not self._opts.reuse_port:
            self._main_reactor = EventLoop(-1, self._opts, self._handler, self._loop_wants_stop)
            balancer = new_balancer(self._opts.lb, loops)
            for listener in self._listeners:
                self._main_reactor.add_listener(listener, balancer.next, admit=self._admit)
            return
        per_address = iter(self._listeners)
        for listener in per_address:
            if self._per_loop_listeners(listener.address, count):
                group = [listener] + [next(per_address) for _ in range(count - 1)]
                for loop, own in zip(loops, group):
                    loop.add_listener(own, _itself(loop), admit=self._admit)
            else:
                for loop in loops:
                    loop.add_listener(listener, _itself(loop), exclusive=count > 1, admit=self._admit)

    def _build_workers(self, count: int) -> None:
        """Process mode: the workers' handles, and the main reactor that accepts and supervises."""
        self._main_reactor = EventLoop(-1, self._opts, self._handler, self._loop_wants_stop)
        table = SharedCounterTable(count)
        # A lone worker has nothing to balance: it accepts on the parent's
        # listeners itself, as one loop does in thread mode (no hand-over).
        shared = list(self._listeners) if count == 1 else []
        spec = WorkerSpec(self._handler, self._opts, self._own_addresses, shared, forget_inherited,
                          self._worker_loop, self._listener, self._logger, self._admit, self._roles)
        workers = [WorkerProcess(i, spec, table.slot(i), self._main_reactor, self._loop_wants_stop)
                   for i in range(count)]
        spec.workers.extend(workers)
        self._loops = list(workers)
        if shared:
            return
        pick = pick_available(new_balancer(self._opts.lb, workers).next, workers)
        for listener in self._listeners:  # all of them; with reuse_port only the unix ones are here
            self._main_reactor.add_listener(listener, pick, admit=self._admit)
        spec.serving_changed = partial(self._hold_accepting_while_no_worker_serves, spec)

    def _hold_accepting_while_no_worker_serves(self, spec: WorkerSpec) -> None:
        """On the main reactor, when a worker starts or stops serving (workers.py, "No worker serving")."""
        reactor = self._main_reactor
        if reactor is None or not reactor.accepts:
            return
        held = not spec.any_serving()
        if held == self._accepting_held:
            return
        self._accepting_held = held
        reactor.hold_accepting(held)
        if held:
            self._logger.warning("gnetpy: no worker is serving (every one is being replaced): accepting paused, "
                                 "new connections wait in the backlog")
        else:
            self._logger.info("gnetpy: a worker serves again: accepting")

    def _worker_loop(self, index: int, request_stop: Callable[..., None]) -> EventLoop:
        return EventLoop(index, self._opts, self._handler, request_stop, self._roles)

    @property
    def _roles(self) -> list[Role]:
        """The engine's listener roles (TLS, PROXY header), in a fixed order: a worker gets a socket's by index."""
        texts = [address.text for address in self._addresses]
        roles = (Role(self._tls.get(t), self._proxy.get(t)) for t in texts if t in self._tls or t in self._proxy)
        return list(dict.fromkeys(roles))

    def count_tls_failures(self) -> int:
        """TLS handshakes that failed (logged at DEBUG only: a scanner must not flood the log), all loops."""
        return sum(loop.count_tls_failures() for loop in self._loops)

    def count_proxy_refused(self) -> int:
        """Connections closed unread for their PROXY header: none, a bad one, too slow, or from an untrusted
        peer (logged at DEBUG only), all loops."""
        return sum(loop.count_proxy_refused() for loop in self._loops)

    @property
    def _admit(self) -> Callable[[], bool] | None:
        """With ``max_connections``: may an acceptor take one more?  (In a worker too: the counts are shared.)"""
        limit = self._opts.max_connections
        if not limit:
            return None
        return lambda: self.count_connections() < limit

    # -- stop ------------------------------------------------------------------

    def _is_engine_thread(self) -> bool:
        current = threading.current_thread()
        return current is self._stopper or any(loop.runs_on(current) for loop in self._all_loops())

    def _all_loops(self) -> list[LoopHandle]:
        """The main reactor first (if any): stopping it first means no new connections while the loops drain."""
        return [self._main_reactor, *self._loops] if self._main_reactor else list(self._loops)

    def _shutdown(self) -> None:
        """On the gnetpy-stop thread: stop the loops, close the listeners, then on_shutdown -- always last."""
        try:
            self._stop_loops()
        finally:
            self._stopped.set()  # whatever happened, stop() and wait() return

    def _stop_loops(self) -> None:
        self._booted.wait()  # a callback may ask for a stop while the engine is still starting its loops
        loops = self._all_loops()
        for loop in loops:
            loop.shutdown(self._deadline)
        stuck = [loop for loop in loops if not self._join_by_deadline(loop) and not loop.kill()]
        self._close_listeners()
        if stuck:
            # A callback blocks its loop; a thread cannot be interrupted.  stop()
            # returns (nothing is accepted any more), and on_shutdown waits for
            # the loop so that it still comes after every on_close.
            for loop in stuck:
                self._logger.error("gnetpy: event loop %d did not stop by the stop deadline: %s is still running; "
                                   "on_shutdown will run when it returns", loop.index, loop.running_callback())
            self._stopped.set()
            for loop in stuck:
                loop.join(None)
        try:
            self._handler.on_shutdown(self)
        except BaseException as exc:
            if not isinstance(exc, Exception) and self._error is None:
                self._error = exc
            self._logger.error("gnetpy: on_shutdown raised", exc_info=exc)

    def _join_by_deadline(self, loop: LoopHandle) -> bool:
        """Wait for ``loop`` until the stop deadline and a grace; a deadline brought forward meanwhile
        (a second SIGTERM) shortens the wait."""
        while True:
            left = self._deadline + _JOIN_GRACE - time.monotonic()
            if loop.join(max(0.0, min(left, _JOIN_SLICE))):
                return True
            if left <= _JOIN_SLICE:
                return False

    def _release(self) -> None:
        """Undo a boot that failed or was cancelled by on_boot."""
        for loop in self._all_loops():
            loop.abort(_JOIN_GRACE)
        self._close_listeners()
        self._stopped.set()

    def _close_listeners(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
        for listener in self._listeners:
            listener.close()
        for holder in self._holders:
            holder.close()
        for group in self._datagram_listeners:
            for datagrams in group:
                datagrams.close()


def _tls_by_address(addresses: list[Address], option: Any) -> dict[str, Any]:
    """The ``ssl_context`` option, resolved: {address text: SSLContext} for the TLS ones."""
    if option is None:
        return {}
    if not isinstance(option, dict):
        option = {address.text: option for address in addresses if address.network != "udp"}
    given = {address.text for address in addresses}
    for text, ctx in option.items():
        if text not in given:
            raise ValueError(f"ssl_context: {text!r} is not one of the addresses served ({', '.join(sorted(given))})")
        network = next(a.network for a in addresses if a.text == text)
        if ctx is not None and network == "udp":
            raise UnsupportedProtocolError(f"ssl_context for {text!r}: TLS over UDP (DTLS) is not available")
    return {text: ctx for text, ctx in option.items() if ctx is not None}


def _addresses(texts: Sequence[str], opts: Options) -> list[Address]:
    """Every address parsed, inherited sockets (fd://, systemd://) described (activation.py) -- before any bind."""
    addresses: list[Address] = []
    for text in texts:
        addresses.extend(activation.expand(text) if activation.is_inherited(text) else [parse_address(text)])
    processes, loops = opts.use_processes(), opts.event_loop_count()
    for address in addresses:
        if address.fd < 0:
            continue
        if opts.reuse_port and address.network != "udp":
            raise ValueError(f"reuse_port: {address.text!r} is an inherited socket, and reuse_port binds a listener "
                             f"for each loop (or worker) on the address -- it needs an address to bind "
                             f"(tcp://host:port); leave reuse_port off to serve an inherited socket")
        if address.network == "udp" and (processes or loops > 1):
            raise ValueError(f"{address.text!r} is an inherited udp socket: it serves one event loop in this "
                             f"process (num_event_loop=1, processes=False); with more, each loop binds its own "
                             f"socket on a udp:// address")
    return addresses


def _proxy_by_address(addresses: list[Address], option: Any) -> dict[str, str]:
    """The ``proxy_protocol`` option, resolved: {address text: mode} for the stream addresses that expect
    a PROXY header (options.py has checked the modes)."""
    if option is None:
        return {}
    if not isinstance(option, dict):
        option = {address.text: option for address in addresses if address.network != "udp"}
    given = {address.text for address in addresses}
    for text, mode in option.items():
        if text not in given:
            raise ValueError(f"proxy_protocol: {text!r} is not one of the addresses served "
                             f"({', '.join(sorted(given))})")
        network = next(a.network for a in addresses if a.text == text)
        if mode is not None and network == "udp":
            raise UnsupportedProtocolError(f"proxy_protocol for {text!r}: the PROXY protocol is for stream "
                                           f"listeners (tcp, unix), not udp")
    return {text: mode for text, mode in option.items() if mode is not None}


def _itself(loop: EventLoop) -> Any:
    """The balancer of a loop that accepts for itself: every socket stays on it."""
    return lambda remote: loop


def _out_of_descriptors(exc: OSError, loops: int, addresses: int, processes: bool) -> OSError:
    """An ``OSError`` from binding, building or starting loops, saying what ran out when descriptors did.

    One message for threads and worker processes: only what each loop costs differs.
    """
    if exc.errno not in (errno.EMFILE, errno.ENFILE):
        return exc
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    where = "worker processes" if processes else "threads"
    each = ("each worker needs 2 (epoll, eventfd) and a channel to the parent, and the parent 2 more plus one per "
            "worker" if processes else "each loop needs 2 (epoll, eventfd)")
    return OSError(exc.errno, f"out of file descriptors starting {loops} event loop(s) in {where} on {addresses} "
                              f"address(es): {each}, each listener 1, and the process may have {soft} "
                              f"(RLIMIT_NOFILE); use fewer loops or raise the limit ({exc.strerror})")


def _backend_name() -> str:
    """For the start-up line: which build serves (README "Compiled accelerator")."""
    backend = _compiled.backend(__name__.rpartition(".")[0])
    return f"compiled: {backend}" if backend else "pure Python"
