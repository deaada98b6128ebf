"""HAProxy's PROXY protocol, versions 1 and 2 (haproxy doc/proxy-protocol.txt).

A proxy in front of a server prepends one header to each connection saying who the
real client was.  The engine calls :func:`parse` on a connection's first bytes, again
as more arrive, so it answers ``None`` (a correct prefix: read more), a
:class:`ProxyInfo` (``header_length`` says where the application's bytes begin), or
:class:`ProxyHeaderError` as soon as the bytes cannot begin a valid header (the spec
asks to abort early).  It never looks past the spec's bounds (107 bytes for v1, 16 +
the length field for v2), so a peer cannot make it scan without limit.  The encoders
check with the parser's own rules, so whatever they emit parses back.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple, Optional, Tuple, Union

from .errors import GnetError

__all__ = ["ProxyHeaderError", "ProxyInfo", "SslTlv", "crc32c", "encode", "encode_v1", "encode_v2", "parse"]

V1_MAX_LENGTH = 107  # "PROXY UNKNOWN <39> <39> 65535 65535\r\n", the spec's worst case
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_MAX_LENGTH = 16 + 0xFFFF

PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_CRC32C, PP2_TYPE_NOOP, PP2_TYPE_UNIQUE_ID = 0x01, 0x02, 0x03, 0x04, 0x05
PP2_TYPE_SSL, PP2_TYPE_NETNS = 0x20, 0x30
PP2_SUBTYPE_SSL_VERSION, PP2_SUBTYPE_SSL_CN, PP2_SUBTYPE_SSL_CIPHER = 0x21, 0x22, 0x23
PP2_SUBTYPE_SSL_SIG_ALG, PP2_SUBTYPE_SSL_KEY_ALG = 0x24, 0x25
PP2_CLIENT_SSL, PP2_CLIENT_CERT_CONN, PP2_CLIENT_CERT_SESS = 0x01, 0x02, 0x04
UNIQUE_ID_MAX = 128

Bytes = Union[bytes, bytearray, memoryview]
Address = Union[Tuple[str, int], str, None]
Tlvs = Tuple[Tuple[int, bytes], ...]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class ProxyHeaderError(GnetError, ValueError):
    """A malformed, unsupported or oversized PROXY header; the message names the fault."""


@dataclass(frozen=True)
class SslTlv:
    """The PP2_TYPE_SSL TLV: how the client reached the proxy over TLS."""

    client: int  # PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS bits
    verify: int  # 0 when the client presented a certificate that verified
    version: Optional[str] = None
    cn: Optional[str] = None
    cipher: Optional[str] = None
    sig_alg: Optional[str] = None
    key_alg: Optional[str] = None
    tlvs: Tlvs = ()  # every sub-TLV, raw and in order, unknown ones included


class ProxyInfo(NamedTuple):
    """What a PROXY header said.  ``source``/``destination`` are None for LOCAL and UNKNOWN:
    the receiver then keeps the connection's own addresses, as the spec requires.

    A named tuple, not a frozen dataclass: one is made per connection, and a frozen
    dataclass's ``__init__`` (a ``object.__setattr__`` per field) cost five times as much."""

    version: int
    command: str  # "PROXY" or "LOCAL"
    family: str  # "TCP4", "TCP6", "UNIX" or "UNKNOWN"
    source: Address = None
    destination: Address = None
    tlvs: Tlvs = ()
    header_length: int = 0
    alpn: Optional[bytes] = None
    authority: Optional[str] = None
    unique_id: Optional[bytes] = None
    ssl: Optional[SslTlv] = None
    netns: Optional[str] = None


def _err(version: int, message: str) -> ProxyHeaderError:
    return ProxyHeaderError(f"PROXY v{version}: {message}")


def _crc_entry(n: int) -> int:
    for _ in range(8):  # Castagnoli, reflected: 0x82F63B78 (zlib.crc32 uses another polynomial)
        n = (n >> 1) ^ 0x82F63B78 if n & 1 else n >> 1
    return n


_CRC_TABLE = tuple(_crc_entry(n) for n in range(256))


def crc32c(data: Bytes) -> int:
    """CRC32C as RFC 4960 appendix B computes it (the checksum the CRC32C TLV carries)."""
    crc, table = 0xFFFFFFFF, _CRC_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


_crc32c = crc32c  # encode_v2 has a parameter named crc32c


