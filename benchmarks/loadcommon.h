/*
 * loadcommon.h: what loadgen.c and tlsload.c share, as header-only static
 * functions (each program is one .c file, built with `cc ... NAME.c -lm`).
 *
 * The including file defines LOAD_PROG, its name, before including this:
 * fail() prefixes every error line with it.  Nothing here reads either
 * program's globals: the histogram, the server pid and the like are passed in.
 *
 * Here: errors and clocks, the latency histogram, the byte pattern, the
 * server's CPU time over its whole process tree (from /proc), the measured
 * window's edges, the local-port / TIME_WAIT numbers and the source-address
 * binding of churn mode, address resolution and option parsing.
 */
#ifndef LOADCOMMON_H
#define LOADCOMMON_H

#ifndef LOAD_PROG
#error "define LOAD_PROG (the program's name, for error messages) before including loadcommon.h"
#endif

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Pattern period: a prime, so no message size divides it and a message that
 * arrives in another message's place does not line up with the pattern. */
#define PATTERN_PERIOD 65521u
#define HANDSHAKE_BYTES 16        /* proves a connection is accepted and served */
#define MAX_EVENTS 512
#define BATCH_TIMEOUT_S 10.0      /* bound on setting up one batch of connections */
#define MAX_INFLIGHT_BYTES (64u << 20)
#define TIME_WAIT_S 60            /* Linux's TCP_TIMEWAIT_LEN: a closed client port's hold */
#define MAX_SRC_ADDRS 254         /* churn: 127.0.0.1 .. 127.0.0.254 */
#define MAX_TREE 4096             /* processes in the server's tree that are summed */

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* Latency histogram in nanoseconds: exact below 256 ns, then 128 sub-buckets
 * per power of two (< 0.8 % error), fixed size, no allocation per sample. */
#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS (2 * HIST_SUB + (64 - HIST_SUB_BITS - 1) * HIST_SUB)

enum phase { SETUP, WARMUP, MEASURE };

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* One line on stderr, "PROG: ...", and exit 1 (stdout flushed first). */
static void fail(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs(LOAD_PROG ": ", stderr);
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

static double unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Milliseconds to `deadline_ns` (now_ns() clock), rounded up, for epoll_wait. */
static int ms_until(uint64_t deadline_ns)
{
    uint64_t now = now_ns();
    if (now >= deadline_ns)
        return 0;
    return (int)((deadline_ns - now + 999999) / 1000000);
}

/* Our own user + system CPU time so far, seconds. */
static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
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

/* The q-quantile of `hist` (HIST_BUCKETS counts of nanoseconds), in microseconds. */
static double hist_quantile_us(const uint64_t *hist, double q)
{
    uint64_t total = 0, seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        total += hist[i];
    if (total == 0)
        return 0.0;
    uint64_t rank = (uint64_t)ceil(q * (double)total);
    if (rank == 0)
        rank = 1;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= rank)
            return hist_value(i) / 1000.0;
    }
    return 0.0;
}

/* ---- byte pattern ------------------------------------------------------- */

/* Pseudo-random bytes with period PATTERN_PERIOD, repeated past the period so
 * that any window of up to `slack` bytes starting inside it is contiguous: a
 * send or a verify is then one send()/memcmp() with no copying.  *len: the
 * bytes allocated, PATTERN_PERIOD + slack. */
static unsigned char *pattern_new(size_t slack, size_t *len)
{
    uint64_t x = 0x9e3779b97f4a7c15u;
    *len = PATTERN_PERIOD + slack;
    unsigned char *pattern = malloc(*len);
    if (!pattern)
        fail("out of memory for the %zu-byte pattern", *len);
    for (size_t i = 0; i < PATTERN_PERIOD; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pattern[i] = (unsigned char)(x >> 24);
    }
    for (size_t i = PATTERN_PERIOD; i < *len; i++)
        pattern[i] = pattern[i - PATTERN_PERIOD];
    return pattern;
}

/* ---- server CPU from /proc: the whole process tree --------------------- */

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
    if (read_proc_cpu(pid, &s->procs[s->n], NULL))
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

