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
 * per message over the measured window (from /proc/PID/stat).
 *
 * Idle mode (--idle): opens N connections, proves each one is served with a
 * small echo, prints a report and holds them until stdin closes (or --hold
 * seconds, or SIGTERM/SIGINT) so the caller can measure server memory.
 *
 * Output: one JSON object on stdout.  Errors: one line on stderr, exit 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Pattern period: a prime, so no message size divides it and a message that
 * arrives in another message's place does not line up with the pattern. */
#define PATTERN_PERIOD 65521u
#define RECV_CHUNK (256 * 1024)   /* one recv() takes everything queued */
#define HANDSHAKE_BYTES 16        /* proves a connection is accepted and served */
#define MAX_EVENTS 512
#define BATCH_TIMEOUT_S 10.0      /* bound on setting up one batch of connections */
#define MAX_INFLIGHT_BYTES (64u << 20)

/* Latency histogram in nanoseconds: exact below 256 ns, then 128 sub-buckets
 * per power of two (< 0.8 % error), fixed size, no allocation per sample. */
#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS (2 * HIST_SUB + (64 - HIST_SUB_BITS - 1) * HIST_SUB)

enum conn_state { CONNECTING, HANDSHAKE, READY };
enum phase { SETUP, WARMUP, MEASURE };

struct conn {
    int fd;
    int idx;
    enum conn_state state;
    int want_out;               /* EPOLLOUT is registered */
    uint64_t phase_shift;       /* where this connection starts in the pattern */
    uint64_t queued;            /* stream bytes the protocol has issued */
    uint64_t sent;              /* stream bytes written to the socket */
    uint64_t recvd;             /* stream bytes echoed back and verified */
    uint64_t last_progress_ns;  /* when bytes last came back */
    uint64_t *issued_ns;        /* ring of DEPTH send times, by message index */
};

struct options {
    const char *tcp;
    const char *unix_path;
    int conns;
    size_t size;
    unsigned depth;
    double duration;
    double warmup;
    long pid;
    int idle;
    double hold;
    int batch;
};

struct cpu_sample {
    unsigned long long utime, stime;  /* clock ticks */
};

static struct options opt = {
    .conns = 50, .size = 64, .depth = 1, .duration = 5.0, .warmup = 1.0,
    .pid = 0, .idle = 0, .hold = -1.0, .batch = 64,
};

static struct {
    enum phase phase;
    int epfd;
    struct conn *conns;
    uint64_t *issued_slab;
    unsigned char *pattern;      /* PATTERN_PERIOD bytes, then repeated slack */
    size_t pattern_len;
    unsigned char *rbuf;
    int ready;                   /* connections past the handshake */
    uint64_t measured_msgs;
    uint64_t hist[HIST_BUCKETS];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int stdin_ready;             /* idle mode: the last poll saw stdin readable */
    volatile sig_atomic_t stop;
} g;

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("loadgen: ", stderr);
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

/* ---- histogram ---------------------------------------------------------- */

static unsigned hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - HIST_SUB_BITS;            /* >= 1 */
    unsigned top = (unsigned)(v >> shift);           /* in [HIST_SUB, 2*HIST_SUB) */
    return 2 * HIST_SUB + (shift - 1) * HIST_SUB + (top - HIST_SUB);
}

static double hist_value(unsigned idx)
{
    if (idx < 2 * HIST_SUB)
        return idx;
    unsigned shift = (idx - 2 * HIST_SUB) / HIST_SUB + 1;
    unsigned top = HIST_SUB + (idx - 2 * HIST_SUB) % HIST_SUB;
    return ldexp(top + 0.5, (int)shift);  /* the bucket's midpoint */
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

/* ---- byte pattern ------------------------------------------------------- */

/* Pseudo-random bytes with period PATTERN_PERIOD, repeated past the period so
 * that any window of up to `slack` bytes starting inside it is contiguous: a
 * send or a verify is then one send()/memcmp() with no copying. */
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

/* ---- server CPU from /proc ---------------------------------------------- */

static struct cpu_sample read_server_cpu(void)
{
    char path[64], buf[1024];
    struct cpu_sample s = {0, 0};
    snprintf(path, sizeof path, "/proc/%ld/stat", opt.pid);
    FILE *f = fopen(path, "r");
    if (!f)
        fail("cannot read %s: %s (is the server pid right?)", path, strerror(errno));
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* comm (field 2) may contain spaces; the fields after it start after the
     * last ')'.  Field 3 is the first token there; utime/stime are 14 and 15. */
    char *p = strrchr(buf, ')');
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                     &s.utime, &s.stime) != 2)
        fail("cannot parse %s", path);
    return s;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
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
        if (len > g.pattern_len - PATTERN_PERIOD)
            len = g.pattern_len - PATTERN_PERIOD;
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
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
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
    uint64_t done_before = (before - HANDSHAKE_BYTES) / opt.size;
    uint64_t done_now = (c->recvd - HANDSHAKE_BYTES) / opt.size;
    for (uint64_t m = done_before; m < done_now; m++) {
        uint64_t *slot = &c->issued_ns[m % opt.depth];
        if (g.phase == MEASURE) {
            g.hist[hist_index(now - *slot)]++;
            g.measured_msgs++;
        }
        *slot = now;  /* message m + depth reuses the slot of message m */
        c->queued += opt.size;
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

static void on_event(struct conn *c, uint32_t events)
{
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
            on_event(evs[i].data.ptr, evs[i].events);
    }
}