def parse(data: Bytes, mode: str) -> Optional[ProxyInfo]:
    """Parse the header at the start of ``data``: None while it is an incomplete prefix.

    ``mode`` is "v1", "v2" or "any".  The receiver must not guess whether a header is
    there (spec section 5), so "any" only chooses between the versions: their first
    bytes ("P" and CR) differ, so one byte decides.
    """
    if mode not in ("v1", "v2", "any"):
        raise ValueError(f"mode must be 'v1', 'v2' or 'any', not {mode!r}")
    if not data:
        return None
    first = data[0]
    if mode == "v1" or (mode == "any" and first == 0x50):
        return _parse_v1(data)
    if mode == "v2" or first == 0x0D:
        return _parse_v2(data)
    raise ProxyHeaderError(f"PROXY: neither a v1 nor a v2 header (starts with {bytes(data[:8])!r})")


def _show(token: bytes) -> str:
    text = repr(token[:40].decode("ascii", "backslashreplace"))
    return text + "..." if len(token) > 40 else text


# The common line, a whole valid TCP4 one, in one match: octets 0-255 and ports without
# leading zeros (the range of a port is checked after).  Anything else takes _v1_line's
# field-by-field path, which names the fault.  A header per connection: this is W6's cost.
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rb"(" + _OCTET + rb"(?:\." + _OCTET + rb"){3})"
_PORT = rb"(0|[1-9][0-9]{0,4})"
_V1_TCP4 = re.compile(rb"PROXY TCP4 " + _IPV4 + b" " + _IPV4 + b" " + _PORT + b" " + _PORT)


def _parse_v1(data: Bytes) -> Optional[ProxyInfo]:
    window = bytes(data[:V1_MAX_LENGTH])
    if window[:6] != b"PROXY "[: len(window)]:
        raise _err(1, f"header does not start with 'PROXY ' (got {_show(window[:6])})")
    end = window.find(b"\r\n")
    if end >= 0:
        match = _V1_TCP4.fullmatch(window, 0, end)
        if match is not None:
            src, dst, sport, dport = match.groups()
            if int(sport) <= 65535 and int(dport) <= 65535:
                return ProxyInfo(1, "PROXY", "TCP4", (src.decode(), int(sport)), (dst.decode(), int(dport)),
                                 header_length=end + 2)
        facts = _v1_line(window[:end], complete=True)
        assert facts is not None
        return ProxyInfo(1, "PROXY", *facts, header_length=end + 2)
    if window.endswith(b"\r"):  # only LF may follow, so what came before must be a whole line
        _v1_line(window[:-1], complete=True)
    else:
        _v1_line(window, complete=False)
    if len(window) >= V1_MAX_LENGTH:
        raise _err(1, f"no CRLF within the first {V1_MAX_LENGTH} bytes")
    return None


_V1_FAMILIES = (b"TCP4", b"TCP6", b"UNKNOWN")
_V1_FIELDS = ("source address", "destination address", "source port", "destination port")


def _v1_line(line: bytes, complete: bool) -> Optional[Tuple[str, Address, Address]]:
    """Check a v1 line (without its CRLF), or while incomplete the part seen so far: every
    field already followed by a space must be valid, the last one must be able to become so."""
    if len(line) < 6:  # the caller checked that it begins like "PROXY "
        return None
    if b"\r" in line or b"\n" in line:
        raise _err(1, "bare CR or LF in the line (only CRLF ends it)")
    fields = line[6:].split(b" ")
    family = fields[0]
    if len(fields) == 1 and not complete:
        if not any(name.startswith(family) for name in _V1_FAMILIES):
            raise _err(1, f"unknown protocol family {_show(family)}")
        return None
    if family not in _V1_FAMILIES:
        raise _err(1, f"unknown protocol family {_show(family)}")
    if family == b"UNKNOWN":  # "the receiver must ignore anything presented before the CRLF"
        return ("UNKNOWN", None, None) if complete else None
    rest = fields[1:]
    values = []
    for i, tok in enumerate(rest[:4]):  # in order, so the message names the first fault
        whole = complete or i < len(rest) - 1
        if whole and not tok:
            raise _err(1, f"empty {_V1_FIELDS[i]} (fields are separated by exactly one space)")
        check = _v1_port if i >= 2 else _v1_ipv4 if family == b"TCP4" else _v1_ipv6
        values.append(check(_V1_FIELDS[i], tok, whole))
    if len(rest) > 4:
        raise _err(1, "unexpected data after the destination port (only CRLF may follow it)")
    if not complete:
        return None
    if len(rest) < 4:
        raise _err(1, f"missing {_V1_FIELDS[len(rest)]}")
    src, dst, sport, dport = values
    return family.decode(), (src, sport), (dst, dport)  # type: ignore[return-value]


