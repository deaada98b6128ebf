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
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PATTERN_PERIOD 65521u     /* a prime, as in loadgen.c */
#define RECV_CHUNK (64 * 1024)    /* plaintext taken per SSL_read (a record is at most 16 KiB) */
#define HANDSHAKE_BYTES 16        /* load mode: the echo that proves a connection is served */
#define MAX_EVENTS 512
#define BATCH_TIMEOUT_S 10.0      /* bound on setting up one batch of connections */
#define TICK_NS 100000000ull      /* the stall check runs every 100 ms */
#define MAX_INFLIGHT_BYTES (64u << 20)
#define TIME_WAIT_S 60            /* Linux's TCP_TIMEWAIT_LEN */
#define MAX_SRC_ADDRS 254
#define MAX_TREE 4096
#define CIPHER_SUITE "TLS_AES_128_GCM_SHA256"
#define SNI_NAME "localhost"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS (2 * HIST_SUB + (64 - HIST_SUB_BITS - 1) * HIST_SUB)

enum conn_state { CONNECTING, TLS_HANDSHAKE, ECHO_CHECK, READY };
enum phase { SETUP, WARMUP, MEASURE };

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

struct proc_cpu {
    long pid;
    unsigned long long start, utime, stime;
};

struct cpu_sample {
    int n, truncated;
    struct proc_cpu *procs;
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

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("tlsload: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- histogram (loadgen.c's) -------------------------------------------- */

static unsigned hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - HIST_SUB_BITS;
    unsigned top = (unsigned)(v >> shift);
    return 2 * HIST_SUB + (shift - 1) * HIST_SUB + (top - HIST_SUB);
}

static double hist_value(unsigned idx)
{
    if (idx < 2 * HIST_SUB)
        return idx;
    unsigned shift = (idx - 2 * HIST_SUB) / HIST_SUB + 1;
    unsigned top = HIST_SUB + (idx - 2 * HIST_SUB) % HIST_SUB;
    return ldexp(top + 0.5, (int)shift);
}

static double hist_quantile_us(double q)
{
    uint64_t total = 0, seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        total += g.hist[i];
    if (total == 0)
        return 0.0;
    uint64_t rank = (uint64_t)ceil(q * (double)total);
    if (rank == 0)
        rank = 1;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += g.hist[i];
        if (seen >= rank)
            return hist_value(i) / 1000.0;
    }
    return 0.0;
}

/* ---- byte pattern (loadgen.c's) ----------------------------------------- */

static void pattern_init(size_t slack)
{
    uint64_t x = 0x9e3779b97f4a7c15u;
    g.pattern_len = PATTERN_PERIOD + slack;
    g.pattern = malloc(g.pattern_len);
    if (!g.pattern)
        fail("out of memory for the %zu-byte pattern", g.pattern_len);
    for (size_t i = 0; i < PATTERN_PERIOD; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        g.pattern[i] = (unsigned char)(x >> 24);
    }
    for (size_t i = PATTERN_PERIOD; i < g.pattern_len; i++)
        g.pattern[i] = g.pattern[i - PATTERN_PERIOD];
}

static const unsigned char *pattern_at(const struct conn *c, uint64_t offset)
{
    return g.pattern + (offset + c->phase_shift) % PATTERN_PERIOD;
}

/* ---- server CPU from /proc: the whole process tree (loadgen.c's) -------- */

static int read_proc_cpu(long pid, struct proc_cpu *out, long *ppid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT || errno == ESRCH)
            return 0;
        fail("cannot read %s: %s", path, strerror(errno));
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    if (n == 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    long parent;
    out->pid = pid;
    if (!p || sscanf(p + 1, " %*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu "
                     "%*d %*d %*d %*d %*d %*d %llu", &parent, &out->utime, &out->stime,
                     &out->start) != 4)
        fail("cannot parse %s", path);
    if (ppid)
        *ppid = parent;
    return 1;
}