static int ms_until(uint64_t deadline_ns)
{
    uint64_t now = now_ns();
    if (now >= deadline_ns)
        return 0;
    return (int)((deadline_ns - now + 999999) / 1000000);
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
        flush_send(c);
    }
    uint64_t measure_at = now + (uint64_t)(opt.warmup * 1e9);
    uint64_t end_at = measure_at + (uint64_t)(opt.duration * 1e9);
    while (now_ns() < measure_at)
        poll_once(ms_until(measure_at));

    g.phase = MEASURE;
    struct cpu_sample cpu0 = {0, 0}, cpu1 = {0, 0};
    if (opt.pid)
        cpu0 = read_server_cpu();
    double self0 = self_cpu_s();
    uint64_t t0 = now_ns();
    while (now_ns() < end_at)
        poll_once(ms_until(end_at));
    uint64_t t1 = now_ns();
    if (opt.pid)
        cpu1 = read_server_cpu();
    double self1 = self_cpu_s();

    check_stalls(t0, t1);
    if (g.measured_msgs == 0)
        fail("no message completed a round trip in the %.2f s measured window",
             (double)(t1 - t0) / 1e9);

    double secs = (double)(t1 - t0) / 1e9;
    double msgs = (double)g.measured_msgs;
    printf("{\"mode\": \"load\", \"connections\": %d, \"msg_size\": %zu, \"depth\": %u, "
           "\"warmup_s\": %.3f, \"duration_s\": %.6f, \"setup_s\": %.3f, "
           "\"messages\": %llu, \"msgs_per_s\": %.1f, \"mb_per_s\": %.3f, "
           "\"rtt_p50_us\": %.2f, \"rtt_p99_us\": %.2f, \"loadgen_cpu_util\": %.3f",
           opt.conns, opt.size, opt.depth, opt.warmup, secs, setup_s,
           (unsigned long long)g.measured_msgs, msgs / secs, msgs * (double)opt.size / secs / 1e6,
           hist_quantile_us(0.50), hist_quantile_us(0.99), (self1 - self0) / secs);
    if (opt.pid) {
        double tick_us = 1e6 / (double)sysconf(_SC_CLK_TCK);
        double user_us = (double)(cpu1.utime - cpu0.utime) * tick_us;
        double sys_us = (double)(cpu1.stime - cpu0.stime) * tick_us;
        printf(", \"server_pid\": %ld, \"server_user_us_per_msg\": %.4f, "
               "\"server_sys_us_per_msg\": %.4f, \"server_cpu_util\": %.3f",
               opt.pid, user_us / msgs, sys_us / msgs, (user_us + sys_us) / 1e6 / secs);
    } else {
        printf(", \"server_pid\": null, \"server_user_us_per_msg\": null, "
               "\"server_sys_us_per_msg\": null, \"server_cpu_util\": null");
    }
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
    char host[256];
    const char *colon = strrchr(opt.tcp, ':');
    if (!colon || colon == opt.tcp || (size_t)(colon - opt.tcp) >= sizeof host)
        fail("--tcp wants HOST:PORT, got '%s'", opt.tcp);
    const char *h = opt.tcp;
    size_t hlen = (size_t)(colon - opt.tcp);
    if (h[0] == '[' && h[hlen - 1] == ']') {   /* [::1]:port */
        h++;
        hlen -= 2;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0)
        fail("cannot resolve '%s': %s", opt.tcp, gai_strerror(rc));
    memcpy(&g.addr, res->ai_addr, res->ai_addrlen);
    g.addrlen = res->ai_addrlen;
    freeaddrinfo(res);
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
    g.conns = calloc((size_t)opt.conns, sizeof *g.conns);
    g.issued_slab = calloc((size_t)opt.conns * opt.depth, sizeof *g.issued_slab);
    g.rbuf = malloc(RECV_CHUNK);
    if (!g.conns || !g.issued_slab || !g.rbuf)
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
    fputs("usage: loadgen (--tcp HOST:PORT | --unix PATH) [options]\n"
          "  --conns N        connections (default 50)\n"
          "  --size BYTES     message size (default 64)\n"
          "  --depth K        messages in flight per connection (default 1)\n"
          "  --duration S     measured window, seconds (default 5)\n"
          "  --warmup S       warm-up before the window, seconds (default 1)\n"
          "  --pid PID        server pid: report its CPU time per message\n"
          "  --idle           open N connections, report, hold them\n"
          "  --hold S         idle: hold S seconds (default: until stdin closes)\n"
          "  --batch N        connections set up at a time (default 64)\n", f);
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
        {"tcp", required_argument, 0, 't'},      {"unix", required_argument, 0, 'u'},
        {"conns", required_argument, 0, 'c'},    {"size", required_argument, 0, 's'},
        {"depth", required_argument, 0, 'd'},    {"duration", required_argument, 0, 'D'},
        {"warmup", required_argument, 0, 'w'},   {"pid", required_argument, 0, 'p'},
        {"idle", no_argument, 0, 'i'},           {"hold", required_argument, 0, 'H'},
        {"batch", required_argument, 0, 'b'},    {"help", no_argument, 0, 'h'},
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
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind != argc || !opt.tcp == !opt.unix_path) {
        usage(stderr);
        exit(2);
    }
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
    g.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g.epfd < 0)
        fail("epoll_create1: %s", strerror(errno));
    if (opt.idle)
        run_idle(t_start);
    else
        run_load(t_start);
    return 0;
}