def _v1_port(kind: str, tok: bytes, whole: bool) -> Optional[int]:
    if tok and not tok.isdigit():
        raise _err(1, f"{kind} {_show(tok)} is not a decimal number")
    if len(tok) > 1 and tok.startswith(b"0"):
        raise _err(1, f"{kind} {_show(tok)} has a leading zero")
    if len(tok) > 5 or (tok and int(tok) > 65535):
        raise _err(1, f"{kind} {_show(tok)} is out of range 0-65535")
    return int(tok) if whole else None


def _v1_ipv4(kind: str, tok: bytes, whole: bool) -> Optional[str]:
    if tok.strip(b"0123456789.") or len(tok) > 15 or tok.count(b".") > 3:
        raise _err(1, f"{kind} {_show(tok)} is not an IPv4 dotted quad")
    octets = tok.split(b".")
    for i, octet in enumerate(octets):
        if not octet and (whole or i < len(octets) - 1):
            raise _err(1, f"{kind} {_show(tok)} has an empty octet")
        if len(octet) > 1 and octet.startswith(b"0"):
            raise _err(1, f"{kind} {_show(tok)} has an octet with a leading zero")
        if octet and int(octet) > 255:
            raise _err(1, f"{kind} {_show(tok)} has an octet over 255")
    if not whole:
        return None
    if len(octets) != 4:
        raise _err(1, f"{kind} {_show(tok)} is not an IPv4 dotted quad")
    return str(ipaddress.IPv4Address(tok.decode()))


def _v1_ipv6(kind: str, tok: bytes, whole: bool) -> Optional[str]:
    """Hex groups and colons only: the spec's format has no dotted IPv4 tail and no zone."""
    if tok.strip(b"0123456789abcdefABCDEF:") or len(tok) > 39 or b":::" in tok or tok.count(b"::") > 1:
        raise _err(1, f"{kind} {_show(tok)} is not an IPv6 address")
    if any(len(group) > 4 for group in tok.split(b":")):
        raise _err(1, f"{kind} {_show(tok)} is not an IPv6 address")
    if not whole:
        return None
    try:
        return str(ipaddress.IPv6Address(tok.decode()))
    except ValueError:
        raise _err(1, f"{kind} {_show(tok)} is not an IPv6 address") from None


# (family byte) -> (family name, address block size); DGRAM and undefined values are refused
_V2_FAMILIES = {0x00: ("UNKNOWN", 0), 0x01: ("UNKNOWN", 0), 0x11: ("TCP4", 12), 0x21: ("TCP6", 36),
                0x31: ("UNIX", 216)}
_V2_FAMILY_BYTES = {"TCP4": 0x11, "TCP6": 0x21, "UNIX": 0x31, "UNKNOWN": 0x00}


def _parse_v2(data: Bytes) -> Optional[ProxyInfo]:
    head = bytes(data[:16])
    if head[:12] != V2_SIGNATURE[: len(head)]:
        raise _err(2, "signature mismatch: not a PROXY v2 header")
    command, family, size = _v2_check_head(head)
    if len(head) < 16:
        return None
    length = int.from_bytes(head[14:16], "big")
    if length < size:
        raise _err(2, f"length {length} is shorter than the {family} address block ({size} bytes)")
    if len(data) < 16 + length:
        return None
    header = bytes(data[: 16 + length])
    source = destination = None
    if command == "PROXY" and family != "UNKNOWN":
        source, destination = _v2_addresses(family, header[16 : 16 + size])
    if length == size:  # no TLVs, HAProxy's plain send-proxy-v2
        return ProxyInfo(2, command, family, source, destination, (), len(header))
    tlvs = _tlv_list(header, 16 + size, len(header), "TLV")
    facts = _tlv_facts(tlvs, header)
    return ProxyInfo(2, command, family, source, destination, tuple((t, v) for t, v, _ in tlvs),
                     len(header), **facts)


