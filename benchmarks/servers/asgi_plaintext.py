"""A bare ASGI app for W12 (HTTP plaintext): served by uvicorn with uvloop and httptools.

    python -m uvicorn asgi_plaintext:app --app-dir benchmarks/servers --host 127.0.0.1 --port 8000 \
        --loop uvloop --http httptools --workers 1 --no-access-log

No framework: ``GET /plaintext`` is answered ``200 text/plain`` with
``Hello, World!`` (TechEmpower's plaintext test, as examples/http_server.py
answers it), anything else 404.  uvicorn adds the Date and Server headers
itself.  The lifespan protocol is answered so uvicorn's startup and shutdown
are quiet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

HELLO = b"Hello, World!"
NOT_FOUND = b"Not Found\n"
OK_START = {"type": "http.response.start", "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(HELLO))]}
OK_BODY = {"type": "http.response.body", "body": HELLO}
MISSING_START = {"type": "http.response.start", "status": 404,
                 "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(NOT_FOUND))]}
MISSING_BODY = {"type": "http.response.body", "body": NOT_FOUND}

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        if scope["method"] == "GET" and scope["path"] == "/plaintext":
            await send(OK_START)
            await send(OK_BODY)
        else:
            await send(MISSING_START)
            await send(MISSING_BODY)
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
