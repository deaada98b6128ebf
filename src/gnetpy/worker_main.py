"""What runs in a worker process (workers.py has the parent's side): serve until told to stop, then exit.

A new worker closes its copies of the parent's descriptors (inherit.py),
takes its own signal dispositions, builds an ordinary ``EventLoop`` with the
worker's shared counters, binds what it binds itself (``reuse_port`` TCP
listeners, UDP sockets), watches its channel to the parent, and runs the
loop on its main thread: ``READY`` once ``on_worker_start`` has run (or
``FAILED`` with the exception), ``STOP`` from the parent ends it.  It never
returns into the parent's code: the process ends with ``os._exit``.

Its figures (tally.py) are copied into its shared slot every ``PUBLISH_EVERY``
seconds and once more when its loop has stopped, for the parent's ``stats()``;
a replacement starts from what the worker before it on its index published
last, so per-worker counters never go back.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import time
import traceback
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

from . import channel
from .udp import DatagramListener

if TYPE_CHECKING:
    from .counters import SharedCounters
    from .eventloop import EventLoop
    from .workers import WorkerProcess

# A worker whose parent died flushes for this long, then exits.
PARENT_GONE_FLUSH = 0.5
# A worker's exit status when it could not start serving.
EXIT_START_FAILED = 3
# How often a worker copies its figures into shared memory for the parent's stats(): what the
# parent shows is at most this old.  Not at every read and write: that would put a store into the
# shared mapping on the hot path (docs/architecture.md §10).  Costs an idle worker a wake-up.
PUBLISH_EVERY = 0.5


def worker_main(handle: WorkerProcess, parent_end: socket.socket, worker_end: socket.socket) -> NoReturn:
    """A freshly forked worker: serve until told to stop, then exit.  Never returns into the parent's code."""
    code = EXIT_START_FAILED
    try:
        parent_end.close()
        handle._spec.forget_parent(handle._spec.shared_listeners)
        code = _serve_in_worker(handle, worker_end)
    except BaseException as exc:
        _report(worker_end, channel.FAILED, exc)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _serve_in_worker(handle: WorkerProcess, worker_end: socket.socket) -> int:
    spec = handle._spec
    index = handle.index
    loop = spec.build_loop(index, partial(_ask_parent_to_stop, worker_end))
    # Counted in shared memory; max_inbound_total sums every worker's.
    loop.share_counts(handle._counters, [worker._counters for worker in spec.workers])
    loop.tally.load(handle._counters.published())  # go on from the worker before this one on the index
    loop.call_later(PUBLISH_EVERY, partial(_publish, loop, handle._counters))
    # Ctrl-C at a terminal reaches every process of the group: the parent
    # coordinates the stop.  SIGTERM to a worker alone stops that worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: loop.shutdown(time.monotonic() + spec.opts.close_timeout))
    listeners = [spec.build_listener(address) for address in spec.own_addresses if address.network != "udp"]
    for listener in [*listeners, *spec.shared_listeners]:
        loop.add_listener(listener, lambda remote: loop, admit=spec.admit)
    for address in spec.own_addresses:
        if address.network == "udp":
            loop.add_datagram(DatagramListener(address, spec.opts))
    worker_end.setblocking(False)
    loop.watch(worker_end.fileno(), partial(_on_parent_message, loop, worker_end, spec.logger))
    started: list[bool] = []

    def ready(error: BaseException | None) -> None:
        if error is None:
            started.append(True)
            channel.send(worker_end, channel.READY, [listener.addr for listener in listeners] or None)
        else:
            _report(worker_end, channel.FAILED, error)

    try:
        loop.run(ready)
    finally:
        handle._counters.publish(loop.tally.values())  # the last figures: exact once the engine has stopped
        for listener in listeners:
            listener.close()
    return 0 if started else EXIT_START_FAILED


def _publish(loop: EventLoop, counters: SharedCounters) -> None:
    """On the worker's loop, every ``PUBLISH_EVERY`` seconds: its figures, for the parent."""
    counters.publish(loop.tally.values())
    loop.call_later(PUBLISH_EVERY, partial(_publish, loop, counters))


def _on_parent_message(loop: EventLoop, worker_end: socket.socket, logger: Any, events: int) -> None:
    while True:
        try:
            message = channel.receive(worker_end)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            logger.error("gnetpy: worker %d: channel failed: %s", loop.index, exc)
            message = None
        if message is None:  # the parent is gone: do not serve on as an orphan
            logger.warning("gnetpy: worker %d: the parent process is gone; stopping", loop.index)
            loop.unwatch(worker_end.fileno())
            loop.shutdown(time.monotonic() + PARENT_GONE_FLUSH)
            return
        kind, payload, fds = message
        if kind == channel.SOCKETS:
            for fd, (remote, role_index) in zip(fds, payload):
                loop.serve_handed_over(socket.socket(fileno=fd), remote, role_index)
        elif kind == channel.STOP:
            loop.shutdown(time.monotonic() + payload)
        else:
            for fd in fds:
                os.close(fd)


def _ask_parent_to_stop(worker_end: socket.socket, error: BaseException | None = None) -> None:
    try:
        channel.send(worker_end, channel.SHUTDOWN, None if error is None else channel.portable_error(error))
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
            raise


def _report(worker_end: socket.socket, kind: bytes, error: BaseException) -> None:
    text = "".join(traceback.format_exception(error)).rstrip()
    try:
        worker_end.setblocking(True)
        channel.send(worker_end, kind, (channel.portable_error(error), text))
    except OSError:
        pass  # the parent is gone: nothing to tell
