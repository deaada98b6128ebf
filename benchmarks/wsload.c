/*
 * wsload: WebSocket load generator for echo servers (gnetpy's benchmark suite, W14).
 *
 * loadgen.c's sibling for WebSocket: one thread, one epoll set (level-
 * triggered), non-blocking sockets, no allocation per message.  Each of N
 * connections does the HTTP/1.1 upgrade handshake (GET PATH with Upgrade:
 * websocket and a random Sec-WebSocket-Key; the answer must be a 101 whose
 * Sec-WebSocket-Accept is the key's SHA-1, RFC 6455 section 4), then keeps
 * DEPTH binary messages of SIZE bytes in flight: each one a single masked
 * client frame (FIN, opcode 2, a fresh 4-byte mask key per frame), answered
 * by an unmasked server frame.  No extension is offered, so none can be
 * negotiated.
 *
 * Every echoed frame is checked: a final binary frame, no RSV bits, no mask,
 * exactly SIZE bytes, and the payload the connection sent as that message
 * (message m of connection i is loadgen's byte pattern from i's phase plus
 * m * SIZE).  A wrong frame, a close frame, a ping (the servers are run with
 * keepalive pings off: wsload does not answer them), an early EOF or a
 * connection with messages in flight and no echo for --io-timeout seconds
 * ends the run with a message that names the connection and the message, and
 * exit status 1.  Unsolicited pongs are allowed (RFC 6455 5.5.3) and skipped.
 *
 * Reports messages/s, MB/s (payload, one way), the round-trip p50/p99 and,
 * with --pid, the server's user and system CPU time per message over the
 * measured window (the sum over PID and all its descendants, from
 * /proc/N/stat, as loadgen does), and its own CPU use (loadgen_cpu_util).
 *
 * Output: one JSON object on stdout.  Errors: one line on stderr, exit 1.
 */
#define _GNU_SOURCE
#define LOAD_PROG "wsload"
#include <getopt.h>
#include <netinet/tcp.h>
#include <strings.h>
#include <sys/epoll.h>

/* loadcommon.h's churn helpers (source addresses, TIME_WAIT) are not used here. */
#pragma GCC diagnostic ignored "-Wunused-function"
#include "loadcommon.h"   /* with loadgen.c: histogram, pattern, server CPU, options, ... */

#define TICK_NS 100000000ull      /* the stall check runs every 100 ms */
#define MAX_RESPONSE 4096         /* the upgrade response's head, at most */
#define MAX_WS_SIZE (16u << 20)   /* --size's bound */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum conn_state { CONNECTING, UPGRADING, READY };

struct conn {
    int fd;
    int idx;
    enum conn_state state;
    uint32_t events;            /* registered with epoll */
    uint32_t rng;               /* xorshift32: mask keys */
    uint64_t phase_shift;       /* where this connection's messages start in the pattern */
    uint64_t issued;            /* messages framed (into `out`) */
    uint64_t echoed;            /* messages echoed back and verified */
    uint64_t last_progress_ns;  /* connected, the 101, or a frame back */
    uint64_t *issued_ns;        /* ring of DEPTH send times, by message index */
    unsigned char *out;         /* bytes to send: the upgrade request, then client frames */
    size_t out_off, out_len;
    unsigned char *in;          /* bytes received and not yet parsed */
    size_t in_len;
    char accept[32];            /* the Sec-WebSocket-Accept the server must answer */
};

struct options {
    const char *tcp;
    const char *path;
    int conns;
    size_t size;
    unsigned depth;
    double duration;
    double warmup;
    long pid;
    int batch;
    double io_timeout;
};

static struct options opt = {
    .path = "/", .conns = 50, .size = 64, .depth = 1, .duration = 5.0, .warmup = 1.0,
    .batch = 64, .io_timeout = 10.0,
};

static struct {
    enum phase phase;
    int epfd;
    struct conn *conns;
    uint64_t *issued_slab;
    unsigned char *pattern;
    size_t pattern_len;
    size_t out_cap, in_cap;     /* per connection */
    size_t client_frame;        /* bytes of one client frame: header, mask key, payload */
    size_t server_frame;        /* bytes of one server frame: header, payload */
    int ready;                  /* connections past the upgrade */
    uint64_t measured_msgs;
    uint64_t pongs;             /* unsolicited pongs skipped */
    uint64_t hist[HIST_BUCKETS];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char host[300];             /* the Host header: the --tcp target as given */
} g;