static void tree_add(struct cpu_sample *s, long pid)
{
    for (int i = 0; i < s->n; i++)
        if (s->procs[i].pid == pid)
            return;
    if (s->n == MAX_TREE) {
        s->truncated = 1;
        return;
    }
    if (read_proc_cpu(pid, &s->procs[s->n], NULL))
        s->n++;
}

static void tree_add_children(struct cpu_sample *s, int i)
{
    char path[96];
    long pid = s->procs[i].pid;
    snprintf(path, sizeof path, "/proc/%ld/task", pid);
    DIR *tasks = opendir(path);
    if (!tasks)
        return;
    struct dirent *t;
    while ((t = readdir(tasks)) != NULL) {
        if (t->d_name[0] < '0' || t->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%ld/task/%ld/children", pid, strtol(t->d_name, NULL, 10));
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        long child;
        while (fscanf(f, "%ld", &child) == 1)
            tree_add(s, child);
        fclose(f);
    }
    closedir(tasks);
}

static void tree_by_scan(struct cpu_sample *s)
{
    static long (*pairs)[2];
    static size_t cap;
    size_t n = 0;
    DIR *proc = opendir("/proc");
    if (!proc)
        fail("cannot list /proc: %s", strerror(errno));
    struct dirent *d;
    while ((d = readdir(proc)) != NULL) {
        if (d->d_name[0] < '0' || d->d_name[0] > '9')
            continue;
        struct proc_cpu pc;
        long ppid;
        if (!read_proc_cpu(strtol(d->d_name, NULL, 10), &pc, &ppid))
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            pairs = realloc(pairs, cap * sizeof *pairs);
            if (!pairs)
                fail("out of memory listing /proc");
        }
        pairs[n][0] = pc.pid;
        pairs[n][1] = ppid;
        n++;
    }
    closedir(proc);
    for (int i = 0; i < s->n; i++)
        for (size_t j = 0; j < n; j++)
            if (pairs[j][1] == s->procs[i].pid)
                tree_add(s, pairs[j][0]);
}

static void read_server_cpu(struct cpu_sample *s)
{
    if (!s->procs) {
        s->procs = calloc(MAX_TREE, sizeof *s->procs);
        if (!s->procs)
            fail("out of memory for the server's process tree");
    }
    s->n = 0;
    s->truncated = 0;
    if (!read_proc_cpu(opt.pid, &s->procs[0], NULL))
        fail("cannot read /proc/%ld/stat: the server process is gone (is the pid right?)", opt.pid);
    s->n = 1;
    if (access("/proc/thread-self/children", F_OK) != 0) {
        tree_by_scan(s);
        return;
    }
    for (int i = 0; i < s->n; i++)
        tree_add_children(s, i);
}

struct tree_cpu {
    unsigned long long utime, stime;
    int summed, started, exited, truncated;
};

static struct tree_cpu tree_cpu_delta(const struct cpu_sample *a, const struct cpu_sample *b)
{
    struct tree_cpu t = {0, 0, 0, 0, 0, a->truncated || b->truncated};
    for (int j = 0; j < b->n; j++) {
        const struct proc_cpu *q = &b->procs[j];
        const struct proc_cpu *p = NULL;
        for (int i = 0; i < a->n && !p; i++)
            if (a->procs[i].pid == q->pid && a->procs[i].start == q->start)
                p = &a->procs[i];
        if (p) {
            t.utime += q->utime >= p->utime ? q->utime - p->utime : 0;
            t.stime += q->stime >= p->stime ? q->stime - p->stime : 0;
        } else {
            t.utime += q->utime;
            t.stime += q->stime;
            t.started++;
        }
        t.summed++;
    }
    for (int i = 0; i < a->n; i++) {
        int found = 0;
        for (int j = 0; j < b->n && !found; j++)
            found = a->procs[i].pid == b->procs[j].pid && a->procs[i].start == b->procs[j].start;
        t.exited += !found;
    }
    return t;
}

static double unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
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

static double time_wait_capacity(long ports);

