/* The reactor's system calls: os.read and os.write for its non-blocking descriptors, without
   releasing the GIL; recvfrom and sendto likewise; epoll_wait.

   os.read/os.write release the GIL around every system call (a mutex and a condition
   variable each way: a large share of a small message's cost, compiled; measured in
   benchmarks/results/2026-11-27-compiled-accelerator.md).
   A read or write of a non-blocking socket never waits, so holding the GIL through it
   costs other threads nothing they would notice.  Same results and errors as os.read
   and os.write (BlockingIOError for EAGAIN, OSError with errno; EINTR retried after the
   signal handlers ran, as PEP 475 does).  Used only where the descriptor is known to be
   non-blocking: gnetpy/syscalls.py.  Part of the optional compiled build (setup.py).

   recvfrom and sendto do the same for a datagram socket, and one thing more: the peer's
   address stays the kernel's struct sockaddr, as bytes.  socket.recvfrom turns it into a
   (host, port) tuple for every datagram (inet_ntop, which formats with sprintf) and
   socket.sendto parses the tuple back (PyArg_ParseTuple, inet_pton): together a third of
   W7's instructions per datagram (benchmarks/results/2026-11-27-udp-frames.md).  The bytes serve as the peer's key and as the
   reply's destination; udp.py makes the tuple once per peer (syscalls.sockaddr_to_addr).

   epoll_wait is select.epoll.poll, GIL release included, with its list built cheaper (below). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>

/* The calls below go to the kernel through syscall(2), not libc's read and write: in a
   process with threads those are cancellation points, which wrap every call in two more
   (asynchronous cancellation on, then off) -- work for pthread_cancel, which nothing here
   uses.  Same system call, same return value and errno. */
#define SYS_READ(fd, buf, n) ((ssize_t)syscall(SYS_read, (fd), (buf), (n)))
#define SYS_WRITE(fd, buf, n) ((ssize_t)syscall(SYS_write, (fd), (buf), (n)))
#define SYS_WRITEV(fd, iov, n) ((ssize_t)syscall(SYS_writev, (fd), (iov), (n)))
#if defined(SYS_recvfrom) && defined(SYS_sendto)
#define SYS_RECVFROM(fd, buf, n, from, len) ((ssize_t)syscall(SYS_recvfrom, (fd), (buf), (n), 0, (from), (len)))
#define SYS_SENDTO(fd, buf, n, to, len) ((ssize_t)syscall(SYS_sendto, (fd), (buf), (n), 0, (to), (len)))
#else  /* no such system calls on this architecture (socketcall): libc's */
#define SYS_RECVFROM(fd, buf, n, from, len) recvfrom((fd), (buf), (n), 0, (from), (len))
#define SYS_SENDTO(fd, buf, n, to, len) sendto((fd), (buf), (n), 0, (to), (len))
#endif

/* Where read and recvfrom receive: what arrived is copied out into a bytes of its own
   size, so the buffer a read may need (64 KiB for a datagram) is not allocated and shrunk
   per call.  One buffer serves every call: the GIL is held from the system call to the copy. */
static char received[65536];
#define SMALL_READ_MAX 1024

/* After a failed system call: 0 to try again (EINTR, and the signal handlers ran
   without raising, as PEP 475 asks), or -1 with the exception set. */
static int failed(void) {
    if (errno == EINTR) return PyErr_CheckSignals();
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

/* A descriptor as os.read takes it: any C int (a bad one is EBADF from the call). */
static int as_fd(PyObject *o) {
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < INT_MIN || v > INT_MAX) { PyErr_SetString(PyExc_OverflowError, "fd is greater than maximum"); return -1; }
    return (int)v;
}

/* The (fd, n) arguments of read and recvfrom; -1 with the exception set. */
static int fd_and_size(PyObject *const *args, Py_ssize_t nargs, const char *usage, int *fd, Py_ssize_t *n) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, usage); return -1; }
    *fd = as_fd(args[0]);
    if (*fd == -1 && PyErr_Occurred()) return -1;
    *n = PyLong_AsSsize_t(args[1]);
    if (*n == -1 && PyErr_Occurred()) return -1;
    return 0;
}

