"""tls.py without a network: the dial's TLS settings, the facts ``c.tls`` shows, a session's first flight.

The connections themselves -- handshakes, echoes, bad peers, openssl
s_client -- are tests/integration/test_tls_sessions.py's.
"""

from __future__ import annotations

import ssl
from typing import Any, Iterator

import pytest

from gnetpy import EventHandler, Options, tls

trustme = pytest.importorskip("trustme")


def test_client_side_defaults_the_host_name_to_the_host_dialed() -> None:
    ctx = ssl.create_default_context()
    assert tls.client_side(ctx, None, "example.com") == (ctx, "example.com")
    assert tls.client_side(ctx, None, "127.0.0.1") == (ctx, "127.0.0.1")  # checked against the IP SAN
    assert tls.client_side(ctx, "other.example", "127.0.0.1") == (ctx, "other.example")
    assert tls.client_side(None, None, "example.com") is None


def test_client_side_names_each_mistake() -> None:
    ctx = ssl.create_default_context()
    with pytest.raises(ValueError, match="give server_hostname"):  # a unix address has no host
        tls.client_side(ctx, None, "")
    with pytest.raises(ValueError, match="server_hostname without ssl_context"):
        tls.client_side(None, "example.com", "example.com")
    with pytest.raises(TypeError, match="not an ssl.SSLContext"):
        tls.client_side("TLS please", None, "example.com")
    unchecked = ssl.create_default_context()
    unchecked.check_hostname = False
    unchecked.verify_mode = ssl.CERT_NONE
    assert tls.client_side(unchecked, None, "") == (unchecked, None)  # nothing to check: no name needed


@pytest.fixture
def loop() -> Iterator[Any]:
    """An event loop that never runs: what a TlsTransport is made for."""
    from gnetpy.eventloop import EventLoop

    built = EventLoop(0, Options(), EventHandler(), lambda *args: None)
    yield built
    built.release()


def handshake_in_memory(loop: Any, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[Any, Any]:
    """Both sides of a handshake over memory BIOs: the transports gnetpy makes, without sockets."""
    server = tls.TlsTransport(loop, server_ctx, True)
    client = tls.TlsTransport(loop, client_ctx, False, "localhost")
    for _ in range(10):
        done = 0
        for side, other in ((client, server), (server, client)):
            try:
                side.sslobj.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
            other.incoming.write(side.outgoing.read())
        if done == 2:
            return server, client
    raise AssertionError("the handshake did not finish")


def test_tls_info_is_a_snapshot_of_the_session(loop: Any) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    server_ctx.set_alpn_protocols(["h2"])
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    client_ctx.set_alpn_protocols(["h2"])
    server, client = handshake_in_memory(loop, server_ctx, client_ctx)
    info = tls.TlsInfo(client.sslobj)
    assert info.version() == "TLSv1.3" and info.selected_alpn_protocol() == "h2"
    assert info.cipher() == client.sslobj.cipher()
    assert info.getpeercert()["subjectAltName"] == (("DNS", "localhost"),)
    assert info.getpeercert(binary_form=True) == client.sslobj.getpeercert(True)
    assert info.server_hostname == "localhost" and not info.server_side
    assert tls.TlsInfo(server.sslobj).server_side and tls.TlsInfo(server.sslobj).getpeercert() is None
    assert repr(info).startswith("<TlsInfo TLSv1.3 TLS_")