def _v2_check_head(head: bytes) -> Tuple[str, str, int]:
    """Validate the version/command and family bytes as soon as they arrive."""
    command, family, size = "", "", 0
    if len(head) > 12:
        version, cmd = head[12] >> 4, head[12] & 0x0F
        if version != 2:
            raise _err(2, f"unsupported version {version} in byte 13 (only 2 exists)")
        if cmd > 1:
            raise _err(2, f"unknown command {cmd:#x} (LOCAL is 0x0, PROXY 0x1)")
        command = ("LOCAL", "PROXY")[cmd]
    if len(head) > 13:
        fam = head[13]
        if fam >> 4 > 3 or fam & 0x0F > 2:
            raise _err(2, f"undefined address family/transport byte {fam:#04x}")
        if fam & 0x0F == 2:
            raise _err(2, f"datagram transport ({fam:#04x}) is not supported on stream connections")
        if fam not in _V2_FAMILIES:
            raise _err(2, f"address family {fam >> 4:#x} with an unspecified transport ({fam:#04x})")
        family, size = _V2_FAMILIES[fam]
    return command, family, size


def _v2_addresses(family: str, block: bytes) -> Tuple[Address, Address]:
    if family == "UNIX":  # two 108-byte fields, each NUL-terminated unless full
        src, dst = (f.split(b"\0", 1)[0].decode("utf-8", "surrogateescape") for f in (block[:108], block[108:]))
        return src, dst
    sport, dport = _PORTS.unpack_from(block, len(block) - 4)
    if family == "TCP4":  # inet_ntop: ipaddress's text for IPv4 at a tenth of its cost
        return (socket.inet_ntop(socket.AF_INET, block[:4]), sport), (socket.inet_ntop(socket.AF_INET, block[4:8]), dport)
    return (str(ipaddress.IPv6Address(block[:16])), sport), (str(ipaddress.IPv6Address(block[16:32])), dport)


_PORTS = struct.Struct("!HH")


def _tlv_list(buf: bytes, start: int, end: int, what: str) -> list[Tuple[int, bytes, int]]:
    """Split ``buf[start:end]`` into (type, value, value offset); each TLV must fit inside."""
    tlvs, pos = [], start
    while pos < end:
        if end - pos < 3:
            raise _err(2, f"{what} at offset {pos}: {end - pos} bytes left, a TLV header needs 3")
        kind, length = buf[pos], int.from_bytes(buf[pos + 1 : pos + 3], "big")
        if length > end - pos - 3:
            raise _err(2, f"{what} {kind:#04x} at offset {pos}: length {length} overruns the header "
                          f"({end - pos - 3} bytes left)")
        tlvs.append((kind, buf[pos + 3 : pos + 3 + length], pos + 3))
        pos += 3 + length
    return tlvs


def _text(value: bytes, name: str, encoding: str) -> str:
    try:
        return value.decode(encoding)
    except UnicodeDecodeError:
        raise _err(2, f"{name} is not valid {encoding.upper()}") from None


def _tlv_facts(tlvs: list[Tuple[int, bytes, int]], header: Optional[bytes]) -> dict[str, Any]:
    """The conveniences of ProxyInfo; checks the CRC32C against ``header`` unless it is None.
    A known TLV that appears twice is refused: which copy to believe would be a guess."""
    facts: dict[str, object] = {}
    names = {PP2_TYPE_ALPN: "alpn", PP2_TYPE_AUTHORITY: "authority", PP2_TYPE_CRC32C: "crc32c",
             PP2_TYPE_UNIQUE_ID: "unique_id", PP2_TYPE_SSL: "ssl", PP2_TYPE_NETNS: "netns"}
    for kind, value, offset in tlvs:
        name = names.get(kind)
        if name is None:
            continue
        if name in facts:
            raise _err(2, f"duplicate {name.upper()} TLV")
        fact: object = value
        if kind == PP2_TYPE_AUTHORITY:
            fact = _text(value, "AUTHORITY TLV", "utf-8")
        elif kind == PP2_TYPE_NETNS:
            fact = _text(value, "NETNS TLV", "ascii")
        elif kind == PP2_TYPE_SSL:
            fact = _parse_ssl(value)
        elif kind == PP2_TYPE_UNIQUE_ID and len(value) > UNIQUE_ID_MAX:
            raise _err(2, f"UNIQUE_ID TLV is {len(value)} bytes, more than {UNIQUE_ID_MAX}")
        elif kind == PP2_TYPE_CRC32C and len(value) != 4:
            raise _err(2, f"CRC32C TLV is {len(value)} bytes, not 4")
        elif kind == PP2_TYPE_CRC32C and header is not None:  # computed with its own field zeroed
            expected = _crc32c(header[:offset] + b"\0\0\0\0" + header[offset + 4 :])
            if int.from_bytes(value, "big") != expected:
                raise _err(2, f"CRC32C mismatch: header says {value.hex()}, computed {expected:08x}")
        facts[name] = fact
    facts.pop("crc32c", None)
    return facts


