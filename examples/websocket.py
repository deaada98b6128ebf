"""WebSocket on gnetpy: websockets' sans-I/O ``ServerProtocol`` driven over a gnetpy ``Conn``.

examples/http_server.py hands a connection here when ``GET /ws`` asks for
``Upgrade: websocket``, so HTTP and WebSocket share one port.  The protocol
object does the framing; this file only moves bytes between it and the
connection:

    c.next()  -> protocol.receive_data()  -> protocol.events_received()  (frames)
    protocol.send_*()  -> protocol.data_to_send()  -> c.write()

What the server does with it:

- echo: every message comes back as it came, text or binary; a fragmented
  message is reassembled first and comes back whole;
- broadcast: a text message that starts with ``broadcast:`` goes, instead of
  the echo, to every WebSocket connection of the sender's event loop (the
  sender included).  A connection's protocol state lives on its own loop, so
  with worker processes (``--loops N``) a broadcast reaches the connections of
  one process; reaching every process takes a broker (Redis pub/sub, say).
  A peer that does not read piles up what is sent to it (``outbound_buffered``):
  a real server would drop or close it past a bound;
- ping/pong and the close handshake are the protocol's: it answers a ping with
  a pong and a close frame with a close frame, and then asks us (an empty
  ``bytes`` in ``data_to_send``) to close the TCP connection, which the server
  side does first;
- a message over ``max_message`` bytes closes the connection with 1009, text
  that is not UTF-8 with 1007;
- a peer that vanishes: ``on_close`` takes it out of the broadcast set.

Everything here runs on the connection's own event loop: no locks.
"""

from __future__ import annotations

from typing import Any

from websockets.frames import CloseCode, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

import gnetpy

MAX_MESSAGE = 1 << 20   # bytes of one message, reassembled; more closes with 1009
BROADCAST = b"broadcast:"


class WebSocket:
    """One upgraded connection: its protocol and the fragmented message being reassembled."""

    __slots__ = ("protocol", "fragments", "opcode")

    def __init__(self, protocol: ServerProtocol) -> None:
        self.protocol = protocol
        self.fragments: list[bytes] = []
        self.opcode = Opcode.TEXT


class WebSocketHub:
    """The WebSocket side of the server: the handshake, echo, broadcast, and who is connected."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self.peers: dict[Any, set[gnetpy.Conn]] = {}   # event loop -> its open WebSocket connections

    def count(self) -> int:
        """WebSocket connections open in this process (tests read it)."""
        return sum(len(conns) for conns in list(self.peers.values()))

    def accept(self, c: gnetpy.Conn, path: bytes, headers: list[tuple[bytes, bytes]],
               rest: bytes) -> gnetpy.Action | None:
        """Answer the upgrade request; ``rest`` is what the client sent after it (already frames)."""
        protocol = ServerProtocol(max_size=self.max_message)
        # The protocol reads the handshake request itself: give it the request httptools parsed.
        protocol.receive_data(b"".join([b"GET %s HTTP/1.1\r\n" % path,
                                        *(b"%s: %s\r\n" % header for header in headers), b"\r\n"]))
        for request in protocol.events_received():   # none if it could not read it (it then asks to close)
            # accept() checks the handshake: a 101, or a 4xx saying what is wrong (then the protocol asks to close).
            protocol.send_response(protocol.accept(request))
        ws = WebSocket(protocol)
        c.context = ws
        if protocol.state is State.OPEN:
            self.peers.setdefault(c.event_loop, set()).add(c)
            if rest:
                return self.received(c, ws, rest)
        return self.flush(c, ws)

    def on_traffic(self, c: gnetpy.Conn) -> gnetpy.Action | None:
        return self.received(c, c.context, c.next())

    def on_close(self, c: gnetpy.Conn, err: BaseException | None) -> None:
        """Closed by either side, or vanished: no more broadcasts to it."""
        conns = self.peers.get(c.event_loop)
        if conns is not None:
            conns.discard(c)

    def received(self, c: gnetpy.Conn, ws: WebSocket, data: bytes) -> gnetpy.Action | None:
        ws.protocol.receive_data(data)
        for frame in ws.protocol.events_received():
            if frame.opcode is Opcode.TEXT or frame.opcode is Opcode.BINARY:
                if frame.fin:
                    self.on_message(c, ws, frame.opcode, frame.data)
                else:
                    ws.opcode, ws.fragments = frame.opcode, [frame.data]
            elif frame.opcode is Opcode.CONT:
                ws.fragments.append(frame.data)
                if frame.fin:
                    message, ws.fragments = b"".join(ws.fragments), []
                    self.on_message(c, ws, ws.opcode, message)
            # PING, PONG, CLOSE: the protocol has answered them already.
        return self.flush(c, ws)

    def on_message(self, c: gnetpy.Conn, ws: WebSocket, opcode: Opcode, data: bytes) -> None:
        if ws.protocol.state is not State.OPEN:   # a message behind a close frame we sent: dropped
            return
        if opcode is Opcode.BINARY:
            ws.protocol.send_binary(data)
            return
        try:
            data.decode()
        except UnicodeDecodeError:
            ws.protocol.fail(CloseCode.INVALID_DATA, "text message is not UTF-8")
            return
        if data.startswith(BROADCAST):
            self.broadcast(c, data)
        else:
            ws.protocol.send_text(data)

    def broadcast(self, sender: gnetpy.Conn, data: bytes) -> None:
        """``data`` as a text message to every open WebSocket connection of the sender's loop."""
        for peer in list(self.peers.get(sender.event_loop, ())):
            ws = peer.context
            if ws.protocol.state is State.OPEN:
                ws.protocol.send_text(data)
                if peer is not sender:   # the sender's own bytes go out when its callback returns
                    self.flush(peer, ws)

    @staticmethod
    def flush(c: gnetpy.Conn, ws: WebSocket) -> gnetpy.Action | None:
        """Write what the protocol has to send; ``Action.CLOSE`` when it asks to end the TCP connection."""
        eof = False
        for data in ws.protocol.data_to_send():
            if data:
                c.write(data)
            else:   # SEND_EOF: the close handshake is done (or the connection failed)
                eof = True
        return gnetpy.Action.CLOSE if eof else None