/* The server (`pid`, --pid) and all its descendants, each with its CPU time so far. */
static void read_server_cpu(struct cpu_sample *s, long pid)
{
    if (!s->procs) {
        s->procs = calloc(MAX_TREE, sizeof *s->procs);
        if (!s->procs)
            fail("out of memory for the server's process tree");
    }
    s->n = 0;
    s->truncated = 0;
    if (!read_proc_cpu(pid, &s->procs[0], NULL))
        fail("cannot read /proc/%ld/stat: the server process is gone (is the pid right?)", pid);
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

/* ---- the measured window ------------------------------------------------- */

/* The measured window, with the server's and our own CPU time read at its
 * edges. */
struct window {
    uint64_t t0, t1;
    double unix0;                      /* wall-clock time of t0 */
    double late_s;                     /* loadgen --measure-at: how late the window started */
    struct cpu_sample cpu0, cpu1;
    double self0, self1;
};

/* The window opens: the server's tree (if `pid`), our CPU time, the clocks. */
static void window_open(struct window *w, long pid)
{
    if (pid)
        read_server_cpu(&w->cpu0, pid);
    w->self0 = self_cpu_s();
    w->t0 = now_ns();
    w->unix0 = unix_now();
}

static void window_close(struct window *w, long pid)
{
    w->t1 = now_ns();
    if (pid)
        read_server_cpu(&w->cpu1, pid);
    w->self1 = self_cpu_s();
}

static double window_s(const struct window *w)
{
    return (double)(w->t1 - w->t0) / 1e9;
}

/* The server's CPU time over the window per `unit` (msg, conn), as JSON
 * fields (each after ", "), summed over the process tree of `pid` (0: nulls). */
static void print_server_cpu(const struct window *w, long pid, const char *unit, double count)
{
    if (pid) {
        struct tree_cpu t = tree_cpu_delta(&w->cpu0, &w->cpu1);
        double tick_us = 1e6 / (double)sysconf(_SC_CLK_TCK);
        double user_us = (double)t.utime * tick_us;
        double sys_us = (double)t.stime * tick_us;
        printf(", \"server_pid\": %ld, \"server_user_us_per_%s\": %.4f, "
               "\"server_sys_us_per_%s\": %.4f, \"server_cpu_util\": %.3f, "
               "\"server_processes\": %d, \"server_processes_started\": %d, "
               "\"server_processes_exited\": %d, \"server_processes_truncated\": %s",
               pid, unit, user_us / count, unit, sys_us / count,
               (user_us + sys_us) / 1e6 / window_s(w), t.summed, t.started, t.exited,
               t.truncated ? "true" : "false");
    } else {
        printf(", \"server_pid\": null, \"server_user_us_per_%s\": null, "
               "\"server_sys_us_per_%s\": null, \"server_cpu_util\": null, "
               "\"server_processes\": null", unit, unit);
    }
}

/* ---- churn: local ports, TIME_WAIT, source addresses -------------------- */

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

/* Ephemeral ports connect() can pick from (IPv4's range), or -1 if unreadable. */
static long ip_local_ports(void)
{
    long hi = 0, lo = read_sysctl("/proc/sys/net/ipv4/ip_local_port_range", &hi);
    return lo < 0 || hi < lo ? -1 : hi - lo + 1;
}

/* New connections per second `ports` client ports on each of `src_addrs`
 * source addresses sustain when every closed one is held for TIME_WAIT_S (no
 * TIME_WAIT reuse), or -1 if `ports` is unknown (< 0). */
static double time_wait_capacity(long ports, int src_addrs)
{
    return ports < 0 ? -1.0 : (double)ports * src_addrs / TIME_WAIT_S;
}

/* connect() or bind() found no free local port: fail with the capacity the
 * ports sustain.  `who`: the connection; `note`: said after the capacity. */
static void fail_no_port(const char *who, int err, long ports, int src_addrs, const char *note)
    __attribute__((noreturn));

static void fail_no_port(const char *who, int err, long ports, int src_addrs, const char *note)
{
    fail("%s: connect: %s: no free local port (%ld ports x %d source address(es), each held %d s "
         "in TIME_WAIT after the client's close, sustain about %.0f new connections/s%s; use more "
         "--src-addrs)", who, strerror(err), ports, src_addrs, TIME_WAIT_S,
         time_wait_capacity(ports, src_addrs), note);
}

/* Spread churn's connections over 127.0.0.1..127.0.0.K (K = src_addrs):
 * connection `seq` (of client `idx`, for errors) binds `fd` to
 * 127.0.0.(1 + seq % K); each source address has its own ephemeral ports
 * towards the server.  IP_BIND_ADDRESS_NO_PORT leaves the port to connect(),
 * which picks it knowing the whole 4-tuple.  Returns 0, or the errno of a
 * bind that found no free local port (EADDRINUSE, EADDRNOTAVAIL: the caller
 * reports it with fail_no_port); anything else fails the run. */
static int bind_source(int fd, uint64_t seq, int idx, int src_addrs)
{
    unsigned host = 1u + (unsigned)(seq % (uint64_t)src_addrs);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(0x7f000000u + host);
    int one = 1;
    if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) < 0)
        fail("connection %llu (client %d): IP_BIND_ADDRESS_NO_PORT: %s", (unsigned long long)seq,
             idx, strerror(errno));
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
        if (errno == EADDRINUSE || errno == EADDRNOTAVAIL)
            return errno;
        fail("connection %llu (client %d): bind to 127.0.0.%u: %s", (unsigned long long)seq, idx,
             host, strerror(errno));
    }
    return 0;
}