def _parse_ssl(value: bytes) -> SslTlv:
    if len(value) < 5:
        raise _err(2, f"SSL TLV is {len(value)} bytes, needs at least 5 (client, verify)")
    subs = _tlv_list(value, 5, len(value), "SSL sub-TLV")
    names = {PP2_SUBTYPE_SSL_VERSION: "version", PP2_SUBTYPE_SSL_CN: "cn", PP2_SUBTYPE_SSL_CIPHER: "cipher",
             PP2_SUBTYPE_SSL_SIG_ALG: "sig_alg", PP2_SUBTYPE_SSL_KEY_ALG: "key_alg"}
    strings: dict[str, str] = {}
    for kind, sub, _ in subs:
        name = names.get(kind)
        if name is None:
            continue
        if name in strings:
            raise _err(2, f"duplicate SSL {name.upper()} sub-TLV")
        strings[name] = _text(sub, f"SSL {name.upper()} sub-TLV", "utf-8" if name == "cn" else "ascii")
    verify = int.from_bytes(value[1:5], "big")
    return SslTlv(value[0], verify, tlvs=tuple((t, v) for t, v, _ in subs), **strings)


def _host_port(family: str, which: str, address: object) -> Tuple[IPAddress, int]:
    cls = ipaddress.IPv4Address if family == "TCP4" else ipaddress.IPv6Address
    if not (isinstance(address, tuple) and len(address) == 2):
        raise ValueError(f"{which} must be a (host, port) tuple for {family}, not {address!r}")
    host, port = address
    try:
        ip = cls(host) if isinstance(host, (str, cls)) else None
    except ValueError:
        ip = None
    if ip is None:  # not int or packed bytes, which ipaddress would take
        raise ValueError(f"{which} host {host!r} is not an {cls.__name__[:4]} address")
    if getattr(ip, "scope_id", None):
        raise ValueError(f"{which} host {host!r} has a zone, which the PROXY protocol cannot carry")
    if type(port) is not int or not 0 <= port <= 65535:
        raise ValueError(f"{which} port {port!r} is not an integer in 0-65535")
    return ip, port


def _v1_host(ip: IPAddress) -> str:
    """v1 IPv6 is hex groups only, and Python 3.13+ writes "::ffff:1.2.3.4" for mapped addresses
    (``exploded`` too): then the eight groups, from the address's bytes."""
    if ip.version == 6 and "." in str(ip):
        packed = ip.packed
        return ":".join(f"{int.from_bytes(packed[i:i + 2], 'big'):x}" for i in range(0, 16, 2))
    return str(ip)


def encode_v1(family: str, source: Address = None, destination: Address = None) -> bytes:
    """A v1 line; "UNKNOWN" sends the short form and takes no addresses."""
    if family == "UNKNOWN":
        if source is not None or destination is not None:
            raise ValueError("source and destination must be None for UNKNOWN")
        return b"PROXY UNKNOWN\r\n"
    if family not in ("TCP4", "TCP6"):
        raise ValueError(f"family must be 'TCP4', 'TCP6' or 'UNKNOWN' for v1, not {family!r}")
    (sip, sport), (dip, dport) = _host_port(family, "source", source), _host_port(family, "destination", destination)
    return f"PROXY {family} {_v1_host(sip)} {_v1_host(dip)} {sport} {dport}\r\n".encode("ascii")


