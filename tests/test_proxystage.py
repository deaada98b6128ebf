"""proxystage.Trust: who may send a PROXY header (no sockets needed)."""

from __future__ import annotations

import pytest

from gnetpy.proxystage import Trust


def test_trust_by_network_unix_and_mapped_ipv4() -> None:
    trust = Trust.parse(["10.0.0.0/8", "::1/128"])
    assert trust.admits(("10.1.2.3", 1)) and not trust.admits(("11.1.2.3", 1))
    assert trust.admits(("::1", 1, 0, 0)) and trust.admits(("::ffff:10.0.0.1", 1, 0, 0))
    assert trust.admits(("fe80::1%eth0", 1, 0, 2)) is False and trust.admits(("not an address", 1)) is False
    assert not trust.admits("/run/app.sock") and Trust.parse(["unix"]).admits("/run/app.sock")


def test_decisions_are_remembered_within_a_bound() -> None:
    trust = Trust.parse(["127.0.0.0/8"])
    for i in range(Trust.SEEN_MAX * 2 + 10):
        host = f"127.0.{i // 256 % 256}.{i % 256}" if i % 2 else f"192.0.2.{i % 256}"
        assert trust.admits((host, 1)) == (i % 2 == 1)
        assert len(trust._seen) <= Trust.SEEN_MAX
    assert trust.admits(("127.0.0.1", 1)) and not trust.admits(("192.0.2.1", 1))  # the same answers again


@pytest.mark.parametrize("value", ["127.0.0.0/8", ["300.0.0.0/8"], [None], 5])
def test_bad_trusted_networks_are_named(value: object) -> None:
    with pytest.raises(ValueError, match="proxy_trusted"):
        Trust.parse(value)
