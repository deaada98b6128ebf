/* os.read and os.write for the reactor's non-blocking descriptors, without releasing the GIL.

   os.read/os.write release the GIL around every system call (a mutex and a condition
   variable, ~400 instructions each way: a sixth of a small message's cost, compiled).
   A read or write of a non-blocking socket never waits, so holding the GIL through it
   costs other threads nothing they would notice.  Same results and errors as os.read
   and os.write (BlockingIOError for EAGAIN, OSError with errno; EINTR retried after the
   signal handlers ran, as PEP 475 does).  Used only where the descriptor is known to be
   non-blocking: gnetpy/syscalls.py.  Part of the optional compiled build (setup.py).

   recvfrom and sendto do the same for a datagram socket, and one thing more: the peer's
   address stays the kernel's struct sockaddr, as bytes.  socket.recvfrom turns it into a
   (host, port) tuple for every datagram (inet_ntop, which formats with sprintf) and
   socket.sendto parses the tuple back (PyArg_ParseTuple, inet_pton): together about 4,000
   of W7's 11,000 instructions per datagram.  The bytes serve as the peer's key and as the
   reply's destination; udp.py makes the tuple once per peer (syscalls.sockaddr_to_addr). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <unistd.h>
#include <sys/socket.h>

/* Where recvfrom receives: every datagram is copied out into a bytes of its own size, so
   the 64 KiB a datagram may need are not allocated (and shrunk) per datagram.  One buffer
   serves every call: the GIL is held from the system call to the copy. */
static char datagram[65536];

/* A descriptor as os.read takes it: any C int (a bad one is EBADF from the call). */
static int as_fd(PyObject *o) {
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < INT_MIN || v > INT_MAX) { PyErr_SetString(PyExc_OverflowError, "fd is greater than maximum"); return -1; }
    return (int)v;
}

static PyObject *sysio_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "read(fd, n)"); return NULL; }
    int fd = as_fd(args[0]);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0) { errno = EINVAL; return PyErr_SetFromErrno(PyExc_OSError); }
    PyObject *buf = PyBytes_FromStringAndSize(NULL, n);
    if (buf == NULL) return NULL;
    ssize_t r;
    for (;;) {
        r = read(fd, PyBytes_AS_STRING(buf), (size_t)n);
        if (r >= 0) break;
        /* errno is saved first: a signal handler run by PyErr_CheckSignals may change it. */
        int saved = errno;
        if (saved != EINTR || PyErr_CheckSignals()) {
            Py_DECREF(buf);
            if (saved != EINTR) { errno = saved; return PyErr_SetFromErrno(PyExc_OSError); }
            return NULL;
        }
    }
    if (r != n && _PyBytes_Resize(&buf, r) < 0) return NULL;
    return buf;
}

static PyObject *sysio_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "write(fd, data)"); return NULL; }
    int fd = as_fd(args[0]);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) return NULL;
    ssize_t r;
    for (;;) {
        r = write(fd, view.buf, (size_t)view.len);
        if (r >= 0) break;
        if (errno != EINTR || PyErr_CheckSignals()) {
            int saved = errno;
            PyBuffer_Release(&view);
            if (saved != EINTR) { errno = saved; return PyErr_SetFromErrno(PyExc_OSError); }
            return NULL;
        }
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(r);
}

/* After a failed recvfrom or sendto: 0 to try again (EINTR, and the signal handlers ran
   without raising, as PEP 475 asks), or -1 with the exception set. */
static int failed(void) {
    if (errno == EINTR) return PyErr_CheckSignals();
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

static PyObject *sysio_recvfrom(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "recvfrom(fd, n)"); return NULL; }
    int fd = as_fd(args[0]);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0 || n > (Py_ssize_t)sizeof(datagram)) {
        PyErr_Format(PyExc_ValueError, "recvfrom: n=%zd; 0 to %zu", n, sizeof(datagram));
        return NULL;
    }
    struct sockaddr_storage from;
    socklen_t fromlen;
    ssize_t r;
    for (;;) {
        fromlen = sizeof(from);
        r = recvfrom(fd, datagram, (size_t)n, 0, (struct sockaddr *)&from, &fromlen);
        if (r >= 0) break;
        if (failed() != 0) return NULL;
    }
    if (fromlen > sizeof(from)) fromlen = sizeof(from);  /* cannot happen for IP: the kernel says what it cut */
    PyObject *data = PyBytes_FromStringAndSize(datagram, r);
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
        r = sendto(fd, view.buf, (size_t)view.len, 0, (struct sockaddr *)&to, tolen);
        if (r >= 0) break;
        if (failed() != 0) { PyBuffer_Release(&view); return NULL; }
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(r);
}

static PyMethodDef methods[] = {
    {"read", (PyCFunction)(void (*)(void))sysio_read, METH_FASTCALL, "os.read without releasing the GIL"},
    {"write", (PyCFunction)(void (*)(void))sysio_write, METH_FASTCALL, "os.write without releasing the GIL"},
    {"recvfrom", (PyCFunction)(void (*)(void))sysio_recvfrom, METH_FASTCALL,
     "recvfrom(fd, n) -> (data, sockaddr bytes), without releasing the GIL; n <= 65536"},
    {"sendto", (PyCFunction)(void (*)(void))sysio_sendto, METH_FASTCALL,
     "sendto(fd, data, sockaddr bytes from recvfrom) -> int, without releasing the GIL"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gnetpy._sysio", NULL, -1, methods};

PyMODINIT_FUNC PyInit__sysio(void) { return PyModule_Create(&module); }
