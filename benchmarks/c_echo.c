/*
 * c_echo: the per-core reference for gnetpy's benchmarks.
 *
 * One thread, one level-triggered epoll set.  Each readable connection is read
 * into a 64 KiB buffer and written straight back.  What the socket does not
 * take is kept in a per-connection buffer and the connection waits for
 * EPOLLOUT instead of reading more, so the client feels backpressure and
 * memory stays bounded (at most 64 KiB pending per connection).
 *
 * UDP (--addr udp://HOST:PORT): one non-blocking datagram socket in the same
 * epoll set; each readable event reads datagrams with recvfrom and sends each
 * straight back with sendto until the socket is drained (at most 64 per
 * event).  A datagram the socket buffer refuses is dropped, as UDP may.
 *
 * usage: c_echo --addr tcp://HOST:PORT | unix:///path | udp://HOST:PORT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define BUF_SIZE (64 * 1024)
#define MAX_EVENTS 256
#define UDP_BURST 64            /* datagrams per readable event, then back to epoll */

struct conn {
    int fd;
    size_t pending_len;
    char *pending;              /* allocated the first time a write is short */
};

static int epfd;
static int is_tcp;
static int is_udp;
static char buf[BUF_SIZE];

static void die(const char *what)
{
    fprintf(stderr, "c_echo: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void watch(struct conn *c, int op, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0)
        die("epoll_ctl");
}

static void close_conn(struct conn *c)
{
    close(c->fd);   /* also removes it from the epoll set */
    free(c->pending);
    free(c);
}

/* Send data; keep what the socket refuses.  Returns -1 if the peer is gone. */
static int send_or_keep(struct conn *c, const char *data, size_t len)
{
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        n = 0;
    }
    if ((size_t)n == len)
        return 0;
    if (!c->pending && !(c->pending = malloc(BUF_SIZE))) {
        fputs("c_echo: out of memory\n", stderr);
        exit(1);
    }
    memmove(c->pending, data + n, len - (size_t)n);   /* data may be c->pending */
    c->pending_len = len - (size_t)n;
    return 0;
}

static void on_readable(struct conn *c)
{
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0 || send_or_keep(c, buf, (size_t)n) < 0) {
        close_conn(c);
        return;
    }
    if (c->pending_len)
        watch(c, EPOLL_CTL_MOD, EPOLLOUT);   /* stop reading until flushed */
}

static void on_writable(struct conn *c)
{
    size_t len = c->pending_len;
    c->pending_len = 0;
    if (send_or_keep(c, c->pending, len) < 0) {
        close_conn(c);
        return;
    }
    if (!c->pending_len)
        watch(c, EPOLL_CTL_MOD, EPOLLIN);
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                errno == ECONNABORTED)
                return;
            /* EMFILE and the like: say so and leave the rest in the backlog. */
            perror("c_echo: accept");
            return;
        }
        if (is_tcp) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
            fputs("c_echo: out of memory\n", stderr);
            exit(1);
        }
        c->fd = fd;
        watch(c, EPOLL_CTL_ADD, EPOLLIN);
    }
}

static int listen_on(const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    memset(&ss, 0, sizeof ss);
    if (strncmp(addr, "unix://", 7) == 0) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
        const char *path = addr + 7;
        if (strlen(path) >= sizeof sun->sun_path) {
            fprintf(stderr, "c_echo: unix socket path too long: %s\n", path);
            exit(2);
        }
        sun->sun_family = AF_UNIX;
        strcpy(sun->sun_path, path);
        sslen = sizeof *sun;
    } else if (strncmp(addr, "tcp://", 6) == 0 || strncmp(addr, "udp://", 6) == 0) {
        is_udp = addr[0] == 'u';
        char host[256];
        const char *hp = addr + 6, *colon = strrchr(hp, ':');
        if (!colon || (size_t)(colon - hp) >= sizeof host) {
            fprintf(stderr, "c_echo: expected %.3s://HOST:PORT, got %s\n", addr, addr);
            exit(2);
        }
        memcpy(host, hp, (size_t)(colon - hp));
        host[colon - hp] = '\0';
        struct addrinfo hints = {.ai_socktype = is_udp ? SOCK_DGRAM : SOCK_STREAM,
                                 .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
        struct addrinfo *res;
        int rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
        if (rc != 0) {
            fprintf(stderr, "c_echo: cannot resolve %s: %s\n", addr, gai_strerror(rc));
            exit(2);
        }
        memcpy(&ss, res->ai_addr, res->ai_addrlen);
        sslen = res->ai_addrlen;
        freeaddrinfo(res);
        is_tcp = !is_udp;
    } else {
        fprintf(stderr, "c_echo: --addr must be tcp://HOST:PORT, unix:///path or "
                "udp://HOST:PORT, got %s\n", addr);
        exit(2);
    }
    int fd = socket(ss.ss_family, (is_udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK |
                    SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    if (is_tcp)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sslen) < 0)
        die("bind");
    if (!is_udp && listen(fd, SOMAXCONN) < 0)
        die("listen");
    return fd;
}

/* Echo the datagrams queued on the UDP socket, each to its sender. */
static void udp_echo(int fd)
{
    struct sockaddr_storage peer;
    for (int i = 0; i < UDP_BURST; i++) {
        socklen_t plen = sizeof peer;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &plen);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR || errno == ECONNREFUSED)
                continue;   /* ECONNREFUSED: an ICMP error for an earlier reply */
            die("recvfrom");
        }
        if (sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&peer, plen) < 0 &&
            errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS &&
            errno != ECONNREFUSED && errno != EINTR)
            die("sendto");
    }
}

/* Idle-connection runs need thousands of descriptors. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3 || strcmp(argv[1], "--addr") != 0) {
        fputs("usage: c_echo --addr tcp://HOST:PORT | unix:///path | udp://HOST:PORT\n", stderr);
        return 2;
    }
    raise_nofile();
    int lfd = listen_on(argv[2]);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) < 0)
        die("epoll_ctl");

    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c && is_udp)
                udp_echo(lfd);
            else if (!c)
                accept_all(lfd);
            else if (c->pending_len)
                on_writable(c);
            else
                on_readable(c);
        }
    }
}
