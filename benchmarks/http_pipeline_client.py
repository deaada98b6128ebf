"""A fixed HTTP load for counting a server's instructions per request under callgrind.

    python benchmarks/http_pipeline_client.py PORT CONNS ROUNDS

Each of CONNS connections sends 16 pipelined GET /plaintext requests (wrk's headers
in the TechEmpower plaintext test) per round and reads the 16 responses; prints how
many responses came back. Run it twice against a server under callgrind, with two
round counts: the difference in instructions over the difference in requests is the
server's cost per request without its start-up (benchmarks/results/2026-12-03-applications.md).
wrk cannot do this: under callgrind the server is ~50x slower and wrk's timeouts fire.
"""

from __future__ import annotations

import socket
import sys

REQUEST = (b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n"
           b"Accept: text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7\r\n"
           b"Connection: keep-alive\r\n\r\n")
DEPTH = 16


def main(argv: list[str]) -> int:
    port, conns, rounds = (int(a) for a in argv)
    socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(conns)]
    total = 0
    try:
        for _ in range(rounds):
            for s in socks:
                s.sendall(REQUEST * DEPTH)
            for s in socks:
                replies = b""
                while replies.count(b"HTTP/1.1 200 ") < DEPTH:  # counted on the whole: a status line may span reads
                    data = s.recv(65536)
                    if not data:
                        raise EOFError("the server closed a connection")
                    replies += data
                total += replies.count(b"HTTP/1.1 200 ")
    finally:
        for s in socks:
            s.close()
    print(total)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
