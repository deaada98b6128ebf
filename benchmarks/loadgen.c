/*
 * loadgen: load generator for echo servers (gnetpy's benchmark suite).
 *
 * One thread, one epoll set, non-blocking sockets.  Every connection writes a
 * byte stream whose content is a function of (connection, stream offset), so
 * each echoed byte is checked: a lost, duplicated, reordered or corrupted byte
 * is reported with its connection and offset, and the run exits non-zero.
 *
 * Load mode: N connections each keep DEPTH messages of SIZE bytes in flight
 * for a warm-up and then a measured window; reports messages/s, MB/s, the
 * round-trip p50/p99 and, with --pid, the server's user and system CPU time
 * per message over the measured window: the sum over PID and all its
 * descendants (worker processes), from /proc/N/stat.
 *
 * Idle mode (--idle): opens N connections, proves each one is served with a
 * small echo, prints a report and holds them until stdin closes (or --hold
 * seconds, or SIGTERM/SIGINT) so the caller can measure server memory.
 *
 * Churn mode (--churn): N clients each loop over connect, one SIZE-byte
 * ping-pong, close (the client closes first, after the whole echo is back);
 * reports connections/s, the connect->echo->close time p50/p99 and the
 * server's CPU time per connection.  With --proxy v1|v2 each connection
 * begins with a PROXY header (HAProxy's protocol), as a load balancer in front
 * would send it, sent together with the message (MSG_MORE).
 *
 * Frames mode (--frames, with --tcp or --unix): load mode with each message a
 * length-prefixed frame, a 4-byte big-endian length and SIZE bytes of body, so
 * a server that echoes frame by frame (decoding, then writing each frame back)
 * can be measured; every echoed byte, header and body, is checked.  The
 * handshake is a frame too (a 12-byte body).  msgs/s are frames/s.
 *
 * UDP mode (--udp HOST:PORT): N connected UDP sockets each keep one SIZE-byte
 * datagram in flight; a datagram not echoed within --loss-timeout is counted
 * lost and replaced by one with a new sequence number.  Reports datagrams/s,
 * round-trip p50/p99, lost datagrams and the server's CPU time per datagram.
 *
 * Output: one JSON object on stdout.  Errors: one line on stderr, exit 1.
 */
#define _GNU_SOURCE
#define LOAD_PROG "loadgen"
#include <getopt.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/un.h>

#include "loadcommon.h"   /* with tlsload.c: histogram, pattern, server CPU, churn ports, ... */

#define RECV_CHUNK (256 * 1024)   /* one recv() takes everything queued */
#define UDP_HEADER 16             /* u32 magic, u32 socket, u64 sequence; pattern after */
#define UDP_MAGIC 0x4c475544u     /* "LGUD" */
#define UDP_MAX_SIZE 65507        /* the largest UDP payload over IPv4 */
#define FRAME_HEADER 4            /* --frames: a big-endian u32 body length before each body */
#define FRAMES_PATTERN_MAX (16u << 20)   /* --frames: bound on the framed pattern's period */

enum conn_state { CONNECTING, HANDSHAKE, READY };

struct conn {
    int fd;
    int idx;
    enum conn_state state;
    int want_out;               /* EPOLLOUT is registered */
    uint64_t phase_shift;       /* where this connection starts in the pattern (--frames:
                                   a whole number of frames) */
    uint64_t queued;            /* stream bytes the protocol has issued */
    uint64_t sent;              /* stream bytes written to the socket */
    uint64_t recvd;             /* stream bytes echoed back and verified */
    uint64_t last_progress_ns;  /* when bytes last came back */
    uint64_t *issued_ns;        /* ring of DEPTH send times, by message index */
};

/* Churn mode: one client slot, reused by each of its successive connections. */
enum churn_state { CH_CONNECTING, CH_ECHO };

struct churn {
    int fd;
    int idx;                    /* client slot */
    enum churn_state state;
    int want_out;
    uint64_t seq;               /* connection number, over all clients */
    uint64_t phase_shift;       /* where this connection's bytes start in the pattern */
    size_t sent, recvd;         /* bytes of the one message */
    size_t header_sent;         /* --proxy: bytes of the PROXY header written */
    uint64_t started_ns;        /* before socket() */
};

/* UDP mode: one connected socket with one datagram in flight. */
struct dgram {
    int fd;
    int idx;
    int unsent;                 /* the send found a full socket buffer: retry on a tick */
    uint64_t seq;               /* the datagram in flight */
    uint64_t sent_ns;
};

struct options {
    const char *tcp;
    const char *unix_path;
    const char *udp;
    int churn;
    const char *proxy;          /* --proxy: "v1" or "v2" (churn mode) */
    int frames;
    int src_addrs;
    double loss_timeout_ms;
    int conns;
    size_t size;
    unsigned depth;
    double duration;
    double warmup;
    double measure_at;                 /* Unix time the window starts at; 0 = after --warmup */
    long pid;
    int idle;
    double hold;
    int batch;
};

static struct options opt = {
    .conns = 50, .size = 64, .depth = 1, .duration = 5.0, .warmup = 1.0,
    .pid = 0, .idle = 0, .hold = -1.0, .batch = 64, .src_addrs = 1, .loss_timeout_ms = 200.0,
};

static struct {
    enum phase phase;
    int epfd;
    struct conn *conns;
    struct churn *clients;       /* churn mode */
    struct dgram *dgrams;        /* UDP mode */
    void (*on_event)(void *ptr, uint32_t events);
    uint64_t next_seq;           /* churn: connections opened so far */
    uint64_t lost, stale;        /* UDP: datagrams timed out in the window; late echoes */
    unsigned char *sbuf;         /* UDP: the datagram being built */
    unsigned char *expect;       /* UDP: the datagram expected back */
    uint64_t *issued_slab;
    unsigned char *pattern;      /* `period` bytes, then repeated slack */
    size_t pattern_len;
    size_t period;               /* PATTERN_PERIOD; --frames: a whole number of frames */
    size_t msg_bytes;            /* one message on the wire: SIZE, or the header + SIZE with --frames */
    unsigned char *handshakes;   /* --frames: each connection's 16-byte handshake frame */
    unsigned char *rbuf;
    int ready;                   /* connections past the handshake */
    uint64_t measured_msgs;
    uint64_t hist[HIST_BUCKETS];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int stdin_ready;             /* idle mode: the last poll saw stdin readable */
    volatile sig_atomic_t stop;
} g;

