/*
 * tlsload: TLS load generator for echo servers (gnetpy's benchmark suite, W10 and W11).
 *
 * loadgen.c's sibling for TLS: one thread, one epoll set, non-blocking
 * sockets, and non-blocking OpenSSL on top (SSL_connect/SSL_read/SSL_write,
 * each SSL_ERROR_WANT_READ / SSL_ERROR_WANT_WRITE waited for with epoll).
 * The client speaks TLS 1.3 only, with the one cipher suite
 * TLS_AES_128_GCM_SHA256 (AES-GCM), and does not verify the server's
 * certificate (the benchmark's is a throwaway self-signed one).  Sessions
 * are never resumed: no session is kept or offered (SSL_OP_NO_TICKET, the
 * tickets a TLS 1.3 server sends anyway are counted and dropped), so every
 * connection does a full handshake; a connection that reports a resumed
 * session fails the run.
 *
 * The plaintext is loadgen.c's byte stream: its content is a function of
 * (connection, stream offset), so each echoed byte is checked: a lost,
 * duplicated, reordered or corrupted byte is reported with its connection
 * and offset, and the run exits non-zero.
 *
 * Load mode (W10): N connections, each a TLS handshake and a 16-byte echo
 * that proves it is served, then DEPTH messages of SIZE bytes in flight for
 * a warm-up and a measured window; reports messages/s, MB/s (plaintext), the
 * round-trip p50/p99 and, with --pid, the server's user and system CPU time
 * per message over the measured window (the sum over PID and all its
 * descendants, from /proc/N/stat, as loadgen does).
 *
 * Churn mode (--churn, W11): N clients each loop over connect, a full TLS
 * 1.3 handshake, one SIZE-byte ping-pong, close_notify and close (the client
 * closes first, after the whole echo is back; it does not wait for the
 * server's close_notify); reports connections (= full handshakes) per
 * second, the connect->handshake->echo->close time p50/p99 and the server's
 * CPU time per connection.
 *
 * Every wait is bounded: each batch of connection setup by BATCH_TIMEOUT_S,
 * and any connection with bytes (or a handshake) outstanding and no progress
 * for --io-timeout seconds fails the run, whatever the phase.
 *
 * Output: one JSON object on stdout, the fields loadgen prints for load and
 * churn mode plus the TLS ones.  Errors: one line on stderr, exit 1.
 */
#define _GNU_SOURCE
#define LOAD_PROG "tlsload"
#include <getopt.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>

#include "loadcommon.h"   /* with loadgen.c: histogram, pattern, server CPU, churn ports, ... */

#define RECV_CHUNK (64 * 1024)    /* plaintext taken per SSL_read (a record is at most 16 KiB) */
#define TICK_NS 100000000ull      /* the stall check runs every 100 ms */
#define CIPHER_SUITE "TLS_AES_128_GCM_SHA256"
#define SNI_NAME "localhost"

enum conn_state { CONNECTING, TLS_HANDSHAKE, ECHO_CHECK, READY };

/* One connection (load mode), or one client slot reused by each of its
 * successive connections (churn mode). */
struct conn {
    int fd;
    int idx;
    SSL *ssl;
    enum conn_state state;
    uint32_t events;            /* registered with epoll */
    uint64_t seq;               /* churn: connection number over all clients */
    uint64_t phase_shift;       /* where this connection's stream starts in the pattern */
    uint64_t queued;            /* stream bytes issued */
    uint64_t sent;              /* stream bytes SSL_write accepted */
    uint64_t recvd;             /* stream bytes echoed and verified */
    size_t retry_len;           /* an SSL_write to repeat with the same length (WANT_*), or 0 */
    uint64_t started_ns;        /* churn: before socket() */
    uint64_t last_progress_ns;  /* connected, a handshake step, or bytes back */
    uint64_t *issued_ns;        /* load: ring of DEPTH send times */
};

