"""What a forked worker must not keep: every descriptor gnetpy holds in the parent.

A worker is a fork: it starts with a copy of every descriptor of the parent.
Those gnetpy owns there -- listeners, epoll and eventfd descriptors, other
workers' channels, sockets on their way to a worker, and the connections of
any other engine or client in the same process -- would otherwise stay open
in the worker for as long as it runs: a port or socket file that cannot be
reused after the parent closes it, a peer that never sees the end of file
the parent's close should have sent.  Each such object registers here when
it is made; the new worker calls ``forget_inherited()`` before anything
else, which closes the worker's copies without touching the parent's (no
callbacks, no unlinking of socket files, no shutdown() on the wire).

Descriptors the *user* opened before the fork are the user's: see the docs
on per-process resources (``on_worker_start``).
"""

from __future__ import annotations

import weakref
from typing import Callable, Iterable, Protocol


class Inherited(Protocol):
    def _forget_in_child(self) -> None: ...


_owned: weakref.WeakSet[Inherited] = weakref.WeakSet()


def register(obj: Inherited) -> None:
    _owned.add(obj)


class Guard:
    """Registers ``forget`` for an object that cannot be weakly referenced itself (a compiled class):
    the object keeps its ``Guard``, so the registration lives exactly as long as the object."""

    __slots__ = ("_forget", "owner", "__weakref__")

    def __init__(self, owner: object, forget: Callable[[], None]) -> None:
        self.owner = owner
        self._forget = forget
        register(self)

    def _forget_in_child(self) -> None:
        self._forget()


def forget_inherited(keep: Iterable[object] = ()) -> None:
    """In a new worker: close the copies of the parent's gnetpy descriptors, but those of ``keep``."""
    kept = {id(obj) for obj in keep}
    for obj in list(_owned):
        if id(obj) not in kept and id(getattr(obj, "owner", None)) not in kept:
            obj._forget_in_child()
    _owned.clear()
