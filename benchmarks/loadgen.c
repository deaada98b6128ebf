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
 * server's CPU time per connection.
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
#include <dirent.h>
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
#define TIME_WAIT_S 60            /* Linux's TCP_TIMEWAIT_LEN: a closed client port's hold */
#define MAX_SRC_ADDRS 254         /* churn: 127.0.0.1 .. 127.0.0.254 */
#define UDP_HEADER 16             /* u32 magic, u32 socket, u64 sequence; pattern after */
#define UDP_MAGIC 0x4c475544u     /* "LGUD" */
#define UDP_MAX_SIZE 65507        /* the largest UDP payload over IPv4 */
#define MAX_TREE 4096             /* processes in the server's tree that are summed */
#define FRAME_HEADER 4            /* --frames: a big-endian u32 body length before each body */
#define FRAMES_PATTERN_MAX (16u << 20)   /* --frames: bound on the framed pattern's period */

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

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

/* One process of the server's tree: its identity (pid and start time, so a
 * reused pid is not mistaken for it) and its CPU time so far. */
struct proc_cpu {
    long pid;
    unsigned long long start;          /* field 22: start time, ticks after boot */
    unsigned long long utime, stime;   /* fields 14, 15: clock ticks, all threads */
};

/* The server's process tree at one moment: --pid and every descendant. */
struct cpu_sample {
    int n;
    int truncated;                     /* more than MAX_TREE processes */
    struct proc_cpu *procs;            /* MAX_TREE entries */
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
    g.period = PATTERN_PERIOD;
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

/* ---- server CPU from /proc: the whole process tree --------------------- */

/* /proc/PID/stat of one process: 1 and its CPU, 0 if it is gone (it exited
 * between being listed and being read), *ppid its parent. */
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
        return 0;   /* a process that is being torn down reads empty */
    buf[n] = '\0';
    /* comm (field 2) may contain spaces; the fields after it start after the
     * last ')'.  Field 3 is the first token there: the state, then ppid (4);
     * utime/stime are 14 and 15, the start time 22. */
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
            return;      /* listed twice while the tree changed: once is enough */
    if (s->n == MAX_TREE) {
        s->truncated = 1;
        return;
    }
    struct proc_cpu *pc = &s->procs[s->n];
    if (read_proc_cpu(pid, pc, NULL))
        s->n++;
}

/* Whether the kernel has /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN). */
static int have_children_files(void)
{
    static int known = -1;
    if (known < 0)
        known = access("/proc/thread-self/children", F_OK) == 0;
    return known;
}

/* Add the children of every thread of s->procs[i] (/proc/PID/task/TID/children). */
static void tree_add_children(struct cpu_sample *s, int i)
{
    char path[96];
    long pid = s->procs[i].pid;
    snprintf(path, sizeof path, "/proc/%ld/task", pid);
    DIR *tasks = opendir(path);
    if (!tasks)
        return;          /* it exited meanwhile: its children are orphans now */
    struct dirent *t;
    while ((t = readdir(tasks)) != NULL) {
        if (t->d_name[0] < '0' || t->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%ld/task/%ld/children", pid,
                 strtol(t->d_name, NULL, 10));
        FILE *f = fopen(path, "r");
        if (!f)
            continue;    /* the thread exited */
        long child;
        while (fscanf(f, "%ld", &child) == 1)
            tree_add(s, child);
        fclose(f);
    }
    closedir(tasks);
}

/* Fallback without children files: one pass over /proc for everyone's parent. */
static void tree_by_scan(struct cpu_sample *s)
{
    static long (*pairs)[2];             /* (pid, ppid) of every process */
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
    for (int i = 0; i < s->n; i++)       /* s->n grows as descendants are found */
        for (size_t j = 0; j < n; j++)
            if (pairs[j][1] == s->procs[i].pid)
                tree_add(s, pairs[j][0]);
}

