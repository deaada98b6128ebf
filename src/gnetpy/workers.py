"""Worker processes: one event loop per process, supervised by the parent (process mode).

On a CPython with the GIL, threads give concurrency, not parallelism: a
gnetpy server with four loops in four threads uses one core.  In process
mode each loop runs in a worker process of its own -- an ordinary
``EventLoop`` on the worker's main thread -- and the process that called
``start``/``run`` (the parent) keeps the listeners, accepts, supervises and
stops.

The parent's side of a worker is a ``WorkerProcess``: an ``engine.LoopHandle``
like an ``EventLoop`` in thread mode, so the engine starts, stops and counts
workers as it does loops, and the acceptor hands sockets to one with
``hand_over``.  Everything a ``WorkerProcess`` does after start-up runs on
the parent's main-reactor thread (its channel is one of that loop's
watched descriptors, ``EventLoop.watch``), except ``shutdown``/``join``/``release``, which the
engine's stop thread calls once the main reactor has stopped.

* **Fork, never exec.**  A worker is a fork of the parent: the first ones
  are made before ``on_boot`` (with ``reuse_port`` nothing listens until
  they do), replacements whenever they are needed; each has the handler as
  the parent had it at its fork, and runs no
  ``__main__`` again (no spawn, no pickling of handlers).  The first workers
  are forked before any gnetpy thread exists; replacements are forked by the
  main-reactor thread, then the only gnetpy thread.  Threads the *user*
  started before ``run()`` do not exist in workers.
* **Sockets cross over SCM_RIGHTS** on the worker's channel (channel.py),
  batched: ``hand_over`` queues, and one ``sendmsg`` per worker carries
  what the accepts of one loop iteration picked for it.
* **Counts are shared memory** (counters.py): least-connections reads every
  worker's count with no message per accept; ``stats()`` reads there what
  each worker publishes of its figures.
* **Supervision.**  A worker's end of file on its channel means it exited:
  it is reaped, logged with its status, taken out of the balancer at once
  (its queued sockets go to other workers), and started again on the same
  index (and CPU).  Two kinds of death are told apart.  A worker that
  served and then died is always replaced; if it had served for less than
  ``RESTART_WINDOW`` the replacement waits a back-off that doubles with each
  such death in a row (a crash loop must not become a fork loop).  A worker
  that dies before it serves (``on_worker_start`` raised, it could not
  bind) failed to *start*: when every worker has failed to start
  ``GIVE_UP_AFTER`` times in a row, the engine stops with that error.
* **No worker serving.**  While every worker is being replaced, the
  parent's acceptors are held (``EventLoop.hold_accepting``): connections
  wait in the kernel's backlog and are accepted once a worker serves again.
  A socket accepted just before the last worker's death was noticed waits
  in the parent (at most ``MAX_PENDING`` per worker; beyond that it is
  closed, logged) and goes to the first worker that serves.
* **The parent's death** closes every channel: a worker seeing end of file
  flushes for at most half a second (worker_main.py) and exits.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Sequence

from . import channel, inherit
from .counters import SharedCounters, count
from .stats import WorkerStats, worker_stats
from .worker_main import EXIT_START_FAILED, worker_main

if TYPE_CHECKING:
    from .address import Address
    from .eventloop import EventLoop
    from .handler import EventHandler
    from .options import Options

# A worker must be serving this soon after its fork (its on_worker_start included).
START_TIMEOUT = 60.0
# A serving worker that dies sooner than this after it started is replaced after a back-off.
RESTART_WINDOW = 5.0
BACKOFF_MIN = 0.1
BACKOFF_MAX = 10.0
# When every worker has failed this many times in a row at start-up, stop the engine.
GIVE_UP_AFTER = 5
# How long the parent waits for a dead worker's exit status before it kills it.
REAP_TIMEOUT = 1.0
# Sockets queued in the parent for one worker (its channel is full, or it is being replaced):
# beyond this, new ones go to other workers, or are closed when no other serves.
MAX_PENDING = 4 * channel.MAX_FDS
# At most one "closed for want of a worker" warning per this many seconds.
WARN_EVERY = 1.0

STARTING, SERVING, STOPPING, EXITED = "starting", "serving", "stopping", "exited"


@dataclass
class WorkerSpec:
    """What every worker is made of, set up by the engine before the first fork."""

    handler: EventHandler
    opts: Options
    own_addresses: Sequence[Address]  # what a worker binds itself: tcp with reuse_port, and udp
    shared_listeners: Sequence[Any]  # the parent's listeners a lone worker accepts on itself
    forget_parent: Callable[[Sequence[Any]], None]  # in a new worker: close the parent's descriptors but these
    build_loop: Callable[[int, Callable[..., None]], EventLoop]
    build_listener: Callable[[Address], Any]
    logger: logging.Logger | logging.LoggerAdapter[Any]
    admit: Callable[[], bool] | None  # max_connections, over every worker (the counts are shared)
    roles: list[Any]  # the engine's listener roles (listener.Role): a socket crosses over with an index
    workers: list[WorkerProcess] = field(default_factory=list)
    # Called on the main reactor whenever a worker starts or stops serving (the engine holds
    # its acceptors while none serves).
    serving_changed: Callable[[], None] = lambda: None

    def any_serving(self) -> bool:
        return any(w.state == SERVING and not w._stopping for w in self.workers)


class WorkerProcess:
    """The parent's handle on worker ``index`` (see the module docstring)."""

    def __init__(self, index: int, spec: WorkerSpec, counters: SharedCounters, supervisor: EventLoop,
                 stop_engine: Callable[..., None]) -> None:
        self.index = index
        self._spec = spec
        self._counters = counters
        self._supervisor = supervisor  # the parent's main-reactor loop
        self._stop_engine = stop_engine
        self._logger = spec.logger
        self.pid = 0
        self.state = EXITED
        self.addrs: list[Any] | None = None  # what its own listeners got (reuse_port), from READY
        self._channel: socket.socket | None = None
        self._pending: list[tuple[socket.socket, tuple[Any, int]]] = []  # (socket, (remote, role index))
        self._reap_lock = threading.Lock()
        self._exit_status: int | None = None
        self._started_at = 0.0
        self._forks = 0  # 1 for the first worker on this index, more for its replacements
        self._start_failures = 0  # deaths in a row before serving: GIVE_UP_AFTER for every worker stops the engine
        self._quick_deaths = 0  # deaths in a row soon after starting, served or not: the back-off grows with them
        self._stop_deadline: float | None = None  # of the STOP sent (a second, earlier one is sent too)
        self._last_warning = 0.0
        self._stopping = False
        self._last_error: BaseException | None = None
        inherit.register(self)

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.index} pid={self.pid} {self.state}>"

    # -- engine.LoopHandle ----------------------------------------------------------

    @property
    def available(self) -> bool:
        """Serving, and with room in its queue: the balancer may pick it."""
        return self.state == SERVING and not self._stopping and len(self._pending) < MAX_PENDING

    def count_connections(self) -> int:
        return count(self._counters)

    def count_tls_failures(self) -> int:
        return self._counters.tls_failed

    def count_proxy_refused(self) -> int:
        return self._counters.proxy_refused

    def stats(self) -> WorkerStats:
        """The worker's figures: its counts now, its tally as it last published it (stats.py says how fresh)."""
        c = self._counters
        return worker_stats(self.index, count(c), c.published(), c.tls_failed, c.proxy_refused,
                            worker_restarts=max(0, self._forks - 1))

    def start(self) -> None:
        """Fork the worker; ``wait_ready`` waits for it to serve."""
        self._fork()

    def wait_ready(self, timeout: float) -> None:
        """During start-up (no gnetpy thread yet): block until the worker serves, or raise why it cannot."""
        assert self._channel is not None
        self._channel.settimeout(timeout)
        try:
            message = channel.receive(self._channel)
        except TimeoutError:
            raise TimeoutError(f"worker {self.index} (pid {self.pid}) did not start within {timeout:g}s "
                               f"(on_worker_start still running?)") from None
        self._channel.setblocking(False)
        if message is None:
            raise RuntimeError(f"worker {self.index} (pid {self.pid}) exited before serving: "
                               f"{self._describe_exit(self._reap(REAP_TIMEOUT))}")
        self._on_message(message)
        if self.state != SERVING:
            raise self._last_error or RuntimeError(f"worker {self.index} did not start")
        self._supervisor.watch(self._channel.fileno(), self._on_channel_event)

    def hand_over(self, sock: socket.socket, remote: Any, role: Any = None) -> None:
        """On the main reactor: queue an accepted socket for this worker (sent at the end of the iteration).

        A worker that does not serve now (being replaced) keeps it until it
        does, up to ``MAX_PENDING``; beyond that the socket is closed.
        """
        if self._stopping:
            sock.close()  # the engine is stopping: nothing will serve it
            return
        if len(self._pending) >= MAX_PENDING:
            sock.close()
            now = time.monotonic()
            if now - self._last_warning > WARN_EVERY:
                self._last_warning = now
                self._logger.warning("gnetpy: worker %d has %d connections waiting for it (the most it holds) and "
                                     "no other worker has room: closing new ones", self.index, len(self._pending))
            return
        self._counters.handed_over += 1
        role_index = -1 if role is None else self._spec.roles.index(role)
        self._pending.append((sock, (remote, role_index)))
        if len(self._pending) == 1 and self.state == SERVING:
            self._supervisor.call_later(0, self._send_pending)

    def shutdown(self, deadline: float) -> None:
        """Tell the worker to close its connections, flushing until ``deadline``, and exit.

        Told again with an earlier deadline (a second SIGTERM), it is told
        again: the worker brings its drop forward.
        """
        self._stopping = True
        self._drop_pending()
        if self._stop_deadline is not None and deadline >= self._stop_deadline:
            return
        if self._channel is not None and self.state in (STARTING, SERVING, STOPPING):
            try:
                self._channel.setblocking(True)
                self._channel.settimeout(1.0)
                channel.send(self._channel, channel.STOP, max(0.0, deadline - time.monotonic()))
                self._stop_deadline = deadline
            except OSError:
                pass  # gone already: join() reaps it
            self.state = STOPPING

    def join(self, timeout: float | None) -> bool:
        """Wait for the worker to exit (and reap it, and close its channel); False if it still runs at ``timeout``."""
        if self._reap(timeout) is None:
            return False
        self._close_channel()
        return True

    def kill(self) -> bool:
        """The worker did not stop in time: kill it (logged) and reap it."""
        if self._exit_status is None and self.pid:
            self._logger.error("gnetpy: worker %d (pid %d) did not stop by the stop deadline; killed",
                               self.index, self.pid)
            self._signal(signal.SIGKILL)
            self._reap(None)
        self._close_channel()
        return True

    def release(self) -> None:
        """Leave nothing behind: kill the worker if it still runs, close the channel."""
        self._stopping = True
        self._drop_pending()
        if self.pid and self._exit_status is None:
            self._signal(signal.SIGKILL)
            self._reap(None)
        self._close_channel()

    def abort(self, timeout: float) -> None:
        """Undo a start that failed elsewhere: stop the worker if it runs, kill it if it will not."""
        if self.pid and self._exit_status is None:
            self.shutdown(time.monotonic())
            if not self.join(timeout):
                self.kill()
        self.release()

    def _forget_in_child(self) -> None:
        """In another (new) worker: close its copies of this worker's channel and queued sockets."""
        if self._channel is not None:
            self._channel.close()
        for sock, _ in self._pending:
            sock.close()

    def runs_on(self, thread: threading.Thread) -> bool:
        return False

    def running_callback(self) -> str:
        return f"worker process {self.pid}"

    # -- forking ------------------------------------------------------------------------

    def _fork(self) -> None:
        parent_end, worker_end = channel.pair()
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork() in a process with threads.  The
            # first workers are forked before any gnetpy thread exists; a
            # replacement is forked by the main reactor, the only gnetpy thread
            # then, and the child runs gnetpy's code alone (docs: user threads).
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            worker_main(self, parent_end, worker_end)  # never returns
        worker_end.close()
        self.pid = pid
        self._channel = parent_end
        self._exit_status = None
        self._started_at = time.monotonic()
        self._forks += 1
        self.state = STARTING

    def _respawn(self) -> None:
        if self._stopping:
            return
        try:
            self._fork()
        except OSError as exc:
            self._logger.error("gnetpy: cannot start worker %d again: %s", self.index, exc)
            self._failed_to_start()
            return
        assert self._channel is not None
        self._channel.setblocking(False)
        self._supervisor.watch(self._channel.fileno(), self._on_channel_event)
        self._supervisor.call_later(START_TIMEOUT, partial(self._check_started, self.pid))

    def _check_started(self, pid: int) -> None:
        if self.pid == pid and self.state == STARTING:
            self._logger.error("gnetpy: worker %d (pid %d) did not start within %gs; killing it",
                               self.index, pid, START_TIMEOUT)
            self._signal(signal.SIGKILL)

    # -- the channel, on the main reactor -----------------------------------------------

    def _on_channel_event(self, events: int) -> None:
        while self._channel is not None:
            try:
                message = channel.receive(self._channel)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._logger.error("gnetpy: worker %d's channel failed: %s", self.index, exc)
                message = None
            if message is None:
                self._on_exit()
                return
            self._on_message(message)

    def _on_message(self, message: tuple[bytes, Any, list[int]]) -> None:
        kind, payload, fds = message
        for fd in fds:  # workers send none; never leak one
            os.close(fd)
        if kind == channel.READY:
            self.state = SERVING
            self.addrs = payload
            if self._forks > 1:
                self._logger.info("gnetpy: worker %d (pid %d) serves again", self.index, self.pid)
            self._start_failures = 0
            if self._pending:  # accepted while it was being replaced
                self._send_pending()
            self._spec.serving_changed()
        elif kind == channel.FAILED:
            error, text = payload
            self._last_error = error
            if hasattr(error, "add_note"):
                error.add_note(f"in worker {self.index} (pid {self.pid}):\n{text}")
            if self.state == STARTING and not self._stopping:
                self._logger.error("gnetpy: worker %d (pid %d) failed to start:\n%s", self.index, self.pid, text)
            elif self.state == SERVING:  # it could not go on serving: the traceback of why
                self._logger.error("gnetpy: worker %d (pid %d) failed:\n%s", self.index, self.pid, text)
        elif kind == channel.SHUTDOWN:
            self._stop_engine(payload)

    def _on_exit(self) -> None:
        """The worker's channel reached end of file: it exited (or is exiting)."""
        self._supervisor.unwatch(self._channel.fileno() if self._channel else -1)
        self._close_channel()
        pending = self._pending
        self._pending = []
        self._counters.handed_over -= len(pending)
        previous, self.state = self.state, EXITED
        status = self._reap(REAP_TIMEOUT)
        if status is None:
            self._signal(signal.SIGKILL)
            status = self._reap(None)
        # Its connections died with it; the counts it held must not stay.
        self._counters.opened = self._counters.closed = self._counters.handed_over = self._counters.inbound = 0
        if self._stopping:
            self._drop(pending)
            return
        if previous == SERVING:
            quick = time.monotonic() - self._started_at < RESTART_WINDOW
            self._quick_deaths = self._quick_deaths + 1 if quick else 0
            delay = self._backoff() if quick else 0.0
            self._logger.error("gnetpy: worker %d (pid %d) %s; starting it again%s", self.index, self.pid,
                               self._describe_exit(status), f" in {delay:.1f}s" if delay else "")
            self._spec.serving_changed()
        for sock, (remote, role_index) in pending:  # accepted for it, never delivered: someone else serves them
            self._give_to_another(sock, remote, role_index)
        if previous == SERVING:
            self._supervisor.call_later(delay, self._respawn)
        else:
            self._failed_to_start()

    def _failed_to_start(self) -> None:
        """It died before serving (or could not be forked): back off, or give up when every worker keeps failing."""
        self._start_failures += 1
        self._quick_deaths += 1
        workers = self._spec.workers
        if all(w._start_failures >= GIVE_UP_AFTER for w in workers):
            error = self._last_error or RuntimeError(f"worker {self.index} {self._describe_exit(self._exit_status)}")
            self._logger.critical("gnetpy: every worker failed to start %d times in a row; stopping", GIVE_UP_AFTER)
            self._stop_engine(RuntimeError(f"every worker failed to start {GIVE_UP_AFTER} times in a row; "
                                           f"the last: {error!r}"))
            return
        delay = self._backoff()
        self._logger.warning("gnetpy: worker %d failed to start %d time%s in a row; next try in %.1fs",
                             self.index, self._start_failures, "s" if self._start_failures > 1 else "", delay)
        self._supervisor.call_later(delay, self._respawn)

    def _backoff(self) -> float:
        return min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (self._quick_deaths - 1))

    def _give_to_another(self, sock: socket.socket, remote: Any, role_index: int) -> None:
        """A socket queued for this dead worker: to one that serves, or kept for its replacement."""
        target = next((w for w in self._spec.workers if w.available and w is not self), self)
        target.hand_over(sock, remote, self._spec.roles[role_index] if role_index >= 0 else None)

    # -- sending sockets -----------------------------------------------------------------

    def _send_pending(self) -> None:
        while self._pending and self._channel is not None and self.state == SERVING:
            batch = self._pending[:channel.MAX_FDS]
            try:
                channel.send(self._channel, channel.SOCKETS, [meta for _, meta in batch],
                             [sock.fileno() for sock, _ in batch])
            except (BlockingIOError, InterruptedError):
                # The worker is not reading its channel fast enough: try again shortly.
                self._supervisor.call_later(0.005, self._send_pending)
                return
            except OSError:
                return  # it died: _on_exit gives the queued sockets to other workers
            del self._pending[:len(batch)]
            for sock, _ in batch:
                sock.close()  # the worker has its own descriptor now

    def _drop_pending(self) -> None:
        pending, self._pending = self._pending, []
        self._counters.handed_over -= len(pending)
        self._drop(pending)

    @staticmethod
    def _drop(pending: list[tuple[socket.socket, Any]]) -> None:
        for sock, _ in pending:
            sock.close()

    # -- processes --------------------------------------------------------------------

    def _signal(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def _reap(self, timeout: float | None) -> int | None:
        """The worker's exit status, waiting up to ``timeout`` for it (None: not exited yet)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._reap_lock:
                if self._exit_status is not None or not self.pid:
                    return self._exit_status
                try:
                    pid, status = os.waitpid(self.pid, 0 if timeout is None else os.WNOHANG)
                except ChildProcessError:
                    pid, status = self.pid, 0  # reaped by someone else (a user's SIGCHLD handler)
                if pid:
                    self._exit_status = status
                    return status
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.005)

    @staticmethod
    def _describe_exit(status: int | None) -> str:
        if status is None:
            return "has not exited"
        if os.WIFSIGNALED(status):
            return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
        code = os.WEXITSTATUS(status)
        return "failed to start" if code == EXIT_START_FAILED else f"exited with status {code}"

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def pick_available(pick: Callable[[Any], WorkerProcess], workers: list[WorkerProcess]) -> Callable[[Any], Any]:
    """The balancer's choice, or the next worker that serves when that one does not (restarting, full).

    When none serves, the balancer's choice keeps the socket until it serves
    again (``hand_over``): the supervisor holds the acceptors as soon as it
    sees the last one go, so only sockets accepted in between get here.
    """
    def choose(remote: Any) -> Any:
        chosen = pick(remote)
        if chosen.available:
            return chosen
        n = len(workers)
        for step in range(1, n):
            other = workers[(chosen.index + step) % n]
            if other.available:
                return other
        return chosen
    return choose