/* ---- SHA-1 and base64, for Sec-WebSocket-Accept ------------------------- */

static uint32_t rol32(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void sha1_block(uint32_t h[5], const unsigned char *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999u;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1u;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdcu;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6u;
        }
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol32(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

/* SHA-1 of `len` bytes (< 120: one or two blocks) into `out`. */
static void sha1(const unsigned char *msg, size_t len, unsigned char out[20])
{
    uint32_t h[5] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u, 0xc3d2e1f0u};
    unsigned char buf[128] = {0};
    if (len > sizeof buf - 9)
        fail("sha1: input too long");
    memcpy(buf, msg, len);
    buf[len] = 0x80;
    size_t total = len + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        buf[total - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64)
        sha1_block(h, buf + off);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (unsigned char)(h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h[i] >> 8);
        out[4 * i + 3] = (unsigned char)h[i];
    }
}

static void base64(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < len ? in[i + 2] : 0);
        out[o++] = digits[v >> 18 & 63];
        out[o++] = digits[v >> 12 & 63];
        out[o++] = i + 1 < len ? digits[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? digits[v & 63] : '=';
    }
    out[o] = '\0';
}

static uint32_t xorshift32(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* ---- connections -------------------------------------------------------- */

static void watch(struct conn *c, int op, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(g.epfd, op, c->fd, &ev) < 0)
        fail("connection %d: epoll_ctl: %s", c->idx, strerror(errno));
    c->events = events;
}

/* Write what `out` holds; wait for EPOLLOUT only while some is left. */
static void flush_out(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            fail("connection %d: send after %llu messages echoed: %s", c->idx,
                 (unsigned long long)c->echoed, strerror(errno));
        }
        c->out_off += (size_t)n;
    }
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    uint32_t want = c->out_off < c->out_len ? EPOLLIN | EPOLLOUT : EPOLLIN;
    if (want != c->events)
        watch(c, EPOLL_CTL_MOD, want);
}

static const unsigned char *payload_of(const struct conn *c, uint64_t msg)
{
    return g.pattern + (c->phase_shift + msg * opt.size) % PATTERN_PERIOD;
}