def _v2_block(command: str, family: str, source: Address, destination: Address) -> bytes:
    if command == "LOCAL" or family == "UNKNOWN":
        if source is not None or destination is not None:
            raise ValueError(f"source and destination must be None for {'LOCAL' if command == 'LOCAL' else family}")
        return bytes(_V2_FAMILIES[_V2_FAMILY_BYTES[family]][1])  # LOCAL: zeros the receiver skips
    if family == "UNIX":
        paths = []
        for which, path in (("source", source), ("destination", destination)):
            raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else None
            if raw is None or len(raw) > 108 or b"\0" in raw:
                raise ValueError(f"{which} must be a UNIX path of at most 108 bytes without NUL, not {path!r}")
            paths.append(raw.ljust(108, b"\0"))
        return b"".join(paths)
    (sip, sport), (dip, dport) = _host_port(family, "source", source), _host_port(family, "destination", destination)
    return sip.packed + dip.packed + struct.pack("!HH", sport, dport)


def encode_v2(command: str = "PROXY", family: str = "UNKNOWN", source: Address = None,
              destination: Address = None, tlvs: Iterable[Tuple[int, bytes]] = (), crc32c: bool = False) -> bytes:
    """A v2 header.  A CRC32C TLV in ``tlvs`` is a placeholder whose value is computed here;
    ``crc32c=True`` appends one.  TLVs are checked by the parser's rules, so the result parses."""
    if command not in ("PROXY", "LOCAL"):
        raise ValueError(f"command must be 'PROXY' or 'LOCAL', not {command!r}")
    if family not in _V2_FAMILY_BYTES:
        raise ValueError(f"family must be 'TCP4', 'TCP6', 'UNIX' or 'UNKNOWN', not {family!r}")
    block = _v2_block(command, family, source, destination)
    items = list(tlvs) + ([(PP2_TYPE_CRC32C, b"\0\0\0\0")] if crc32c else [])
    body = bytearray()
    for item in items:
        kind, value = item if isinstance(item, tuple) and len(item) == 2 else (None, None)
        if type(kind) is not int or not 0 <= kind <= 255 or not isinstance(value, (bytes, bytearray, memoryview)):
            raise ValueError(f"tlvs: {item!r} is not a (type 0-255, bytes) pair")
        if len(value) > 0xFFFF:
            raise ValueError(f"tlvs: TLV {kind:#04x} value is {len(value)} bytes, over 65,535")
        value = bytes(len(value)) if kind == PP2_TYPE_CRC32C else bytes(value)  # zeroed, computed below
        body += bytes([kind]) + len(value).to_bytes(2, "big") + value
    try:
        parsed = _tlv_list(bytes(body), 0, len(body), "TLV")
        _tlv_facts(parsed, None)
    except ProxyHeaderError as exc:
        raise ValueError(f"tlvs: {exc}") from None
    length = len(block) + len(body)
    if length > 0xFFFF:
        raise ValueError(f"tlvs: the header would need {length} bytes after its 16, over 65,535")
    ver_cmd = 0x21 if command == "PROXY" else 0x20
    header = bytearray(V2_SIGNATURE + bytes([ver_cmd, _V2_FAMILY_BYTES[family]]) + struct.pack("!H", length))
    header += block + body
    for kind, _, offset in parsed:
        if kind == PP2_TYPE_CRC32C:
            at = 16 + len(block) + offset
            header[at : at + 4] = _crc32c(header).to_bytes(4, "big")
    return bytes(header)


def encode(info: ProxyInfo) -> bytes:
    """Re-encode a header in its own version (to pass a parsed one on to the next hop).

    The TLVs sent are ``info.tlvs``; a hand-built ProxyInfo whose ``alpn``, ``authority``,
    ``unique_id``, ``ssl`` or ``netns`` disagrees with them is refused rather than sent without them.
    """
    if info.version == 1:
        if info.command != "PROXY":
            raise ValueError(f"command {info.command!r} does not exist in v1")
        if info.tlvs:
            raise ValueError("tlvs: v1 carries no TLVs")
        header = encode_v1(info.family, info.source, info.destination)
    elif info.version == 2:
        header = encode_v2(info.command, info.family, info.source, info.destination, info.tlvs)
    else:
        raise ValueError(f"version must be 1 or 2, not {info.version!r}")
    sent = parse(header, "any")
    for name in ("alpn", "authority", "unique_id", "ssl", "netns"):
        if getattr(info, name) != getattr(sent, name):
            raise ValueError(f"{name} {getattr(info, name)!r} disagrees with the TLVs sent ({getattr(sent, name)!r})")
    return header