struct options {
    const char *tcp;
    int churn;
    int src_addrs;
    int conns;
    size_t size;
    unsigned depth;
    double duration;
    double warmup;
    double io_timeout;
    long pid;
    int batch;
};

static struct options opt = {
    .conns = 50, .size = 64, .depth = 1, .duration = 5.0, .warmup = 1.0, .io_timeout = 10.0,
    .batch = 64, .src_addrs = 1,
};

static struct {
    enum phase phase;
    int epfd;
    SSL_CTX *ctx;
    struct conn *conns;
    uint64_t *issued_slab;
    uint64_t next_seq;
    unsigned char *pattern;
    size_t pattern_len;
    unsigned char *rbuf;
    int ready;
    uint64_t measured_msgs;
    uint64_t tickets, measured_tickets;   /* NewSessionTicket messages received (and dropped) */
    uint64_t hist[HIST_BUCKETS];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *version;                  /* what the first connection negotiated */
    const char *cipher;
} g;

/* The stream's bytes from `offset` on (loadcommon.h's pattern). */
static const unsigned char *pattern_at(const struct conn *c, uint64_t offset)
{
    return g.pattern + (offset + c->phase_shift) % PATTERN_PERIOD;
}

/* ---- TLS ---------------------------------------------------------------- */

/* OpenSSL's reasons for the last failure, drained from its error queue. */
static const char *ssl_errors(void)
{
    static char buf[512];
    size_t used = 0;
    unsigned long e;
    buf[0] = '\0';
    while ((e = ERR_get_error()) != 0 && used < sizeof buf - 2) {
        char one[256];
        ERR_error_string_n(e, one, sizeof one);
        used += (size_t)snprintf(buf + used, sizeof buf - used, "%s%s", used ? "; " : "", one);
    }
    return used ? buf : "no OpenSSL error queued";
}

/* A TLS 1.3 NewSessionTicket: counted, never kept (returning 0 frees it). */
static int on_new_session(SSL *ssl, SSL_SESSION *session)
{
    (void)ssl;
    (void)session;
    g.tickets++;
    if (g.phase == MEASURE)
        g.measured_tickets++;
    return 0;
}

/* No chain building either (X509_verify_cert): the certificate is taken as it is.  The
 * server's CertificateVerify signature is still checked: that is part of the handshake. */
static int accept_any_chain(X509_STORE_CTX *store, void *arg)
{
    (void)store;
    (void)arg;
    return 1;
}

