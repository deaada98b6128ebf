"""Tests of gnetpy.proxyproto against HAProxy's doc/proxy-protocol.txt (no sockets needed).

The v2 headers here are laid out by hand from the spec's structs (signature, ver_cmd,
fam, length, address block, TLVs) rather than by the module's encoder, so a mistake
shared by the parser and the encoder cannot hide.  CRC32C is checked against a
bit-by-bit reference written from RFC 4960's definition.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gnetpy.errors import GnetError
from gnetpy.proxyproto import ProxyHeaderError, ProxyInfo, SslTlv, crc32c, encode, encode_v1, encode_v2, parse

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SIG = bytes.fromhex("0D0A0D0A000D0A515549540A")
APP = b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"
F8 = ":".join(["ffff"] * 8)


def v2(ver_cmd: int, fam: int, body: bytes) -> bytes:
    return SIG + bytes([ver_cmd, fam]) + struct.pack("!H", len(body)) + body


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def crc_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
    return crc ^ 0xFFFFFFFF


def with_crc(ver_cmd: int, fam: int, body: bytes) -> bytes:
    """A header ending with a CRC32C TLV holding the checksum the spec describes."""
    zeroed = v2(ver_cmd, fam, body + tlv(0x03, bytes(4)))
    return zeroed[:-4] + struct.pack("!I", crc_bitwise(zeroed))


def outcome(data: Any, mode: str) -> tuple[str, Any]:
    try:
        info = parse(data, mode)
    except ProxyHeaderError as exc:
        return ("error", str(exc))
    return ("none", None) if info is None else ("info", info)


# -- the spec's v1 lines, byte for byte

V1_EXAMPLES = [
    (b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", 56, "TCP4", "255.255.255.255", 65535),
    (f"PROXY TCP6 {F8} {F8} 65535 65535\r\n".encode(), 104, "TCP6", F8, 65535),
    (b"PROXY UNKNOWN\r\n", 15, "UNKNOWN", None, None),
    (f"PROXY UNKNOWN {F8} {F8} 65535 65535\r\n".encode(), 107, "UNKNOWN", None, None),
]


@pytest.mark.parametrize("line, length, family, host, port", V1_EXAMPLES)
def test_v1_spec_lines(line: bytes, length: int, family: str, host: Optional[str], port: Optional[int]) -> None:
    assert len(line) == length
    address = None if host is None else (host, port)
    for mode in ("v1", "any"):
        assert parse(line + APP, mode) == ProxyInfo(1, "PROXY", family, address, address, header_length=length)
    with pytest.raises(ProxyHeaderError, match="signature"):
        parse(line, "v2")


def test_v1_spec_http_example() -> None:
    data = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n" + APP
    info = parse(data, "any")
    assert info == ProxyInfo(1, "PROXY", "TCP4", ("192.168.0.1", 56324), ("192.168.0.11", 443), header_length=47)
    assert data[info.header_length :] == APP
    assert encode(info) == data[:47] == encode_v1("TCP4", ("192.168.0.1", 56324), ("192.168.0.11", 443))
    assert encode_v1("UNKNOWN") == b"PROXY UNKNOWN\r\n"


# -- v2 headers built from the spec's layout

IP4_BLOCK = bytes([192, 168, 0, 1, 192, 168, 0, 11]) + struct.pack("!HH", 56324, 443)
IP6_BLOCK = bytes.fromhex("20010db8" + "00" * 11 + "01" + "20010db8" + "00" * 11 + "02") + b"\xdb\x04\x01\xbb"
UNIX_BLOCK = b"/run/src.sock".ljust(108, b"\0") + b"/run/dst.sock\0junk".ljust(108, b"\0")
SSL_VALUE = (b"\x07" + struct.pack("!I", 0) + tlv(0x21, b"TLSv1.3") + tlv(0x22, "exämple.com".encode())
             + tlv(0x23, b"ECDHE-RSA-AES128-GCM-SHA256") + tlv(0x24, b"RSA-SHA256") + tlv(0x25, b"RSA2048")
             + tlv(0x2F, b"?"))
ALL_TLVS = [(0x01, b"h2"), (0x02, "bücher.example".encode()), (0x04, b"\0\0\0"), (0x05, b"id-1"),
            (0x20, SSL_VALUE), (0x30, b"blue"), (0xE0, b"custom"), (0x21, b"top-level 0x21 is unknown")]
V2_EXAMPLES = [
    (v2(0x21, 0x11, IP4_BLOCK), "PROXY", "TCP4", ("192.168.0.1", 56324), ("192.168.0.11", 443)),
    (v2(0x21, 0x21, IP6_BLOCK), "PROXY", "TCP6", ("2001:db8::1", 56068), ("2001:db8::2", 443)),
    (v2(0x21, 0x31, UNIX_BLOCK), "PROXY", "UNIX", "/run/src.sock", "/run/dst.sock"),
    (v2(0x20, 0x00, b""), "LOCAL", "UNKNOWN", None, None),
    (v2(0x20, 0x11, IP4_BLOCK), "LOCAL", "TCP4", None, None),  # LOCAL: the address block is skipped
    (v2(0x21, 0x00, b""), "PROXY", "UNKNOWN", None, None),
    (v2(0x21, 0x01, b""), "PROXY", "UNKNOWN", None, None),
]


@pytest.mark.parametrize("header, command, family, source, destination", V2_EXAMPLES)
def test_v2_spec_layouts(header: bytes, command: str, family: str, source: Any, destination: Any) -> None:
    for mode in ("v2", "any"):
        info = parse(header + APP, mode)
        assert info == ProxyInfo(2, command, family, source, destination, header_length=len(header))
    with pytest.raises(ProxyHeaderError, match="PROXY "):
        parse(header, "v1")


def test_v2_every_tlv_type() -> None:
    header = v2(0x21, 0x11, IP4_BLOCK + b"".join(tlv(t, v) for t, v in ALL_TLVS))
    info = parse(header + APP, "v2")
    assert info is not None and info.tlvs == tuple(ALL_TLVS) and info.header_length == len(header)
    assert (info.alpn, info.authority, info.unique_id, info.netns) == (b"h2", "bücher.example", b"id-1", "blue")
    subs = ((0x21, b"TLSv1.3"), (0x22, "exämple.com".encode()), (0x23, b"ECDHE-RSA-AES128-GCM-SHA256"),
            (0x24, b"RSA-SHA256"), (0x25, b"RSA2048"), (0x2F, b"?"))
    assert info.ssl == SslTlv(7, 0, "TLSv1.3", "exämple.com", "ECDHE-RSA-AES128-GCM-SHA256", "RSA-SHA256",
                              "RSA2048", subs)
    assert encode(info) == header == encode_v2("PROXY", "TCP4", info.source, info.destination, ALL_TLVS)


def test_v2_crc32c_checked() -> None:
    header = with_crc(0x21, 0x11, IP4_BLOCK + tlv(0x01, b"h2"))
    info = parse(header, "v2")
    assert info is not None and info.tlvs[-1] == (0x03, header[-4:]) and info.alpn == b"h2"
    assert encode_v2("PROXY", "TCP4", info.source, info.destination, [(0x01, b"h2")], crc32c=True) == header
    assert encode(info) == header
    for bad in (header[:-1] + bytes([header[-1] ^ 1]), header[:28] + b"\x00" + header[29:]):
        with pytest.raises(ProxyHeaderError, match="CRC32C mismatch"):
            parse(bad, "v2")


@pytest.mark.parametrize("data, value", [
    (b"123456789", 0xE3069283), (b"", 0), (bytes(32), 0x8A9136AA), (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E), (bytes(range(31, -1, -1)), 0x113FDB5C)])
def test_crc32c_vectors(data: bytes, value: int) -> None:
    assert crc32c(data) == crc_bitwise(data) == value


@PROPERTY
@given(st.binary(max_size=300))
def test_crc32c_matches_bitwise_reference(data: bytes) -> None:
    assert crc32c(data) == crc_bitwise(data)


# -- incremental parsing

COMPLETE = ([line for line, *_ in V1_EXAMPLES] + [h for h, *_ in V2_EXAMPLES]
            + [v2(0x21, 0x21, IP6_BLOCK + b"".join(tlv(t, v) for t, v in ALL_TLVS)), with_crc(0x20, 0, b"")])


@pytest.mark.parametrize("header", COMPLETE)
def test_every_prefix_is_none_until_complete(header: bytes) -> None:
    mode = "v1" if header.startswith(b"P") else "v2"
    whole = parse(header, mode)
    assert whole is not None and whole.header_length == len(header)
    for kind in (bytes, bytearray, memoryview):
        for m in (mode, "any"):
            assert all(parse(kind(header[:i]), m) is None for i in range(len(header)))
            info = parse(kind(header + APP), m)
            assert info == whole and (header + APP)[info.header_length :] == APP


# -- malformed headers, each refused with a message naming the fault

MALFORMED = [
    (b"GET / HTTP/1.1\r\n", "v1", "does not start with 'PROXY '"),
    (b"G", "v1", "does not start with 'PROXY '"),
    (b"G", "any", "neither a v1 nor a v2"),
    (b"\x16\x03\x01", "any", "neither a v1 nor a v2"),
    (b"PROXY\r\n", "v1", "does not start with 'PROXY '"),
    (b"PROXY TCP5 ", "v1", "unknown protocol family 'TCP5'"),
    (b"PROXY tcp4", "v1", "unknown protocol family 'tcp4'"),
    (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "v1", "unknown protocol family ''"),
    (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "v1", "empty destination address"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 1\r\n", "v1", "source port '080' has a leading zero"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 00", "v1", "destination port '00' has a leading zero"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n", "v1", "source port '65536' is out of range"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 123456", "v1", "out of range"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "v1", "source port '-1' is not a decimal number"),
    (b"PROXY TCP4 1.2.3.04 ", "v1", "source address '1.2.3.04' has an octet with a leading zero"),
    (b"PROXY TCP4 256.1.1.1 ", "v1", "octet over 255"),
    (b"PROXY TCP4 1..", "v1", "empty octet"),
    (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "v1", "source address '1.2.3' is not an IPv4 dotted quad"),
    (b"PROXY TCP4 1.2.3.4.5", "v1", "not an IPv4 dotted quad"),
    (b"PROXY TCP4 ::1 ", "v1", "source address '::1' is not an IPv4"),
    (b"PROXY TCP6 1.2.3.4 ", "v1", "source address '1.2.3.4' is not an IPv6"),
    (b"PROXY TCP6 ::1 ::ffff:1.2.3.4 1 2\r\n", "v1", "destination address '::ffff:1.2.3.4' is not an IPv6"),
    (b"PROXY TCP6 fe80::1%eth0 ", "v1", "is not an IPv6"),
    (b"PROXY TCP6 1::2::3 ", "v1", "is not an IPv6"),
    (b"PROXY TCP6 12345:", "v1", "is not an IPv6"),
    (b"PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n", "v1", "source address '1:2:3:4:5:6:7' is not an IPv6"),
    (b"PROXY UNKNOWN\n", "v1", "bare CR or LF"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "v1", "bare CR or LF"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "v1", "bare CR or LF"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "v1", "unexpected data after the destination port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 x", "v1", "unexpected data after the destination port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r", "v1", "missing destination port"),
    (b"PROXY UNKNOWN " + b"x" * 93, "v1", "no CRLF within the first 107 bytes"),
    (b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", "v1", "no CRLF within the first 107 bytes"),
    (b"\r\n\r\n\x01", "v2", "signature mismatch"),
    (b"PROXY TCP4 ", "v2", "signature mismatch"),
    (SIG + b"\x11", "v2", "unsupported version 1"),
    (SIG + b"\x22", "any", "unknown command 0x2"),
    (SIG + b"\x21\x12", "v2", "datagram"),
    (SIG + b"\x21\x22", "v2", "datagram"),
    (SIG + b"\x20\x32", "v2", "datagram"),
    (SIG + b"\x21\x41", "v2", "undefined address family/transport byte 0x41"),
    (SIG + b"\x21\x13", "v2", "undefined address family/transport byte 0x13"),
    (SIG + b"\x21\x10", "v2", "unspecified transport"),
    (SIG + b"\x21\x11\x00\x08", "v2", "length 8 is shorter than the TCP4 address block (12 bytes)"),
    (SIG + b"\x21\x21\x00\x0c", "v2", "length 12 is shorter than the TCP6 address block (36 bytes)"),
    (SIG + b"\x21\x31\x00\xd7", "v2", "length 215 is shorter than the UNIX address block (216 bytes)"),
    (v2(0x21, 0x11, IP4_BLOCK + b"\x01\x00"), "v2", "a TLV header needs 3"),
    (v2(0x21, 0x11, IP4_BLOCK + b"\x01\x00\x05ab"), "v2", "length 5 overruns the header"),
    (v2(0x21, 0x11, IP4_BLOCK + tlv(0x05, bytes(129))), "v2", "UNIQUE_ID TLV is 129 bytes, more than 128"),
    (v2(0x21, 0x11, IP4_BLOCK + tlv(0x03, bytes(3))), "v2", "CRC32C TLV is 3 bytes, not 4"),
    (v2(0x21, 0x11, IP4_BLOCK + tlv(0x03, bytes(4))), "v2", "CRC32C mismatch"),
    (v2(0x21, 0x11, IP4_BLOCK + tlv(0x02, b"\xff")), "v2", "AUTHORITY TLV is not valid UTF-8"),
    (v2(0x21, 0x11, IP4_BLOCK + tlv(0x30, "ü".encode())), "v2", "NETNS TLV is not valid ASCII"),
    (v2(0x21, 0x11, IP4_BLOCK + tlv(0x01, b"a") + tlv(0x01, b"b")), "v2", "duplicate ALPN TLV"),
    (v2(0x21, 0x11, IP4_BLOCK + tlv(0x20, b"\x01\0\0\0")), "v2", "SSL TLV is 4 bytes"),
    (v2(0x21, 0x11, IP4_BLOCK + tlv(0x20, bytes(5) + b"\x21\x00\x09TLS")), "v2", "SSL sub-TLV 0x21"),
    (v2(0x21, 0x11, IP4_BLOCK + tlv(0x20, bytes(5) + tlv(0x23, "é".encode()))), "v2",
     "SSL CIPHER sub-TLV is not valid ASCII"),
]


@pytest.mark.parametrize("data, mode, message", MALFORMED)
def test_malformed_refused(data: bytes, mode: str, message: str) -> None:
    with pytest.raises(ProxyHeaderError) as caught:
        parse(data, mode)  # many of these are decided before a header could be complete
    assert message in str(caught.value)
    assert isinstance(caught.value, GnetError) and isinstance(caught.value, ValueError)
    with pytest.raises(ProxyHeaderError):  # and more bytes do not change the verdict
        parse(data + b"\r\n" + APP, mode)


def test_bad_mode_is_a_plain_value_error() -> None:
    with pytest.raises(ValueError, match="mode") as caught:
        parse(b"PROXY ", "v3")
    assert not isinstance(caught.value, ProxyHeaderError)


def test_bounds() -> None:
    longest = b"PROXY UNKNOWN " + b"x" * 91 + b"\r\n"
    assert parse(longest + b"junk", "v1").header_length == 107  # type: ignore[union-attr]
    assert parse(longest[:106], "v1") is None
    with pytest.raises(ProxyHeaderError, match="107"):
        parse(b"PROXY UNKNOWN " + b"x" * 10**6, "any")
    noop = v2(0x21, 0x11, IP4_BLOCK + tlv(0x04, bytes(65535 - 12 - 3)))
    assert len(noop) == 16 + 65535 and parse(noop + b"\r\n" * 1000, "v2").header_length == len(noop)  # type: ignore
    assert parse(noop[:-1], "v2") is None


# -- encoders


@pytest.mark.parametrize("call, message", [
    (lambda: encode_v1("TCP5", None, None), "family"),
    (lambda: encode_v1("UNKNOWN", ("1.2.3.4", 1), None), "must be None"),
    (lambda: encode_v1("TCP4", ("::1", 1), ("1.2.3.4", 2)), "source host '::1'"),
    (lambda: encode_v1("TCP4", ("1.2.3.4", 1), "1.2.3.4"), "destination must be a (host, port)"),
    (lambda: encode_v1("TCP4", ("1.2.3.4", 65536), ("1.2.3.4", 2)), "source port 65536"),
    (lambda: encode_v1("TCP4", ("1.2.3.4", 1), ("1.2.3.4", True)), "destination port True"),
    (lambda: encode_v1("TCP4", (16909060, 1), ("1.2.3.4", 2)), "source host 16909060"),
    (lambda: encode_v2("QUIT"), "command"),
    (lambda: encode_v2("PROXY", "UDP4"), "family"),
    (lambda: encode_v2("PROXY", "TCP6", ("fe80::1%eth0", 1), ("::1", 2)), "zone"),
    (lambda: encode_v2("LOCAL", "TCP4", ("1.2.3.4", 1), ("1.2.3.4", 2)), "must be None for LOCAL"),
    (lambda: encode_v2("PROXY", "UNIX", "x" * 109, "/b"), "source must be a UNIX path"),
    (lambda: encode_v2("PROXY", "UNIX", "/a", "a\0b"), "destination must be a UNIX path"),
    (lambda: encode_v2(tlvs=[(256, b"")]), "tlvs"),
    (lambda: encode_v2(tlvs=[(0x05, bytes(129))]), "UNIQUE_ID"),
    (lambda: encode_v2(tlvs=[(0x03, bytes(4))], crc32c=True), "duplicate CRC32C"),
    (lambda: encode_v2(tlvs=[(0xE0, bytes(65533))]), "over 65,535"),
    (lambda: encode(ProxyInfo(3, "PROXY", "UNKNOWN")), "version"),
    (lambda: encode(ProxyInfo(1, "LOCAL", "UNKNOWN")), "command 'LOCAL'"),
    (lambda: encode(ProxyInfo(1, "PROXY", "UNKNOWN", tlvs=((1, b"h2"),))), "v1 carries no TLVs"),
    (lambda: encode(ProxyInfo(2, "PROXY", "UNKNOWN", alpn=b"h2")), "alpn b'h2' disagrees with the TLVs"),
])
def test_encoders_validate(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


# -- properties

HOSTS = {"TCP4": st.ip_addresses(v=4), "TCP6": st.ip_addresses(v=6)}
PORTS = st.integers(0, 65535)
UNIX_PATHS = st.text(st.characters(blacklist_characters="\0"), max_size=40).filter(lambda p: len(p.encode()) <= 108)
SSL = st.builds(lambda c, v, subs: bytes([c]) + struct.pack("!I", v) + b"".join(tlv(t, x.encode()) for t, x in subs),
                st.integers(0, 7), st.integers(0, 2**32 - 1),
                st.lists(st.tuples(st.sampled_from([0x21, 0x23, 0x24, 0x25]), st.text("abcXYZ-1.", max_size=20)),
                         max_size=4, unique_by=lambda x: x[0]))
KNOWN = st.one_of(st.tuples(st.just(0x01), st.binary(max_size=20)),
                  st.tuples(st.just(0x02), st.text(max_size=20).map(str.encode)),
                  st.tuples(st.just(0x05), st.binary(max_size=128)), st.tuples(st.just(0x20), SSL),
                  st.tuples(st.just(0x30), st.text("abc-_09", max_size=10).map(str.encode)))
UNKNOWN_TLV = st.tuples(st.integers(0, 255).filter(lambda t: t not in (1, 2, 3, 5, 0x20, 0x30)), st.binary(max_size=30))
TLVS = st.lists(st.one_of(KNOWN, UNKNOWN_TLV), max_size=6).filter(
    lambda ts: all(sum(t == k for t, _ in ts) <= 1 for k in (1, 2, 5, 0x20, 0x30)))


@PROPERTY
@given(st.sampled_from(["TCP4", "TCP6"]), st.data())
def test_v1_round_trip(family: str, data: st.DataObject) -> None:
    src, dst = (data.draw(HOSTS[family]), data.draw(PORTS)), (data.draw(HOSTS[family]), data.draw(PORTS))
    line = encode_v1(family, (str(src[0]), src[1]), (str(dst[0]), dst[1]))
    info = parse(line + APP, "any")
    assert info is not None and info.header_length == len(line) <= 107 and info.family == family
    assert info.source == (str(src[0]), src[1]) and info.destination == (str(dst[0]), dst[1])
    assert encode(info) == line


@PROPERTY
@given(st.sampled_from(["PROXY", "LOCAL"]), st.sampled_from(["TCP4", "TCP6", "UNIX", "UNKNOWN"]), TLVS,
       st.booleans(), st.data())
def test_v2_round_trip(command: str, family: str, tlvs: list, crc: bool, data: st.DataObject) -> None:
    src = dst = None
    if command == "PROXY" and family in HOSTS:
        src, dst = [(str(data.draw(HOSTS[family])), data.draw(PORTS)) for _ in "sd"]
    elif command == "PROXY" and family == "UNIX":
        src, dst = data.draw(UNIX_PATHS), data.draw(UNIX_PATHS)
    header = encode_v2(command, family, src, dst, tlvs, crc32c=crc)
    info = parse(header + APP, "any")
    assert info is not None and info.header_length == len(header)
    assert (info.version, info.command, info.family, info.source, info.destination) == (2, command, family, src, dst)
    assert info.tlvs[: len(tlvs)] == tuple(tlvs) and len(info.tlvs) == len(tlvs) + crc
    found = dict(tlvs)
    assert info.alpn == found.get(1) and info.unique_id == found.get(5)
    assert info.authority == (found[2].decode() if 2 in found else None)
    assert (info.ssl is None) == (0x20 not in found) and encode(info) == header


BLOCK = {0x00: 0, 0x01: 0, 0x11: 12, 0x21: 36, 0x31: 216}
V2_SHAPED = st.builds(lambda vc, fam, body, extra: v2(vc, fam, bytes(BLOCK[fam]) + body) + extra,
                      st.sampled_from([0x20, 0x21]), st.sampled_from(sorted(BLOCK)), st.one_of(
                          TLVS.map(lambda ts: b"".join(tlv(t, v) for t, v in ts)), st.binary(max_size=40)),
                      st.binary(max_size=20))
GARBAGE = st.one_of(
    st.binary(max_size=200), st.binary(max_size=300).map(lambda b: SIG + b), V2_SHAPED,
    st.text("PROXYTCP46UNKOWN 0123456789abcdef.:\r\n", max_size=120).map(lambda t: b"PROXY " + t.encode()),
    st.tuples(st.sampled_from([b"PROXY UNKNOWN", b"PROXY TCP4 1.2.3.4 ", b"PROXY TCP6 ::1 ::2 "]),
              st.binary(max_size=120)).map(b"".join))


@PROPERTY
@given(GARBAGE, st.sampled_from(["v1", "v2", "any"]), st.binary(min_size=1, max_size=8))
def test_garbage_is_none_info_or_header_error(data: bytes, mode: str, junk: bytes) -> None:
    result = outcome(data, mode)  # anything but ProxyHeaderError escapes and fails the test
    if result[0] == "info":
        assert 0 < result[1].header_length <= len(data)
    for cut in range(0, len(data), 7):  # a prefix's verdict stands once more bytes arrive
        early = outcome(data[:cut], mode)
        assert early[0] == "none" or early[0] == result[0] and (early[0] == "error" or early == result)
    # it never looks past 107 bytes (v1) or 16 + the length field (v2): what follows cannot matter
    bound = 107 if data.startswith(b"P") else 16 + int.from_bytes(data[14:16], "big")
    if len(data) >= 16:
        padded = data[:bound].ljust(bound, b"\0")
        assert outcome(padded + junk, mode) == outcome(padded + b"\r\n" + junk, mode) == outcome(padded, mode)
        assert outcome(padded, mode)[0] != "none"


# The common TCP4 line has a fast path (one regular expression); it must agree with the
# field-by-field checker, which every other line takes.
OCTET_TEXT = st.one_of(st.integers(0, 255).map(str), st.sampled_from(["00", "01", "256", "999", "1a", ""]))
PORT_TEXT = st.one_of(st.integers(0, 65535).map(str), st.sampled_from(["00", "065535", "65536", "99999", "-1"]))


@PROPERTY
@given(st.lists(OCTET_TEXT, min_size=4, max_size=4), st.lists(OCTET_TEXT, min_size=4, max_size=4),
       PORT_TEXT, PORT_TEXT)
def test_v1_tcp4_fast_path_agrees_with_the_checker(src: list, dst: list, sport: str, dport: str) -> None:
    from gnetpy import proxyproto
    line = f"PROXY TCP4 {'.'.join(src)} {'.'.join(dst)} {sport} {dport}".encode()
    try:
        slow: Any = proxyproto._v1_line(line, complete=True)
    except ProxyHeaderError as exc:
        slow = exc
    try:
        fast: Any = parse(line + b"\r\n", "v1")
    except ProxyHeaderError as exc:
        fast = exc
    if isinstance(slow, ProxyHeaderError):
        assert isinstance(fast, ProxyHeaderError) and str(fast) == str(slow)
    else:
        assert fast == ProxyInfo(1, "PROXY", *slow, header_length=len(line) + 2)