/* The server (--pid) and all its descendants, each with its CPU time so far. */
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
        fail("cannot read /proc/%ld/stat: the server process is gone (is the pid right?)",
             opt.pid);
    s->n = 1;
    if (!have_children_files()) {
        tree_by_scan(s);
        return;
    }
    for (int i = 0; i < s->n; i++)       /* breadth first; s->n grows */
        tree_add_children(s, i);
}

/* The tree's CPU time over the window.  A process at both ends counts its
 * difference; one that started during the window counts all its time (all of
 * it is in the window); one that exited during the window is lost (counted in
 * *exited): its CPU time is gone with it. */
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

/* The warm-up and the measured window, with the server's and our own CPU
 * time read at the window's edges. */
struct window {
    uint64_t t0, t1;
    double unix0;                      /* wall-clock time of t0 */
    double late_s;                     /* --measure-at: how late the window started */
    struct cpu_sample cpu0, cpu1;
    double self0, self1;
};

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
    if (opt.pid)
        read_server_cpu(&w->cpu0);
    w->self0 = self_cpu_s();
    w->t0 = now_ns();
    w->unix0 = unix_now();
    poll_until(end_at, tick, tick_ns);
    w->t1 = now_ns();
    if (opt.pid)
        read_server_cpu(&w->cpu1);
    w->self1 = self_cpu_s();
}

static double window_s(const struct window *w)
{
    return (double)(w->t1 - w->t0) / 1e9;
}

/* The server's CPU time over the window per `unit` (msg, conn), as JSON
 * fields, summed over its process tree; and where the window was in time. */
static void print_server_cpu(const struct window *w, const char *unit, double count)
{
    printf(", \"window_start_unix\": %.6f, \"window_late_s\": %.6f", w->unix0, w->late_s);
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
           hist_quantile_us(0.50), hist_quantile_us(0.99), (w.self1 - w.self0) / secs);
    print_server_cpu(&w, "msg", msgs);
    printf("}\n");
}

/* ---- churn mode: connect, one ping-pong, close ------------------------- */

static const unsigned char *pattern_from(uint64_t shift, uint64_t offset)
{
    return g.pattern + (shift + offset) % PATTERN_PERIOD;
}

/* A number from /proc/sys, or -1 where it cannot be read. */
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

/* Ephemeral ports connect() can pick from, or -1 (not TCP, or unreadable). */
static long local_ports(void)
{
    long hi = 0, lo;
    if (g.addr.ss_family == AF_UNIX)
        return -1;
    lo = read_sysctl("/proc/sys/net/ipv4/ip_local_port_range", &hi);
    return lo < 0 || hi < lo ? -1 : hi - lo + 1;
}

/* New connections per second the client's ports sustain when every closed
 * one is held for TIME_WAIT_S (no TIME_WAIT reuse), or -1 if unknown. */
static double time_wait_capacity(void)
{
    long ports = local_ports();
    return ports < 0 ? -1.0 : (double)ports * opt.src_addrs / TIME_WAIT_S;
}

static void churn_watch(struct churn *c, int op, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(g.epfd, op, c->fd, &ev) < 0)
        fail("connection %llu (client %d): epoll_ctl: %s", (unsigned long long)c->seq, c->idx,
             strerror(errno));
    c->want_out = (events & EPOLLOUT) != 0;
}

