"""The entry points: ``start`` returns a running engine, ``run`` and ``rotate`` serve until it stops."""

from __future__ import annotations

from typing import Any, Iterable

from .engine import Engine
from .handler import EventHandler
from .options import Options
from .signals import StopOnSignals


def start(handler: EventHandler, addrs: str | Iterable[str], *, options: Options | None = None,
          **kwargs: Any) -> Engine:
    """Start serving and return the running :class:`Engine` at once (a context manager)."""
    addresses = _addr_list(addrs)
    if not addresses:
        raise ValueError("addrs: give at least one address, e.g. 'tcp://127.0.0.1:9000'")
    engine = Engine(handler, addresses, Options.build(options, **kwargs))
    engine._boot()
    return engine


def run(handler: EventHandler, addr: str, *, options: Options | None = None, **kwargs: Any) -> None:
    """Serve ``addr`` until the engine stops (``Action.SHUTDOWN``, ``stop()``, SIGINT/SIGTERM)."""
    if not isinstance(addr, str):
        raise TypeError(f"addr: expected one address string, got {type(addr).__name__} (use rotate() for several)")
    serve_forever(handler, addr, options, **kwargs)


def rotate(handler: EventHandler, addrs: Iterable[str], *, options: Options | None = None, **kwargs: Any) -> None:
    """Serve several addresses (tcp, udp and unix mixed) with one engine until it stops."""
    serve_forever(handler, _addr_list(addrs), options, **kwargs)


def serve_forever(handler: EventHandler, addrs: str | Iterable[str], options: Options | None = None,
                  **kwargs: Any) -> None:
    """``start`` and block until the engine stops; SIGINT/SIGTERM stop it when in the main thread.

    Raises, once the engine has stopped, what a callback raised that stopped it
    (``SystemExit``, ``KeyboardInterrupt``), or -- when a second signal cut
    the graceful stop short and what was unsent was dropped --
    ``KeyboardInterrupt`` (SIGINT) or ``SystemExit(128 + signal)`` (SIGTERM),
    so that the program does not exit 0.
    """
    with StopOnSignals() as signals:
        engine = start(handler, addrs, options=options, **kwargs)
        signals.attach(engine)
        while not engine.wait(0.5):  # short waits keep the signal handlers prompt
            pass
    if engine.error is not None:
        raise engine.error
    signals.raise_if_forced()


def _addr_list(addrs: str | Iterable[str]) -> list[str]:
    if isinstance(addrs, str):
        return [addrs]
    if isinstance(addrs, (bytes, bytearray)):
        raise TypeError(f"addrs: {addrs!r} is bytes; addresses are str, e.g. 'tcp://127.0.0.1:9000'")
    try:
        return list(addrs)
    except TypeError:
        raise TypeError(f"addrs: expected an address string or an iterable of them, "
                        f"got {type(addrs).__name__}") from None