/* Frame message c->issued into `out`: a masked, final binary frame. */
static void issue(struct conn *c, uint64_t now)
{
    if (c->out_off > 0) {   /* keep the unsent bytes at the front: `out` holds DEPTH frames */
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (c->out_len + g.client_frame > g.out_cap)
        fail("connection %d: send buffer overflow (internal error)", c->idx);
    unsigned char *f = c->out + c->out_len;
    size_t n = 0;
    f[n++] = 0x82;   /* FIN, binary */
    if (opt.size < 126) {
        f[n++] = (unsigned char)(0x80 | opt.size);
    } else if (opt.size < 65536) {
        f[n++] = 0x80 | 126;
        f[n++] = (unsigned char)(opt.size >> 8);
        f[n++] = (unsigned char)opt.size;
    } else {
        f[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            f[n++] = (unsigned char)((uint64_t)opt.size >> (8 * i));
    }
    uint32_t key = xorshift32(&c->rng);
    unsigned char mask[4] = {(unsigned char)(key >> 24), (unsigned char)(key >> 16),
                             (unsigned char)(key >> 8), (unsigned char)key};
    memcpy(f + n, mask, 4);
    n += 4;
    const unsigned char *p = payload_of(c, c->issued);
    for (size_t i = 0; i < opt.size; i++)
        f[n + i] = p[i] ^ mask[i & 3];
    c->out_len += n + opt.size;
    c->issued_ns[c->issued % opt.depth] = now;
    c->issued++;
}

static void open_conn(struct conn *c)
{
    c->fd = socket(g.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        fail("connection %d: socket: %s", c->idx, strerror(errno));
    if (connect(c->fd, (struct sockaddr *)&g.addr, g.addrlen) < 0 && errno != EINPROGRESS)
        fail("connection %d: connect: %s", c->idx, strerror(errno));
    c->state = CONNECTING;
    c->last_progress_ns = now_ns();
    watch(c, EPOLL_CTL_ADD, EPOLLOUT);
}

static void on_connected(struct conn *c)
{
    int err = connect_error(c->fd);
    if (err)
        fail("connection %d: connect: %s", c->idx, strerror(err));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    unsigned char raw[16], digest[20];
    char key[32], keyed[96];
    for (int i = 0; i < 16; i += 4) {
        uint32_t r = xorshift32(&c->rng);
        memcpy(raw + i, &r, 4);
    }
    base64(raw, sizeof raw, key);
    int klen = snprintf(keyed, sizeof keyed, "%s%s", key, WS_GUID);
    sha1((const unsigned char *)keyed, (size_t)klen, digest);
    base64(digest, sizeof digest, c->accept);
    int n = snprintf((char *)c->out, g.out_cap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", opt.path, g.host, key);
    if (n < 0 || (size_t)n >= g.out_cap)
        fail("--path too long for the upgrade request");
    c->out_off = 0;
    c->out_len = (size_t)n;
    c->state = UPGRADING;
    c->last_progress_ns = now_ns();
    flush_out(c);
}

/* The value of header `name` (lower case, with the colon) in the response head `head`, or NULL. */
static const char *header_value(const char *head, const char *name, size_t *len)
{
    size_t nlen = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, nlen) == 0) {
            const char *v = line + nlen;
            while (*v == ' ' || *v == '\t')
                v++;
            const char *end = strstr(v, "\r\n");
            while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
            *len = (size_t)(end - v);
            return v;
        }
    }
    return NULL;
}

/* The upgrade response, once its head is all in: 1 if it was (and the
 * connection is READY), 0 if more bytes are needed. */
static int parse_upgrade(struct conn *c)
{
    unsigned char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end) {
        if (c->in_len >= MAX_RESPONSE)
            fail("connection %d: the upgrade response's head is over %d bytes", c->idx, MAX_RESPONSE);
        return 0;
    }
    size_t head_len = (size_t)(end - c->in) + 4;
    char head[MAX_RESPONSE + 1];
    if (head_len - 2 > MAX_RESPONSE)
        fail("connection %d: the upgrade response's head is over %d bytes", c->idx, MAX_RESPONSE);
    memcpy(head, c->in, head_len - 2);   /* up to the last header's CRLF */
    head[head_len - 2] = '\0';
    const char *eol = strstr(head, "\r\n");
    int status_len = (int)(eol - head);
    if (strncmp(head, "HTTP/1.1 101", 12) != 0)
        fail("connection %d: upgrade to WebSocket refused: the server answered '%.*s' to GET %s",
             c->idx, status_len, head, opt.path);
    size_t alen;
    const char *accept = header_value(head, "sec-websocket-accept:", &alen);
    if (!accept)
        fail("connection %d: the 101 response has no Sec-WebSocket-Accept header", c->idx);
    if (alen != strlen(c->accept) || memcmp(accept, c->accept, alen) != 0)
        fail("connection %d: wrong Sec-WebSocket-Accept: expected %s, got %.*s", c->idx, c->accept,
             (int)alen, accept);
    size_t ext_len;
    const char *ext = header_value(head, "sec-websocket-extensions:", &ext_len);
    if (ext && ext_len > 0)
        fail("connection %d: the server negotiated an extension no one offered: %.*s", c->idx,
             (int)ext_len, ext);
    memmove(c->in, c->in + head_len, c->in_len - head_len);
    c->in_len -= head_len;
    c->state = READY;
    g.ready++;
    return 1;
}

static void report_mismatch(const struct conn *c, const unsigned char *got)
{
    const unsigned char *want = payload_of(c, c->echoed);
    size_t i = 0;
    while (i < opt.size && got[i] == want[i])
        i++;
    fail("connection %d: echo mismatch in message %llu at payload byte %zu: expected 0x%02x, got 0x%02x",
         c->idx, (unsigned long long)c->echoed, i, want[i], got[i]);
}

