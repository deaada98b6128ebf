"""Engine: boot the listeners and loops, run them, stop them gracefully.

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

import signal
import threading
import time
from typing import Any, Iterable, Sequence

from .acceptor import Acceptor
from .eventloop import EventLoop
from .handler import Action, EventHandler
from .lb import new_balancer
from .listener import AddrInfo, Address, Listener, parse_address
from .options import Options

# Used when stop() is given no timeout: long enough to flush any reasonable
# backlog to a live peer, short enough that a dead one cannot hold a
# deploy hostage (Kubernetes, for one, sends SIGKILL 30 s after SIGTERM).
DEFAULT_STOP_TIMEOUT = 10.0
# Beyond the flush deadline, how long to wait for a loop thread to exit
# before reporting it stuck (a callback that blocks).
_JOIN_GRACE = 5.0


class Engine:
    """A running server; get one from ``gnetpy.start`` (or implicitly from ``run``/``rotate``)."""

    def __init__(self, handler: EventHandler, addrs: Sequence[str], opts: Options) -> None:
        if not isinstance(handler, EventHandler):
            raise TypeError(f"handler: expected a gnetpy.EventHandler subclass instance, got {type(handler).__name__}")
        if not addrs:
            raise ValueError("addrs: give at least one address, e.g. 'tcp://127.0.0.1:9000'")
        self._handler = handler
        self._opts = opts
        self._logger = opts.log
        self._addresses = [parse_address(a) for a in addrs]  # every address checked before any bind
        self._listeners: list[Listener] = []
        self._primary: list[Listener] = []  # one per address, in the order given
        self._addrs: list[AddrInfo] = []  # kept: still reported after the listeners close
        self._loops: list[EventLoop] = []
        self._main_reactor: EventLoop | None = None
        self._lock = threading.RLock()  # reentrant: a signal handler may run while it is held
        self._stop_requested = False
        self._stopper: threading.Thread | None = None
        self._stopped = threading.Event()
        self._started = False

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
    def event_loops(self) -> list[EventLoop]:
        return list(self._loops)

    def count_connections(self) -> int:
        return sum(loop.count_connections() for loop in self._loops)

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully: flush (at most ``timeout`` s, default 10), close everything, return when done.

        Safe from any thread and idempotent.  Called from one of the
        engine's own loops (a callback), it only starts the stop.
        """
        self._request_stop(timeout)
        if not self._is_engine_thread():
            self.wait()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the engine has stopped; False if ``timeout`` expired first."""
        if not self._stopped.wait(timeout):
            return False
        stopper = self._stopper
        if stopper is not None and stopper is not threading.current_thread():
            stopper.join()
        return True

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
            self._bind_all()
            self._build_loops()
            action = self._handler.on_boot(self)
        except BaseException:
            self._release()
            raise
        if action == Action.SHUTDOWN:
            self._stop_requested = True
            self._release()
            return
        for loop in self._loops:
            loop.start()
        if self._main_reactor is not None:
            self._main_reactor.start()
        self._started = True

    def _bind_all(self) -> None:
        count = self._opts.event_loop_count()
        for address in self._addresses:
            first = Listener(address, self._opts)
            self._listeners.append(first)
            self._primary.append(first)
            self._addrs.append(first.addr)
            if self._per_loop_listeners(address, count):
                # Every loop binds the port the first one got (port 0 included).
                port = int(first.addr[1])
                same_port = Address(address.text, address.network, address.family, host=address.host,
                                    port=port, v6only=address.v6only)
                for _ in range(count - 1):
                    self._listeners.append(Listener(same_port, self._opts))

    def _per_loop_listeners(self, address: Address, count: int) -> bool:
        # Linux has no SO_REUSEPORT for unix sockets: one socket, shared by the loops.
        return self._opts.reuse_port and count > 1 and address.network != "unix"

    def _build_loops(self) -> None:
        count = self._opts.event_loop_count()
        self._loops = [EventLoop(self, i, self._opts, self._handler) for i in range(count)]
        if count > 1 and not self._opts.reuse_port:
            self._main_reactor = EventLoop(self, -1, self._opts, self._handler)
            balancer = new_balancer(self._opts.lb, self._loops)
            for listener in self._listeners:
                self._main_reactor.add_acceptor(Acceptor(self._main_reactor, listener, balancer.next))
            return
        per_address = iter(self._listeners)
        for listener in per_address:
            if self._per_loop_listeners(listener.address, count):
                group = [listener] + [next(per_address) for _ in range(count - 1)]
                for loop, own in zip(self._loops, group):
                    loop.add_acceptor(Acceptor(loop, own, _constant(loop)))
            else:
                for loop in self._loops:
                    loop.add_acceptor(Acceptor(loop, listener, _constant(loop), shared=count > 1))

    # -- stop ------------------------------------------------------------------

    def _request_stop(self, timeout: float | None = None) -> None:
        with self._lock:
            if self._stop_requested:
                return
            self._stop_requested = True
            self._stopper = threading.Thread(target=self._shutdown, args=(timeout,), name="gnetpy-stop")
            self._stopper.start()

    def _is_engine_thread(self) -> bool:
        current = threading.current_thread()
        return current is self._stopper or any(
            loop._thread is current for loop in [*self._loops, self._main_reactor] if loop is not None)

    def _shutdown(self, timeout: float | None) -> None:
        deadline = time.monotonic() + (DEFAULT_STOP_TIMEOUT if timeout is None else max(0.0, timeout))
        loops = [self._main_reactor, *self._loops] if self._main_reactor else list(self._loops)
        for loop in loops:  # the main reactor first: no new connections while the loops drain
            loop.shutdown(deadline)
        for loop in loops:
            if not loop.join(max(0.0, deadline - time.monotonic()) + _JOIN_GRACE):
                self._logger.error("gnetpy: event loop %d did not stop (a callback is blocking it)", loop.index)
        self._close_listeners()
        try:
            self._handler.on_shutdown(self)
        except Exception:
            self._logger.exception("gnetpy: on_shutdown raised")
        self._stopped.set()

    def _release(self) -> None:
        """Undo a boot that failed or was cancelled by on_boot."""
        for loop in [*self._loops, self._main_reactor]:
            if loop is not None:
                loop._finish()
        self._close_listeners()
        self._stopped.set()

    def _close_listeners(self) -> None:
        for listener in self._listeners:
            listener.close()


class _StopOnSignals:
    """In the main thread, SIGINT/SIGTERM start a graceful stop of the engine.

    The handlers are installed *before* the engine boots, so a signal that
    arrives while it boots (or just after, before anything else runs) is not
    lost to the default action; it stops the engine as soon as there is one.
    The previous handlers come back on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def attach(self, engine: Engine) -> None:
        self._engine = engine
        if self._received is not None:
            self._on_signal(self._received, None)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._received = signum
        if self._engine is not None:
            self._engine._logger.info("gnetpy: %s received; stopping", signal.Signals(signum).name)
            self._engine._request_stop()