/* ---- byte pattern ------------------------------------------------------- */

/* The plain pattern (loadcommon.h's), PATTERN_PERIOD bytes then `slack`. */
static void pattern_init(size_t slack)
{
    g.period = PATTERN_PERIOD;
    g.pattern = pattern_new(slack, &g.pattern_len);
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* --frames: the stream is frames, FRAME_HEADER bytes of length (SIZE, big
 * endian) then SIZE bytes of body, body j being the plain pattern from
 * j * SIZE.  The framed pattern holds K whole frames (K = PATTERN_PERIOD, a
 * prime, unless that is over FRAMES_PATTERN_MAX bytes: then as many as fit,
 * at least 16), then slack, so any
 * window of the stream is still one contiguous send()/memcmp().  Connection i
 * starts at frame (i * 7919) mod K, after its handshake frame: a 12-byte body
 * from the plain pattern at a phase of its own. */
static void frames_pattern_init(size_t slack)
{
    pattern_init(opt.size > HANDSHAKE_BYTES ? opt.size : HANDSHAKE_BYTES);
    unsigned char *plain = g.pattern;
    size_t frame = g.msg_bytes;
    size_t k = PATTERN_PERIOD;
    if ((uint64_t)k * frame > FRAMES_PATTERN_MAX)
        k = FRAMES_PATTERN_MAX / frame > 16 ? FRAMES_PATTERN_MAX / frame : 16;
    g.period = k * frame;
    g.pattern_len = g.period + slack;
    g.pattern = malloc(g.pattern_len);
    g.handshakes = malloc((size_t)opt.conns * HANDSHAKE_BYTES);
    if (!g.pattern || !g.handshakes)
        fail("out of memory for the %zu-byte framed pattern", g.pattern_len);
    for (size_t j = 0; j < k; j++) {
        unsigned char *f = g.pattern + j * frame;
        put_be32(f, (uint32_t)opt.size);
        memcpy(f + FRAME_HEADER, plain + (j * opt.size) % PATTERN_PERIOD, opt.size);
    }
    for (size_t i = g.period; i < g.pattern_len; i++)
        g.pattern[i] = g.pattern[i - g.period];
    for (int i = 0; i < opt.conns; i++) {
        unsigned char *h = g.handshakes + (size_t)i * HANDSHAKE_BYTES;
        put_be32(h, HANDSHAKE_BYTES - FRAME_HEADER);
        memcpy(h + FRAME_HEADER, plain + ((uint64_t)i * 7919u + 1) % PATTERN_PERIOD,
               HANDSHAKE_BYTES - FRAME_HEADER);
        g.conns[i].phase_shift = ((uint64_t)i * 7919u) % k * frame;
    }
    free(plain);
}

/* The stream's bytes from `offset` on.  A window never spans the handshake's
 * end: the handshake is sent and echoed before any message is issued. */
static const unsigned char *pattern_at(const struct conn *c, uint64_t offset)
{
    if (opt.frames) {
        if (offset < HANDSHAKE_BYTES)
            return g.handshakes + (size_t)c->idx * HANDSHAKE_BYTES + offset;
        offset -= HANDSHAKE_BYTES;
    }
    return g.pattern + (offset + c->phase_shift) % g.period;
}

/* ---- connections -------------------------------------------------------- */

static void set_events(struct conn *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(g.epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        fail("connection %d: epoll_ctl: %s", c->idx, strerror(errno));
    c->want_out = (events & EPOLLOUT) != 0;
}

/* Write what has been issued but not yet sent; wait for EPOLLOUT only while
 * something is left, so a full socket buffer costs no busy loop. */
static void flush_send(struct conn *c)
{
    while (c->sent < c->queued) {
        size_t len = (size_t)(c->queued - c->sent);
        if (len > g.pattern_len - g.period)
            len = g.pattern_len - g.period;
        ssize_t n = send(c->fd, pattern_at(c, c->sent), len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            fail("connection %d: send at stream offset %llu: %s", c->idx,
                 (unsigned long long)c->sent, strerror(errno));
        }
        c->sent += (uint64_t)n;
    }
    int need_out = c->sent < c->queued;
    if (need_out != c->want_out)
        set_events(c, need_out ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static void open_conn(struct conn *c)
{
    c->fd = socket(g.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        fail("connection %d: socket: %s", c->idx, strerror(errno));
    if (connect(c->fd, (struct sockaddr *)&g.addr, g.addrlen) < 0 && errno != EINPROGRESS)
        fail("connection %d: connect: %s", c->idx, strerror(errno));
    c->state = CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        fail("connection %d: epoll_ctl: %s", c->idx, strerror(errno));
    c->want_out = 1;
}

static void on_connected(struct conn *c)
{
    int err = connect_error(c->fd);
    if (err)
        fail("connection %d: connect: %s", c->idx, strerror(err));
    if (g.addr.ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    c->state = HANDSHAKE;
    c->queued = HANDSHAKE_BYTES;
    flush_send(c);
}

/* Round trips completed by the bytes now verified: record them and issue
 * the same number of new messages, so DEPTH stay in flight. */
static void on_messages_done(struct conn *c, uint64_t before, uint64_t now)
{
    uint64_t done_before = (before - HANDSHAKE_BYTES) / g.msg_bytes;
    uint64_t done_now = (c->recvd - HANDSHAKE_BYTES) / g.msg_bytes;
    for (uint64_t m = done_before; m < done_now; m++) {
        uint64_t *slot = &c->issued_ns[m % opt.depth];
        if (g.phase == MEASURE) {
            g.hist[hist_index(now - *slot)]++;
            g.measured_msgs++;
        }
        *slot = now;  /* message m + depth reuses the slot of message m */
        c->queued += g.msg_bytes;
    }
    if (done_now != done_before)
        flush_send(c);
}

static void report_mismatch(const struct conn *c, const unsigned char *got, size_t n)
{
    const unsigned char *want = pattern_at(c, c->recvd);
    size_t i = 0;
    while (i < n && got[i] == want[i])
        i++;
    uint64_t off = c->recvd + i;
    if (off < HANDSHAKE_BYTES)
        fail("connection %d: echo mismatch at stream offset %llu (handshake byte %llu): "
             "expected 0x%02x, got 0x%02x", c->idx, (unsigned long long)off,
             (unsigned long long)off, want[i], got[i]);
    if (opt.frames) {
        uint64_t at = (off - HANDSHAKE_BYTES) % g.msg_bytes;
        int header = at < FRAME_HEADER;
        fail("connection %d: echo mismatch at stream offset %llu (frame %llu, %s byte %llu): "
             "expected 0x%02x, got 0x%02x", c->idx, (unsigned long long)off,
             (unsigned long long)((off - HANDSHAKE_BYTES) / g.msg_bytes), header ? "header" : "body",
             (unsigned long long)(header ? at : at - FRAME_HEADER), want[i], got[i]);
    }
    fail("connection %d: echo mismatch at stream offset %llu (message %llu, byte %llu): "
         "expected 0x%02x, got 0x%02x", c->idx, (unsigned long long)off,
         (unsigned long long)((off - HANDSHAKE_BYTES) / opt.size),
         (unsigned long long)((off - HANDSHAKE_BYTES) % opt.size), want[i], got[i]);
}

static void on_readable(struct conn *c)
{
    ssize_t n = recv(c->fd, g.rbuf, RECV_CHUNK, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        fail("connection %d: recv at stream offset %llu: %s", c->idx,
             (unsigned long long)c->recvd, strerror(errno));
    }
    if (n == 0)
        fail("connection %d: server closed the connection at stream offset %llu "
             "(%llu bytes sent, %llu not echoed)", c->idx, (unsigned long long)c->recvd,
             (unsigned long long)c->sent, (unsigned long long)(c->sent - c->recvd));
    if (c->recvd + (uint64_t)n > c->sent)
        fail("connection %d: received %llu bytes more than sent, at stream offset %llu",
             c->idx, (unsigned long long)(c->recvd + (uint64_t)n - c->sent),
             (unsigned long long)c->sent);
    if (memcmp(g.rbuf, pattern_at(c, c->recvd), (size_t)n) != 0)
        report_mismatch(c, g.rbuf, (size_t)n);

    uint64_t before = c->recvd, now = now_ns();
    c->recvd += (uint64_t)n;
    c->last_progress_ns = now;
    if (c->state == HANDSHAKE && c->recvd == HANDSHAKE_BYTES) {
        c->state = READY;
        g.ready++;
    } else if (c->state == READY) {
        on_messages_done(c, before, now);
    }
}

static void on_event(void *ptr, uint32_t events)
{
    struct conn *c = ptr;
    if (c->state == CONNECTING) {
        on_connected(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(c);
    if ((events & EPOLLOUT) && c->want_out)
        flush_send(c);
}

/* Wait for and dispatch one batch of events (a signal just returns). */
static void poll_once(int timeout_ms)
{
    struct epoll_event evs[MAX_EVENTS];
    int n = epoll_wait(g.epfd, evs, MAX_EVENTS, timeout_ms);
    if (n < 0 && errno != EINTR)
        fail("epoll_wait: %s", strerror(errno));
    g.stdin_ready = 0;
    for (int i = 0; i < n; i++) {
        if (evs[i].data.ptr == NULL)   /* stdin, in idle mode */
            g.stdin_ready = 1;
        else
            g.on_event(evs[i].data.ptr, evs[i].events);
    }
}

/* Connect in batches, each proven served before the next: a flood of SYNs
 * would overflow the server's accept backlog and stall on SYN retransmits. */
static void setup_connections(void)
{
    for (int start = 0; start < opt.conns; start += opt.batch) {
        int end = start + opt.batch < opt.conns ? start + opt.batch : opt.conns;
        for (int i = start; i < end; i++)
            open_conn(&g.conns[i]);
        uint64_t deadline = now_ns() + (uint64_t)(BATCH_TIMEOUT_S * 1e9);
        while (g.ready < end) {
            if (now_ns() >= deadline)
                fail("connection setup timed out: %d of connections %d..%d not served "
                     "after %.0f s (server not accepting or not echoing?)",
                     end - g.ready, start, end - 1, BATCH_TIMEOUT_S);
            poll_once(ms_until(deadline));
        }
    }
}

/* ---- modes -------------------------------------------------------------- */

static void on_stop_signal(int sig)
{
    (void)sig;
    g.stop = 1;
}

/* Hold the idle connections until stdin closes, --hold elapses or a signal.
 * Connections stay in the epoll set, so a server closing one is an error. */
static void hold_idle(void)
{
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int watch_stdin = opt.hold < 0;
    if (watch_stdin) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, STDIN_FILENO, &ev) < 0)
            return;   /* /dev/null or a file: nothing to wait for */
    }
    uint64_t deadline = watch_stdin ? UINT64_MAX : now_ns() + (uint64_t)(opt.hold * 1e9);
    char buf[256];
    while (!g.stop && now_ns() < deadline) {
        poll_once(watch_stdin ? -1 : ms_until(deadline));
        if (g.stdin_ready) {
            ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                return;
        }
    }
}

static void run_idle(uint64_t t_start)
{
    setup_connections();
    printf("{\"mode\": \"idle\", \"connections\": %d, \"setup_s\": %.3f}\n",
           opt.conns, (double)(now_ns() - t_start) / 1e9);
    fflush(stdout);
    hold_idle();
}

/* Connections with bytes outstanding and no echo during the whole measured
 * window mean the server stalled them (or lost bytes at a message's end). */
static void check_stalls(uint64_t window_start, uint64_t window_end)
{
    for (int i = 0; i < opt.conns; i++) {
        const struct conn *c = &g.conns[i];
        if (c->sent > c->recvd && c->last_progress_ns < window_start)
            fail("connection %d: no echo for %.2f s with %llu bytes outstanding at stream "
                 "offset %llu (server stalled or lost bytes)", c->idx,
                 (double)(window_end - c->last_progress_ns) / 1e9,
                 (unsigned long long)(c->sent - c->recvd), (unsigned long long)c->recvd);
    }
}

/* Dispatch events until `deadline`; `tick`, if given, runs every tick_ns. */
static void poll_until(uint64_t deadline, void (*tick)(uint64_t now), uint64_t tick_ns)
{
    uint64_t now, next_tick = now_ns() + tick_ns;
    while ((now = now_ns()) < deadline) {
        poll_once(ms_until(tick && next_tick < deadline ? next_tick : deadline));
        if (tick && (now = now_ns()) >= next_tick) {
            tick(now);
            next_tick = now + tick_ns;
        }
    }
}

static void warm_up_and_measure(uint64_t start, struct window *w, void (*tick)(uint64_t now),
                                uint64_t tick_ns)
{
    uint64_t measure_at = start + (uint64_t)(opt.warmup * 1e9);
    if (opt.measure_at > 0) {
        /* The same wall-clock moment for several load generators: their windows line up. */
        double ahead_s = opt.measure_at - unix_now();
        uint64_t now = now_ns();
        measure_at = ahead_s > 0 ? now + (uint64_t)(ahead_s * 1e9) : now;
        w->late_s = ahead_s < 0 ? -ahead_s : 0.0;
    }
    uint64_t end_at = measure_at + (uint64_t)(opt.duration * 1e9);
    g.phase = WARMUP;
    poll_until(measure_at, tick, tick_ns);

    g.phase = MEASURE;
    window_open(w, opt.pid);
    poll_until(end_at, tick, tick_ns);
    window_close(w, opt.pid);
}

/* Where the window was in time, and the server's CPU time over it per `unit`
 * (msg, conn), summed over its process tree, as JSON fields. */
static void print_window(const struct window *w, const char *unit, double count)
{
    printf(", \"window_start_unix\": %.6f, \"window_late_s\": %.6f", w->unix0, w->late_s);
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
        c->queued += (uint64_t)opt.depth * g.msg_bytes;
        flush_send(c);
    }
    struct window w = {0};
    warm_up_and_measure(now, &w, NULL, 0);

    check_stalls(w.t0, w.t1);
    double secs = window_s(&w);
    if (g.measured_msgs == 0)
        fail("no message completed a round trip in the %.2f s measured window", secs);

    double msgs = (double)g.measured_msgs;
    if (opt.frames)
        printf("{\"mode\": \"frames\", \"frame_header_bytes\": %d, \"frame_bytes\": %zu, ",
               FRAME_HEADER, g.msg_bytes);
    else
        printf("{\"mode\": \"load\", ");
    /* MB/s: the bytes on the wire one way (--frames: the frames, headers included). */
    printf("\"connections\": %d, \"msg_size\": %zu, \"depth\": %u, "
           "\"warmup_s\": %.3f, \"duration_s\": %.6f, \"setup_s\": %.3f, "
           "\"messages\": %llu, \"msgs_per_s\": %.1f, \"mb_per_s\": %.3f, "
           "\"rtt_p50_us\": %.2f, \"rtt_p99_us\": %.2f, \"loadgen_cpu_util\": %.3f",
           opt.conns, opt.size, opt.depth, opt.warmup, secs, setup_s,
           (unsigned long long)g.measured_msgs, msgs / secs, msgs * (double)g.msg_bytes / secs / 1e6,
           hist_quantile_us(g.hist, 0.50), hist_quantile_us(g.hist, 0.99),
           (w.self1 - w.self0) / secs);
    print_window(&w, "msg", msgs);
    printf("}\n");
}

/* ---- churn mode: connect, one ping-pong, close ------------------------- */

static const unsigned char *pattern_from(uint64_t shift, uint64_t offset)
{
    return g.pattern + (shift + offset) % PATTERN_PERIOD;
}

/* Ephemeral ports connect() can pick from, or -1 (not TCP, or unreadable). */
static long local_ports(void)
{
    return g.addr.ss_family == AF_UNIX ? -1 : ip_local_ports();
}

/* "connection SEQ (client IDX)", for errors. */
static const char *churn_name(const struct churn *c)
{
    static char buf[96];
    snprintf(buf, sizeof buf, "connection %llu (client %d)", (unsigned long long)c->seq, c->idx);
    return buf;
}

static void churn_watch(struct churn *c, int op, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(g.epfd, op, c->fd, &ev) < 0)
        fail("connection %llu (client %d): epoll_ctl: %s", (unsigned long long)c->seq, c->idx,
             strerror(errno));
    c->want_out = (events & EPOLLOUT) != 0;
}

/* --proxy: one fixed header for every connection (the server's parsing cost does not depend
 * on the addresses), TCP4 192.0.2.1:50000 -> 198.51.100.1:443 (documentation networks). */
static unsigned char proxy_header[64];
static size_t proxy_len;

static void make_proxy_header(void)
{
    if (!opt.proxy)
        return;
    if (strcmp(opt.proxy, "v1") == 0) {
        proxy_len = (size_t)snprintf((char *)proxy_header, sizeof proxy_header,
                                     "PROXY TCP4 192.0.2.1 198.51.100.1 50000 443\r\n");
        return;
    }
    if (strcmp(opt.proxy, "v2") != 0)
        fail("--proxy: %s; expected v1 or v2", opt.proxy);
    static const unsigned char v2[28] = {
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,  /* signature */
        0x21, 0x11, 0x00, 0x0C,          /* version 2, PROXY; TCP over IPv4; 12 bytes follow */
        192, 0, 2, 1, 198, 51, 100, 1,   /* source, destination addresses */
        0xC3, 0x50, 0x01, 0xBB,          /* source port 50000, destination port 443 */
    };
    memcpy(proxy_header, v2, sizeof v2);
    proxy_len = sizeof v2;
}

/* Send what is left of the PROXY header (corked: it leaves with the message) and of the
 * message; wait for EPOLLOUT only while some is left. */
static void churn_send(struct churn *c, int op)
{
    while (c->header_sent < proxy_len) {
        ssize_t n = send(c->fd, proxy_header + c->header_sent, proxy_len - c->header_sent,
                         MSG_NOSIGNAL | MSG_MORE);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            fail("connection %llu (client %d): send of the PROXY header: %s",
                 (unsigned long long)c->seq, c->idx, strerror(errno));
        }
        c->header_sent += (size_t)n;
    }
    while (c->header_sent == proxy_len && c->sent < opt.size) {
        ssize_t n = send(c->fd, pattern_from(c->phase_shift, c->sent), opt.size - c->sent,
                         MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            fail("connection %llu (client %d): send at byte %zu: %s", (unsigned long long)c->seq,
                 c->idx, c->sent, strerror(errno));
        }
        c->sent += (size_t)n;
    }
    int need_out = c->header_sent < proxy_len || c->sent < opt.size;
    if (op == EPOLL_CTL_ADD || need_out != c->want_out)
        churn_watch(c, op, need_out ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static void churn_no_port(const struct churn *c, int err)
{
    fail_no_port(churn_name(c), err, local_ports(), opt.src_addrs, " without TIME_WAIT reuse");
}

static void churn_open(struct churn *c)
{
    c->seq = g.next_seq++;
    c->phase_shift = (c->seq * 7919u + 1) % PATTERN_PERIOD;
    c->sent = c->recvd = c->header_sent = 0;
    c->started_ns = now_ns();
    c->fd = socket(g.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        fail("connection %llu (client %d): socket: %s", (unsigned long long)c->seq, c->idx,
             strerror(errno));
    int err = opt.src_addrs > 1 ? bind_source(c->fd, c->seq, c->idx, opt.src_addrs) : 0;
    if (err)
        churn_no_port(c, err);
    if (connect(c->fd, (struct sockaddr *)&g.addr, g.addrlen) == 0) {
        c->state = CH_ECHO;          /* Unix sockets connect at once */
        churn_send(c, EPOLL_CTL_ADD);
        return;
    }
    if (errno == EADDRNOTAVAIL)
        churn_no_port(c, errno);
    if (errno != EINPROGRESS)
        fail("connection %llu (client %d): connect: %s%s", (unsigned long long)c->seq, c->idx,
             strerror(errno), errno == EAGAIN ? " (the server's accept backlog is full)" : "");
    c->state = CH_CONNECTING;
    churn_watch(c, EPOLL_CTL_ADD, EPOLLIN | EPOLLOUT);
}

static void churn_mismatch(const struct churn *c, const unsigned char *got, size_t n)
{
    const unsigned char *want = pattern_from(c->phase_shift, c->recvd);
    size_t i = 0;
    while (i < n && got[i] == want[i])
        i++;
    fail("connection %llu (client %d): echo mismatch at byte %zu of %zu: expected 0x%02x, "
         "got 0x%02x", (unsigned long long)c->seq, c->idx, c->recvd + i, opt.size, want[i],
         got[i]);
}

static void churn_readable(struct churn *c)
{
    ssize_t n = recv(c->fd, g.rbuf, RECV_CHUNK, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        fail("connection %llu (client %d): recv after %zu of %zu bytes echoed: %s",
             (unsigned long long)c->seq, c->idx, c->recvd, opt.size, strerror(errno));
    }
    if (n == 0)
        fail("connection %llu (client %d): server closed the connection after %zu of %zu bytes "
             "were echoed (%zu sent)", (unsigned long long)c->seq, c->idx, c->recvd, opt.size,
             c->sent);
    if (c->recvd + (size_t)n > c->sent)
        fail("connection %llu (client %d): received %zu bytes more than sent, at byte %zu",
             (unsigned long long)c->seq, c->idx, c->recvd + (size_t)n - c->sent, c->sent);
    if (memcmp(g.rbuf, pattern_from(c->phase_shift, c->recvd), (size_t)n) != 0)
        churn_mismatch(c, g.rbuf, (size_t)n);
    c->recvd += (size_t)n;
    if (c->recvd < opt.size)
        return;
    /* The whole echo is back: the client closes first (a FIN; TIME_WAIT is ours). */
    close(c->fd);
    uint64_t now = now_ns();
    if (g.phase == MEASURE) {
        g.hist[hist_index(now - c->started_ns)]++;
        g.measured_msgs++;
    }
    churn_open(c);
}

static void churn_event(void *ptr, uint32_t events)
{
    struct churn *c = ptr;
    if (c->state == CH_CONNECTING) {
        int err = connect_error(c->fd);
        if (err)
            fail("connection %llu (client %d): connect: %s", (unsigned long long)c->seq, c->idx,
                 strerror(err));
        c->state = CH_ECHO;
        churn_send(c, EPOLL_CTL_MOD);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        churn_readable(c);
    else if ((events & EPOLLOUT) && c->want_out)
        churn_send(c, EPOLL_CTL_MOD);
}

static void run_churn(void)
{
    g.on_event = churn_event;
    g.phase = WARMUP;
    uint64_t start = now_ns();
    for (int i = 0; i < opt.conns; i++)
        churn_open(&g.clients[i]);
    struct window w = {0};
    warm_up_and_measure(start, &w, NULL, 0);

    double secs = window_s(&w);
    /* A connection open for the whole window means the server stalled it. */
    for (int i = 0; i < opt.conns; i++) {
        const struct churn *c = &g.clients[i];
        if (c->started_ns < w.t0)
            fail("connection %llu (client %d): not finished after %.2f s, %s (server not "
                 "accepting, stalled or lost bytes)", (unsigned long long)c->seq, c->idx,
                 (double)(w.t1 - c->started_ns) / 1e9,
                 c->state == CH_CONNECTING ? "still connecting"
                 : c->recvd == 0 ? "no byte echoed" : "echo incomplete");
    }
    if (g.measured_msgs == 0)
        fail("no connection completed in the %.2f s measured window", secs);

    double conns = (double)g.measured_msgs;
    long ports = local_ports();
    long reuse = ports < 0 ? -1 : read_sysctl("/proc/sys/net/ipv4/tcp_tw_reuse", NULL);
    printf("{\"mode\": \"churn\", \"clients\": %d, \"msg_size\": %zu, \"warmup_s\": %.3f, "
           "\"duration_s\": %.6f, \"conns\": %llu, \"conns_per_s\": %.1f, "
           "\"rtt_p50_us\": %.2f, \"rtt_p99_us\": %.2f, \"src_addrs\": %d, ",
           opt.conns, opt.size, opt.warmup, secs, (unsigned long long)g.measured_msgs,
           conns / secs, hist_quantile_us(g.hist, 0.50), hist_quantile_us(g.hist, 0.99),
           opt.src_addrs);
    print_port_fields(ports, opt.src_addrs, reuse);
    printf("\"loadgen_cpu_util\": %.3f", (w.self1 - w.self0) / secs);
    print_window(&w, "conn", conns);
    printf("}\n");
}

/* ---- UDP mode: one datagram in flight per socket ------------------------ */

/* Datagram `seq` of socket `idx`: magic, socket, sequence, then the pattern
 * from a phase that depends on both, so every datagram's bytes differ. */
static void dgram_build(unsigned char *buf, int idx, uint64_t seq)
{
    uint32_t magic = UDP_MAGIC, sock = (uint32_t)idx;
    memcpy(buf, &magic, 4);
    memcpy(buf + 4, &sock, 4);
    memcpy(buf + 8, &seq, 8);
    uint64_t shift = ((uint64_t)idx * 7919u + (seq % PATTERN_PERIOD) * 104729u) % PATTERN_PERIOD;
    memcpy(buf + UDP_HEADER, pattern_from(shift, 0), opt.size - UDP_HEADER);
}

static const char *refused_hint(int err)
{
    return err == ECONNREFUSED ? " (nothing listening on that UDP port?)" : "";
}

static void dgram_send(struct dgram *d, uint64_t now)
{
    dgram_build(g.sbuf, d->idx, d->seq);
    ssize_t n = send(d->fd, g.sbuf, opt.size, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == EINTR) {
            d->unsent = 1;            /* our buffer is full: retried on the next tick */
            return;
        }
        fail("socket %d: send of datagram %llu: %s%s", d->idx, (unsigned long long)d->seq,
             strerror(errno), refused_hint(errno));
    }
    if ((size_t)n != opt.size)
        fail("socket %d: sent %zd of the %zu bytes of datagram %llu", d->idx, n, opt.size,
             (unsigned long long)d->seq);
    d->unsent = 0;
    d->sent_ns = now;
}

static void dgram_mismatch(const struct dgram *d, uint64_t seq, const unsigned char *got)
{
    dgram_build(g.expect, d->idx, seq);
    size_t i = 0;
    while (i < opt.size && got[i] == g.expect[i])
        i++;
    fail("socket %d: echo mismatch in datagram %llu at byte %zu (%s): expected 0x%02x, "
         "got 0x%02x", d->idx, (unsigned long long)seq, i, i < UDP_HEADER ? "header" : "payload",
         g.expect[i], got[i]);
}

static void dgram_readable(struct dgram *d)
{
    ssize_t n = recv(d->fd, g.rbuf, RECV_CHUNK, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        fail("socket %d: recv with datagram %llu in flight: %s%s", d->idx,
             (unsigned long long)d->seq, strerror(errno), refused_hint(errno));
    }
    if ((size_t)n != opt.size)
        fail("socket %d: echoed datagram of %zd bytes, expected %zu (datagram %llu in flight)",
             d->idx, n, opt.size, (unsigned long long)d->seq);
    if (!d->unsent) {
        dgram_build(g.expect, d->idx, d->seq);
        if (memcmp(g.rbuf, g.expect, opt.size) == 0) {
            uint64_t now = now_ns();
            if (g.phase == MEASURE) {
                g.hist[hist_index(now - d->sent_ns)]++;
                g.measured_msgs++;
            }
            d->seq++;
            dgram_send(d, now);
            return;
        }
    }
    /* Not the datagram in flight: a late echo of one already counted lost
     * (or a duplicate), which is fine if it is intact; anything else is not. */
    uint32_t magic, sock;
    uint64_t seq;
    memcpy(&magic, g.rbuf, 4);
    memcpy(&sock, g.rbuf + 4, 4);
    memcpy(&seq, g.rbuf + 8, 8);
    if (magic == UDP_MAGIC && sock != (uint32_t)d->idx && sock < (uint32_t)opt.conns)
        fail("socket %d: received the echo of socket %u's datagram %llu", d->idx, sock,
             (unsigned long long)seq);
    if (magic == UDP_MAGIC && sock == (uint32_t)d->idx && seq < d->seq) {
        dgram_build(g.expect, d->idx, seq);
        if (memcmp(g.rbuf, g.expect, opt.size) != 0)
            dgram_mismatch(d, seq, g.rbuf);
        if (g.phase == MEASURE)
            g.stale++;
        return;
    }
    dgram_mismatch(d, d->seq, g.rbuf);
}

static void dgram_event(void *ptr, uint32_t events)
{
    if (events & (EPOLLIN | EPOLLERR))
        dgram_readable(ptr);
}

/* Resend what our full buffer refused; count a datagram with no echo within
 * the timeout as lost and replace it with the next sequence number. */
static void dgram_tick(uint64_t now)
{
    uint64_t timeout_ns = (uint64_t)(opt.loss_timeout_ms * 1e6);
    for (int i = 0; i < opt.conns; i++) {
        struct dgram *d = &g.dgrams[i];
        if (d->unsent) {
            dgram_send(d, now);
        } else if (now - d->sent_ns >= timeout_ns) {
            if (g.phase == MEASURE)
                g.lost++;
            d->seq++;
            dgram_send(d, now);
        }
    }
}

static void run_udp(void)
{
    g.on_event = dgram_event;
    for (int i = 0; i < opt.conns; i++) {
        struct dgram *d = &g.dgrams[i];
        d->fd = socket(g.addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (d->fd < 0)
            fail("socket %d: socket: %s", i, strerror(errno));
        if (connect(d->fd, (struct sockaddr *)&g.addr, g.addrlen) < 0)
            fail("socket %d: connect: %s", i, strerror(errno));
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = d};
        if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, d->fd, &ev) < 0)
            fail("socket %d: epoll_ctl: %s", i, strerror(errno));
    }
    g.phase = WARMUP;
    uint64_t start = now_ns();
    for (int i = 0; i < opt.conns; i++)
        dgram_send(&g.dgrams[i], start);
    /* Check the timeouts ten times per timeout, at least every 10 ms. */
    uint64_t tick_ns = (uint64_t)(opt.loss_timeout_ms * 1e5);
    if (tick_ns > 10000000u)
        tick_ns = 10000000u;
    if (tick_ns < 100000u)
        tick_ns = 100000u;
    struct window w = {0};
    warm_up_and_measure(start, &w, dgram_tick, tick_ns);

    double secs = window_s(&w);
    if (g.measured_msgs == 0)
        fail("no datagram was echoed in the %.2f s measured window (%llu lost after %.0f ms "
             "each): is a UDP echo server on %s?", secs, (unsigned long long)g.lost,
             opt.loss_timeout_ms, opt.udp);
    double msgs = (double)g.measured_msgs;
    printf("{\"mode\": \"udp\", \"sockets\": %d, \"msg_size\": %zu, \"depth\": 1, "
           "\"loss_timeout_ms\": %.1f, \"warmup_s\": %.3f, \"duration_s\": %.6f, "
           "\"messages\": %llu, \"msgs_per_s\": %.1f, \"mb_per_s\": %.3f, "
           "\"rtt_p50_us\": %.2f, \"rtt_p99_us\": %.2f, \"lost\": %llu, \"stale\": %llu, "
           "\"loadgen_cpu_util\": %.3f",
           opt.conns, opt.size, opt.loss_timeout_ms, opt.warmup, secs,
           (unsigned long long)g.measured_msgs, msgs / secs, msgs * (double)opt.size / secs / 1e6,
           hist_quantile_us(g.hist, 0.50), hist_quantile_us(g.hist, 0.99),
           (unsigned long long)g.lost, (unsigned long long)g.stale, (w.self1 - w.self0) / secs);
    print_window(&w, "msg", msgs);
    printf("}\n");
}

/* ---- setup -------------------------------------------------------------- */

static void resolve_address(void)
{
    if (opt.unix_path) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&g.addr;
        if (strlen(opt.unix_path) >= sizeof sun->sun_path)
            fail("unix socket path too long: %s", opt.unix_path);
        sun->sun_family = AF_UNIX;
        strcpy(sun->sun_path, opt.unix_path);
        g.addrlen = sizeof *sun;
        return;
    }
    resolve_host_port(opt.udp ? "--udp" : "--tcp", opt.udp ? opt.udp : opt.tcp,
                      opt.udp ? SOCK_DGRAM : SOCK_STREAM, opt.src_addrs, &g.addr, &g.addrlen);
}

static void allocate(void)
{
    g.msg_bytes = opt.size + (opt.frames ? FRAME_HEADER : 0);
    g.rbuf = malloc(RECV_CHUNK);
    if (!g.rbuf)
        fail("out of memory for the receive buffer");
    if (opt.churn || opt.udp) {
        g.clients = calloc((size_t)opt.conns, sizeof *g.clients);
        g.dgrams = calloc((size_t)opt.conns, sizeof *g.dgrams);
        g.sbuf = malloc(opt.size);
        g.expect = malloc(opt.size);
        if (!g.clients || !g.dgrams || !g.sbuf || !g.expect)
            fail("out of memory for %d clients", opt.conns);
        for (int i = 0; i < opt.conns; i++) {
            g.clients[i].idx = g.dgrams[i].idx = i;
            g.clients[i].fd = g.dgrams[i].fd = -1;
        }
        pattern_init(opt.size > RECV_CHUNK ? opt.size : RECV_CHUNK);
        return;
    }
    g.conns = calloc((size_t)opt.conns, sizeof *g.conns);
    g.issued_slab = calloc((size_t)opt.conns * opt.depth, sizeof *g.issued_slab);
    if (!g.conns || !g.issued_slab)
        fail("out of memory for %d connections", opt.conns);
    for (int i = 0; i < opt.conns; i++) {
        g.conns[i].idx = i;
        g.conns[i].fd = -1;
        g.conns[i].phase_shift = ((uint64_t)i * 7919u) % PATTERN_PERIOD;
        g.conns[i].issued_ns = g.issued_slab + (size_t)i * opt.depth;
    }
    size_t inflight = HANDSHAKE_BYTES + (size_t)opt.depth * g.msg_bytes;
    if (opt.frames)
        frames_pattern_init(inflight > RECV_CHUNK ? inflight : RECV_CHUNK);
    else
        pattern_init(inflight > RECV_CHUNK ? inflight : RECV_CHUNK);
}

static void usage(FILE *f)
{
    fputs("usage: loadgen (--tcp HOST:PORT | --unix PATH | --udp HOST:PORT) [options]\n"
          "  --conns N        connections; clients with --churn, sockets with --udp (default 50)\n"
          "  --size BYTES     message size (default 64)\n"
          "  --depth K        messages in flight per connection (default 1)\n"
          "  --duration S     measured window, seconds (default 5)\n"
          "  --warmup S       warm-up before the window, seconds (default 1)\n"
          "  --pid PID        server pid: report the CPU time of it and all its\n"
          "                   descendants (worker processes) per message\n"
          "  --measure-at T   start the measured window at Unix time T (seconds) instead\n"
          "                   of after --warmup: several load generators' windows line up\n"
          "  --idle           open N connections, report, hold them\n"
          "  --hold S         idle: hold S seconds (default: until stdin closes)\n"
          "  --batch N        connections set up at a time (default 64)\n"
          "  --churn          each client: connect, one SIZE-byte ping-pong, close; repeat\n"
          "  --src-addrs K    churn: spread clients over source addresses 127.0.0.1..K\n"
          "  --proxy v1|v2    churn: begin each connection with a PROXY header\n"
          "                   (default 1; each has its own ephemeral ports)\n"
          "  --frames         each message is a frame: a 4-byte big-endian length, then\n"
          "                   SIZE bytes of body (for servers that echo frame by frame)\n"
          "  --udp HOST:PORT  UDP echo: one datagram in flight per socket\n"
          "  --loss-timeout MS  UDP: count a datagram lost after MS ms (default 200)\n", f);
}

static void parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"tcp", required_argument, 0, 't'},      {"unix", required_argument, 0, 'u'},
        {"conns", required_argument, 0, 'c'},    {"size", required_argument, 0, 's'},
        {"depth", required_argument, 0, 'd'},    {"duration", required_argument, 0, 'D'},
        {"warmup", required_argument, 0, 'w'},   {"pid", required_argument, 0, 'p'},
        {"idle", no_argument, 0, 'i'},           {"hold", required_argument, 0, 'H'},
        {"batch", required_argument, 0, 'b'},    {"help", no_argument, 0, 'h'},
        {"churn", no_argument, 0, 'C'},          {"src-addrs", required_argument, 0, 'S'},
        {"udp", required_argument, 0, 'U'},      {"loss-timeout", required_argument, 0, 'L'},
        {"measure-at", required_argument, 0, 'M'},
        {"frames", no_argument, 0, 'F'},
        {"proxy", required_argument, 0, 'P'},
        {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 't': opt.tcp = optarg; break;
        case 'u': opt.unix_path = optarg; break;
        case 'c': opt.conns = (int)parse_long("--conns", optarg, 1); break;
        case 's': opt.size = (size_t)parse_long("--size", optarg, 1); break;
        case 'd': opt.depth = (unsigned)parse_long("--depth", optarg, 1); break;
        case 'D': opt.duration = parse_double("--duration", optarg, 0.001); break;
        case 'w': opt.warmup = parse_double("--warmup", optarg, 0.0); break;
        case 'p': opt.pid = parse_long("--pid", optarg, 1); break;
        case 'i': opt.idle = 1; break;
        case 'H': opt.hold = parse_double("--hold", optarg, 0.0); break;
        case 'b': opt.batch = (int)parse_long("--batch", optarg, 1); break;
        case 'C': opt.churn = 1; break;
        case 'S': opt.src_addrs = (int)parse_long("--src-addrs", optarg, 1); break;
        case 'U': opt.udp = optarg; break;
        case 'L': opt.loss_timeout_ms = parse_double("--loss-timeout", optarg, 1.0); break;
        case 'F': opt.frames = 1; break;
        case 'P': opt.proxy = optarg; break;
        case 'M': opt.measure_at = parse_double("--measure-at", optarg, 1.0); break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind != argc || (!!opt.tcp + !!opt.unix_path + !!opt.udp) != 1) {
        usage(stderr);
        exit(2);
    }
    if (opt.idle + opt.churn + !!opt.udp > 1)
        fail("--idle, --churn and --udp are separate modes: pick one");
    if (opt.frames && (opt.idle || opt.churn || opt.udp))
        fail("--frames is load mode's (--tcp or --unix): not with --idle, --churn or --udp");
    if (opt.frames && opt.size > 0xFFFFFFFFu)
        fail("--frames: --size must fit the 4-byte length header");
    if (opt.src_addrs > 1 && !(opt.churn && opt.tcp))
        fail("--src-addrs is for --churn over --tcp");
    if (opt.src_addrs > MAX_SRC_ADDRS)
        fail("--src-addrs: at most %d (127.0.0.1..127.0.0.%d)", MAX_SRC_ADDRS, MAX_SRC_ADDRS);
    if (opt.proxy && !opt.churn)
        fail("--proxy is for --churn (a connection per message: the header's cost per connection)");
    make_proxy_header();
    if (opt.churn && opt.depth != 1)
        fail("--churn sends one message per connection: --depth must be 1");
    if (opt.udp && opt.depth != 1)
        fail("--udp keeps one datagram in flight per socket: --depth must be 1");
    if (opt.udp && (opt.size < UDP_HEADER || opt.size > UDP_MAX_SIZE))
        fail("--udp: --size must be %d..%d bytes (sequence header, IPv4 UDP payload limit)",
             UDP_HEADER, UDP_MAX_SIZE);
    if ((uint64_t)(opt.size + (opt.frames ? FRAME_HEADER : 0)) * opt.depth > MAX_INFLIGHT_BYTES)
        fail("--size x --depth is over %u bytes in flight per connection", MAX_INFLIGHT_BYTES);
}

int main(int argc, char **argv)
{
    uint64_t t_start = now_ns();
    parse_args(argc, argv);
    raise_nofile(opt.conns + 16, opt.conns);
    resolve_address();
    allocate();
    g.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g.epfd < 0)
        fail("epoll_create1: %s", strerror(errno));
    g.on_event = on_event;
    if (opt.idle)
        run_idle(t_start);
    else if (opt.churn)
        run_churn();
    else if (opt.udp)
        run_udp();
    else
        run_load(t_start);
    return 0;
}