/* Parse the complete frames in c->in: check each echo, record it, issue the next message. */
static void parse_frames(struct conn *c, uint64_t now)
{
    size_t off = 0;
    int done = 0;
    while (c->in_len - off >= 2) {
        const unsigned char *f = c->in + off;
        size_t avail = c->in_len - off, hdr = 2;
        uint64_t len = f[1] & 0x7f;
        if (len == 126) {
            if (avail < 4)
                break;
            len = (uint64_t)f[2] << 8 | f[3];
            hdr = 4;
        } else if (len == 127) {
            if (avail < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | f[2 + i];
            hdr = 10;
        }
        unsigned opcode = f[0] & 0x0f;
        if (f[1] & 0x80)
            fail("connection %d: the server's frame after message %llu is masked (a server must not "
                 "mask)", c->idx, (unsigned long long)c->echoed);
        if (opcode == 0x8) {   /* close: say why */
            size_t have = avail - hdr < len ? avail - hdr : (size_t)len;
            unsigned code = have >= 2 ? (unsigned)f[hdr] << 8 | f[hdr + 1] : 0;
            fail("connection %d: the server sent a close frame (code %u%s%.*s) after %llu messages "
                 "echoed, %llu in flight", c->idx, code, have > 2 ? ": " : "",
                 have > 2 ? (int)(have - 2) : 0, have > 2 ? (const char *)f + hdr + 2 : "",
                 (unsigned long long)c->echoed, (unsigned long long)(c->issued - c->echoed));
        }
        if (opcode == 0x9)
            fail("connection %d: the server sent a ping after %llu messages echoed (wsload does not "
                 "answer pings: run the server with keepalive pings off)", c->idx,
                 (unsigned long long)c->echoed);
        if (avail - hdr < len) {
            if (hdr + len > g.in_cap)
                fail("connection %d: the server's frame after message %llu is %llu bytes (opcode 0x%x); "
                     "the echo of a %zu-byte message is %zu", c->idx, (unsigned long long)c->echoed,
                     (unsigned long long)len, opcode, opt.size, g.server_frame);
            break;   /* the rest of the frame is still to come */
        }
        if (opcode == 0xA) {   /* an unsolicited pong: allowed, skipped */
            g.pongs++;
            off += hdr + (size_t)len;
            continue;
        }
        if (opcode != 0x2 || !(f[0] & 0x80) || (f[0] & 0x70))
            fail("connection %d: the echo of message %llu is not one final binary frame "
                 "(first byte 0x%02x: FIN %d, RSV %d, opcode 0x%x)", c->idx,
                 (unsigned long long)c->echoed, f[0], f[0] >> 7, (f[0] >> 4) & 7, opcode);
        if (c->echoed >= c->issued)
            fail("connection %d: a binary frame came back with no message in flight (after %llu "
                 "messages)", c->idx, (unsigned long long)c->echoed);
        if (len != opt.size)
            fail("connection %d: the echo of message %llu has %llu payload bytes, expected %zu",
                 c->idx, (unsigned long long)c->echoed, (unsigned long long)len, opt.size);
        if (memcmp(f + hdr, payload_of(c, c->echoed), opt.size) != 0)
            report_mismatch(c, f + hdr);
        uint64_t *slot = &c->issued_ns[c->echoed % opt.depth];
        if (g.phase == MEASURE) {
            g.hist[hist_index(now - *slot)]++;
            g.measured_msgs++;
        }
        c->echoed++;
        off += hdr + (size_t)len;
        done++;
    }
    if (off > 0) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    if (done) {
        c->last_progress_ns = now;
        if (g.phase != SETUP)
            for (int i = 0; i < done; i++)
                issue(c, now);
        flush_out(c);
    }
}

static void on_readable(struct conn *c)
{
    if (c->in_len == g.in_cap)
        fail("connection %d: the server sent more than was asked for (%zu bytes unparsed)", c->idx,
             c->in_len);
    ssize_t n = recv(c->fd, c->in + c->in_len, g.in_cap - c->in_len, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        fail("connection %d: recv after %llu messages echoed: %s", c->idx,
             (unsigned long long)c->echoed, strerror(errno));
    }
    if (n == 0) {
        if (c->state == UPGRADING)
            fail("connection %d: the server closed the connection during the upgrade (%zu bytes of "
                 "response, no complete 101)", c->idx, c->in_len);
        fail("connection %d: the server closed the connection after %llu messages echoed, %llu in "
             "flight", c->idx, (unsigned long long)c->echoed, (unsigned long long)(c->issued - c->echoed));
    }
    c->in_len += (size_t)n;
    uint64_t now = now_ns();
    if (c->state == UPGRADING) {
        if (!parse_upgrade(c))
            return;
        c->last_progress_ns = now;
    }
    parse_frames(c, now);
}

static void on_event(struct conn *c, uint32_t events)
{
    if (c->state == CONNECTING) {
        on_connected(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(c);
    if ((events & EPOLLOUT) && (c->events & EPOLLOUT))
        flush_out(c);
}

/* A connection stuck for --io-timeout: connecting, upgrading, or with messages in flight and no echo. */
static void check_stalls(uint64_t now)
{
    uint64_t limit = (uint64_t)(opt.io_timeout * 1e9);
    for (int i = 0; i < opt.conns; i++) {
        const struct conn *c = &g.conns[i];
        if (c->fd < 0)
            continue;
        int waiting = c->state != READY || c->issued > c->echoed;
        if (!waiting || now - c->last_progress_ns < limit)
            continue;
        fail("connection %d: %s after %.2f s (%llu messages echoed, %llu in flight; server not "
             "accepting, not upgrading or stalled)", c->idx,
             c->state == CONNECTING ? "still connecting" : c->state == UPGRADING ? "no 101 response"
                                                                                  : "no echo",
             (double)(now - c->last_progress_ns) / 1e9, (unsigned long long)c->echoed,
             (unsigned long long)(c->issued - c->echoed));
    }
}

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

/* Connect in batches, each connection upgraded (its 101 checked) before the next batch. */
static void setup_connections(void)
{
    for (int start = 0; start < opt.conns; start += opt.batch) {
        batch_end = start + opt.batch < opt.conns ? start + opt.batch : opt.conns;
        for (int i = start; i < batch_end; i++)
            open_conn(&g.conns[i]);
        uint64_t deadline = now_ns() + (uint64_t)(BATCH_TIMEOUT_S * 1e9);
        poll_until(deadline, batch_ready);
        if (g.ready < batch_end)
            fail("connection setup timed out: %d of connections %d..%d not upgraded after %.0f s "
                 "(server not accepting or not answering GET %s with a 101?)",
                 batch_end - g.ready, start, batch_end - 1, BATCH_TIMEOUT_S, opt.path);
    }
}

static void run(uint64_t t_start)
{
    g.phase = SETUP;
    setup_connections();
    double setup_s = (double)(now_ns() - t_start) / 1e9;
    g.phase = WARMUP;
    uint64_t now = now_ns();
    for (int i = 0; i < opt.conns; i++) {
        struct conn *c = &g.conns[i];
        for (unsigned m = 0; m < opt.depth; m++)
            issue(c, now);
        c->last_progress_ns = now;
        flush_out(c);
    }
    struct window w = {0};
    poll_until(now + (uint64_t)(opt.warmup * 1e9), NULL);
    g.phase = MEASURE;
    window_open(&w, opt.pid);
    poll_until(w.t0 + (uint64_t)(opt.duration * 1e9), NULL);
    window_close(&w, opt.pid);

    double secs = window_s(&w);
    if (g.measured_msgs == 0)
        fail("no message completed a round trip in the %.2f s measured window", secs);
    double msgs = (double)g.measured_msgs;
    printf("{\"mode\": \"ws\", \"connections\": %d, \"msg_size\": %zu, \"depth\": %u, \"path\": \"%s\", "
           "\"client_frame_bytes\": %zu, \"server_frame_bytes\": %zu, "
           "\"warmup_s\": %.3f, \"duration_s\": %.6f, \"setup_s\": %.3f, "
           "\"messages\": %llu, \"msgs_per_s\": %.1f, \"mb_per_s\": %.3f, "
           "\"rtt_p50_us\": %.2f, \"rtt_p99_us\": %.2f, \"pongs\": %llu, \"loadgen_cpu_util\": %.3f",
           opt.conns, opt.size, opt.depth, opt.path, g.client_frame, g.server_frame, opt.warmup, secs,
           setup_s, (unsigned long long)g.measured_msgs, msgs / secs, msgs * (double)opt.size / secs / 1e6,
           hist_quantile_us(g.hist, 0.50), hist_quantile_us(g.hist, 0.99), (unsigned long long)g.pongs,
           (w.self1 - w.self0) / secs);
    printf(", \"window_start_unix\": %.6f, \"window_late_s\": 0.0", w.unix0);
    print_server_cpu(&w, opt.pid, "msg", msgs);
    printf("}\n");
}

/* ---- setup -------------------------------------------------------------- */

static size_t frame_header(size_t size)
{
    return size < 126 ? 2 : size < 65536 ? 4 : 10;
}

static void allocate(void)
{
    g.server_frame = frame_header(opt.size) + opt.size;
    g.client_frame = g.server_frame + 4;
    size_t request = 256 + strlen(opt.path) + strlen(g.host);
    size_t frames = (size_t)opt.depth * g.client_frame;
    g.out_cap = frames > request ? frames : request;
    /* DEPTH echoes, an unsolicited pong or a close frame (<= 131 bytes) beside them, or the
     * upgrade response's head. */
    g.in_cap = (size_t)opt.depth * g.server_frame + 256;
    if (g.in_cap < MAX_RESPONSE + 256)
        g.in_cap = MAX_RESPONSE + 256;
    g.conns = calloc((size_t)opt.conns, sizeof *g.conns);
    g.issued_slab = calloc((size_t)opt.conns * opt.depth, sizeof *g.issued_slab);
    if (!g.conns || !g.issued_slab)
        fail("out of memory for %d connections", opt.conns);
    for (int i = 0; i < opt.conns; i++) {
        struct conn *c = &g.conns[i];
        c->idx = i;
        c->fd = -1;
        c->phase_shift = ((uint64_t)i * 7919u) % PATTERN_PERIOD;
        c->issued_ns = g.issued_slab + (size_t)i * opt.depth;
        c->rng = (uint32_t)(0x9e3779b9u * (uint32_t)(i + 1)) ^ (uint32_t)now_ns() ^ (uint32_t)getpid();
        if (c->rng == 0)
            c->rng = 1;
        c->out = malloc(g.out_cap);
        c->in = malloc(g.in_cap);
        if (!c->out || !c->in)
            fail("out of memory for connection %d's buffers", i);
    }
    g.pattern = pattern_new(opt.size, &g.pattern_len);
}

static void usage(FILE *f)
{
    fputs("usage: wsload --tcp HOST:PORT [options]\n"
          "  --path PATH       the upgrade request's path (default /)\n"
          "  --conns N         connections (default 50)\n"
          "  --size BYTES      message payload (default 64): one binary frame each way\n"
          "  --depth K         messages in flight per connection (default 1)\n"
          "  --duration S      measured window, seconds (default 5)\n"
          "  --warmup S        warm-up before the window, seconds (default 1)\n"
          "  --pid PID         server pid: report the CPU time of it and all its\n"
          "                    descendants per message\n"
          "  --batch N         connections set up (upgraded) at a time (default 64)\n"
          "  --io-timeout S    fail when a connection makes no progress for S seconds (default 10)\n", f);
}

static void parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"tcp", required_argument, 0, 't'},      {"path", required_argument, 0, 'P'},
        {"conns", required_argument, 0, 'c'},    {"size", required_argument, 0, 's'},
        {"depth", required_argument, 0, 'd'},    {"duration", required_argument, 0, 'D'},
        {"warmup", required_argument, 0, 'w'},   {"pid", required_argument, 0, 'p'},
        {"batch", required_argument, 0, 'b'},    {"io-timeout", required_argument, 0, 'T'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 't': opt.tcp = optarg; break;
        case 'P': opt.path = optarg; break;
        case 'c': opt.conns = (int)parse_long("--conns", optarg, 1); break;
        case 's': opt.size = (size_t)parse_long("--size", optarg, 1); break;
        case 'd': opt.depth = (unsigned)parse_long("--depth", optarg, 1); break;
        case 'D': opt.duration = parse_double("--duration", optarg, 0.001); break;
        case 'w': opt.warmup = parse_double("--warmup", optarg, 0.0); break;
        case 'p': opt.pid = parse_long("--pid", optarg, 1); break;
        case 'b': opt.batch = (int)parse_long("--batch", optarg, 1); break;
        case 'T': opt.io_timeout = parse_double("--io-timeout", optarg, 0.001); break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind != argc || !opt.tcp) {
        usage(stderr);
        exit(2);
    }
    if (opt.path[0] != '/' || strpbrk(opt.path, " \r\n\"\\"))
        fail("--path must start with '/' and hold no space, quote, backslash or line break: '%s'", opt.path);
    if (opt.size > MAX_WS_SIZE)
        fail("--size: at most %u bytes", MAX_WS_SIZE);
    if ((uint64_t)(opt.size + 14) * opt.depth > MAX_INFLIGHT_BYTES)
        fail("--size x --depth is over %u bytes in flight per connection", MAX_INFLIGHT_BYTES);
    if (strlen(opt.tcp) >= sizeof g.host)
        fail("--tcp: too long");
    strcpy(g.host, opt.tcp);
}

int main(int argc, char **argv)
{
    uint64_t t_start = now_ns();
    parse_args(argc, argv);
    raise_nofile(opt.conns + 16, opt.conns);
    resolve_host_port("--tcp", opt.tcp, SOCK_STREAM, 1, &g.addr, &g.addrlen);
    allocate();
    g.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g.epfd < 0)
        fail("epoll_create1: %s", strerror(errno));
    run(t_start);
    return 0;
}