def serve_forever(handler: EventHandler, addrs: str | Iterable[str], options: Options | None = None,
                  **kwargs: Any) -> None:
    """``start`` and block until the engine stops; SIGINT/SIGTERM stop it when in the main thread."""
    with _StopOnSignals() as signals:
        engine = start(handler, addrs, options=options, **kwargs)
        signals.attach(engine)
        while not engine.wait(0.5):  # short waits keep the signal handlers prompt
            pass


def _constant(loop: EventLoop) -> Any:
    return lambda remote: loop


def _addr_list(addrs: str | Iterable[str]) -> list[str]:
    return [addrs] if isinstance(addrs, str) else list(addrs)


def start(handler: EventHandler, addrs: str | Iterable[str], *, options: Options | None = None,
          **kwargs: Any) -> Engine:
    """Start serving and return the running :class:`Engine` at once (a context manager)."""
    engine = Engine(handler, _addr_list(addrs), Options.build(options, **kwargs))
    engine._boot()
    return engine


def run(handler: EventHandler, addr: str, *, options: Options | None = None, **kwargs: Any) -> None:
    """Serve ``addr`` until the engine stops (``Action.SHUTDOWN``, ``stop()``, SIGINT/SIGTERM)."""
    if not isinstance(addr, str):
        raise TypeError(f"addr: expected one address string, got {type(addr).__name__} (use rotate() for several)")
    serve_forever(handler, addr, options, **kwargs)


def rotate(handler: EventHandler, addrs: Iterable[str], *, options: Options | None = None, **kwargs: Any) -> None:
    """Serve several addresses (tcp and unix mixed) with one engine until it stops."""
    serve_forever(handler, _addr_list(addrs), options, **kwargs)
