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
    HANDSHAKING,
    LINGERING,
    OPEN,
    TRANSITIONS,
    ConnState,
    TransitionError,
    after_flush,
    check_transition,
    close_target,
)


def test_states_are_ints_with_names() -> None:
    assert [(s.name, int(s)) for s in ConnState] == [("OPEN", 0), ("FLUSHING", 1), ("LINGERING", 2), ("CLOSED", 3),
                                                     ("HANDSHAKING", 4)]
    assert ConnState(3) is CLOSED and ConnState["FLUSHING"] is FLUSHING
    assert repr(OPEN) == "<ConnState.OPEN: 0>"
    assert pickle.loads(pickle.dumps(FLUSHING)) is FLUSHING


def test_every_state_is_in_the_table_and_closed_is_final() -> None:
    assert set(TRANSITIONS) == set(ConnState)
    assert TRANSITIONS[CLOSED] == frozenset()
    for state in ConnState:  # every state can reach CLOSED
        assert state is CLOSED or CLOSED in TRANSITIONS[state]


@pytest.mark.parametrize("old, new", [(OPEN, FLUSHING), (OPEN, LINGERING), (OPEN, CLOSED), (FLUSHING, LINGERING),
                                      (FLUSHING, CLOSED), (LINGERING, CLOSED), (HANDSHAKING, OPEN),
                                      (HANDSHAKING, CLOSED)])
def test_the_diagrams_moves_are_allowed(old: ConnState, new: ConnState) -> None:
    check_transition(old, new)


@pytest.mark.parametrize("old, new", [(CLOSED, OPEN), (CLOSED, FLUSHING), (FLUSHING, OPEN), (OPEN, OPEN),
                                      (CLOSED, CLOSED), (LINGERING, FLUSHING), (LINGERING, OPEN),
                                      (OPEN, HANDSHAKING), (HANDSHAKING, FLUSHING), (HANDSHAKING, LINGERING),
                                      (CLOSED, HANDSHAKING)])
def test_other_moves_are_bugs(old: ConnState, new: ConnState) -> None:
    with pytest.raises(TransitionError, match=f"{old.name} -> {new.name}"):
        check_transition(old, new)


@pytest.mark.parametrize("state, graceful, queued, lingers, target", [
    (OPEN, True, True, True, FLUSHING),      # a local close with output queued: flush first
    (OPEN, True, True, False, FLUSHING),
    (OPEN, True, False, True, LINGERING),    # nothing queued, TCP: half-close and wait for the peer
    (OPEN, True, False, False, CLOSED),      # nothing queued, the peer's EOF or a unix socket: close now
    (OPEN, False, True, True, CLOSED),       # an error: close now, whatever is queued
    (OPEN, False, False, False, CLOSED),
    (FLUSHING, True, True, True, None),      # already closing: the closing protocol finishes it
    (FLUSHING, False, True, True, CLOSED),   # an error or a forced stop cuts it short
    (LINGERING, True, False, True, None),
    (LINGERING, False, False, True, CLOSED),
    (HANDSHAKING, True, True, True, CLOSED),  # TLS not yet open: nothing the handler wrote to deliver
    (HANDSHAKING, False, False, False, CLOSED),
    (CLOSED, True, False, True, None),       # closing twice does nothing
    (CLOSED, False, False, False, None),
])
def test_close_target(state: ConnState, graceful: bool, queued: bool, lingers: bool,
                      target: ConnState | None) -> None:
    assert close_target(state, graceful, queued, lingers) is target
    if target is not None:
        check_transition(state, target)


def test_after_a_flush_a_lingering_close_lingers() -> None:
    assert after_flush(True) is LINGERING and after_flush(False) is CLOSED