/* Churn's JSON fields on the client's ports: `ports` (-1: unknown), the
 * TIME_WAIT capacity they give, `reuse` (net.ipv4.tcp_tw_reuse, -1: unknown). */
static void print_port_fields(long ports, int src_addrs, long reuse)
{
    if (ports < 0)
        printf("\"local_ports\": null, \"time_wait_capacity_conns_per_s\": null, ");
    else
        printf("\"local_ports\": %ld, \"time_wait_capacity_conns_per_s\": %.0f, ", ports,
               time_wait_capacity(ports, src_addrs));
    if (reuse < 0)
        printf("\"tcp_tw_reuse\": null, ");
    else
        printf("\"tcp_tw_reuse\": %ld, ", reuse);
}

/* ---- setup -------------------------------------------------------------- */

/* `target`, HOST:PORT ([V6ADDR]:PORT too), given as option `flag`, into
 * *addr and *addrlen for `socktype`.  With src_addrs > 1 it must be an IPv4
 * loopback address: clients are bound to 127.0.0.x. */
static void resolve_host_port(const char *flag, const char *target, int socktype, int src_addrs,
                              struct sockaddr_storage *addr, socklen_t *addrlen)
{
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
    struct addrinfo hints = {.ai_socktype = socktype, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0)
        fail("cannot resolve '%s': %s", target, gai_strerror(rc));
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    if (src_addrs > 1) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;
        if (addr->ss_family != AF_INET || (ntohl(sin->sin_addr.s_addr) >> 24) != 127)
            fail("--src-addrs binds clients to 127.0.0.x: the target must be an IPv4 loopback "
                 "address (127.0.0.0/8), got '%s'", target);
    }
}

/* RLIMIT_NOFILE raised to `needed` descriptors (for `conns` connections). */
static void raise_nofile(int needed, int conns)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        fail("getrlimit: %s", strerror(errno));
    if (rl.rlim_cur >= (rlim_t)needed)
        return;
    if (rl.rlim_max < (rlim_t)needed)
        fail("%d connections need %d file descriptors; RLIMIT_NOFILE hard limit is %llu",
             conns, needed, (unsigned long long)rl.rlim_max);
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        fail("setrlimit(RLIMIT_NOFILE): %s", strerror(errno));
}

/* The pending error of a non-blocking connect() on `fd` (0: connected). */
static int connect_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    return err;
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

#endif /* LOADCOMMON_H */
