"""state.py: the connection states and the rules for moving between them, without sockets.

The integration tests (tests/integration/test_actions.py, test_faults.py) drive
the same rules through real connections; these pin the rules themselves.
"""

from __future__ import annotations

import pickle

import pytest

from gnetpy.state import (
    CLOSED,
    FLUSHING,
    OPEN,
    TRANSITIONS,
    ConnState,
    TransitionError,
    check_transition,
    close_target,
)


def test_states_are_ints_with_names() -> None:
    assert [(s.name, int(s)) for s in ConnState] == [("OPEN", 0), ("FLUSHING", 1), ("CLOSED", 2)]
    assert ConnState(2) is CLOSED and ConnState["FLUSHING"] is FLUSHING
    assert repr(OPEN) == "<ConnState.OPEN: 0>"
    assert pickle.loads(pickle.dumps(FLUSHING)) is FLUSHING


def test_every_state_is_in_the_table_and_closed_is_final() -> None:
    assert set(TRANSITIONS) == set(ConnState)
    assert TRANSITIONS[CLOSED] == frozenset()
    for state in ConnState:  # every state can reach CLOSED
        assert state is CLOSED or CLOSED in TRANSITIONS[state]


@pytest.mark.parametrize("old, new", [(OPEN, FLUSHING), (OPEN, CLOSED), (FLUSHING, CLOSED)])
def test_the_diagrams_moves_are_allowed(old: ConnState, new: ConnState) -> None:
    check_transition(old, new)


@pytest.mark.parametrize("old, new", [(CLOSED, OPEN), (CLOSED, FLUSHING), (FLUSHING, OPEN), (OPEN, OPEN),
                                      (CLOSED, CLOSED)])
def test_other_moves_are_bugs(old: ConnState, new: ConnState) -> None:
    with pytest.raises(TransitionError, match=f"{old.name} -> {new.name}"):
        check_transition(old, new)


@pytest.mark.parametrize("state, graceful, queued, target", [
    (OPEN, True, True, FLUSHING),     # a local close with output queued: flush first
    (OPEN, True, False, CLOSED),      # nothing queued: close now
    (OPEN, False, True, CLOSED),      # an error: close now, whatever is queued
    (OPEN, False, False, CLOSED),
    (FLUSHING, True, True, None),     # already closing: the flush finishes it
    (FLUSHING, False, True, CLOSED),  # an error or a forced stop cuts the flush short
    (CLOSED, True, False, None),      # closing twice does nothing
    (CLOSED, False, False, None),
])
def test_close_target(state: ConnState, graceful: bool, queued: bool, target: ConnState | None) -> None:
    assert close_target(state, graceful, queued) is target
    if target is not None:
        check_transition(state, target)