static PyObject *sysio_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int fd;
    Py_ssize_t n;
    if (fd_and_size(args, nargs, "read(fd, n)", &fd, &n) < 0) return NULL;
    if (n < 0) { errno = EINVAL; return PyErr_SetFromErrno(PyExc_OSError); }
    if (n <= SMALL_READ_MAX) {
        /* A small read (buffer.py's SMALL_READ): into the shared buffer, then a bytes of the
           size read -- one exact allocation instead of n bytes allocated and then shrunk,
           which for CPython's small objects is a second allocation and a copy.  Larger reads
           go straight into their bytes: copying them again would cost more than the shrink. */
        ssize_t r;
        while ((r = SYS_READ(fd, received, (size_t)n)) < 0) {
            if (failed() != 0) return NULL;
        }
        return PyBytes_FromStringAndSize(received, r);
    }
    PyObject *buf = PyBytes_FromStringAndSize(NULL, n);
    if (buf == NULL) return NULL;
    ssize_t r;
    while ((r = SYS_READ(fd, PyBytes_AS_STRING(buf), (size_t)n)) < 0) {
        if (failed() != 0) { Py_DECREF(buf); return NULL; }
    }
    if (r != n && _PyBytes_Resize(&buf, r) < 0) return NULL;
    return buf;
}

static PyObject *sysio_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "write(fd, data)"); return NULL; }
    int fd = as_fd(args[0]);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    /* bytes, what handlers write most: no buffer to export and release. */
    Py_buffer view;
    int exported = !PyBytes_CheckExact(args[1]);
    if (exported && PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) return NULL;
    const char *data = exported ? (const char *)view.buf : PyBytes_AS_STRING(args[1]);
    size_t len = exported ? (size_t)view.len : (size_t)PyBytes_GET_SIZE(args[1]);
    ssize_t r;
    while ((r = SYS_WRITE(fd, data, len)) < 0) {
        if (failed() != 0) break;
    }
    if (exported) PyBuffer_Release(&view);
    return r < 0 ? NULL : PyLong_FromSsize_t(r);
}

/* writev(fd, buffers) -> int: os.writev without releasing the GIL, for a connection's gathered
   writes (conn.py).  bytes pieces are read in place; anything else through the buffer
   protocol, released after the call.  More pieces than IOV_MAX is the kernel's EINVAL, as for
   os.writev: the caller sends IOV_MAX at a time. */
#define IOV_ON_STACK 64

static PyObject *sysio_writev(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "writev(fd, buffers)"); return NULL; }
    int fd = as_fd(args[0]);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    PyObject *seq = PySequence_Fast(args[1], "writev() arg 2 must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    struct iovec iov_on_stack[IOV_ON_STACK];
    Py_buffer views_on_stack[IOV_ON_STACK];
    struct iovec *iov = iov_on_stack;
    Py_buffer *views = views_on_stack;
    char exported_on_stack[IOV_ON_STACK];
    char *exported = exported_on_stack;
    PyObject *result = NULL;
    Py_ssize_t ready = 0;
    if (n > IOV_ON_STACK) {
        iov = PyMem_Malloc((size_t)n * sizeof(struct iovec));
        views = PyMem_Malloc((size_t)n * sizeof(Py_buffer));
        exported = PyMem_Malloc((size_t)n);
        if (iov == NULL || views == NULL || exported == NULL) { PyErr_NoMemory(); goto done; }
    }
    for (; ready < n; ready++) {
        PyObject *piece = items[ready];
        exported[ready] = !PyBytes_CheckExact(piece);
        if (!exported[ready]) {
            iov[ready].iov_base = PyBytes_AS_STRING(piece);
            iov[ready].iov_len = (size_t)PyBytes_GET_SIZE(piece);
        } else {
            if (PyObject_GetBuffer(piece, &views[ready], PyBUF_SIMPLE) < 0) goto done;
            iov[ready].iov_base = views[ready].buf;
            iov[ready].iov_len = (size_t)views[ready].len;
        }
    }
    ssize_t r;
    while ((r = SYS_WRITEV(fd, iov, (int)n)) < 0) {
        if (failed() != 0) goto done;
    }
    result = PyLong_FromSsize_t(r);
done:
    for (Py_ssize_t i = 0; i < ready; i++) {
        if (exported[i]) PyBuffer_Release(&views[i]);
    }
    if (iov != iov_on_stack) PyMem_Free(iov);
    if (views != views_on_stack) PyMem_Free(views);
    if (exported != exported_on_stack) PyMem_Free(exported);
    Py_DECREF(seq);
    return result;
}

