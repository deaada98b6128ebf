"""handler.py: ``Action`` keeps the enum surface users rely on, and ``EventHandler``'s defaults.

``Action`` is an ``int`` subclass, deliberately not an ``IntEnum`` (attribute
reads on an enum class are slow; see its docstring), so everything an enum
would give for free -- singletons, lookup by value and by name, iteration,
pickling -- is checked here.
"""

from __future__ import annotations

import copy
import enum
import pickle

import pytest

import gnetpy
from gnetpy import Action, EventHandler


def test_members_are_ints_with_the_documented_values() -> None:
    assert (Action.NONE, Action.CLOSE, Action.SHUTDOWN) == (0, 1, 2)
    assert all(isinstance(a, int) for a in Action)


def test_action_is_not_an_enum_on_purpose() -> None:
    assert not isinstance(Action.CLOSE, enum.Enum)
    assert type(Action.CLOSE) is Action


def test_lookup_by_value_returns_the_singleton() -> None:
    assert Action(0) is Action.NONE
    assert Action(1) is Action.CLOSE
    assert Action(2) is Action.SHUTDOWN
    assert Action(Action.CLOSE) is Action.CLOSE


def test_no_argument_means_none() -> None:
    assert Action() is Action.NONE


@pytest.mark.parametrize("bad", [3, -1, "CLOSE", None, 1.5, []])
def test_bad_value_raises_value_error_listing_accepted(bad: object) -> None:
    with pytest.raises(ValueError) as info:
        Action(bad)  # type: ignore[arg-type]
    message = str(info.value)
    assert repr(bad) in message
    for name in ("NONE (0)", "CLOSE (1)", "SHUTDOWN (2)"):
        assert name in message


def test_name_and_value() -> None:
    assert [(a.name, a.value) for a in Action] == [("NONE", 0), ("CLOSE", 1), ("SHUTDOWN", 2)]
    assert type(Action.SHUTDOWN.value) is int


def test_repr_and_str() -> None:
    assert repr(Action.CLOSE) == "<Action.CLOSE: 1>"
    assert str(Action.SHUTDOWN) == "Action.SHUTDOWN"
    assert f"{Action.NONE}" == "Action.NONE"


def test_iteration_order_and_length() -> None:
    assert list(Action) == [Action.NONE, Action.CLOSE, Action.SHUTDOWN]
    assert [type(a) for a in Action] == [Action] * 3
    assert len(Action) == 3
    assert Action.CLOSE in Action


def test_lookup_by_name() -> None:
    assert Action["NONE"] is Action.NONE
    assert Action["CLOSE"] is Action.CLOSE
    assert Action["SHUTDOWN"] is Action.SHUTDOWN


@pytest.mark.parametrize("bad", ["close", "Close", "STOP", ""])
def test_bad_name_raises_key_error_listing_accepted(bad: str) -> None:
    with pytest.raises(KeyError) as info:
        Action[bad]
    message = str(info.value)
    assert repr(bad) in message
    assert "NONE, CLOSE, SHUTDOWN" in message


@pytest.mark.parametrize("member", list(Action))
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trips_to_the_same_object(member: Action, protocol: int) -> None:
    assert pickle.loads(pickle.dumps(member, protocol)) is member


@pytest.mark.parametrize("member", list(Action))
def test_copy_keeps_the_singleton(member: Action) -> None:
    assert copy.copy(member) is member
    assert copy.deepcopy(member) is member


def test_truthiness_none_is_false_others_true() -> None:
    # The event loop relies on this: ``if action:`` is the whole dispatch test.
    assert not Action.NONE
    assert Action.CLOSE
    assert Action.SHUTDOWN


def test_compares_and_hashes_like_its_int() -> None:
    assert Action.CLOSE == 1 and hash(Action.CLOSE) == hash(1)
    assert {1: "x"}[Action.CLOSE] == "x"
    assert Action.NONE != Action.CLOSE


def test_every_lookup_yields_the_attribute_member() -> None:
    assert Action(int("2")) is Action["SHUTDOWN"] is Action.SHUTDOWN


def test_exported_from_the_package() -> None:
    assert gnetpy.Action is Action
    assert gnetpy.EventHandler is EventHandler


class _Plain(EventHandler):
    pass


def test_event_handler_defaults() -> None:
    h = _Plain()
    c, engine = object(), object()
    assert h.on_boot(engine) is Action.NONE  # type: ignore[arg-type]
    assert h.on_open(c) is Action.NONE  # type: ignore[arg-type]
    assert h.on_traffic(c) is Action.NONE  # type: ignore[arg-type]
    assert h.on_close(c, None) is Action.NONE  # type: ignore[arg-type]
    assert h.on_close(c, EOFError()) is Action.NONE  # type: ignore[arg-type]
    assert h.on_shutdown(engine) is None  # type: ignore[func-returns-value, arg-type]
    assert h.on_tick() == 1.0