/* Send what is left of the message; wait for EPOLLOUT only while some is. */
static void churn_send(struct churn *c, int op)
{
    while (c->sent < opt.size) {
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
    int need_out = c->sent < opt.size;
    if (op == EPOLL_CTL_ADD || need_out != c->want_out)
        churn_watch(c, op, need_out ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static void churn_no_port(const struct churn *c, int err)
{
    double cap = time_wait_capacity();
    fail("connection %llu (client %d): connect: %s: no free local port (%ld ports x %d source "
         "address(es), each held %d s in TIME_WAIT after the client's close, sustain about %.0f "
         "new connections/s without TIME_WAIT reuse; use more --src-addrs)",
         (unsigned long long)c->seq, c->idx, strerror(err), local_ports(), opt.src_addrs,
         TIME_WAIT_S, cap);
}

/* Spread connections over 127.0.0.1..127.0.0.K: each source address has its
 * own ephemeral ports towards the server.  IP_BIND_ADDRESS_NO_PORT leaves the
 * port to connect(), which picks it knowing the whole 4-tuple. */
static void churn_bind_source(const struct churn *c)
{
    unsigned host = 1u + (unsigned)(c->seq % (uint64_t)opt.src_addrs);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(0x7f000000u + host);
    int one = 1;
    if (setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) < 0)
        fail("connection %llu (client %d): IP_BIND_ADDRESS_NO_PORT: %s",
             (unsigned long long)c->seq, c->idx, strerror(errno));
    if (bind(c->fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
        if (errno == EADDRINUSE || errno == EADDRNOTAVAIL)
            churn_no_port(c, errno);
        fail("connection %llu (client %d): bind to 127.0.0.%u: %s", (unsigned long long)c->seq,
             c->idx, host, strerror(errno));
    }
}

static void churn_open(struct churn *c)
{
    c->seq = g.next_seq++;
    c->phase_shift = (c->seq * 7919u + 1) % PATTERN_PERIOD;
    c->sent = c->recvd = 0;
    c->started_ns = now_ns();
    c->fd = socket(g.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        fail("connection %llu (client %d): socket: %s", (unsigned long long)c->seq, c->idx,
             strerror(errno));
    if (opt.src_addrs > 1)
        churn_bind_source(c);
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
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
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
           conns / secs, hist_quantile_us(0.50), hist_quantile_us(0.99), opt.src_addrs);
    if (ports < 0)
        printf("\"local_ports\": null, \"time_wait_capacity_conns_per_s\": null, ");
    else
        printf("\"local_ports\": %ld, \"time_wait_capacity_conns_per_s\": %.0f, ", ports,
               time_wait_capacity());
    if (reuse < 0)
        printf("\"tcp_tw_reuse\": null, ");
    else
        printf("\"tcp_tw_reuse\": %ld, ", reuse);
    printf("\"loadgen_cpu_util\": %.3f", (w.self1 - w.self0) / secs);
    print_server_cpu(&w, "conn", conns);
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
           hist_quantile_us(0.50), hist_quantile_us(0.99), (unsigned long long)g.lost,
           (unsigned long long)g.stale, (w.self1 - w.self0) / secs);
    print_server_cpu(&w, "msg", msgs);
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
    const char *target = opt.udp ? opt.udp : opt.tcp;
    const char *flag = opt.udp ? "--udp" : "--tcp";
    char host[256];
    const char *colon = strrchr(target, ':');
    if (!colon || colon == target || (size_t)(colon - target) >= sizeof host)
        fail("%s wants HOST:PORT, got '%s'", flag, target);
    const char *h = target;
    size_t hlen = (size_t)(colon - target);
    if (h[0] == '[' && h[hlen - 1] == ']') {   /* [::1]:port */
        h++;
        hlen -= 2;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    struct addrinfo hints = {.ai_socktype = opt.udp ? SOCK_DGRAM : SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
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
          "                   (default 1; each has its own ephemeral ports)\n"
          "  --frames         each message is a frame: a 4-byte big-endian length, then\n"
          "                   SIZE bytes of body (for servers that echo frame by frame)\n"
          "  --udp HOST:PORT  UDP echo: one datagram in flight per socket\n"
          "  --loss-timeout MS  UDP: count a datagram lost after MS ms (default 200)\n", f);
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
        {"churn", no_argument, 0, 'C'},          {"src-addrs", required_argument, 0, 'S'},
        {"udp", required_argument, 0, 'U'},      {"loss-timeout", required_argument, 0, 'L'},
        {"measure-at", required_argument, 0, 'M'},
        {"frames", no_argument, 0, 'F'},
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
    raise_nofile(opt.conns + 16);
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
