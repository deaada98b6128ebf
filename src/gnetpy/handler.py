"""The user-facing callback interface: :class:`EventHandler` and :class:`Action`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Union

if TYPE_CHECKING:
    from .conn import Conn
    from .engine import Engine


class _ActionType(type):
    """Iteration and ``Action["CLOSE"]`` on the class -- and no ``__getattr__`` (see Action)."""

    def __iter__(cls) -> Iterator[Action]:
        return iter(cls._by_value.values())  # type: ignore[attr-defined]

    def __len__(cls) -> int:
        return len(cls._by_value)  # type: ignore[attr-defined]

    def __getitem__(cls, name: str) -> Action:
        try:
            return cls._by_value[cls._values[name]]  # type: ignore[attr-defined, no-any-return]
        except KeyError:
            raise KeyError(f"{name!r} is not an Action; accepted: {', '.join(cls._values)}") from None  # type: ignore[attr-defined]


class Action(int, metaclass=_ActionType):
    """What the engine does after a callback returns: ``NONE``, ``CLOSE`` or ``SHUTDOWN``.

    An ``int`` whose ``NONE`` is 0, so the event loop tests the result of a
    callback with a bare ``if action:`` -- true for ``CLOSE`` and
    ``SHUTDOWN``, false for ``NONE`` and for ``None``.

    Why not ``enum.IntEnum``: on Python 3.11, every attribute read on an enum
    class (``Action.NONE``) goes through ``EnumType.__getattr__`` and costs
    about 150 ns instead of 35 ns -- paid on every message by a handler that
    ends with ``return Action.NONE``.  This class keeps the enum surface that
    matters (singletons, ``Action(1) is Action.CLOSE``, ``.name``, ``.value``,
    iteration, ``Action["CLOSE"]``) without that cost.
    """

    __slots__ = ()
    NONE: ClassVar[Action]
    CLOSE: ClassVar[Action]
    SHUTDOWN: ClassVar[Action]
    _values: ClassVar[dict[str, int]] = {"NONE": 0, "CLOSE": 1, "SHUTDOWN": 2}
    _by_value: ClassVar[dict[int, Action]] = {}

    def __new__(cls, value: int = 0) -> Action:
        try:
            return cls._by_value[value]
        except (KeyError, TypeError):
            accepted = ", ".join(f"{name} ({v})" for name, v in cls._values.items())
            raise ValueError(f"{value!r} is not a valid Action; accepted: {accepted}") from None

    @property
    def name(self) -> str:
        return next(name for name, v in self._values.items() if v == self)

    @property
    def value(self) -> int:
        return int(self)

    def __repr__(self) -> str:
        return f"<Action.{self.name}: {int(self)}>"

    def __str__(self) -> str:
        return f"Action.{self.name}"

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return (Action, (int(self),))


for _name, _value in Action._values.items():
    Action._by_value[_value] = int.__new__(Action, _value)
    setattr(Action, _name, Action._by_value[_value])
del _name, _value


TickResult = Union[float, "tuple[float, Action]"]


class EventHandler:
    """Subclass and override the callbacks you need; all are optional.

    Returning ``None`` from a callback means ``Action.NONE``.  Callbacks run on
    the event loop that owns the connection (``on_boot`` runs in the thread
    that starts the engine, ``on_shutdown`` in the thread that stops it); they
    must not block.
    """

    def on_boot(self, engine: Engine) -> Action | None:
        """The engine is bound and about to serve; ``SHUTDOWN`` cancels it."""
        return Action.NONE

    def on_shutdown(self, engine: Engine) -> None:
        """The engine stopped: every connection has been closed."""

    def on_open(self, c: Conn) -> Action | None:
        """A new connection; it may write its greeting here."""
        return Action.NONE

    def on_close(self, c: Conn, err: BaseException | None) -> Action | None:
        """Runs exactly once per opened connection.

        ``err`` is ``None`` for a local close (``Action.CLOSE``, ``c.close()``,
        engine stop) and the cause otherwise: ``EOFError`` when the peer closed,
        an ``OSError`` for a reset or broken pipe, or the exception a callback
        raised.
        """
        return Action.NONE

    def on_traffic(self, c: Conn) -> Action | None:
        """Inbound data is buffered, or ``c.wake()`` was called."""
        return Action.NONE

    def on_tick(self) -> TickResult:
        """With ``ticker=True``: runs on event loop 0; returns the next delay in seconds."""
        return 1.0
