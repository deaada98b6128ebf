"""``Engine.stats()`` in Prometheus' text exposition format (version 0.0.4): the page ``metrics_addr`` serves.

    # HELP gnetpy_bytes_received_total Bytes read from the sockets (TLS records and PROXY headers included).
    # TYPE gnetpy_bytes_received_total counter
    gnetpy_bytes_received_total{worker="0"} 1048576
    gnetpy_bytes_received_total{worker="1"} 524288

One family per figure of ``stats.WorkerStats``, one sample per worker: the label
``worker`` is the worker process's index, or the event loop's with threads; closes
carry a ``cause`` too.  Counters end in ``_total``; ``gnetpy_connections_open`` is a
gauge.  The engine-wide sums are not repeated as samples of their own: beside the
per-worker ones, PromQL's ``sum()`` would count them twice -- it sums the workers
itself (``sum(rate(gnetpy_bytes_received_total[1m]))``).
"""

from __future__ import annotations

from .stats import Closes, Stats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (field of stats.WorkerStats, metric, type, help).  The help texts are constants with no
# backslash or line feed: nothing to escape.
FAMILIES = (
    ("connections_open", "gnetpy_connections_open", "gauge",
     "Connections open now, accepted ones still being handed to their worker included."),
    ("accepted", "gnetpy_connections_accepted_total", "counter", "Connections accepted from the listeners."),
    ("closed", "gnetpy_connections_closed_total", "counter",
     "Stream connections closed, by cause (what the error on_close got says)."),
    ("bytes_received", "gnetpy_bytes_received_total", "counter",
     "Bytes read from the sockets (TLS records and PROXY headers included)."),
    ("bytes_sent", "gnetpy_bytes_sent_total", "counter", "Bytes the kernel took from the sockets."),
    ("backpressure_pauses", "gnetpy_backpressure_pauses_total", "counter",
     "Times reading paused because a connection's outbound queue passed write_high_water."),
    ("tls_handshakes", "gnetpy_tls_handshakes_total", "counter", "TLS handshakes completed."),
    ("tls_failures", "gnetpy_tls_handshake_failures_total", "counter", "TLS handshakes that failed."),
    ("datagrams_received", "gnetpy_datagrams_received_total", "counter", "UDP datagrams received."),
    ("datagrams_sent", "gnetpy_datagrams_sent_total", "counter", "UDP datagrams sent."),
    ("datagrams_dropped", "gnetpy_datagrams_dropped_total", "counter",
     "UDP datagrams dropped: the send queue was full (max_udp_queued), or the datagram could not go."),
    ("proxy_refused", "gnetpy_proxy_headers_refused_total", "counter",
     "Connections closed for their PROXY header: none in time, a bad one, or from an untrusted peer."),
    ("worker_restarts", "gnetpy_worker_restarts_total", "counter",
     "Times the worker was replaced after it died (worker processes only)."),
)


def render(stats: Stats) -> str:
    """The page: every family, with a sample per worker of ``stats``."""
    lines: list[str] = []
    for field, name, kind, text in FAMILIES:
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        for worker in stats.workers:
            value = getattr(worker, field)
            label = f'worker="{worker.index}"'
            if isinstance(value, Closes):
                lines.extend(f'{name}{{{label},cause="{cause}"}} {n}' for cause, n in value.items())
            else:
                lines.append(f"{name}{{{label}}} {value}")
    return "\n".join(lines) + "\n"


__all__ = ["CONTENT_TYPE", "FAMILIES", "render"]
