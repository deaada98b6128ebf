"""A TLS echo server: the handler sees plaintext, the wire carries TLS.

    python examples/tls_echo.py                       # a self-signed certificate is made at first run
    openssl s_client -connect 127.0.0.1:9443 -quiet   # type a line: it comes back

    python examples/tls_echo.py --cert fullchain.pem --key privkey.pem --addr tcp://0.0.0.0:443

Without ``--cert``, the first run makes a self-signed certificate for
``localhost`` and 127.0.0.1 with the ``openssl`` command (Debian: ``apt-get
install openssl``) in ``--cert-dir`` (default ``~/.cache/gnetpy/tls_echo``) and
reuses it afterwards.  A client trusts it by taking that certificate as its
CA (``openssl s_client -CAfile .../cert.pem``, ``ssl_context.load_verify_locations``).

Certificates in production: a self-signed certificate is for trying things
out.  Serve one from a CA your clients trust -- an ACME CA such as Let's
Encrypt, through certbot or lego -- and give the *full chain*
(``fullchain.pem``) to ``--cert``, the key (mode 0600, readable by this
process only) to ``--key``.  A context is read when the server starts: to
take a renewed certificate, restart it (gnetpy's ``stop()`` is graceful), or
load the new files into a fresh ``SSLContext`` and hand it out from an
``sni_callback``.  ``ssl.create_default_context(Purpose.CLIENT_AUTH)`` already
refuses SSLv3 and TLS 1.0/1.1; set ``minimum_version`` to
``TLSVersion.TLSv1_3`` if every client you serve speaks it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import ssl
import subprocess
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import gnetpy  # noqa: E402


class Echo(gnetpy.EventHandler):
    def __init__(self, cert: str) -> None:
        self.cert = cert

    def on_boot(self, engine: gnetpy.Engine) -> None:
        host, port = engine.addrs[0][:2] if isinstance(engine.addrs[0], tuple) else ("", 0)
        print(f"TLS echo server on {engine.addrs}; try: openssl s_client -connect {host}:{port} "
              f"-CAfile {self.cert} -quiet", flush=True)

    def on_open(self, c: gnetpy.Conn) -> Any:
        tls = c.tls  # the handshake is done: version, cipher, ALPN, the peer's certificate
        print(f"{c.remote_addr}: {tls.version()} {tls.cipher()[0]}", flush=True)

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.write(c.next())  # plaintext in, plaintext out: gnetpy encrypts


def self_signed(cert_dir: str) -> tuple[str, str]:
    """A certificate for localhost and 127.0.0.1, made once with the openssl command."""
    cert, key = os.path.join(cert_dir, "cert.pem"), os.path.join(cert_dir, "key.pem")
    if os.path.exists(cert) and os.path.exists(key):
        return cert, key
    if shutil.which("openssl") is None:
        raise SystemExit("tls_echo: no --cert given and no openssl command to make a self-signed one "
                         "(install it: apt-get install openssl)")
    os.makedirs(cert_dir, mode=0o700, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "365", "-subj", "/CN=localhost", "-keyout", key, "-out", cert,
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    print(f"made a self-signed certificate: {cert}", flush=True)
    return cert, key


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="gnetpy TLS echo server")
    parser.add_argument("--addr", default="tcp://127.0.0.1:9443")
    parser.add_argument("--loops", type=int, default=1)
    parser.add_argument("--cert", help="certificate chain (PEM); without it a self-signed one is made")
    parser.add_argument("--key", help="private key (PEM), with --cert")
    parser.add_argument("--cert-dir", default=os.path.expanduser("~/.cache/gnetpy/tls_echo"),
                        help="where the self-signed certificate is kept")
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    cert, key = (args.cert, args.key) if args.cert else self_signed(args.cert_dir)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["echo"])
    gnetpy.run(Echo(cert), args.addr, num_event_loop=args.loops, reuse_addr=True, ssl_context=context)


if __name__ == "__main__":
    main()