static void tls_init(void)
{
    g.ctx = SSL_CTX_new(TLS_client_method());
    if (!g.ctx)
        fail("SSL_CTX_new: %s", ssl_errors());
    if (!SSL_CTX_set_min_proto_version(g.ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(g.ctx, TLS1_3_VERSION))
        fail("cannot restrict the client to TLS 1.3: %s", ssl_errors());
    if (!SSL_CTX_set_ciphersuites(g.ctx, CIPHER_SUITE))
        fail("SSL_CTX_set_ciphersuites(%s): %s", CIPHER_SUITE, ssl_errors());
    SSL_CTX_set_verify(g.ctx, SSL_VERIFY_NONE, NULL);   /* a throwaway self-signed certificate */
    SSL_CTX_set_cert_verify_callback(g.ctx, accept_any_chain, NULL);
    SSL_CTX_set_options(g.ctx, SSL_OP_NO_TICKET);
    /* No session is stored or offered: the callback only counts the server's tickets. */
    SSL_CTX_set_session_cache_mode(g.ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(g.ctx, on_new_session);
    /* A write that must be repeated may be repeated from the same offset with more
     * bytes queued behind it; partial writes let a full socket stop mid-stream. */
    SSL_CTX_set_mode(g.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* One read() takes all the socket holds, not a record header and then its body. */
    SSL_CTX_set_read_ahead(g.ctx, 1);
}

/* ---- connections -------------------------------------------------------- */

static const char *conn_name(const struct conn *c)
{
    static char buf[96];
    if (opt.churn)
        snprintf(buf, sizeof buf, "connection %llu (client %d)", (unsigned long long)c->seq, c->idx);
    else
        snprintf(buf, sizeof buf, "connection %d", c->idx);
    return buf;
}

static void watch(struct conn *c, int op, uint32_t events)
{
    if (op == EPOLL_CTL_MOD && events == c->events)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(g.epfd, op, c->fd, &ev) < 0)
        fail("%s: epoll_ctl: %s", conn_name(c), strerror(errno));
    c->events = events;
}

static void no_port(const struct conn *c, int err)
{
    fail_no_port(conn_name(c), err, ip_local_ports(), opt.src_addrs, "");
}

/* socket() and a non-blocking connect(); the TLS handshake starts once it is connected. */
static void open_conn(struct conn *c)
{
    uint64_t now = now_ns();
    if (opt.churn) {
        c->seq = g.next_seq++;
        c->phase_shift = (c->seq * 7919u + 1) % PATTERN_PERIOD;
        c->queued = c->sent = c->recvd = 0;
        c->retry_len = 0;
        c->started_ns = now;
    }
    c->last_progress_ns = now;
    c->fd = socket(g.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        fail("%s: socket: %s", conn_name(c), strerror(errno));
    int err = opt.src_addrs > 1 ? bind_source(c->fd, c->seq, c->idx, opt.src_addrs) : 0;
    if (err)
        no_port(c, err);
    if (connect(c->fd, (struct sockaddr *)&g.addr, g.addrlen) < 0 && errno != EINPROGRESS) {
        if (errno == EADDRNOTAVAIL)
            no_port(c, errno);
        fail("%s: connect: %s%s", conn_name(c), strerror(errno),
             errno == EAGAIN ? " (the server's accept backlog is full)" : "");
    }
    c->state = CONNECTING;
    watch(c, EPOLL_CTL_ADD, EPOLLOUT);
}

/* The SSL_ERROR_* of a failed call: WANT_READ/WANT_WRITE set *want (epoll events
 * to wait for) and return; anything else fails the run with `what`. */
static void ssl_wait(const struct conn *c, int rc, const char *what, uint32_t *want)
{
    int err = SSL_get_error(c->ssl, rc);
    if (err == SSL_ERROR_WANT_READ) {
        *want |= EPOLLIN;
        return;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
        *want |= EPOLLOUT;
        return;
    }
    const char *why;
    if (err == SSL_ERROR_ZERO_RETURN)
        why = "the server closed the TLS session (close_notify)";
    else if (err == SSL_ERROR_SYSCALL && !ERR_peek_error())
        why = errno ? strerror(errno) : "unexpected end of file";
    else
        why = ssl_errors();   /* OpenSSL 3 reports an end of file without close_notify here */
    fail("%s: %s failed at stream offset %llu (%llu bytes sent, %llu not echoed): %s", conn_name(c),
         what, (unsigned long long)c->recvd, (unsigned long long)c->sent,
         (unsigned long long)(c->sent - c->recvd), why);
}

static void report_mismatch(const struct conn *c, const unsigned char *got, size_t n)
{
    const unsigned char *want = pattern_at(c, c->recvd);
    size_t i = 0;
    while (i < n && got[i] == want[i])
        i++;
    uint64_t off = c->recvd + i;
    if (opt.churn)
        fail("%s: echo mismatch at byte %llu of %zu: expected 0x%02x, got 0x%02x", conn_name(c),
             (unsigned long long)off, opt.size, want[i], got[i]);
    if (off < HANDSHAKE_BYTES)
        fail("%s: echo mismatch at stream offset %llu (handshake byte %llu): expected 0x%02x, "
             "got 0x%02x", conn_name(c), (unsigned long long)off, (unsigned long long)off,
             want[i], got[i]);
    fail("%s: echo mismatch at stream offset %llu (message %llu, byte %llu): expected 0x%02x, "
         "got 0x%02x", conn_name(c), (unsigned long long)off,
         (unsigned long long)((off - HANDSHAKE_BYTES) / opt.size),
         (unsigned long long)((off - HANDSHAKE_BYTES) % opt.size), want[i], got[i]);
}

static void on_connected(struct conn *c)
{
    int err = connect_error(c->fd);
    if (err)
        fail("%s: connect: %s", conn_name(c), strerror(err));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->ssl = SSL_new(g.ctx);
    if (!c->ssl || !SSL_set_fd(c->ssl, c->fd))
        fail("%s: SSL_new/SSL_set_fd: %s", conn_name(c), ssl_errors());
    SSL_set_tlsext_host_name(c->ssl, SNI_NAME);
    SSL_set_connect_state(c->ssl);
    c->state = TLS_HANDSHAKE;
    c->last_progress_ns = now_ns();
}

/* The handshake is done: check what was negotiated, then start the echo. */
static void on_handshake_done(struct conn *c)
{
    if (SSL_version(c->ssl) != TLS1_3_VERSION)
        fail("%s: negotiated %s, not TLS 1.3", conn_name(c), SSL_get_version(c->ssl));
    const char *cipher = SSL_get_cipher_name(c->ssl);
    if (!cipher || strcmp(cipher, CIPHER_SUITE) != 0)
        fail("%s: negotiated cipher %s, not %s", conn_name(c), cipher ? cipher : "(none)", CIPHER_SUITE);
    if (SSL_session_reused(c->ssl))
        fail("%s: the TLS session was resumed: every connection must do a full handshake",
             conn_name(c));
    if (!g.version) {
        g.version = SSL_get_version(c->ssl);
        g.cipher = cipher;
    }
    c->state = opt.churn ? READY : ECHO_CHECK;
    c->queued = opt.churn ? opt.size : HANDSHAKE_BYTES;
}

/* Load mode: round trips completed by the bytes now verified; issue as many new messages. */
static void on_messages_done(struct conn *c, uint64_t before, uint64_t now)
{
    uint64_t done_before = (before - HANDSHAKE_BYTES) / opt.size;
    uint64_t done_now = (c->recvd - HANDSHAKE_BYTES) / opt.size;
    for (uint64_t m = done_before; m < done_now; m++) {
        uint64_t *slot = &c->issued_ns[m % opt.depth];
        if (g.phase == MEASURE) {
            g.hist[hist_index(now - *slot)]++;
            g.measured_msgs++;
        }
        *slot = now;
        c->queued += opt.size;
    }
}

/* Churn mode: the whole echo is back: close_notify (not waiting for the server's), close,
 * count the connection, open the next one. */
static void churn_done(struct conn *c)
{
    SSL_shutdown(c->ssl);   /* queues and sends our close_notify; 0 = the peer's not seen yet */
    ERR_clear_error();
    SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->fd);           /* the client closes first: TIME_WAIT is ours */
    c->fd = -1;
    uint64_t now = now_ns();
    if (g.phase == MEASURE) {
        g.hist[hist_index(now - c->started_ns)]++;
        g.measured_msgs++;
    }
    open_conn(c);
}

/* Bytes echoed: verify them and move the protocol on.  Returns 0 once a churn
 * connection is finished (and replaced), 1 otherwise. */
static int on_plaintext(struct conn *c, size_t n)
{
    if (c->recvd + n > c->sent)
        fail("%s: received %llu bytes more than sent, at stream offset %llu", conn_name(c),
             (unsigned long long)(c->recvd + n - c->sent), (unsigned long long)c->sent);
    if (memcmp(g.rbuf, pattern_at(c, c->recvd), n) != 0)
        report_mismatch(c, g.rbuf, n);
    uint64_t before = c->recvd, now = now_ns();
    c->recvd += n;
    c->last_progress_ns = now;
    if (opt.churn) {
        if (c->recvd == opt.size) {
            churn_done(c);
            return 0;
        }
    } else if (c->state == ECHO_CHECK) {
        if (c->recvd == HANDSHAKE_BYTES) {
            c->state = READY;
            g.ready++;
        }
    } else {
        on_messages_done(c, before, now);
    }
    return 1;
}

/* Drive a connection as far as it goes without blocking: the handshake, then
 * writing what is issued and reading what is echoed, until OpenSSL wants the
 * socket; then wait for what it wants (and always for reads once open).
 * `readable`: the socket may have bytes (the event said so).  Reads go on
 * only while OpenSSL holds more (read-ahead): an SSL_read that would only
 * find the socket empty costs a read() syscall per message for nothing, and
 * epoll (level-triggered) reports anything that comes later. */
static void drive(struct conn *c, int readable)
{
    uint32_t want = 0;
    if (c->state == TLS_HANDSHAKE) {
        ERR_clear_error();
        int rc = SSL_do_handshake(c->ssl);
        if (rc != 1) {
            ssl_wait(c, rc, "TLS handshake", &want);
            c->last_progress_ns = now_ns();
            watch(c, EPOLL_CTL_MOD, want);
            return;
        }
        on_handshake_done(c);
    }
    for (;;) {
        while (c->sent < c->queued) {
            size_t len = c->retry_len;
            if (!len) {
                uint64_t left = c->queued - c->sent;
                len = left > RECV_CHUNK ? RECV_CHUNK : (size_t)left;
            }
            ERR_clear_error();
            int n = SSL_write(c->ssl, pattern_at(c, c->sent), (int)len);
            if (n <= 0) {
                c->retry_len = len;   /* repeated with the same length */
                ssl_wait(c, n, "SSL_write", &want);
                break;
            }
            c->retry_len = 0;
            c->sent += (uint64_t)n;
        }
        if (!readable && !SSL_has_pending(c->ssl))
            break;
        readable = 0;
        ERR_clear_error();
        int n = SSL_read(c->ssl, g.rbuf, RECV_CHUNK);
        if (n <= 0) {
            ssl_wait(c, n, "SSL_read", &want);
            break;
        }
        if (!on_plaintext(c, (size_t)n))
            return;               /* a churn connection finished; its successor is registered */
        /* Round again: write what the echo issued, read what OpenSSL still holds. */
    }
    watch(c, EPOLL_CTL_MOD, want | EPOLLIN);
}

static void on_event(struct conn *c, uint32_t events)
{
    if (c->state == CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        on_connected(c);
    }
    drive(c, (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0);
}

/* Any connection stuck for --io-timeout: connecting, in its handshake, or with
 * bytes outstanding and none coming back.  Fails the run. */
static void check_stalls(uint64_t now)
{
    uint64_t limit = (uint64_t)(opt.io_timeout * 1e9);
    for (int i = 0; i < opt.conns; i++) {
        const struct conn *c = &g.conns[i];
        if (c->fd < 0)
            continue;
        int waiting = c->state == CONNECTING || c->state == TLS_HANDSHAKE || c->sent > c->recvd ||
                      c->queued > c->sent;
        if (!waiting || now - c->last_progress_ns < limit)
            continue;
        const char *where = c->state == CONNECTING ? "still connecting"
                            : c->state == TLS_HANDSHAKE ? "TLS handshake not finished"
                            : c->recvd == c->sent ? "bytes issued but not written"
                            : "no echo";
        fail("%s: %s after %.2f s with %llu bytes outstanding at stream offset %llu (server not "
             "accepting, stalled or lost bytes)", conn_name(c), where,
             (double)(now - c->last_progress_ns) / 1e9, (unsigned long long)(c->sent - c->recvd),
             (unsigned long long)c->recvd);
    }
}

/* Dispatch events until `deadline`, checking for stalls every TICK_NS. */
static void poll_until(uint64_t deadline, int (*done)(void))
{
    struct epoll_event evs[MAX_EVENTS];
    uint64_t now, next_tick = now_ns() + TICK_NS;
    while ((now = now_ns()) < deadline && !(done && done())) {
        int n = epoll_wait(g.epfd, evs, MAX_EVENTS, ms_until(next_tick < deadline ? next_tick : deadline));
        if (n < 0 && errno != EINTR)
            fail("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++)
            on_event(evs[i].data.ptr, evs[i].events);
        if ((now = now_ns()) >= next_tick) {
            check_stalls(now);
            next_tick = now + TICK_NS;
        }
    }
}

static int batch_end;

static int batch_ready(void)
{
    return g.ready >= batch_end;
}

/* Load mode: connect in batches, each connection's handshake and echo done before the next batch. */
static void setup_connections(void)
{
    for (int start = 0; start < opt.conns; start += opt.batch) {
        batch_end = start + opt.batch < opt.conns ? start + opt.batch : opt.conns;
        for (int i = start; i < batch_end; i++)
            open_conn(&g.conns[i]);
        uint64_t deadline = now_ns() + (uint64_t)(BATCH_TIMEOUT_S * 1e9);
        poll_until(deadline, batch_ready);
        if (g.ready < batch_end)
            fail("connection setup timed out: %d of connections %d..%d not served after %.0f s "
                 "(server not accepting, not completing TLS handshakes or not echoing?)",
                 batch_end - g.ready, start, batch_end - 1, BATCH_TIMEOUT_S);
    }
}

/* ---- the measured window ------------------------------------------------- */

static void warm_up_and_measure(uint64_t start, struct window *w)
{
    uint64_t measure_at = start + (uint64_t)(opt.warmup * 1e9);
    g.phase = WARMUP;
    poll_until(measure_at, NULL);
    g.phase = MEASURE;
    window_open(w, opt.pid);
    poll_until(w->t0 + (uint64_t)(opt.duration * 1e9), NULL);
    window_close(w, opt.pid);
}

static void print_tls(void)
{
    printf("\"tls_version\": \"%s\", \"cipher\": \"%s\", \"session_resumption\": false, ",
           g.version ? g.version : "", g.cipher ? g.cipher : "");
}

/* The window's place in time (no --measure-at here: never late) and the server's CPU. */
static void print_window(const struct window *w, const char *unit, double count)
{
    printf(", \"window_start_unix\": %.6f, \"window_late_s\": 0.0", w->unix0);
    print_server_cpu(w, opt.pid, unit, count);
}

static void run_load(uint64_t t_start)
{
    setup_connections();
    double setup_s = (double)(now_ns() - t_start) / 1e9;
    g.phase = WARMUP;
    uint64_t now = now_ns();
    for (int i = 0; i < opt.conns; i++) {
        struct conn *c = &g.conns[i];
        for (unsigned m = 0; m < opt.depth; m++)
            c->issued_ns[m] = now;
        c->queued += (uint64_t)opt.depth * opt.size;
        drive(c, 0);
    }
    struct window w = {0};
    warm_up_and_measure(now, &w);
    double secs = window_s(&w);
    for (int i = 0; i < opt.conns; i++) {   /* no echo in the whole window: the server stalled it */
        const struct conn *c = &g.conns[i];
        if (c->sent > c->recvd && c->last_progress_ns < w.t0)
            fail("%s: no echo for %.2f s with %llu bytes outstanding at stream offset %llu (server "
                 "stalled or lost bytes)", conn_name(c), (double)(w.t1 - c->last_progress_ns) / 1e9,
                 (unsigned long long)(c->sent - c->recvd), (unsigned long long)c->recvd);
    }
    if (g.measured_msgs == 0)
        fail("no message completed a round trip in the %.2f s measured window", secs);
    double msgs = (double)g.measured_msgs;
    printf("{\"mode\": \"tls\", ");
    print_tls();
    printf("\"connections\": %d, \"msg_size\": %zu, \"depth\": %u, "
           "\"warmup_s\": %.3f, \"duration_s\": %.6f, \"setup_s\": %.3f, "
           "\"messages\": %llu, \"msgs_per_s\": %.1f, \"mb_per_s\": %.3f, "
           "\"rtt_p50_us\": %.2f, \"rtt_p99_us\": %.2f, \"tickets\": %llu, \"loadgen_cpu_util\": %.3f",
           opt.conns, opt.size, opt.depth, opt.warmup, secs, setup_s,
           (unsigned long long)g.measured_msgs, msgs / secs, msgs * (double)opt.size / secs / 1e6,
           hist_quantile_us(g.hist, 0.50), hist_quantile_us(g.hist, 0.99),
           (unsigned long long)g.tickets, (w.self1 - w.self0) / secs);
    print_window(&w, "msg", msgs);
    printf("}\n");
}

static void run_churn(void)
{
    g.phase = WARMUP;
    uint64_t start = now_ns();
    for (int i = 0; i < opt.conns; i++)
        open_conn(&g.conns[i]);
    struct window w = {0};
    warm_up_and_measure(start, &w);
    double secs = window_s(&w);
    for (int i = 0; i < opt.conns; i++) {   /* open for the whole window: the server stalled it */
        const struct conn *c = &g.conns[i];
        if (c->started_ns < w.t0)
            fail("%s: not finished after %.2f s, %s (server not accepting, stalled or lost bytes)",
                 conn_name(c), (double)(w.t1 - c->started_ns) / 1e9,
                 c->state == CONNECTING ? "still connecting"
                 : c->state == TLS_HANDSHAKE ? "TLS handshake not finished"
                 : c->recvd == 0 ? "no byte echoed" : "echo incomplete");
    }
    if (g.measured_msgs == 0)
        fail("no connection completed in the %.2f s measured window", secs);
    double conns = (double)g.measured_msgs;
    long ports = ip_local_ports();
    long reuse = read_sysctl("/proc/sys/net/ipv4/tcp_tw_reuse", NULL);
    printf("{\"mode\": \"tls-churn\", ");
    print_tls();
    printf("\"clients\": %d, \"msg_size\": %zu, \"warmup_s\": %.3f, \"duration_s\": %.6f, "
           "\"conns\": %llu, \"conns_per_s\": %.1f, \"handshakes\": %llu, \"handshakes_per_s\": %.1f, "
           "\"tickets_per_conn\": %.3f, \"rtt_p50_us\": %.2f, \"rtt_p99_us\": %.2f, \"src_addrs\": %d, ",
           opt.conns, opt.size, opt.warmup, secs, (unsigned long long)g.measured_msgs, conns / secs,
           (unsigned long long)g.measured_msgs, conns / secs, (double)g.measured_tickets / conns,
           hist_quantile_us(g.hist, 0.50), hist_quantile_us(g.hist, 0.99), opt.src_addrs);
    print_port_fields(ports, opt.src_addrs, reuse);
    printf("\"loadgen_cpu_util\": %.3f", (w.self1 - w.self0) / secs);
    print_window(&w, "conn", conns);
    printf("}\n");
}

/* ---- setup -------------------------------------------------------------- */

static void resolve_address(void)
{
    resolve_host_port("--tcp", opt.tcp, SOCK_STREAM, opt.src_addrs, &g.addr, &g.addrlen);
}

static void allocate(void)
{
    g.rbuf = malloc(RECV_CHUNK);
    g.conns = calloc((size_t)opt.conns, sizeof *g.conns);
    g.issued_slab = calloc((size_t)opt.conns * opt.depth, sizeof *g.issued_slab);
    if (!g.rbuf || !g.conns || !g.issued_slab)
        fail("out of memory for %d connections", opt.conns);
    for (int i = 0; i < opt.conns; i++) {
        g.conns[i].idx = i;
        g.conns[i].fd = -1;
        g.conns[i].phase_shift = ((uint64_t)i * 7919u) % PATTERN_PERIOD;
        g.conns[i].issued_ns = g.issued_slab + (size_t)i * opt.depth;
    }
    size_t inflight = HANDSHAKE_BYTES + (size_t)opt.depth * opt.size;
    g.pattern = pattern_new(inflight > RECV_CHUNK ? inflight : RECV_CHUNK, &g.pattern_len);
}

static void usage(FILE *f)
{
    fputs("usage: tlsload --tcp HOST:PORT [options]   (TLS 1.3, " CIPHER_SUITE ", no resumption)\n"
          "  --conns N         connections; clients with --churn (default 50)\n"
          "  --size BYTES      message size (default 64)\n"
          "  --depth K         messages in flight per connection (default 1; 1 with --churn)\n"
          "  --duration S      measured window, seconds (default 5)\n"
          "  --warmup S        warm-up before the window, seconds (default 1)\n"
          "  --pid PID         server pid: report the CPU time of it and all its descendants\n"
          "                    per message (per connection with --churn)\n"
          "  --batch N         connections set up at a time (default 64)\n"
          "  --churn           each client: connect, full TLS handshake, one SIZE-byte\n"
          "                    ping-pong, close_notify, close; repeat\n"
          "  --src-addrs K     churn: spread clients over source addresses 127.0.0.1..K\n"
          "  --io-timeout S    fail when a connection makes no progress for S seconds (default 10)\n",
          f);
}

static void parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"tcp", required_argument, 0, 't'},      {"conns", required_argument, 0, 'c'},
        {"size", required_argument, 0, 's'},     {"depth", required_argument, 0, 'd'},
        {"duration", required_argument, 0, 'D'}, {"warmup", required_argument, 0, 'w'},
        {"pid", required_argument, 0, 'p'},      {"batch", required_argument, 0, 'b'},
        {"churn", no_argument, 0, 'C'},          {"src-addrs", required_argument, 0, 'S'},
        {"io-timeout", required_argument, 0, 'T'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 't': opt.tcp = optarg; break;
        case 'c': opt.conns = (int)parse_long("--conns", optarg, 1); break;
        case 's': opt.size = (size_t)parse_long("--size", optarg, 1); break;
        case 'd': opt.depth = (unsigned)parse_long("--depth", optarg, 1); break;
        case 'D': opt.duration = parse_double("--duration", optarg, 0.001); break;
        case 'w': opt.warmup = parse_double("--warmup", optarg, 0.0); break;
        case 'p': opt.pid = parse_long("--pid", optarg, 1); break;
        case 'b': opt.batch = (int)parse_long("--batch", optarg, 1); break;
        case 'C': opt.churn = 1; break;
        case 'S': opt.src_addrs = (int)parse_long("--src-addrs", optarg, 1); break;
        case 'T': opt.io_timeout = parse_double("--io-timeout", optarg, 0.01); break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind != argc || !opt.tcp) {
        usage(stderr);
        exit(2);
    }
    if (opt.src_addrs > 1 && !opt.churn)
        fail("--src-addrs is for --churn");
    if (opt.src_addrs > MAX_SRC_ADDRS)
        fail("--src-addrs: at most %d (127.0.0.1..127.0.0.%d)", MAX_SRC_ADDRS, MAX_SRC_ADDRS);
    if (opt.churn && opt.depth != 1)
        fail("--churn sends one message per connection: --depth must be 1");
    if ((uint64_t)opt.size * opt.depth > MAX_INFLIGHT_BYTES)
        fail("--size x --depth is over %u bytes in flight per connection", MAX_INFLIGHT_BYTES);
}

int main(int argc, char **argv)
{
    uint64_t t_start = now_ns();
    parse_args(argc, argv);
    raise_nofile(opt.conns + 16, opt.conns);
    resolve_address();
    allocate();
    tls_init();
    g.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g.epfd < 0)
        fail("epoll_create1: %s", strerror(errno));
    if (opt.churn)
        run_churn();
    else
        run_load(t_start);
    return 0;
}