static PyObject *sysio_recvfrom(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int fd;
    Py_ssize_t n;
    if (fd_and_size(args, nargs, "recvfrom(fd, n)", &fd, &n) < 0) return NULL;
    if (n < 0 || n > (Py_ssize_t)sizeof(received)) {
        PyErr_Format(PyExc_ValueError, "recvfrom: n=%zd; 0 to %zu", n, sizeof(received));
        return NULL;
    }
    struct sockaddr_storage from;
    socklen_t fromlen;
    ssize_t r;
    for (;;) {
        fromlen = sizeof(from);
        r = SYS_RECVFROM(fd, received, (size_t)n, (struct sockaddr *)&from, &fromlen);
        if (r >= 0) break;
        if (failed() != 0) return NULL;
    }
    if (fromlen > sizeof(from)) fromlen = sizeof(from);  /* cannot happen for IP: the kernel says what it cut */
    PyObject *data = PyBytes_FromStringAndSize(received, r);
    if (data == NULL) return NULL;
    PyObject *addr = PyBytes_FromStringAndSize((const char *)&from, (Py_ssize_t)fromlen);
    if (addr == NULL) { Py_DECREF(data); return NULL; }
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) { Py_DECREF(data); Py_DECREF(addr); return NULL; }
    PyTuple_SET_ITEM(pair, 0, data);
    PyTuple_SET_ITEM(pair, 1, addr);
    return pair;
}

static PyObject *sysio_sendto(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) { PyErr_SetString(PyExc_TypeError, "sendto(fd, data, sockaddr)"); return NULL; }
    int fd = as_fd(args[0]);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    PyObject *addr = args[2];
    if (!PyBytes_Check(addr) || PyBytes_GET_SIZE(addr) < (Py_ssize_t)sizeof(sa_family_t)
            || PyBytes_GET_SIZE(addr) > (Py_ssize_t)sizeof(struct sockaddr_storage)) {
        PyErr_SetString(PyExc_TypeError, "sendto: sockaddr must be the bytes recvfrom returned");
        return NULL;
    }
    struct sockaddr_storage to;
    socklen_t tolen = (socklen_t)PyBytes_GET_SIZE(addr);
    memcpy(&to, PyBytes_AS_STRING(addr), tolen);  /* aligned for the kernel's reading */
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) return NULL;
    ssize_t r;
    for (;;) {
        r = SYS_SENDTO(fd, view.buf, (size_t)view.len, (struct sockaddr *)&to, tolen);
        if (r >= 0) break;
        if (failed() != 0) { PyBuffer_Release(&view); return NULL; }
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(r);
}

/* epoll_wait(epfd, timeout, maxevents) -> [(fd, events), ...]: select.epoll.poll, with its
   results and errors (timeout in seconds, negative to wait forever, rounded up to
   milliseconds; EINTR retried with what is left of it) and its GIL release around the wait.
   What differs is the cost of the list: built with PyTuple_New and PyLong_FromLong, not
   Py_BuildValue (a format string parsed per event), and its (fd, events) pairs reused: a
   pair that only ready_list's cache still holds -- the loop has dropped the list it was
   in -- gets its two items replaced instead of being freed and allocated again, the way
   CPython's zip and enumerate reuse their result tuples.  Nobody else can see the change
   (nobody else holds it), and a pair of ints is never part of a cycle, so the collector
   needs nothing.  Without the GIL (a free-threaded build) two threads could reuse one
   pair: there every pair is new.  Asking first without waiting and with
   the GIL held (to skip the hand-off under load) measured nothing on W1/W2 -- one hand-off
   per iteration is shared by the events of the iteration -- and would keep other threads
   waiting for the switch interval: not done. */
#define EVENTS_ON_STACK 256

#define PAIRS_CACHED 1024
#ifndef Py_GIL_DISABLED
static PyObject *pairs[PAIRS_CACHED];
#endif

/* The i-th (fd, events) pair of a result: a cached one nobody holds, refilled, or a new one. */
static PyObject *pair_of(int i, PyObject *fd, PyObject *mask) {
#ifndef Py_GIL_DISABLED
    if (i < PAIRS_CACHED) {
        PyObject *pair = pairs[i];
        if (pair != NULL && Py_REFCNT(pair) == 1) {
            PyObject *old_fd = PyTuple_GET_ITEM(pair, 0), *old_mask = PyTuple_GET_ITEM(pair, 1);
            PyTuple_SET_ITEM(pair, 0, fd);
            PyTuple_SET_ITEM(pair, 1, mask);
            Py_DECREF(old_fd);
            Py_DECREF(old_mask);
            Py_INCREF(pair);  /* one reference for the cache, one for the list */
            return pair;
        }
    }
#endif
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) { Py_DECREF(fd); Py_DECREF(mask); return NULL; }
    PyTuple_SET_ITEM(pair, 0, fd);
    PyTuple_SET_ITEM(pair, 1, mask);