static long read_sysctl(const char *path, long *second)
{
    long v = -1;
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    if (second) {
        if (fscanf(f, "%ld %ld", &v, second) != 2)
            v = -1;
    } else if (fscanf(f, "%ld", &v) != 1) {
        v = -1;
    }
    fclose(f);
    return v;
}

static long local_ports(void)
{
    long hi = 0, lo = read_sysctl("/proc/sys/net/ipv4/ip_local_port_range", &hi);
    return lo < 0 || hi < lo ? -1 : hi - lo + 1;
}

static double time_wait_capacity(long ports)
{
    return ports < 0 ? -1.0 : (double)ports * opt.src_addrs / TIME_WAIT_S;
}

static void no_port(const struct conn *c, int err)
{
    fail("%s: connect: %s: no free local port (%ld ports x %d source address(es), each held %d s "
         "in TIME_WAIT after the client's close, sustain about %.0f new connections/s; use more "
         "--src-addrs)", conn_name(c), strerror(err), local_ports(), opt.src_addrs, TIME_WAIT_S,
         time_wait_capacity(local_ports()));
}

static void bind_source(const struct conn *c)
{
    unsigned host = 1u + (unsigned)(c->seq % (uint64_t)opt.src_addrs);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(0x7f000000u + host);
    int one = 1;
    if (setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) < 0)
        fail("%s: IP_BIND_ADDRESS_NO_PORT: %s", conn_name(c), strerror(errno));
    if (bind(c->fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
        if (errno == EADDRINUSE || errno == EADDRNOTAVAIL)
            no_port(c, errno);
        fail("%s: bind to 127.0.0.%u: %s", conn_name(c), host, strerror(errno));
    }
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
    if (opt.src_addrs > 1)
        bind_source(c);
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
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
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

static int ms_until(uint64_t deadline_ns)
{
    uint64_t now = now_ns();
    if (now >= deadline_ns)
        return 0;
    return (int)((deadline_ns - now + 999999) / 1000000);
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

struct window {
    uint64_t t0, t1;
    double unix0;
    struct cpu_sample cpu0, cpu1;
    double self0, self1;
};

static void warm_up_and_measure(uint64_t start, struct window *w)
{
    uint64_t measure_at = start + (uint64_t)(opt.warmup * 1e9);
    g.phase = WARMUP;
    poll_until(measure_at, NULL);
    g.phase = MEASURE;
    if (opt.pid)
        read_server_cpu(&w->cpu0);
    w->self0 = self_cpu_s();
    w->t0 = now_ns();
    w->unix0 = unix_now();
    poll_until(w->t0 + (uint64_t)(opt.duration * 1e9), NULL);
    w->t1 = now_ns();
    if (opt.pid)
        read_server_cpu(&w->cpu1);
    w->self1 = self_cpu_s();
}

static double window_s(const struct window *w)
{
    return (double)(w->t1 - w->t0) / 1e9;
}

static void print_tls(void)
{
    printf("\"tls_version\": \"%s\", \"cipher\": \"%s\", \"session_resumption\": false, ",
           g.version ? g.version : "", g.cipher ? g.cipher : "");
}

static void print_server_cpu(const struct window *w, const char *unit, double count)
{
    printf(", \"window_start_unix\": %.6f, \"window_late_s\": 0.0", w->unix0);
    if (opt.pid) {
        struct tree_cpu t = tree_cpu_delta(&w->cpu0, &w->cpu1);
        double tick_us = 1e6 / (double)sysconf(_SC_CLK_TCK);
        double user_us = (double)t.utime * tick_us;
        double sys_us = (double)t.stime * tick_us;
        printf(", \"server_pid\": %ld, \"server_user_us_per_%s\": %.4f, "
               "\"server_sys_us_per_%s\": %.4f, \"server_cpu_util\": %.3f, "
               "\"server_processes\": %d, \"server_processes_started\": %d, "
               "\"server_processes_exited\": %d, \"server_processes_truncated\": %s",
               opt.pid, unit, user_us / count, unit, sys_us / count,
               (user_us + sys_us) / 1e6 / window_s(w), t.summed, t.started, t.exited,
               t.truncated ? "true" : "false");
    } else {
        printf(", \"server_pid\": null, \"server_user_us_per_%s\": null, "
               "\"server_sys_us_per_%s\": null, \"server_cpu_util\": null, "
               "\"server_processes\": null", unit, unit);
    }
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
           hist_quantile_us(0.50), hist_quantile_us(0.99), (unsigned long long)g.tickets,
           (w.self1 - w.self0) / secs);
    print_server_cpu(&w, "msg", msgs);
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
    long ports = local_ports();
    long reuse = read_sysctl("/proc/sys/net/ipv4/tcp_tw_reuse", NULL);
    printf("{\"mode\": \"tls-churn\", ");
    print_tls();
    printf("\"clients\": %d, \"msg_size\": %zu, \"warmup_s\": %.3f, \"duration_s\": %.6f, "
           "\"conns\": %llu, \"conns_per_s\": %.1f, \"handshakes\": %llu, \"handshakes_per_s\": %.1f, "
           "\"tickets_per_conn\": %.3f, \"rtt_p50_us\": %.2f, \"rtt_p99_us\": %.2f, \"src_addrs\": %d, ",
           opt.conns, opt.size, opt.warmup, secs, (unsigned long long)g.measured_msgs, conns / secs,
           (unsigned long long)g.measured_msgs, conns / secs, (double)g.measured_tickets / conns,
           hist_quantile_us(0.50), hist_quantile_us(0.99), opt.src_addrs);
    if (ports < 0)
        printf("\"local_ports\": null, \"time_wait_capacity_conns_per_s\": null, ");
    else
        printf("\"local_ports\": %ld, \"time_wait_capacity_conns_per_s\": %.0f, ", ports,
               time_wait_capacity(ports));
    if (reuse < 0)
        printf("\"tcp_tw_reuse\": null, ");
    else
        printf("\"tcp_tw_reuse\": %ld, ", reuse);
    printf("\"loadgen_cpu_util\": %.3f", (w.self1 - w.self0) / secs);
    print_server_cpu(&w, "conn", conns);
    printf("}\n");
}

/* ---- setup -------------------------------------------------------------- */

static void resolve_address(void)
{
    char host[256];
    const char *target = opt.tcp;
    const char *colon = strrchr(target, ':');
    if (!colon || colon == target || (size_t)(colon - target) >= sizeof host)
        fail("--tcp wants HOST:PORT, got '%s'", target);
    const char *h = target;
    size_t hlen = (size_t)(colon - target);
    if (h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0)
        fail("cannot resolve '%s': %s", target, gai_strerror(rc));
    memcpy(&g.addr, res->ai_addr, res->ai_addrlen);
    g.addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    if (opt.src_addrs > 1) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&g.addr;
        if (g.addr.ss_family != AF_INET || (ntohl(sin->sin_addr.s_addr) >> 24) != 127)
            fail("--src-addrs binds clients to 127.0.0.x: the target must be an IPv4 loopback "
                 "address (127.0.0.0/8), got '%s'", target);
    }
}

static void raise_nofile(int needed)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        fail("getrlimit: %s", strerror(errno));
    if (rl.rlim_cur >= (rlim_t)needed)
        return;
    if (rl.rlim_max < (rlim_t)needed)
        fail("%d connections need %d file descriptors; RLIMIT_NOFILE hard limit is %llu",
             opt.conns, needed, (unsigned long long)rl.rlim_max);
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        fail("setrlimit(RLIMIT_NOFILE): %s", strerror(errno));
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
    pattern_init(inflight > RECV_CHUNK ? inflight : RECV_CHUNK);
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

static double parse_double(const char *name, const char *s, double min)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !(v >= min))
        fail("%s: expected a number >= %g, got '%s'", name, min, s);
    return v;
}

static long parse_long(const char *name, const char *s, long min)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno || v < min)
        fail("%s: expected an integer >= %ld, got '%s'", name, min, s);
    return v;
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
    raise_nofile(opt.conns + 16);
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
