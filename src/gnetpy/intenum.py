"""Named int constants that cost what an int costs: the base of ``Action`` and ``ConnState``.

Why not ``enum.IntEnum``: on Python 3.11 every attribute read on an enum
class (``Action.NONE``) goes through ``EnumType.__getattr__``, several times
the cost of a plain class attribute (docs/architecture.md §2 has the
figures) -- paid on every message by a handler that ends with
``return Action.NONE``.  A subclass
declares its members in ``_values``; this keeps the enum surface that
matters (singletons, ``Cls(1) is Cls.X``, ``.name``, ``.value``, iteration,
``Cls["X"]``, pickling) with a metaclass that has no ``__getattr__``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterator, TypeVar

T = TypeVar("T", bound="IntConstant")


class _IntConstantType(type):
    """Iteration, ``len`` and ``Cls["NAME"]`` on the class -- and no ``__getattr__``."""

    def __iter__(cls) -> Iterator[Any]:
        return iter(cls._by_value.values())  # type: ignore[attr-defined]

    def __len__(cls) -> int:
        return len(cls._by_value)  # type: ignore[attr-defined]

    def __getitem__(cls, name: str) -> Any:
        try:
            return cls._by_value[cls._values[name]]  # type: ignore[attr-defined]
        except KeyError:
            raise KeyError(f"{name!r} is not a {cls.__name__}; accepted: {', '.join(cls._values)}") from None  # type: ignore[attr-defined]


class IntConstant(int, metaclass=_IntConstantType):
    __slots__ = ()
    _values: ClassVar[dict[str, int]] = {}
    _by_value: ClassVar[dict[int, Any]] = {}
    _names: ClassVar[dict[int, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._by_value = {}
        cls._names = {value: name for name, value in cls._values.items()}
        for name, value in cls._values.items():
            member = int.__new__(cls, value)
            cls._by_value[value] = member
            setattr(cls, name, member)

    def __new__(cls: type[T], value: int = 0) -> T:
        try:
            return cls._by_value[value]  # type: ignore[no-any-return]
        except (KeyError, TypeError):
            accepted = ", ".join(f"{name} ({v})" for name, v in cls._values.items())
            raise ValueError(f"{value!r} is not a valid {cls.__name__}; accepted: {accepted}") from None

    @property
    def name(self) -> str:
        return self._names[self]

    @property
    def value(self) -> int:
        return int(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self.name}: {int(self)}>"

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return (type(self), (int(self),))
