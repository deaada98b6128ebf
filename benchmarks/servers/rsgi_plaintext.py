"""A bare RSGI app for W12 (HTTP plaintext): served by granian, its fastest interface.

    python -m granian --interface rsgi --workers 1 --runtime-threads 1 --blocking-threads 1 \
        --http 1 --no-ws --working-dir benchmarks/servers --host 127.0.0.1 --port 8000 rsgi_plaintext:app

RSGI is granian's own interface (its Rust HTTP server calls the app with a
``scope`` and a ``protocol``; ``protocol.response_bytes`` answers in one
call).  ``GET /plaintext`` is answered ``200 text/plain`` with ``Hello,
World!``, as examples/http_server.py answers it, anything else 404; granian
adds the Date and Server headers itself.
"""

from __future__ import annotations

from typing import Any

HELLO = b"Hello, World!"
NOT_FOUND = b"Not Found\n"
HEADERS = [("content-type", "text/plain")]


async def app(scope: Any, protocol: Any) -> None:
    if scope.method == "GET" and scope.path == "/plaintext":
        protocol.response_bytes(200, HEADERS, HELLO)
    else:
        protocol.response_bytes(404, HEADERS, NOT_FOUND)