#ifndef Py_GIL_DISABLED
    if (i < PAIRS_CACHED) {
        Py_XSETREF(pairs[i], pair);  /* the one it replaces lives on in whoever still holds it */
        Py_INCREF(pair);
    }
#endif
    return pair;
}

static PyObject *ready_list(const struct epoll_event *events, int n) {
    PyObject *list = PyList_New(n);
    if (list == NULL) return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *fd = PyLong_FromLong(events[i].data.fd);
        PyObject *mask = PyLong_FromUnsignedLong(events[i].events);
        if (fd == NULL || mask == NULL) {
            Py_XDECREF(fd); Py_XDECREF(mask); Py_DECREF(list);
            return NULL;
        }
        PyObject *pair = pair_of(i, fd, mask);
        if (pair == NULL) { Py_DECREF(list); return NULL; }
        PyList_SET_ITEM(list, i, pair);
    }
    return list;
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits with the GIL released; EINTR: the signal handlers run, then it waits for what is left.
   -1 with errno set, or -2 when a signal handler raised. */
static int wait_released(int epfd, struct epoll_event *events, int maxevents, int ms) {
    long long deadline = ms > 0 ? now_ms() + ms : 0;
    for (;;) {
        int n;
        Py_BEGIN_ALLOW_THREADS
        n = epoll_wait(epfd, events, maxevents, ms);
        Py_END_ALLOW_THREADS
        if (n >= 0 || errno != EINTR) return n;
        if (PyErr_CheckSignals()) return -2;
        if (ms > 0) {
            long long left = deadline - now_ms();
            ms = left > 0 ? (int)left : 0;
        }
    }
}

static PyObject *sysio_epoll_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) { PyErr_SetString(PyExc_TypeError, "epoll_wait(epfd, timeout, maxevents)"); return NULL; }
    int epfd = as_fd(args[0]);
    if (epfd == -1 && PyErr_Occurred()) return NULL;
    double timeout = PyFloat_AsDouble(args[1]);
    if (timeout == -1.0 && PyErr_Occurred()) return NULL;
    long maxevents = PyLong_AsLong(args[2]);
    if (maxevents == -1 && PyErr_Occurred()) return NULL;
    if (maxevents <= 0 || maxevents > INT_MAX / (long)sizeof(struct epoll_event)) {
        PyErr_Format(PyExc_ValueError, "maxevents must be greater than 0, got %ld", maxevents);
        return NULL;
    }
    int ms;
    if (timeout < 0) ms = -1;
    else if (timeout * 1e3 >= (double)INT_MAX) ms = INT_MAX;
    else ms = (int)ceil(timeout * 1e3);
    struct epoll_event on_stack[EVENTS_ON_STACK];
    struct epoll_event *events = on_stack;
    if (maxevents > EVENTS_ON_STACK) {  /* other threads run while it waits: no shared buffer */
        events = PyMem_Malloc((size_t)maxevents * sizeof(struct epoll_event));
        if (events == NULL) return PyErr_NoMemory();
    }
    int n = wait_released(epfd, events, (int)maxevents, ms);
    PyObject *result = NULL;
    if (n >= 0) result = ready_list(events, n);
    else if (n == -1) PyErr_SetFromErrno(PyExc_OSError);
    if (events != on_stack) PyMem_Free(events);
    return result;
}

static PyMethodDef methods[] = {
    {"read", (PyCFunction)(void (*)(void))sysio_read, METH_FASTCALL, "os.read without releasing the GIL"},
    {"write", (PyCFunction)(void (*)(void))sysio_write, METH_FASTCALL, "os.write without releasing the GIL"},
    {"writev", (PyCFunction)(void (*)(void))sysio_writev, METH_FASTCALL, "os.writev without releasing the GIL"},
    {"recvfrom", (PyCFunction)(void (*)(void))sysio_recvfrom, METH_FASTCALL,
     "recvfrom(fd, n) -> (data, sockaddr bytes), without releasing the GIL; n <= 65536"},
    {"sendto", (PyCFunction)(void (*)(void))sysio_sendto, METH_FASTCALL,
     "sendto(fd, data, sockaddr bytes from recvfrom) -> int, without releasing the GIL"},
    {"epoll_wait", (PyCFunction)(void (*)(void))sysio_epoll_wait, METH_FASTCALL,
     "epoll_wait(epfd, timeout, maxevents) -> [(fd, events)]: select.epoll.poll, its list built cheaper"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gnetpy._sysio", NULL, -1, methods};

PyMODINIT_FUNC PyInit__sysio(void) { return PyModule_Create(&module); }
